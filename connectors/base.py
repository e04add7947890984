"""The one seam every connector implements, and the change event it yields.

The runner (``connectors.runner``) drives a ``Source``:

1. ``start()`` once: connect, create what is missing (publication, slot), plan a snapshot.
2. ``poll(timeout)`` in a loop: return the next changes, possibly none. Events of one source
   transaction are returned together, in source order.
3. ``acknowledge(position)`` after Kafka acknowledged every event returned so far whose
   ``ack_position`` is ≤ ``position``: only then may the source forget them (PostgreSQL:
   flush LSN feedback to the slot).
4. ``stop()`` once, also after errors.

Every source also has ``mark_snapshot_completed()``: the runner calls it once, after the flush
that followed the snapshot's last event, to record the snapshot as complete in ``connect.<dept>.offsets``.

Optional methods the runner uses when a source has them: ``position()`` (text for heartbeats
and status), ``snapshot_progress()`` ((rows sent, rows in all or -1) while a snapshot runs, else
None), ``flushed()`` (everything ``poll`` returned so far is in Kafka: checkpoint what the
position alone cannot say, e.g. incremental-snapshot progress), ``slot_lag_bytes()`` and
``lag_transactions()`` (lag metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from streams.core.catalogue import Dataset


@dataclass(frozen=True)
class ChangeEvent:
    """One row change, ready to be framed as a Debezium-style envelope."""

    dataset: Dataset
    op: str  # c, u, d, r
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: dict[str, Any]  # avro Source record: connector, dept, db, schema, table, position, seq, ts_ms, snapshot, tx_id
    key: str  # primary key text; Kafka message key
    ack_position: int  # what to acknowledge once this event is in Kafka (0: nothing to acknowledge)
    error: Exception | None = None  # set when the source row could not be converted: goes to the DLQ
    raw: dict[str, Any] | None = None  # the unconverted source row, kept only for the dead letter

    def envelope(self, now_ms: int) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "source": self.source, "op": self.op, "ts_ms": now_ms}


class Source(Protocol):
    name: str

    def start(self) -> None:
        """Connect and prepare; called once before the first ``poll``."""

    def poll(self, timeout: float) -> list[ChangeEvent]:
        """Next changes (possibly none) within about ``timeout`` seconds."""

    def acknowledge(self, position: int) -> None:
        """Everything up to ``position`` is durably in Kafka; the source may release it."""

    def snapshot_completed(self) -> bool:
        """True once the initial snapshot has been fully returned by ``poll``."""

    def mark_snapshot_completed(self) -> None:
        """Kafka acknowledged every snapshot event: record the snapshot as complete."""

    def stop(self) -> None:
        """Release connections; called once."""
