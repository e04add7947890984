"""Faust's offset bookkeeping, made to never commit past a record no agent handled.

faust-streaming 0.15.3 (the version pinned here) has four ways to commit an offset past a record
that was fetched but never handled. Each is closed by one patch below, installed by
:func:`install` before the app is built (``streams/app.py``); tests/unit/test_faust_acks.py
drives each with Faust's own objects, tests/e2e/test_no_skip.py with a real worker and broker.

1. **Skipped records were acknowledged on the pure-Python stream path.** A stream skips the
   records it takes off an agent's queue during a rebalance (flow control suspended, or a record
   fetched in an older consumer generation). The Cython loop (``faust/_cython/streams.pyx``, used
   where the extension is built, as on this project's machines) leaves a skipped record
   unacknowledged; the pure-Python one (``Stream._py_aiter``: PyPy, or a source install without a
   compiler) acknowledges it. Here only records a stream took up (``message.tracked``) are.
2. **The commit took "committed" for the last handled offset.** ``Consumer._committed_offset``
   holds Kafka's committed offset — the *next* one to read — but ``_new_offset`` allowed the
   first acknowledged offset to be one above it: with committed = 8 and 9 acknowledged, it
   committed 10, past record 8 that was skipped (seen: the no-skip test's restart part, a risk
   change never routed). Here the first acknowledged offset must be the committed one.
3. **Gaps were counted as handled on every topic.** When the fetcher hands on a record more than
   one offset after the previous one, Faust counts the offsets between as handled (``_add_gap``)
   — right for a compacted topic, whose offsets have holes. But a record from before a seek
   (fetched in an older generation, handed on after the seek) makes a "gap" of records that exist
   and were never handled. Here gaps count only on topics the app declared ``compacting``, and
   from the committed offset on (Faust started one above it, the same off-by-one as 2).
4. **After a seek the read offset said "read up to here" for a record not read yet.** Faust
   sets ``_read_offset`` to the offset sought to, while everywhere else it is the last record
   handed on; on a compacted topic a hole right at the committed offset was then never counted
   (with 2 and 3 fixed, the commit would stop there). Here a seek to offset N sets it to N - 1.

Records dropped without acknowledgement are thereby never committed past — and read again by the
stall guard (``streams/liveness.py``) instead of waiting for the next restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.events import Event
from faust.transport.consumer import Consumer, ensure_TP
from faust.types import TP

log = logging.getLogger(__name__)

_faust_event_ack = Event.ack
_faust_new_offset = Consumer._new_offset


def _ack_only_tracked(self: Event) -> bool:
    """``Event.ack`` that refuses records no stream took up (1)."""
    message = self.message
    if not message.tracked and message.topic in self.app.topics.acking_topics:
        return False
    return _faust_event_ack(self)


def _new_offset_contiguous(self: Consumer, tp: TP) -> int | None:
    """``Consumer._new_offset`` that commits only when the committed offset itself was handled (2)."""
    acked = self._acked[tp]
    committed = self._committed_offset[tp]
    if acked and committed:
        first = min(acked)
        gaps = self._gap.get(tp)
        if gaps:
            first = min(first, gaps.begin())
        if first > committed:
            return None  # the record at ``committed`` was not handled (yet): never commit past it
    return _faust_new_offset(self, tp)


def _compacted(consumer: Consumer, topic: str) -> bool:
    return any(getattr(ch, "compacting", False) for ch in consumer.app.topics._topic_name_index.get(topic, ()))


async def _add_gap_if_compacted(self: Consumer, tp: TP, offset_from: int, offset_to: int) -> None:
    """``Consumer._add_gap`` only where holes are real, and from the committed offset on (3)."""
    if not _compacted(self, tp.topic):
        log.warning("%s[%d]: offsets %d-%d were skipped by the fetcher on a topic without compaction; "
                    "they are not counted as handled (read again: streams/liveness.py)",
                    tp.topic, tp.partition, offset_from, offset_to - 1)
        return
    committed = self._committed_offset[tp]
    if committed is not None:
        offset_from = max(offset_from, committed)
    if offset_from <= offset_to:
        gaps = self._gap[tp]
        gaps.addi(offset_from, offset_to + 1)  # the end is exclusive
        await asyncio.sleep(0)
        gaps.merge_overlaps()


async def _perform_seek(self: Consumer) -> None:
    """``Consumer.perform_seek`` with the read offset one below each committed offset (4)."""
    committed: dict[Any, int | None] = await self.seek_to_committed()
    self._read_offset.update({tp: offset - 1 if offset else None for tp, offset in committed.items()})
    self._committed_offset.update({ensure_TP(tp): offset if offset else None
                                   for tp, offset in committed.items() if offset is not None})


async def _seek(self: Consumer, partition: TP, offset: int) -> None:
    """``Consumer.seek`` with the read offset one below the offset sought to (4)."""
    await self._seek(partition, offset)
    self._read_offset[ensure_TP(partition)] = offset - 1 if offset else None


def install() -> None:
    """Patch Faust's classes (idempotent; see the module docstring)."""
    Event.ack = _ack_only_tracked  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset_contiguous  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap_if_compacted  # type: ignore[method-assign]
    Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    Consumer.seek = _seek  # type: ignore[method-assign]
