"""The stall guard's decision (streams/worker/faust_fixes/liveness.py): which partitions dropped fetched records.

faust-streaming 0.15.3 can drop a fetched record without handing it to its agent and without
acknowledging it: its stream loop skips records that arrive while flow control is suspended or
that were fetched in an older consumer generation (``faust/_cython/streams.pyx``,
``_prepare_event``); ``Consumer.getmany`` drops the rest of a fetched batch when the generation
changes while it hands the batch on; and the fetcher marks every record it passed on as read
(``Consumer._read_offset``), even one whose delivery was abandoned. Nothing is lost: the record is
never acknowledged, so no commit passes it (streams/worker/faust_fixes/acks.py;
tests/e2e/test_no_skip.py asserts it). But around a restart the drop can come *after* the
recovery's seek to the committed offsets, and then nothing fetches the record again until the
next rebalance: a risk change waits indefinitely for its alert. tests/e2e/test_no_skip.py restarts
the worker while changes wait, and meets such drops regularly.

The guard looks at each assigned partition of a topic the agents acknowledge, when no agent has
records queued. Normally every record the consumer fetched is acknowledged and committed within a
commit interval (its fetch position equals the committed offset), or it is still being handled:
in flight in an agent, or acknowledged and waiting for a commit that can happen. Records
acknowledged *after* a dropped one cannot be committed (acks.py fix 2), so they do not make the
partition busy. A partition fetched past its committed offset with nothing of it being handled, in
two checks in a row with nothing fetched or committed in between, has dropped records: it is
sought back to its committed offset and they are read again. One look is not enough, since a
fetched record may still be on its way to its agent. Re-reading is safe because every agent is
idempotent (profile versions and source positions, alert de-duplication). While agents are busy
(records queued) the guard waits: a dropped record is re-read at the next quiet moment, never
skipped.
"""

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
