"""Merge ``EnterpriseEvent``s into ``EnterpriseProfile``s and detect risk-relevant changes.

Pure functions over plain dicts (the Avro records of ``avro/enterprise/profile.avsc`` and
``avro/risk/change.avsc``). The merge agent calls ``merge_event`` once per event in offset order:

1. the market registration and abnormal listings fill the profile's own fields (here), every
   other dataset its facts (``streams.core.facts``);
2. indicators are derived from the facts (``streams.core.indicators``);
3. the scorecard scores the profile and explains the score (``streams.core.scorecard``);
4. the alert catalogue compares the old and new profile (``streams.core.alerts``).

Idempotence, two layers:

- a profile remembers the ``enterprise.events`` offset of the last event merged into it
  (``version``). Events of one USCC always come from one partition, so an event whose offset is
  not above ``version`` is a consumer replay and changes nothing;
- it also remembers the highest source position merged per source row (``source_seqs``). An
  upstream replay (the ingest step re-publishing after a crash) arrives at a *new* offset but
  with a source position already seen for its row, and is skipped too — otherwise an old status
  could overwrite a newer one. Positions are compared per row, not per dataset: changes of one
  row share a department-topic partition and stay in order, while two rows of one enterprise
  (two listings) may reach ``enterprise.events`` in either order.

  ``source_seqs`` keeps the ``SOURCE_ROWS_KEPT`` most recently changed rows only, least recent
  first, so a profile does not grow by an entry for every monthly return or bill ever filed.
  Replays resend the last seconds to minutes of a connector's or the ingest step's changes, far
  fewer than that per enterprise. A replayed row forgotten since is merged again: its latest
  version (or a snapshot row) sets the facts it already set, and an alert raised again has the
  same ``change_id`` and is not delivered twice (``alert:sent`` in Redis). Only a replay reaching
  back past ``SOURCE_ROWS_KEPT`` newer changes of the same enterprise could re-apply an older
  version of a row.

Snapshot reads (``op = 'r'``) build the profile but raise no risk change: an enterprise that was
already revoked before the platform started is a fact, not news.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

from streams.core.alerts import detect_changes
from streams.core.erasure import is_erase_marker
from streams.core.facts import merge_facts
from streams.core.indicators import derive
from streams.core.masking import row_token
from streams.core.scorecard import DEFAULT_SCORECARD, SEVERITY_RANK, Scorecard

Profile = dict[str, Any]
Event = Mapping[str, Any]

SOURCE_ROWS_KEPT = 256  # rows remembered in ``source_seqs`` (see the module doc): weeks of any enterprise's changes

REGISTRATION_FIELDS = {
    # profile field: event attribute
    "name": "name",
    "status": "status",
    "district_code": "district_code",
    "industry_code": "industry_code",
    "established_date": "established_date",
    "legal_rep_pseudonym": "legal_rep_id_number_pseudonym",
    "legal_rep_id_masked": "legal_rep_id_number",
    "legal_rep_name_masked": "legal_rep_name",
    "legal_rep_phone_masked": "legal_rep_phone",
    "address_masked": "address",
}

def new_profile(uscc: str) -> Profile:
    return {
        "uscc": uscc,
        "name": None,
        "status": None,
        "district_code": None,
        "industry_code": None,
        "registered_capital": None,
        "established_date": None,
        "legal_rep_pseudonym": None,
        "legal_rep_id_masked": None,
        "legal_rep_name_masked": None,
        "legal_rep_phone_masked": None,
        "address_masked": None,
        "abnormal_open_ids": [],
        "abnormal_listings_total": 0,
        "monthly": {},
        "open_items": {},
        "dated": {},
        "ratings": {},
        "indicators": {},
        "risk_score": 0,
        "risk_level": "C",
        "reason_codes": [],
        "score_factors": [],
        "source_seqs": {},
        "version": -1,
        "last_event_id": "",
        "last_event_ts_ms": 0,
        "updated_ts_ms": 0,
    }


def _merge_registration(p: Profile, e: Event) -> None:
    if e["op"] == "d":
        return  # a deleted registration row keeps the last known facts
    a = e["attributes"]
    for pf, af in REGISTRATION_FIELDS.items():
        if af in a:
            p[pf] = a[af]
    cap = a.get("registered_capital")
    p["registered_capital"] = float(cap) if cap not in (None, "") else None


def _merge_abnormal(p: Profile, e: Event) -> None:
    a = e["attributes"]
    listing = a.get("id") or ""
    open_ids = [i for i in p["abnormal_open_ids"] if i != listing]
    if e["op"] != "d" and not a.get("removed_date"):
        if listing not in p["abnormal_open_ids"]:
            p["abnormal_listings_total"] += 1
        open_ids.append(listing)
    p["abnormal_open_ids"] = sorted(open_ids)


MERGERS: dict[str, Callable[[Profile, Event], None]] = {
    "market.enterprise_registration": _merge_registration,
    "market.abnormal_operation": _merge_abnormal,
}


def source_row(event: Event) -> str:
    """``<dataset>#p_<14 hex>``: the source row an event changed (from its id, see
    ``streams.core.ingest.event_id``; the row pseudonym without its key id, ``masking.row_token``,
    first 16 characters). Dataset names are unique in the catalogue, and 56 bits of a keyed
    pseudonym tell the rows of one enterprise apart; the short key keeps profiles small (one entry
    per source row)."""
    return f"{event['dataset']}#{row_token(event['event_id'].rpartition('#')[2])[:16]}"


def _legacy_source_row(event: Event) -> str:
    """The key profiles written before the short form used (still honoured on replay)."""
    return f"{event['dept']}.{event['dataset']}#{row_token(event['event_id'].rpartition('#')[2])}"


def is_duplicate(profile: Profile, event: Event, offset: int) -> bool:
    """True if ``event`` was merged before (consumer replay or upstream re-publication)."""
    if offset <= profile["version"]:
        return True
    seqs = profile["source_seqs"]
    last_seq = seqs.get(source_row(event))
    if last_seq is None and seqs:
        last_seq = seqs.get(_legacy_source_row(event))
    return last_seq is not None and event["seq"] <= last_seq


def remember_row(seqs: Mapping[str, int], event: Event) -> dict[str, int]:
    """``seqs`` with ``event``'s row moved to the end at its position, and only the
    ``SOURCE_ROWS_KEPT`` most recently changed rows kept (a new dict: profiles are never changed
    in place). Avro maps keep their order through fastavro, so the order survives the table."""
    out = dict(seqs)
    out.pop(_legacy_source_row(event), None)
    out.pop(row := source_row(event), None)
    out[row] = event["seq"]
    for stale in list(islice(out, max(len(out) - SOURCE_ROWS_KEPT, 0))):
        del out[stale]
    return out


def merge_event(
    profile: Profile | None,
    event: Event,
    offset: int,
    now_ms: int,
    scorecard: Scorecard = DEFAULT_SCORECARD,
) -> tuple[Profile, list[dict[str, Any]]]:
    """Merge one event; return the new profile and the risk changes it caused.

    Returns the profile unchanged and no changes if the event was already merged. An erase
    marker (``op`` = ``erase``, ``streams.core.erasure``) is not merged: the caller drops the profile.
    """
    if is_erase_marker(event):
        raise ValueError(f"{event['event_id']}: an erase marker drops the profile, it is not merged into it")
    old = profile or new_profile(event["uscc"])
    if is_duplicate(old, event, offset):
        return old, []
    dataset = f"{event['dept']}.{event['dataset']}"
    new = {
        **old,
        "abnormal_open_ids": list(old["abnormal_open_ids"]),
        "source_seqs": remember_row(old["source_seqs"], event),
        # the fact maps are replaced, never changed in place: ``old`` stays as it was for detect_changes
        "monthly": dict(old["monthly"]),
        "open_items": dict(old["open_items"]),
        "dated": dict(old["dated"]),
        "ratings": dict(old["ratings"]),
    }
    merger = MERGERS.get(dataset)
    touched: tuple[str, ...] = ()
    if merger is not None:
        merger(new, event)
    else:
        touched = merge_facts(new, event)
    new["version"] = offset
    new["last_event_id"] = event["event_id"]
    new["last_event_ts_ms"] = event["event_ts_ms"]
    new["updated_ts_ms"] = now_ms
    new["indicators"] = derive(new, touched if profile else None)
    new["risk_score"], new["risk_level"], new["score_factors"] = scorecard.explain(new)
    new["reason_codes"] = [f["code"] for f in new["score_factors"] if f["points"] < 0]
    changes = [] if event["op"] == "r" else detect_changes(old if profile else None, new, event, now_ms)
    return new, changes


def is_at_least(severity: str, minimum: str) -> bool:
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[minimum]


class DecodedProfiles:
    """Decoded copies of the profile table's values, so an enterprise's profile is not decoded
    again for every event. A copy is used only while the table still holds exactly the bytes it
    was decoded from (after a rebalance or restore the table wins); least recently used copies
    are dropped beyond ``size``. ``merge_event`` never changes the profile it is given, so a
    cached copy stays equal to its bytes.

    A copy the merge agent stored itself (``put``) passed the last-line PII check before it was
    written; ``scanned`` hands it out as the base of the next check. One decoded from the table
    (another worker's, or an older version's) is checked in full once."""

    def __init__(self, decode: Callable[[bytes], Profile], size: int = 20_000) -> None:
        self._decode = decode
        self._size = size
        self._entries: OrderedDict[str, tuple[bytes, Profile, bool]] = OrderedDict()

    def get(self, uscc: str, stored: bytes | None) -> Profile | None:
        if stored is None:
            return None
        hit = self._entries.get(uscc)
        if hit is not None and hit[0] == stored:
            self._entries.move_to_end(uscc)
            return hit[1]
        profile = self._decode(stored)
        self._remember(uscc, (stored, profile, False))
        return profile

    def put(self, uscc: str, stored: bytes, profile: Profile) -> None:
        """Remember ``profile``, encoded as ``stored`` and checked for PII, as the table's value."""
        self._remember(uscc, (stored, profile, True))

    def forget(self, uscc: str) -> None:
        """Drop the copy of ``uscc`` (its profile was erased from the table)."""
        self._entries.pop(uscc, None)

    def scanned(self, uscc: str, profile: Profile | None) -> Profile | None:
        """``profile`` if it is the copy ``put`` stored for ``uscc`` (checked for PII), else None."""
        hit = self._entries.get(uscc)
        return profile if hit is not None and hit[1] is profile and hit[2] else None

    def _remember(self, uscc: str, entry: tuple[bytes, Profile, bool]) -> None:
        self._entries[uscc] = entry
        self._entries.move_to_end(uscc)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
