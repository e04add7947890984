"""streams/acks.py with Faust's own objects (no broker): a record a stream skipped during a
rebalance is not acknowledged, so its offset cannot be committed; a handled one is."""

from __future__ import annotations

import faust
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams import acks


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
    assert _event(app, 5, tracked=False).ack() is False  # skipped while the flow was suspended
    assert dict(consumer._acked) == {}
    assert _event(app, 6, tracked=True).ack() is True
    assert dict(consumer._acked) == {TP("t", 0): [6]}


def _consumer(committed: int):
    acks.install()
    consumer = faust.App(f"acks-test-{committed}", broker="kafka://127.0.0.1:1").consumer
    consumer._committed_offset[TP("t", 0)] = committed
    return consumer


def test_a_commit_never_passes_the_committed_offset_when_that_record_was_not_handled():
    # Kafka's committed offset is the next record to read: 8 committed and 9 handled leaves 8
    # unhandled (Faust 0.15.3 committed 10 here).
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
    asyncio.run(consumer._add_gap(TP("t", 0), 7 + 1, 10))  # as the fetcher calls it: read offset 7 (+1) to 10
    consumer._acked[TP("t", 0)] = [11]
    assert consumer._new_offset(TP("t", 0)) == 12


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
