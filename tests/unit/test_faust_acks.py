"""streams/worker/faust_fixes/acks.py with Faust's own objects (no broker; the driver's fetch and
seek are stubbed): a record a stream skipped during a rebalance is not acknowledged, so its offset
cannot be committed; a handled one is; records fetched around a seek never make a hole of records
that exist. Each test fails on faust-streaming 0.15.3 without the fix it concerns (numbered as in
acks.py), or checks that a fix leaves Faust's behaviour alone where it should.

Faust's bookkeeping per partition: ``Consumer._committed_offset`` is Kafka's committed offset, the
*next* record to read; ``_acked`` holds the offsets agents acknowledged; ``_gap`` holds offsets
that do not exist (holes), counted as handled; ``_read_offset`` is the last record the fetch loop
handed on. A commit moves to one past the run of handled offsets.

1. Skipped records. A stream skips the records it takes off an agent's queue during a rebalance
   (flow control suspended, or a record fetched in an older consumer generation). The Cython loop
   (``faust/_cython/streams.pyx``, used where the extension is built, as on this project's
   machines) leaves a skipped record unacknowledged; the pure-Python one (``Stream._py_aiter``:
   PyPy, or a source install without a compiler) acknowledges it, and the commit passes a record
   no agent had. With the fix only records a stream took up (``message.tracked``) are acknowledged.
2. The first handled offset. ``_new_offset`` accepts a first acknowledged offset one above the
   committed one: with 8 committed and 9 acknowledged it commits 10, past record 8. That happens
   when a stream skips record 8 during a rebalance (see 1) and handles 9 after it. With the fix
   the commit waits until the committed offset's own record is handled (or counted as a hole).
3. Holes. When the fetcher hands on a record more than one offset after the previous one, the
   offsets between do not exist (a compacted topic, or retention deleted them while the worker
   was down) and Faust counts them as handled (``_add_gap``): from ``committed + 1`` on, the same
   off-by-one as 2, and up to and including the record after the hole, which is thereby "handled"
   before any agent had it; if its stream skips it in a rebalance, it is committed past. With the
   fix a hole counts from the committed offset on (so a hole there does not stop the commit of 2)
   up to, not including, the record after it.
4. The read offset after a seek. Faust sets ``_read_offset`` to the offset sought to, while
   everywhere else it is the last record handed on. On a compacted topic a hole starting right at
   the committed offset is then never counted, and with 2 the commit would stop there. With the
   fix a seek to offset N sets the read offset to N - 1.
5. Partitions with nothing committed (or 0). aiokafka does not seek such a partition after a
   rebalance (its fetch position stays wherever it was), and Faust keeps ``None`` as its committed
   offset, so neither 2 nor a re-read applies: a dropped first record is committed past as soon
   as a later one is handled. With the fix the partition is sought to its log start (what
   ``auto_offset_reset=earliest`` reads after a restart), which counts as committed.
6. Records fetched around a seek. Faust takes a record more than one offset above the read offset
   for the end of a hole (3), but after a seek the records in hand may not continue from the read
   offset for other reasons:

   - a batch fetched from the old position arrives after a rebalance's (or the stall guard's)
     seek back;
   - aiokafka seeks the partitions one by one (a round trip each for the committed offset) while
     Faust sets the read offsets only at the end, so records fetched from the new position
     meanwhile are dropped as "read already" and the next one makes a hole of them;
   - the fetch loop lets other tasks run every 100 records, between taking a record and comparing
     it with the read offset, and a seek can come in that window.

   Each way, records an agent never had are counted as handled and committed past; a worker
   joining and leaving a group that drains a backlog meets all three (tests/e2e/test_rebalance.py).
   With the fix nothing is handed on while the partitions are sought to their committed offsets
   (the flow is held); a partition's records from a fetch begun before its latest seek are handed
   on only while they continue from the read offset, the rest of the batch is dropped and the
   partition sought back to the next record before the next fetch; and a hole found in such a
   record is not counted, the partition is sought back to the hole's start instead. A true hole (a
   compacted topic) is met again by a fetch begun after every seek, and counted as before.

Records dropped without acknowledgement are thus never committed past, and the stall guard
(streams/worker/faust_fixes/liveness.py) reads them again instead of waiting for the next restart.
"""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.worker.faust_fixes import acks

_made: list = []


@pytest.fixture(autouse=True)
def _close_consumer_threads():
    """Each Faust consumer makes an event loop for its (never started) thread: closed here."""
    yield
    while _made:
        _made.pop()._thread.thread_loop.close()


def _event(app: faust.App, offset: int, tracked: bool) -> Event:
    message = ConsumerMessage("t", 0, offset, 0.0, None, 0, None, None, b"k", b"v", None, tp=TP("t", 0), generation_id=1)
    message.tracked = tracked  # a stream sets it when it hands the record to the agent
    message.incref(1)
    return Event(app, b"k", b"v", None, message)


def test_only_records_a_stream_took_up_are_acknowledged():
    acks.install()
    app = faust.App("acks-test", broker="kafka://127.0.0.1:1")
    app.topics.acking_topics.add("t")
    consumer = app.consumer
    _made.append(consumer)
    assert _event(app, 5, tracked=False).ack() is False  # skipped while the flow was suspended
    assert dict(consumer._acked) == {}
    assert _event(app, 6, tracked=True).ack() is True
    assert dict(consumer._acked) == {TP("t", 0): [6]}


def _consumer(committed: int):
    acks.install()
    consumer = faust.App(f"acks-test-{committed}", broker="kafka://127.0.0.1:1").consumer
    _made.append(consumer)
    consumer._committed_offset[TP("t", 0)] = committed
    return consumer


def test_a_commit_never_passes_the_committed_offset_when_that_record_was_not_handled():
    # Kafka's committed offset is the next record to read: 8 committed and 9 handled leaves 8
    # unhandled (Faust 0.15.3 commits 10 here: fix 2).
    consumer = _consumer(committed=8)
    consumer._acked[TP("t", 0)] = [9, 10]
    assert consumer._new_offset(TP("t", 0)) is None
    consumer._acked[TP("t", 0)] = [8, 9, 10]
    assert consumer._new_offset(TP("t", 0)) == 11


def test_a_hole_at_the_committed_offset_counts_as_handled():
    # 8-10 do not exist (compacted away, or deleted by retention while the worker was down): the
    # fetcher hands on 11 after a seek to 8, and the commit must not stop at 8.
    import asyncio

    consumer = _consumer(committed=8)
    asyncio.run(consumer._add_gap(TP("t", 0), 7 + 1, 11))  # as the fetcher calls it: read offset 7 (+1), the record 11
    consumer._acked[TP("t", 0)] = [11]
    assert consumer._new_offset(TP("t", 0)) == 12


def test_the_record_after_a_hole_is_not_counted_as_handled_by_the_hole():
    # Faust counts the hole up to and including the record it hands on next: if its stream skips
    # that record in a rebalance, it is committed past (fix 3).
    import asyncio

    consumer = _consumer(committed=8)
    asyncio.run(consumer._add_gap(TP("t", 0), 8, 11))
    consumer._acked[TP("t", 0)] = [12]  # 11 skipped, 12 handled
    assert consumer._new_offset(TP("t", 0)) == 11, "8-10 were a hole, 11 was not handled: commit 11, never past it"


def test_after_a_seek_the_read_offset_is_one_below_the_next_record():
    import asyncio

    consumer = _consumer(committed=8)

    async def _seek(tp, offset):  # the driver's seek; no broker here
        pass
    consumer._seek = _seek
    asyncio.run(consumer.seek(TP("t", 0), 8))
    assert consumer._read_offset[TP("t", 0)] == 7, "record 8 is the next to hand on, not one handed on"


def test_a_partition_with_nothing_committed_is_sought_to_its_log_start_which_counts_as_committed():
    import asyncio

    consumer = _consumer(committed=8)
    sought = {}

    async def seek_to_committed():  # the driver: one partition committed at 8, one never, one at 0
        return {TP("t", 0): 8, TP("t", 1): None, TP("t", 2): 0}

    async def earliest_offsets(*tps):
        return {tp: 5 if tp.partition == 1 else 0 for tp in tps}

    async def _seek(tp, offset):
        sought[tp] = offset
    consumer.seek_to_committed, consumer.earliest_offsets, consumer._seek = seek_to_committed, earliest_offsets, _seek
    asyncio.run(consumer.perform_seek())
    assert sought == {TP("t", 1): 5, TP("t", 2): 0}, "aiokafka does not seek these itself"
    assert {p: consumer._committed_offset[TP("t", p)] for p in range(3)} == {0: 8, 1: 5, 2: 0}
    assert consumer._read_offset[TP("t", 1)] == 4
    consumer._acked[TP("t", 2)] = [1, 2]  # record 0 dropped, 1-2 handled
    assert consumer._new_offset(TP("t", 2)) is None, "never commit past the first record of a fresh partition"


# --- 6: a batch fetched before a seek -------------------------------------------------------------

def _fetching_consumer(topic: str = "t", acking: bool = True):
    """A consumer on the running event loop whose driver calls are stubbed: ``consumer.fetches``
    lists ``(offsets, during)``, one per fetch — ``during`` (a coroutine function or None) runs
    while that fetch is under way, as a rebalance would; ``consumer.sought`` lists the driver's seeks."""
    from aiokafka.structs import ConsumerRecord

    acks.install()
    app = faust.App(f"acks-fetch-{topic}-{acking}", broker="kafka://127.0.0.1:1")
    if acking:
        app.topics.acking_topics.add(topic)
    consumer = app.consumer
    _made.append(consumer)
    consumer.loop = asyncio.get_running_loop()  # mode services keep the loop they were made on
    tp = TP(topic, 0)
    consumer.fetches, consumer.sought = [], []

    async def _getmany(active_partitions, timeout):
        offsets, during = consumer.fetches.pop(0)
        if during is not None:
            await during()
        return {tp: [ConsumerRecord(topic, 0, o, 0, 0, b"k", b"v", None, 1, 1, []) for o in offsets]}

    async def _seek(partition, offset):
        consumer.sought.append((partition, offset))

    consumer._getmany, consumer._seek = _getmany, _seek
    consumer.assignment = lambda: {tp}
    consumer._active_partitions = {tp}
    consumer.highwater = lambda tp: 1000
    return consumer, tp


def _seeking(consumer, tp, offset: int = 8):
    """What a rebalance (or the stall guard) does while a fetch is under way: seek ``tp`` back."""
    async def seek():
        await consumer.seek(tp, offset)
    return seek


async def _hand_on(consumer, tp, stall_guard_after: int | None = None) -> list[int]:
    """One round of Faust's fetch loop: the offsets ``Consumer.getmany`` hands on, each marked
    read as ``_drain_messages`` does (and a seek back to 8 after handing on ``stall_guard_after``)."""
    handed = []
    async for got_tp, message in consumer.getmany(timeout=1.0):
        handed.append(message.offset)
        consumer._read_offset[got_tp] = message.offset
        if message.offset == stall_guard_after:
            await consumer.seek(tp, 8)
    return handed


def test_records_fetched_before_a_seek_are_not_handed_on_past_the_offset_sought_to():
    """A rebalance seeks back to the committed offset 8 while a fetch from the old position (40)
    is under way: handing on 40 would make Faust count 8-39 as a hole and commit past them
    (fails without patch 6: 40-42 are handed on)."""
    async def scenario():
        consumer, tp = _fetching_consumer()

        consumer.fetches = [([40, 41, 42], _seeking(consumer, tp)), ([8, 9, 10], None)]
        assert await _hand_on(consumer, tp) == [], "records from before the seek are dropped"
        assert await _hand_on(consumer, tp) == [8, 9, 10]
        assert consumer.sought == [(tp, 8), (tp, 8)], "sought back before the next fetch"
        assert not consumer._gap.get(tp), "no hole counted"

    asyncio.run(scenario())


def test_a_stale_batch_that_continues_from_the_offset_sought_to_is_handed_on():
    async def scenario():
        consumer, tp = _fetching_consumer()

        consumer.fetches = [([8, 9], _seeking(consumer, tp))]
        assert await _hand_on(consumer, tp) == [8, 9]
        assert consumer.sought == [(tp, 8)], "nothing to seek back"

    asyncio.run(scenario())


def test_a_hole_fetched_after_the_seek_is_handed_on_as_before():
    """A compacted topic: 8-10 do not exist. A fetch begun after the seek hands on 11."""
    async def scenario():
        consumer, tp = _fetching_consumer()
        await consumer.seek(tp, 8)
        consumer.fetches = [([11, 12], None)]
        assert await _hand_on(consumer, tp) == [11, 12]

    asyncio.run(scenario())


def test_a_hole_met_by_a_stale_fetch_is_handed_on_by_the_fetch_after_the_seek_back():
    async def scenario():
        consumer, tp = _fetching_consumer()

        consumer.fetches = [([11, 12], _seeking(consumer, tp)), ([11, 12], None)]
        assert await _hand_on(consumer, tp) == []
        assert await _hand_on(consumer, tp) == [11, 12]

    asyncio.run(scenario())


def test_a_seek_in_the_middle_of_a_batch_drops_its_rest():
    """The stall guard seeks back to 8 after 9 was handed on: 10 is from before that seek."""
    async def scenario():
        consumer, tp = _fetching_consumer()
        await consumer.seek(tp, 8)
        consumer.fetches = [([8, 9, 10, 11], None), ([8, 9, 10, 11], None)]
        assert await _hand_on(consumer, tp, stall_guard_after=9) == [8, 9]
        assert await _hand_on(consumer, tp) == [8, 9, 10, 11]
        assert consumer.sought == [(tp, 8), (tp, 8), (tp, 8)]

    asyncio.run(scenario())


def test_a_rebalance_seek_of_every_partition_counts_for_each():
    async def scenario():
        consumer, tp = _fetching_consumer()

        async def seek_to_committed():
            return {tp: 8}

        async def rebalance():
            await consumer.perform_seek()

        consumer.seek_to_committed = seek_to_committed
        consumer.fetches = [([40, 41], rebalance)]
        assert await _hand_on(consumer, tp) == []

    asyncio.run(scenario())


def test_a_seek_between_the_check_and_the_hole_count_counts_no_hole():
    """The fetch loop lets other tasks run every 100 records, after taking a record and before
    comparing it with the read offset: a seek in that window makes the record look like the end
    of a hole."""
    async def scenario():
        consumer, tp = _fetching_consumer()
        await consumer.seek(tp, 30)
        consumer.fetches = [([30, 31], None), ([8, 9], None)]
        batch = consumer.getmany(timeout=1.0)
        await batch.__anext__()
        consumer._read_offset[tp] = 30
        _, record = await batch.__anext__()  # 31 continues from 30 ...
        await consumer.seek(tp, 8)  # ... then the stall guard seeks back before the fetch loop looks at it
        await consumer._add_gap(tp, consumer._read_offset[tp] + 1, record.offset)  # as the fetch loop then does
        assert not consumer._gap.get(tp), "8-30 are no hole"
        consumer._read_offset[tp] = record.offset
        await batch.aclose()
        assert await _hand_on(consumer, tp) == [8, 9]
        assert consumer.sought[-1] == (tp, 8), "sought back to the first offset the hole would have covered"

    asyncio.run(scenario())


def test_no_seek_back_when_a_rebalance_placed_the_partition_since():
    async def scenario():
        consumer, tp = _fetching_consumer()
        other = TP("t", 1)

        async def stall_guard():
            await consumer.seek(tp, 8)
            await consumer.seek(other, 3)  # later seeks of other partitions do not matter

        consumer.fetches = [([40], stall_guard)]
        assert await _hand_on(consumer, tp) == []
        consumer._committed_offset[tp] = 20
        consumer.seek_to_committed = _async({tp: 20})
        await consumer.perform_seek()  # a rebalance before the next fetch: committed 20 now
        consumer.fetches = [([20, 21], None)]
        assert await _hand_on(consumer, tp) == [20, 21]
        assert consumer.sought == [(tp, 8), (other, 3)], "not sought back to 8 over the rebalance's 20"

    asyncio.run(scenario())


def test_a_fresh_partition_read_from_offset_0_gets_its_stale_records_dropped_too():
    """Nothing read and committed 0 (patch 5): the next record to hand on is 0."""
    async def scenario():
        consumer, tp = _fetching_consumer()

        async def rebalance():
            consumer.seek_to_committed = _async({tp: 0})
            consumer.earliest_offsets = _async({tp: 0})
            await consumer.perform_seek()

        consumer.fetches = [([40, 41], rebalance), ([0, 1], None)]
        assert await _hand_on(consumer, tp) == []
        assert await _hand_on(consumer, tp) == [0, 1]

    asyncio.run(scenario())


def _async(value):
    async def call(*_args):
        return value
    return call


def test_nothing_is_handed_on_while_the_partitions_are_sought_to_their_committed_offsets():
    """aiokafka seeks one partition after the other and the read offsets follow at the end:
    records fetched from a new position before that would be dropped as "read already"."""
    async def scenario():
        consumer, tp = _fetching_consumer()
        during = []

        async def seek_to_committed():
            during.append(consumer.flow_active)
            return {tp: 8}

        consumer.seek_to_committed = seek_to_committed
        await consumer.perform_seek()
        assert during == [False] and consumer.flow_active, "held while seeking, resumed after"
        consumer.stop_flow()  # a rebalance stopped it: the seek leaves it to the rebalance
        await consumer.perform_seek()
        assert not consumer.flow_active

        async def rebalance_meanwhile():
            consumer.app.rebalancing_count += 1  # a rebalance began while the partitions were sought:
            consumer.stop_flow()  # it stops the flow and resumes it when its own recovery is done
            return {tp: 8}

        consumer.resume_flow()
        consumer.seek_to_committed = rebalance_meanwhile
        await consumer.perform_seek()
        assert not consumer.flow_active, "not resumed in the middle of that rebalance"

    asyncio.run(scenario())


def test_partitions_no_agent_acknowledges_are_left_as_faust_hands_them_on():
    """A table's changelog (read by recovery, which seeks on its own) is not checked."""
    async def scenario():
        consumer, tp = _fetching_consumer("t-changelog", acking=False)

        consumer.fetches = [([40, 41], _seeking(consumer, tp))]
        assert await _hand_on(consumer, tp) == [40, 41]

    asyncio.run(scenario())
