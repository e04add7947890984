"""Dead letters: the original bytes, where they came from and why they failed.

A dead letter for a record read from topic T goes to ``dlq.T`` with the original key and value
untouched and these headers (all UTF-8 text)::

    yurong.dlq.topic / .partition / .offset   provenance of the original record
    yurong.dlq.component                      connector, worker or sink
    yurong.dlq.error.kind / .error.message    e.g. validation / "enterprise_registration.uscc ..."
    yurong.dlq.error.field                    offending field, if known
    yurong.dlq.ts_ms                          when it was dead-lettered

Error messages never echo a raw personal value (see ``streams.core.ingest``).
"""

from __future__ import annotations

import time

from streams.errors import RecordError

PREFIX = "yurong.dlq."


def dlq_topic(source_topic: str) -> str:
    return f"dlq.{source_topic}"


def dlq_headers(
    component: str, topic: str, partition: int, offset: int, error: BaseException
) -> list[tuple[str, str | bytes | None]]:
    kind = error.kind if isinstance(error, RecordError) else "unexpected"
    field = getattr(error, "field", None) or ""
    return [
        (PREFIX + "topic", topic.encode()),
        (PREFIX + "partition", str(partition).encode()),
        (PREFIX + "offset", str(offset).encode()),
        (PREFIX + "component", component.encode()),
        (PREFIX + "error.kind", kind.encode()),
        (PREFIX + "error.class", type(error).__name__.encode()),
        (PREFIX + "error.message", str(error)[:2000].encode()),
        (PREFIX + "error.field", field.encode()),
        (PREFIX + "ts_ms", str(int(time.time() * 1000)).encode()),
    ]


def parse_dlq_headers(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Header list → ``{'topic': ..., 'offset': ..., 'error.kind': ...}`` (prefix stripped)."""
    out = {}
    for k, v in headers or []:
        if k.startswith(PREFIX):
            out[k[len(PREFIX):]] = (v or b"").decode("utf-8", "replace")
    return out
