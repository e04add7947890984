"""Which rows a restarted snapshot deletes (connectors/snapshot.py), over an in-memory topic log.

The Kafka reads are replaced by a list of records; the integration counterpart, with kill -9 of
the real connectors, is tests/integration/test_snapshot_restart.py.
"""

from __future__ import annotations

from connectors.base import ChangeEvent
from connectors.snapshot import StaleSnapshotRows
from streams.core.catalogue import catalogue

MARKET = catalogue().department("market")
REG = MARKET.datasets["enterprise_registration"]
SOURCE = {"connector": "postgresql", "dept": "market", "db": "m1", "schema": "public", "table": "enterprise_registration",
          "position": "0/10", "seq": 16, "ts_ms": 1_709_294_400_000, "snapshot": "true", "tx_id": None}


class TopicLog(StaleSnapshotRows):
    """``StaleSnapshotRows`` over ``log``: (topic, key, envelope) records of partition 0, in order."""

    def __init__(self, log: list[tuple[str, str, dict]], db: str = "m1") -> None:
        super().__init__("market@m1", MARKET.datasets.values(), offsets=None, connector="postgresql", db=db)
        self.log = log

    def _watermarks(self):
        return {(REG.topic, 0): (0, len(self.log))}

    def _read(self, first, end):
        for topic, key, env in self.log[first[REG.topic, 0]:end[REG.topic, 0]]:
            if env["source"]["connector"] == self._connector and env["source"]["db"] == self._db:
                yield topic, key, env


def record(key: str, op: str = "r", seq: int = 16, db: str = "m1") -> tuple[str, str, dict]:
    row = {"uscc": key, "name": f"enterprise {key}"}
    before, after = (row, None) if op == "d" else (None, row)
    return REG.topic, key, {"op": op, "before": before, "after": after, "source": {**SOURCE, "seq": seq, "db": db}}


def snapshot_event(key: str) -> ChangeEvent:
    return ChangeEvent(REG, "r", None, {"uscc": key}, SOURCE, key, 0)


def deleted(stale: StaleSnapshotRows, position: str = "0/20", seq: int = 32) -> dict[str, ChangeEvent]:
    return {e.key: e for chunk in stale.deletes(position, seq) for e in chunk}


def test_a_first_snapshot_records_where_it_starts_and_deletes_nothing():
    log = [record("A", db="other"), record("B", op="d")]
    stale = TopicLog(log)
    assert stale.start(None) == [{"topic": REG.topic, "partition": 0, "offset": 2}]
    stale.found([snapshot_event("A")])
    assert deleted(stale) == {}


def test_rows_of_the_interrupted_run_the_restart_does_not_find_get_a_delete():
    log = [record("OLD", seq=3)]  # before the interrupted run: not its business
    first = TopicLog(log).start(None)
    log += [record("A"), record("B"), record("C"), record("X", db="other")]
    stale = TopicLog(log)
    saved = {"snapshot_completed": False, "snapshot_start": first}
    assert stale.start(saved) == first, "the first unfinished run's start is kept"
    stale.found([snapshot_event("A"), snapshot_event("NEW")])
    stale.found([snapshot_event("C")])
    deletes = deleted(stale, "0/20", 32)
    assert list(deletes) == ["B"]
    d = deletes["B"]
    assert (d.op, d.before, d.after, d.ack_position) == ("d", {"uscc": "B", "name": "enterprise B"}, None, 0)
    assert {k: d.source[k] for k in ("db", "position", "seq", "snapshot", "tx_id")} == {
        "db": "m1", "position": "0/20", "seq": 32, "snapshot": "true", "tx_id": None}


def test_a_run_killed_while_deleting_is_not_repeated_and_all_earlier_runs_count():
    log: list = []
    first = TopicLog(log).start(None)
    log += [record("A"), record("B")]  # run 1, killed
    log += [record("A"), record("B", op="d"), record("C")]  # run 2 found A, deleted B, read C, killed
    stale = TopicLog(log)
    stale.start({"snapshot_completed": False, "snapshot_start": first})
    stale.found([])  # run 3: A and C deleted at the source since
    assert sorted(deleted(stale)) == ["A", "C"]


def test_an_offsets_record_without_snapshot_start_still_loads_and_deletes_nothing():
    log = [record("A")]
    stale = TopicLog(log)
    assert stale.start({"snapshot_completed": False}) == [{"topic": REG.topic, "partition": 0, "offset": 1}]
    assert deleted(stale) == {}


def test_a_completed_snapshot_is_not_looked_back_on():
    log = [record("A")]
    stale = TopicLog(log)
    stale.start({"snapshot_completed": True, "snapshot_start": None})
    assert deleted(stale) == {}
