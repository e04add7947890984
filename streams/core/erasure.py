"""Erasure of one enterprise in the stream layer: the request, the marker, the confirmation.

``yurong erase`` (``streams/cli/erase.py``) publishes an erase request on ``control.erasures``
(keyed by the USCC). The operator may not write ``enterprise.events``: it could forge events. The
worker's ``erase_requests`` agent turns the request into an *erase marker*: an enterprise event
with ``op = "erase"``, put on ``enterprise.events`` under the USCC's key, so it sits in the
enterprise's partition after every event published before it. The ``merge`` agent, on a marker,
drops the enterprise's profile from its table (Faust writes the changelog tombstone), publishes a
tombstone on ``enterprise.profiles``, emits no risk change and confirms on
``control.erasures.applied``. Every other consumer of ``enterprise.events`` skips markers
(``is_erase_marker``).

Replays: a marker the merge sees again (a consumer replay, at its old offset) changes nothing. The
profile is already gone, or a profile built since has a ``version`` (the offset of its last event)
above the marker's offset: ``replayed_marker`` says so. A request the ``erase_requests`` agent
handles twice (a crash between its output and its commit) puts a second marker on the topic, at a
new offset. That one drops again what the merge built since the first one: facts from after the
erasure, which come back with the enterprise's next changes of those rows. Erasing too much in
that window is the side to err on.

Pure: no I/O. The records are those of ``avro/control/erasure_request.avsc``,
``avro/control/erasure_applied.avsc`` and ``avro/enterprise/event.avsc``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from streams.core.consent import check_uscc

ERASE_OP = "erase"
MARKER_DEPT = "control"
MARKER_DATASET = "erasure"
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


class BadRequest(ValueError):
    """An erase request that is not one (dead-lettered by the worker)."""


def erase_request(request_id: str, uscc: str, requested_by: str, now_ms: int) -> dict[str, Any]:
    """The ``control.erasures`` record of one ``yurong erase`` run."""
    return check_request({"request_id": request_id, "uscc": uscc, "requested_by": requested_by,
                          "requested_ts_ms": now_ms})


def check_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """``request`` if it is a well-formed erase request (a 32-hex id, a valid USCC), else ``BadRequest``."""
    if not _REQUEST_ID.fullmatch(str(request.get("request_id", ""))):
        raise BadRequest(f"erase request id {request.get('request_id')!r} is not 32 hex digits")
    try:
        check_uscc(str(request.get("uscc", "")))
    except Exception as exc:  # noqa: BLE001 — ConfigError for a bad code: this is a bad record
        raise BadRequest(f"erase request {request['request_id']}: {exc}") from None
    return dict(request)


def erase_marker(request: Mapping[str, Any], topic: str, partition: int, offset: int, now_ms: int) -> dict[str, Any]:
    """The ``enterprise.events`` record for ``request``, read at ``topic[partition]@offset``
    (avro/enterprise/event.avsc, ``op`` = ``erase``): no enterprise data besides the USCC."""
    return {
        "event_id": f"{MARKER_DEPT}.{MARKER_DATASET}@{request['request_id']}",
        "uscc": request["uscc"],
        "dept": MARKER_DEPT,
        "dataset": MARKER_DATASET,
        "op": ERASE_OP,
        "attributes": {"request_id": request["request_id"]},
        "before": None,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "position": str(offset),
        "seq": offset,
        "snapshot": "false",
        "event_ts_ms": request["requested_ts_ms"],
        "ingest_ts_ms": now_ms,
    }


def is_erase_marker(event: Mapping[str, Any]) -> bool:
    return event.get("op") == ERASE_OP


def replayed_marker(profile: Mapping[str, Any] | None, offset: int) -> bool:
    """True if the marker at ``offset`` was merged before and the profile in the table was built
    after it (its ``version``, the offset of its last event, is not below): nothing to do, and no
    tombstone either, which would hide that newer profile on ``enterprise.profiles``. With no
    profile in the table the marker is applied (again): a tombstone and a confirmation, harmless."""
    return profile is not None and profile["version"] >= offset


def erase_applied(marker: Mapping[str, Any], app_id: str, partition: int, offset: int, had_profile: bool,
                  now_ms: int) -> dict[str, Any]:
    """The ``control.erasures.applied`` record confirming ``marker``, merged at ``partition``/``offset``."""
    return {"request_id": marker["attributes"].get("request_id") or "", "uscc": marker["uscc"], "app_id": app_id,
            "events_partition": partition, "events_offset": offset, "had_profile": had_profile,
            "applied_ts_ms": now_ms}
