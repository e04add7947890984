"""Faust's offset bookkeeping, made to never commit past a record no agent handled.

faust-streaming 0.15.3 (the version pinned here) can commit an offset past a record that was
fetched but never handled (1, 2, 3, 5, 6); 3 and 4 keep the stricter commit of 2 from stopping
at holes that are real. Each is one patch below, installed by :func:`install` before the app is
built (``streams/worker/app.py``); tests/unit/test_faust_acks.py drives each with Faust's own objects and
fails without it; tests/e2e/test_no_skip.py and test_rebalance.py run real workers against a
real broker.

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
   as handled (``_add_gap``) — but from ``committed + 1`` on, the same off-by-one as 2, and up to
   and including the record after the hole, which was thereby "handled" before any agent had it:
   skipped by its stream in a rebalance, it was committed past. Here from the committed offset
   on (a hole there does not stop the commit once 2 is fixed) and up to that record, not
   including it.
4. **After a seek the read offset said "read up to here" for a record not read yet.** Faust
   sets ``_read_offset`` to the offset sought to, while everywhere else it is the last record
   handed on; on a compacted topic a hole right at the committed offset was then never counted
   (with 2 fixed, the commit would stop there). Here a seek to offset N sets it to N - 1.
5. **A partition with nothing committed (or 0) had no committed offset at all.** aiokafka does not
   seek such a partition after a rebalance (the fetch position stays wherever it was), and Faust
   keeps ``None`` as its committed offset, so neither 2 nor a re-read could apply: a dropped first
   record was committed past as soon as a later one was handled. Here it is sought to its log
   start (what ``auto_offset_reset=earliest`` reads after a restart), which counts as committed.

6. **Records fetched around a seek made holes of records that exist.** Faust hands on a record
   more than one offset above the read offset as the end of a hole (3) — but after a seek the
   records in hand may not continue from the read offset for other reasons: a batch fetched
   from the old position arrives after a rebalance's or the stall guard's seek back; aiokafka
   seeks the partitions one by one (a round trip each for the committed offset) while Faust
   sets the read offsets only at the end, so records fetched from the new position meanwhile
   were dropped as "read already" and the next one made a hole of them; and the fetch loop lets
   other tasks run every 100 records between taking a record and comparing it. Each way,
   records an agent never had were counted as handled and committed past: with a worker joining
   and leaving a draining group, thousands of 48,000 (tests/e2e/test_rebalance.py). Here
   nothing is handed on while the partitions are sought to their committed offsets (the flow
   is held); a partition's records from a fetch begun before its latest seek are handed on only
   while they continue from the read offset, the rest of the batch is dropped and the partition
   sought back to the next record before the next fetch; and a hole found in such a record is
   not counted, the partition is sought back to its start instead. A true hole (a compacted
   topic) is met again by a fetch begun after every seek, and counted as before.

Records dropped without acknowledgement are thereby never committed past — and read again by the
stall guard (``streams/worker/faust_fixes/liveness.py``) instead of waiting for the next restart.
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
    except (TimeoutError, KafkaError, OSError):
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
    """``Consumer._add_gap`` counting a hole from the committed offset on, not one above it, and
    up to the record handed on after it, not including it (3)."""
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
    """``Consumer.perform_seek`` with the read offset one below each committed offset (4), and a
    partition with nothing committed (or 0) sought to its log start and holding it as committed (5);
    nothing is handed on meanwhile (6)."""
    seeks = seek_log(self)
    # (6) aiokafka seeks the partitions one after the other, each after asking the broker for its
    # committed offset, and the read offsets follow only at the end: records fetched from the new
    # position in between were dropped as "read already", and the next one made a hole of them.
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
    """``Consumer.seek`` with the read offset one below the offset sought to (4)."""
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
    """``Consumer._wait_next_records`` that seeks back where a stale batch was dropped, and hands
    on each partition's records through :func:`_fresh_records` (6)."""
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
    """Patch Faust's classes (idempotent; see the module docstring)."""
    Event.ack = _ack_only_tracked  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset_contiguous  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap_from_committed  # type: ignore[method-assign]
    Consumer.perform_seek = _perform_seek  # type: ignore[method-assign]
    Consumer.seek = _seek_read_below  # type: ignore[method-assign]
    Consumer._wait_next_records = _wait_next_records_fresh  # type: ignore[method-assign]
