"""Faust's offset bookkeeping, made to never commit past a record no agent handled.

faust-streaming 0.15.3 (the version pinned here) can commit an offset past a record that was
fetched but never handled (1, 2, 5); 3 and 4 keep the stricter commit of 2 from stopping at
holes that are real. Each is one patch below, installed by :func:`install` before the app is built
(``streams/app.py``); tests/unit/test_faust_acks.py drives each with Faust's own objects and
fails without it, tests/e2e/test_no_skip.py runs a real worker against a real broker.

1. **Skipped records were acknowledged on the pure-Python stream path.** A stream skips the
   records it takes off an agent's queue during a rebalance (flow control suspended, or a record
   fetched in an older consumer generation). The Cython loop (``faust/_cython/streams.pyx``, used
   where the extension is built, as on this project's machines) leaves a skipped record
   unacknowledged; the pure-Python one (``Stream._py_aiter``: PyPy, or a source install without a
   compiler) acknowledges it. Here only records a stream took up (``message.tracked``) are.
2. **The commit took "committed" for the last handled offset.** ``Consumer._committed_offset``
   holds Kafka's committed offset — the *next* one to read — but ``_new_offset`` allowed the
   first acknowledged offset to be one above it: with committed = 8 and 9 acknowledged, it
   committed 10, past record 8 — reachable when a stream skips record 8 during a rebalance (see 1)
   and handles 9 after it. Here the first acknowledged offset must be the committed one.
3. **Holes were counted from one above the committed offset.** When the fetcher hands on a
   record more than one offset after the previous one, the offsets between do not exist (a
   compacted topic, or retention deleted them while the worker was down) and Faust counts them
   as handled (``_add_gap``) — but from ``committed + 1`` on, the same off-by-one as 2. Here
   from the committed offset on, so a hole there does not stop the commit once 2 is fixed.
4. **After a seek the read offset said "read up to here" for a record not read yet.** Faust
   sets ``_read_offset`` to the offset sought to, while everywhere else it is the last record
   handed on; on a compacted topic a hole right at the committed offset was then never counted
   (with 2 fixed, the commit would stop there). Here a seek to offset N sets it to N - 1.
5. **A partition with nothing committed (or 0) had no committed offset at all.** aiokafka does not
   seek such a partition after a rebalance (the fetch position stays wherever it was), and Faust
   keeps ``None`` as its committed offset, so neither 2 nor a re-read could apply: a dropped first
   record was committed past as soon as a later one was handled. Here it is sought to its log
   start (what ``auto_offset_reset=earliest`` reads after a restart), which counts as committed.

Records dropped without acknowledgement are thereby never committed past — and read again by the
stall guard (``streams/liveness.py``) instead of waiting for the next restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaError
from faust.events import Event
from faust.transport.consumer import Consumer, ensure_TP
from faust.types import TP

_faust_event_ack = Event.ack
_faust_new_offset = Consumer._new_offset


def _ack_only_tracked(self: Event) -> bool:
    """``Event.ack`` that refuses records no stream took up (1)."""
    message = self.message
    if not message.tracked and message.topic in self.app.topics.acking_topics:
        return False
    return _faust_event_ack(self)


def first_handled(consumer: Consumer, tp: TP) -> int | None:
    """The lowest offset of ``tp`` acknowledged or counted as a hole and not committed yet (None: none)."""
    acked = consumer._acked.get(tp)
    if not acked:
        return None
    first = min(acked)
    gaps = consumer._gap.get(tp)
    return min(first, gaps.begin()) if gaps else first


async def log_starts(consumer: Consumer, tps: list[TP], timeout: float | None = None) -> dict[TP, int]:
    """The first offset still in the log of each of ``tps``; partitions the broker did not answer
    for (or all of them, when it is away or slower than ``timeout`` seconds) are left out."""
    try:
        found = await asyncio.wait_for(consumer.earliest_offsets(*tps), timeout)
    except (KafkaError, asyncio.TimeoutError, OSError):
        return {}
    return {ensure_TP(tp): offset for tp, offset in found.items() if offset is not None}


def _new_offset_contiguous(self: Consumer, tp: TP) -> int | None:
    """``Consumer._new_offset`` that commits only when the committed offset itself was handled (2)."""
    committed = self._committed_offset[tp]
    first = first_handled(self, tp)
    if committed is not None and first is not None and first > committed:
        return None  # the record at ``committed`` was not handled (yet): never commit past it
    return _faust_new_offset(self, tp)


async def _add_gap_from_committed(self: Consumer, tp: TP, offset_from: int, offset_to: int) -> None:
    """``Consumer._add_gap`` counting a hole from the committed offset on, not one above it (3)."""
    committed = self._committed_offset[tp]
    if committed is not None:
        offset_from = max(offset_from, committed)
    if offset_from <= offset_to:
        gaps = self._gap[tp]
        gaps.addi(offset_from, offset_to + 1)  # the end is exclusive
        await asyncio.sleep(0)  # as Faust does: let other tasks run while the tree is merged
        gaps.merge_overlaps()


async def _perform_seek(self: Consumer) -> None:
    """``Consumer.perform_seek`` with the read offset one below each committed offset (4), and a
    partition with nothing committed (or 0) sought to its log start and holding it as committed (5)."""
    committed: dict[Any, int | None] = {ensure_TP(tp): offset for tp, offset in (await self.seek_to_committed()).items()}
    # (stream partitions only: a table's changelog partitions are read by its recovery, never committed)
    never = [tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)]
    if never:
        # the broker may be away: then Faust's behaviour, and the stall guard looks again later
        for tp, start in (await log_starts(self, never)).items():
            if tp in committed:
                await self._seek(tp, start)
                committed[tp] = start
    self._read_offset.update({tp: offset - 1 if offset else None for tp, offset in committed.items()})
    self._committed_offset.update({tp: offset for tp, offset in committed.items() if offset is not None})


async def _seek_read_below(self: Consumer, partition: TP, offset: int) -> None:
    """``Consumer.seek`` with the read offset one below the offset sought to (4)."""
    await self._seek(partition, offset)
    self._read_offset[ensure_TP(partition)] = offset - 1 if offset else None


def install() -> None:
    """Patch Faust's classes (idempotent; see the module docstring)."""
    Event.ack = _ack_only_tracked  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset_contiguous  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap_from_committed  # type: ignore[method-assign]
    Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    Consumer.seek = _seek_read_below  # type: ignore[method-assign]
