"""The stall guard's decision (streams/worker/faust_fixes/liveness.py): which partitions dropped fetched records."""

from __future__ import annotations

from faust.types import TP

from streams.worker.faust_fixes.liveness import PartitionState, stalled

TP0, TP1 = TP("risk.changes", 0), TP("risk.changes", 1)


def test_a_partition_fetched_past_its_commit_with_nothing_being_handled_twice_in_a_row_is_stalled():
    dropped = PartitionState(committed=567, position=568, busy=False)
    assert stalled({}, {TP0: dropped}) == set(), "one look is not enough: the record may be on its way"
    assert stalled({TP0: dropped}, {TP0: dropped}) == {TP0}


def test_progress_or_work_in_hand_is_not_a_stall():
    before = PartitionState(committed=567, position=568, busy=False)
    assert stalled({TP0: before}, {TP0: PartitionState(567, 569, False)}) == set(), "fetched more since"
    assert stalled({TP0: before}, {TP0: PartitionState(568, 568, False)}) == set(), "committed since"
    busy = PartitionState(567, 568, True)
    assert stalled({TP0: busy}, {TP0: busy}) == set(), "in an agent's hands (e.g. waiting for Redis) or awaiting commit"


def test_a_partition_read_up_to_its_commit_is_idle_not_stalled():
    idle = PartitionState(committed=567, position=567, busy=False)
    unknown = PartitionState(committed=567, position=None, busy=False)
    assert stalled({TP0: idle, TP1: unknown}, {TP0: idle, TP1: unknown}) == set()


def test_records_handled_after_a_dropped_one_do_not_make_a_partition_busy():
    from streams.worker.faust_fixes.liveness import busy

    assert busy(in_flight=True, committed=15, first_handled=None), "in an agent's hands"
    assert busy(in_flight=False, committed=15, first_handled=15), "15 handled: the commit can move"
    assert not busy(in_flight=False, committed=15, first_handled=16), "15 was dropped: 16 cannot be committed"
    assert not busy(in_flight=False, committed=15, first_handled=None)
