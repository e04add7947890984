"""Faust's offset bookkeeping, corrected so that no commit passes a record no agent handled.

Installed by :func:`install` before the app is built (``streams/worker/app.py``). Per fix: what
faust-streaming 0.15.3 does, what the patch does, and the test in tests/unit/test_faust_acks.py
that fails without it (its module docstring explains each mechanism; tests/e2e/test_no_skip.py
and tests/e2e/test_rebalance.py run real workers against a real broker).

1. ``Event.ack``: the pure-Python stream loop acknowledges records it skipped in a rebalance. The
   patch acknowledges only records a stream took up. ``test_only_records_a_stream_took_up_are_acknowledged``.
2. ``Consumer._new_offset``: commits when the first acknowledged offset is one above the committed
   one, past that record. The patch commits only once the committed offset's own record is handled.
   ``test_a_commit_never_passes_the_committed_offset_when_that_record_was_not_handled``.
3. ``Consumer._add_gap``: counts a hole from committed + 1 up to and including the record after it.
   The patch counts it from the committed offset up to, not including, that record.
   ``test_a_hole_at_the_committed_offset_counts_as_handled``,
   ``test_the_record_after_a_hole_is_not_counted_as_handled_by_the_hole``.
4. ``Consumer.seek``/``perform_seek``: set the read offset to the offset sought to, as if that
   record were read. The patch sets it one below. ``test_after_a_seek_the_read_offset_is_one_below_the_next_record``.
5. ``Consumer.perform_seek``: leaves a partition with nothing (or 0) committed unsought and without
   a committed offset. The patch seeks it to its log start, which counts as committed.
   ``test_a_partition_with_nothing_committed_is_sought_to_its_log_start_which_counts_as_committed``.
6. ``Consumer._wait_next_records`` (with 3-5's methods): a record fetched around a seek ends a
   "hole" of records that exist. The patch hands nothing on while partitions are sought, and
   records from a fetch begun before a seek only while they continue from the read offset, then
   seeks back. ``test_records_fetched_before_a_seek_are_not_handed_on_past_the_offset_sought_to``
   and the other tests under "6" there.

3 and 4 keep 2 from stopping at real holes (compacted topics). Records dropped unacknowledged are
read again by the stall guard (``liveness.py``).
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
_faust_wait_next_records = Consumer._wait_next_records


def _ack_only_tracked(self: Event) -> bool:
    """Fix 1. Faust's pure-Python stream loop acknowledges a record it skipped in a rebalance; this
    acknowledges only records a stream took up (``message.tracked``). Fails without it:
    ``test_only_records_a_stream_took_up_are_acknowledged``."""
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
    except (TimeoutError, KafkaError, OSError):
        return {}
    return {ensure_TP(tp): offset for tp, offset in found.items() if offset is not None}


def _new_offset_contiguous(self: Consumer, tp: TP) -> int | None:
    """Fix 2. Faust commits when the first handled offset is one above the committed one, past the
    committed record; this commits only once that record itself was handled. Fails without it:
    ``test_a_commit_never_passes_the_committed_offset_when_that_record_was_not_handled``."""
    committed = self._committed_offset[tp]
    first = first_handled(self, tp)
    if committed is not None and first is not None and first > committed:
        return None  # the record at ``committed`` was not handled (yet): never commit past it
    return _faust_new_offset(self, tp)


async def _add_gap_from_committed(self: Consumer, tp: TP, offset_from: int, offset_to: int) -> None:
    """Fix 3 (and 6). Faust counts a hole from committed + 1 up to and including the record handed
    on after it; this counts it from the committed offset up to, not including, that record, and
    not at all when the partition was sought since the fetch (6). Fails without it:
    ``test_a_hole_at_the_committed_offset_counts_as_handled``,
    ``test_the_record_after_a_hole_is_not_counted_as_handled_by_the_hole``,
    ``test_a_seek_between_the_check_and_the_hole_count_counts_no_hole``."""
    committed = self._committed_offset[tp]
    if committed is not None:
        offset_from = max(offset_from, committed)
    if offset_from >= offset_to:
        return
    seeks = seek_log(self)
    if seeks.stale(tp):
        # (6) a seek came after the record was fetched, between the check in _fresh_records and
        # here (the fetch loop lets other tasks run every 100 records): the record may be from
        # before it, and the "hole" records the seek is to read again. Not counted; read again.
        seeks.seek_back_later(tp, offset_from)
        return
    gaps = self._gap[tp]
    gaps.addi(offset_from, offset_to)  # the end is exclusive: the record at ``offset_to`` is handed on, not a hole
    await asyncio.sleep(0)  # as Faust does: let other tasks run while the tree is merged
    gaps.merge_overlaps()


async def _perform_seek(self: Consumer) -> None:
    """Fixes 4, 5, 6. Faust's rebalance seek sets each read offset to the committed offset, leaves a
    partition with nothing (or 0) committed unsought and without a committed offset, and lets the
    fetch loop hand records on meanwhile; this sets the read offsets one below, seeks such a
    partition to its log start (its committed offset from then on), and holds the flow while
    seeking. Fails without it:
    ``test_a_partition_with_nothing_committed_is_sought_to_its_log_start_which_counts_as_committed``,
    ``test_nothing_is_handed_on_while_the_partitions_are_sought_to_their_committed_offsets``,
    ``test_a_rebalance_seek_of_every_partition_counts_for_each``."""
    seeks = seek_log(self)
    # (6) aiokafka seeks the partitions one after the other, each after asking the broker for its
    # committed offset, and the read offsets follow only at the end: records fetched from the new
    # position in between would be dropped as "read already", and the next one make a hole of them.
    held, rebalances = self.flow_active, self.app.rebalancing_count
    if held:
        self.stop_flow()
    seeks.sought()  # before the seek: a fetch under way may return records from before it
    try:
        await _seek_to_committed(self, seeks)
    finally:
        seeks.sought()  # and after: a fetch begun while the seek was under way may be from before it
        if held and self.app.rebalancing_count == rebalances:  # else that rebalance resumes it when done
            self.resume_flow()


async def _seek_to_committed(self: Consumer, seeks: SeekLog) -> None:
    """Seek every partition to its committed offset (4, 5); see :func:`_perform_seek`."""
    committed: dict[Any, int | None] = {ensure_TP(tp): offset for tp, offset in (await self.seek_to_committed()).items()}
    # (stream partitions only: a table's changelog partitions are read by its recovery, never committed)
    never = [tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)]
    if never:
        # the broker may be away: then Faust's behaviour, and the stall guard looks again later
        for tp, start in (await log_starts(self, never)).items():
            if tp in committed:
                seeks.sought([tp])
                await self._seek(tp, start)
                committed[tp] = start
    self._read_offset.update({tp: offset - 1 if offset else None for tp, offset in committed.items()})
    self._committed_offset.update({tp: offset for tp, offset in committed.items() if offset is not None})


async def _seek_read_below(self: Consumer, partition: TP, offset: int) -> None:
    """Fixes 4 and 6. Faust's seek sets the read offset to the offset sought to, as if that record
    were read; this sets it one below and notes the seek for :func:`_fresh_records`. Fails without it:
    ``test_after_a_seek_the_read_offset_is_one_below_the_next_record``,
    ``test_a_seek_in_the_middle_of_a_batch_drops_its_rest``."""
    seeks = seek_log(self)
    seeks.sought([partition])
    await self._seek(partition, offset)
    self._read_offset[ensure_TP(partition)] = offset - 1 if offset else None
    seeks.sought([partition])  # before and after: see _perform_seek


class SeekLog:
    """Seeks of a consumer's partitions, numbered, so a fetch knows which partitions were sought
    since it began, and the seeks back its stale records need (6)."""

    def __init__(self) -> None:
        self.count = 0  # seeks so far
        self._last: dict[TP, int] = {}  # partition → number of its latest seek
        self._everything = 0  # number of the latest seek of every partition (a rebalance's)
        self.batch_began = 0  # seeks before the fetch of the batch being handed on began
        self._seek_back: dict[TP, tuple[int, int]] = {}  # partition → (its latest seek then, offset to seek to)

    def sought(self, tps=None) -> None:
        """Note a seek of ``tps`` (None: of every partition)."""
        self.count += 1
        if tps is None:
            self._everything = self.count
        for tp in tps or ():
            self._last[ensure_TP(tp)] = self.count

    def latest(self, tp: TP) -> int:
        """The number of the latest seek of ``tp`` (0: never sought)."""
        return max(self._last.get(tp, 0), self._everything)

    def stale(self, tp: TP) -> bool:
        """Whether ``tp`` was sought since the fetch of the batch being handed on began."""
        return self.latest(tp) > self.batch_began

    def seek_back_later(self, tp: TP, offset: int) -> None:
        """Seek ``tp`` to ``offset`` (or lower, if asked before) before the next fetch, unless it
        is sought again before."""
        at = self.latest(tp)
        earlier = self._seek_back.get(tp)
        if earlier is not None and earlier[0] == at:
            offset = min(offset, earlier[1])
        self._seek_back[tp] = (at, offset)

    def seeks_back(self) -> list[tuple[TP, int]]:
        """The seeks back still due (each handed out once)."""
        due, self._seek_back = self._seek_back, {}
        return [(tp, offset) for tp, (at, offset) in due.items() if self.latest(tp) == at]


def seek_log(consumer: Consumer) -> SeekLog:
    """The consumer's :class:`SeekLog`, made on first use."""
    log = consumer.__dict__.get("_yurong_seek_log")
    if log is None:
        log = consumer.__dict__["_yurong_seek_log"] = SeekLog()
    return log


def _fresh_records(consumer: Consumer, log: SeekLog, tp: TP, records):
    """``records`` of ``tp`` from the batch being handed on, up to the first that neither
    continues from the read offset nor comes from a fetch begun after the partition's latest
    seek (6). Checked as each is handed on: a seek may come mid-batch."""
    for record in records:
        if log.stale(tp):
            next_offset = next_to_hand_on(consumer, tp)
            if next_offset is not None and record.offset > next_offset:
                log.seek_back_later(tp, next_offset)
                return
        yield record


def next_to_hand_on(consumer: Consumer, tp: TP) -> int | None:
    """The offset of ``tp`` the fetch loop hands on next: one above the read offset, or the
    committed offset of a partition nothing was read from since it was sought (None: unknown)."""
    last_read = consumer._read_offset.get(tp)
    if last_read is not None:
        return last_read + 1
    return consumer._committed_offset.get(tp)


async def _wait_next_records_fresh(self: Consumer, timeout: float):
    """Fix 6. Faust hands on every fetched record, and one from a fetch begun before a seek can end a
    "hole" of records that exist; this hands on each partition's records through
    :func:`_fresh_records` and seeks back where a stale batch was dropped. Fails without it:
    ``test_records_fetched_before_a_seek_are_not_handed_on_past_the_offset_sought_to``,
    ``test_a_hole_met_by_a_stale_fetch_is_handed_on_by_the_fetch_after_the_seek_back``."""
    log = seek_log(self)
    due = log.seeks_back()  # a partition sought since (a rebalance) is placed by that seek
    if due:
        assigned = self.assignment()
        for tp, offset in due:
            if tp in assigned:  # a revoked one is sought by its next assignment
                await self.seek(tp, offset)
    fetch_began = log.count
    records, active_partitions = await _faust_wait_next_records(self, timeout)
    log.batch_began = fetch_began
    if records:
        acking = self.app.topics.acking_topics
        records = {tp: _fresh_records(self, log, tp, batch) if tp.topic in acking else batch
                   for tp, batch in records.items()}
    return records, active_partitions


def install() -> None:
    """Patch Faust's classes (idempotent; the fixes are listed in the module docstring)."""
    Event.ack = _ack_only_tracked  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset_contiguous  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap_from_committed  # type: ignore[method-assign]
    Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    Consumer.seek = _seek_read_below  # type: ignore[method-assign]
    Consumer._wait_next_records = _wait_next_records_fresh  # type: ignore[method-assign]
