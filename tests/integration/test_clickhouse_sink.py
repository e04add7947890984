"""ClickHouse sink against the real Kafka and an embedded chDB in the test's tmp_path.

The pipeline topics (``enterprise.*``, ``risk.changes``, ``dlq.*``) are shared with everything
else on the local stack, so each test starts its own consumer groups at the topics' current
end (the groups see only what was produced after the test began) and filters by its own
USCCs; the ``alerts.<bank>`` topic belongs to the test alone. A live worker elsewhere on the
stack may turn the test's ``enterprise.events`` into profiles and risk changes of its own, so
each record kind gets its own USCCs and each table is read for the USCCs of its kind only.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from connectors.runner import producer_config
from connectors.simulator.identities import make_uscc
from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
from sinks.runner import SUBSCRIPTION, ClickHouseSink, consumer_config
from streams.codecs.serde import schema_store
from streams.errors import SinkError
from streams.kafka.admin import commit_sync, ensure_topics, watermark_offsets
from streams.kafka.dlq import parse_dlq_headers
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

UTC = dt.UTC
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def ms(ts: dt.datetime) -> int:
    return round(ts.timestamp() * 1000)


# --- records ------------------------------------------------------------------------------------

def profile(uscc: str, version: int, status: str = "active", score: int = 720) -> dict:
    return {
        "uscc": uscc, "name": f"重庆测试{uscc[-6:]}有限公司", "status": status, "district_code": "500103",
        "industry_code": "C3011", "registered_capital": 500.0, "established_date": "2016-03-08",
        "legal_rep_pseudonym": "p_" + uscc[-8:].lower(), "legal_rep_id_masked": "5001**********123X",
        "legal_rep_name_masked": "张*", "legal_rep_phone_masked": "138****5678",
        "address_masked": "重庆市渝中区****", "abnormal_open_ids": ["ab-1", "ab-2"], "abnormal_listings_total": 3,
        "indicators": {"market.abnormal.open": 2.0, "court.enforcement.open": 1.0}, "ratings": {"tax.credit_rating": "B"},
        "risk_score": score, "risk_level": "B", "reason_codes": ["ABNORMAL_OPEN"],
        "score_factors": [{"code": "ABNORMAL_OPEN", "points": -240, "value": "2"}],
        "source_seqs": {"market.enterprise_registration": version},
        "version": version, "last_event_id": f"ev-{uscc}-{version}", "last_event_ts_ms": T0 + version,
        "updated_ts_ms": T0 + version + 500,
    }


def event(uscc: str, seq: int) -> dict:
    return {
        "event_id": f"market.enterprise_registration@{seq}#{uscc}", "uscc": uscc, "dept": "market",
        "dataset": "enterprise_registration", "op": "u",
        "attributes": {"status": "suspended", "legal_rep_id_number": "5001**********123X", "note": None},
        "before": {"status": "active"}, "source_topic": "dept.market.enterprise_registration",
        "source_partition": 2, "source_offset": 40 + seq, "position": f"0/{seq:X}", "seq": seq, "snapshot": "false",
        "event_ts_ms": T0 + seq, "ingest_ts_ms": T0 + seq + 30,
    }


def change(uscc: str, seq: int) -> dict:
    return {
        "change_id": f"market.enterprise_registration@{seq}#{uscc}/STATUS_SUSPENDED", "uscc": uscc,
        "category": "registration", "severity": "high", "reason_codes": ["STATUS_SUSPENDED"],
        "before": {"status": "active"}, "after": {"status": "suspended"}, "score_before": 720, "score_after": 540,
        "level_before": "B", "level_after": "C", "source_dataset": "market.enterprise_registration",
        "source_position": f"0/{seq:X}", "source_seq": seq, "event_ts_ms": T0 + seq, "detected_ts_ms": T0 + seq + 80,
    }


def alert(bank: str, c: dict) -> dict:
    return {
        "alert_id": f"{bank}/{c['change_id']}", "bank_id": bank, "consent_id": uuid.uuid4().hex,
        **{k: c[k] for k in ("change_id", "uscc", "category", "severity", "reason_codes", "before", "after",
                             "score_before", "score_after", "level_before", "level_after", "source_dataset",
                             "source_position", "source_seq", "event_ts_ms", "detected_ts_ms")},
        "published_ts_ms": c["detected_ts_ms"] + 20,
    }


# --- Kafka helpers ------------------------------------------------------------------------------

class Produced:
    """Produces and remembers where Kafka put each record (topic, partition, offset)."""

    def __init__(self, bootstrap: dict) -> None:
        self.producer = Producer(producer_config(bootstrap))
        self.where: list[tuple[str, int, int]] = []

    def send(self, topic: str, key: bytes | str, value: bytes) -> None:
        def done(err, msg):
            assert err is None, err
            self.where.append((msg.topic(), msg.partition(), msg.offset()))

        self.producer.produce(topic, key=key, value=value, on_delivery=done)

    def avro(self, topic: str, schema: str, record: dict) -> None:
        self.send(topic, record["uscc"], schema_store().encode(schema, record))

    def flush(self) -> list[tuple[str, int, int]]:
        assert self.producer.flush(30) == 0, "Kafka did not acknowledge the test records"
        return list(self.where)


SUBSCRIBED = [re.compile(p) if p.startswith("^") else re.compile(re.escape(p) + "$") for p in SUBSCRIPTION]


def current_ends(bootstrap: dict) -> list[TopicPartition]:
    """End offsets of every topic the sink subscribes to, right now. A topic that is still being
    created elsewhere is left out: the sink reads it from the start, which is harmless."""
    c = Consumer({**bootstrap, "group.id": f"ends-{uuid.uuid4().hex}"})
    out = []
    for t, md in sorted(c.list_topics(timeout=15).topics.items()):
        if md.error is not None or not any(p.match(t) for p in SUBSCRIBED):
            continue
        try:
            out += [TopicPartition(t, p, watermark_offsets(c, TopicPartition(t, p))[1]) for p in md.partitions]
        except KafkaException:
            continue
    c.close()
    return out


def start_group_at(bootstrap: dict, group: str, positions: list[TopicPartition]) -> None:
    """Commit ``positions`` for the (not yet running) group: the sink starts reading there."""
    c = Consumer({**bootstrap, "group.id": group, "enable.auto.commit": False})
    commit_sync(c, [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in positions])
    c.close()


def committed(bootstrap: dict, group: str, where: list[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    c = Consumer({**bootstrap, "group.id": group, "enable.auto.commit": False})
    parts = sorted({(t, p) for t, p, _ in where})
    out = {(tp.topic, tp.partition): tp.offset for tp in c.committed([TopicPartition(t, p) for t, p in parts], timeout=10)}
    c.close()
    return out


def covers(offsets: dict[tuple[str, int], int], where: list[tuple[str, int, int]]) -> bool:
    """True if the committed offsets are past every record in ``where``."""
    return all(offsets.get((t, p), -1) > o for t, p, o in where)


# --- sink in a thread ---------------------------------------------------------------------------

class RunningSink:
    """A ClickHouseSink in a background thread, stopped cleanly on ``stop()``."""

    def __init__(self, bootstrap: dict, group: str, writer: ClickHouseWriter) -> None:
        self.sink = ClickHouseSink(Consumer(consumer_config(bootstrap, group)), Producer(producer_config(bootstrap)),
                                   writer, schema_store(), batch_size=200, batch_seconds=0.2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sink.run()
        except BaseException as exc:  # noqa: BLE001 — reported to the test
            self.error = exc

    def stop(self) -> None:
        self.sink.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "sink did not stop"
        assert self.error is None, f"sink failed: {self.error!r}"


class Store:
    """The test's own embedded chDB: one open client at a time (chDB allows one path per process)."""

    def __init__(self, path) -> None:
        self.dsn = f"chdb://{path}"
        self.writer: ClickHouseWriter | None = None

    def open(self, writer_cls=ClickHouseWriter) -> ClickHouseWriter:
        assert self.writer is None
        client = open_client(self.dsn, "yurong")
        apply_schema(client)
        self.writer = writer_cls(client)
        return self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.client.close()
            self.writer = None

    def query(self, sql: str, **params) -> list[tuple]:
        with self.writer.lock:
            return self.writer.client.query(sql, parameters=params).result_rows

    def count(self, table: str, usccs: list[str], final: bool = True) -> int:
        return self.query(f"SELECT count() FROM {table} {'FINAL' if final else ''} WHERE uscc IN {{u:Array(String)}}",
                          u=usccs)[0][0]


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store(tmp_path / "chdb")
    yield s
    s.close()


@pytest.fixture
def usccs(unique) -> list[str]:
    rng = random.Random(unique)
    return sorted({make_uscc(rng, "500103") for _ in range(3)})


@dataclass
class Ids:
    """Disjoint USCCs per record kind (see the module docstring)."""

    profiles: list[str]
    events: list[str]
    changes: list[str]

    def of(self, table: str) -> list[str]:
        return {"enterprise_profile": self.profiles, "enterprise_event": self.events}.get(table, self.changes)


@pytest.fixture
def ids(unique) -> Ids:
    rng = random.Random(f"kinds-{unique}")
    codes: list[str] = []
    while len(codes) < 9:
        code = make_uscc(rng, "500103")
        if code not in codes:
            codes.append(code)
    return Ids(sorted(codes[:3]), sorted(codes[3:6]), sorted(codes[6:]))


@pytest.fixture
def bank(kafka_admin, unique) -> str:
    bank_id = f"b9{random.Random(unique).randint(0, 999):03d}"
    ensure_topics(kafka_admin, {f"alerts.{bank_id}": {}})
    return bank_id


def produce_every_kind(bootstrap: dict, ids: Ids, bank: str) -> tuple[list, dict]:
    out = Produced(bootstrap)
    changes = {}
    for i in range(3):
        seq = 1000 + i
        out.avro("enterprise.events", "enterprise/event", event(ids.events[i], seq))
        out.avro("enterprise.profiles", "enterprise/profile", profile(ids.profiles[i], version=seq))
        changes[ids.changes[i]] = change(ids.changes[i], seq)
        out.avro("risk.changes", "risk/change", changes[ids.changes[i]])
    out.avro(f"alerts.{bank}", "risk/alert", alert(bank, changes[ids.changes[0]]))
    return out.flush(), changes


TABLES = ("enterprise_profile", "enterprise_event", "risk_change", "alert_delivery")
EXPECTED = {"enterprise_profile": 3, "enterprise_event": 3, "risk_change": 3, "alert_delivery": 1}


def all_landed(store: Store, ids: Ids) -> bool:
    return all(store.count(t, ids.of(t)) >= EXPECTED[t] for t in TABLES)


# --- tests --------------------------------------------------------------------------------------

def test_every_record_kind_lands_in_its_table_with_its_values(kafka_admin, store, ids, bank, unique):
    group = f"test-sink-{unique}"
    start_group_at(kafka_admin, group, current_ends(kafka_admin))
    where, changes = produce_every_kind(kafka_admin, ids, bank)
    writer = store.open()
    sink = RunningSink(kafka_admin, group, writer)
    try:
        wait_for(lambda: all_landed(store, ids), 30, "rows of every kind for the test's USCCs")
    finally:
        sink.stop()

    u = ids.profiles[0]
    (p,) = store.query(
        "SELECT name, status, district_code, registered_capital, established_date, legal_rep_pseudonym,"
        " legal_rep_id_masked, legal_rep_name_masked, legal_rep_phone_masked, address_masked, abnormal_open_count,"
        " abnormal_listings_total, risk_score, risk_level, reason_codes, version, last_event_id, last_event_ts,"
        " updated_ts FROM enterprise_profile FINAL WHERE uscc = {u:String}", u=u)
    assert p[:4] == (f"重庆测试{u[-6:]}有限公司", "active", "500103", 500.0)
    assert p[4] == dt.date(2016, 3, 8)
    assert p[5:10] == ("p_" + u[-8:].lower(), "5001**********123X", "张*", "138****5678", "重庆市渝中区****")
    assert p[10:15] == (2, 3, 720, "B", ["ABNORMAL_OPEN"])
    assert (p[15], p[16]) == (1000, f"ev-{u}-1000")
    assert (ms(p[17]), ms(p[18])) == (T0 + 1000, T0 + 1500)  # epoch ms survive as DateTime64(3, UTC)

    u = ids.events[0]

    (e,) = store.query("SELECT event_id, dept, dataset, op, attributes, before, source_topic, source_partition,"
                       " source_offset, seq, event_ts, ingest_ts FROM enterprise_event WHERE uscc = {u:String}", u=u)
    assert e[:4] == (f"market.enterprise_registration@1000#{u}", "market", "enterprise_registration", "u")
    assert e[4] == {"status": "suspended", "legal_rep_id_number": "5001**********123X", "note": None}
    assert e[5] == {"status": "active"}
    assert e[6:10] == ("dept.market.enterprise_registration", 2, 1040, 1000)
    assert (ms(e[10]), ms(e[11])) == (T0 + 1000, T0 + 1030)

    u = ids.changes[0]

    (c,) = store.query("SELECT change_id, category, severity, reason_codes, before, after, score_before, score_after,"
                       " level_after, detected_ts FROM risk_change WHERE uscc = {u:String}", u=u)
    assert c[:4] == (changes[u]["change_id"], "registration", "high", ["STATUS_SUSPENDED"])
    assert c[4:9] == ({"status": "active"}, {"status": "suspended"}, 720, 540, "C")
    assert ms(c[9]) == T0 + 1080

    (a,) = store.query("SELECT alert_id, bank_id, change_id, uscc, topic, partition, offset, published_ts"
                       " FROM alert_delivery WHERE bank_id = {b:String}", b=bank)
    alert_at = next((p_, o) for t, p_, o in where if t == f"alerts.{bank}")
    assert a[:4] == (f"{bank}/{changes[u]['change_id']}", bank, changes[u]["change_id"], u)
    assert (a[4], a[5], a[6]) == (f"alerts.{bank}", *alert_at)  # the audit names the delivery's Kafka position
    assert ms(a[7]) == T0 + 1100

    assert covers(committed(kafka_admin, group, where), where), "the sink committed past what it wrote"


def test_replay_by_another_group_changes_nothing_and_the_highest_version_wins(
        kafka_admin, store, ids, bank, unique):
    start = current_ends(kafka_admin)
    first, second = f"test-sink-{unique}-a", f"test-sink-{unique}-b"
    start_group_at(kafka_admin, first, start)
    where, _ = produce_every_kind(kafka_admin, ids, bank)
    # an update of the first enterprise, then a late duplicate of its older record
    again = Produced(kafka_admin)
    again.avro("enterprise.profiles", "enterprise/profile", profile(ids.profiles[0], version=5000, status="suspended", score=480))
    again.flush()
    again.avro("enterprise.profiles", "enterprise/profile", profile(ids.profiles[0], version=1000))
    where += again.flush()

    snapshot_sql = {
        "enterprise_profile": "SELECT uscc, status, risk_score, version FROM enterprise_profile FINAL"
                              " WHERE uscc IN {u:Array(String)} ORDER BY uscc",
        "enterprise_event": "SELECT uscc, event_id FROM enterprise_event FINAL WHERE uscc IN {u:Array(String)} ORDER BY ALL",
        "risk_change": "SELECT uscc, change_id FROM risk_change FINAL WHERE uscc IN {u:Array(String)} ORDER BY ALL",
        "alert_delivery": "SELECT alert_id, offset FROM alert_delivery FINAL WHERE uscc IN {u:Array(String)} ORDER BY ALL",
    }

    def snapshot() -> dict[str, list]:
        return {t: store.query(q, u=ids.of(t)) for t, q in snapshot_sql.items()}

    writer = store.open()
    sink = RunningSink(kafka_admin, first, writer)
    try:
        wait_for(lambda: covers(committed(kafka_admin, first, where), where), 30, "the first sink to commit")
    finally:
        sink.stop()
    before = snapshot()
    assert [len(before[t]) for t in TABLES] == [3, 3, 3, 1]
    assert before["enterprise_profile"][0] == (ids.profiles[0], "suspended", 480, 5000)

    store.close()  # the second run opens the same path after the first let go of it
    start_group_at(kafka_admin, second, start)  # replays exactly what the first group read
    writer = store.open()
    sink = RunningSink(kafka_admin, second, writer)
    try:
        wait_for(lambda: covers(committed(kafka_admin, second, where), where), 30, "the replaying sink to commit")
    finally:
        sink.stop()
    assert snapshot() == before


class FlakyWriter(ClickHouseWriter):
    """Test double of the writer: the first inserts that carry the test's rows fail.

    Call 1 fails before inserting (ClickHouse down); call 2 inserts and then fails (the
    acknowledgement is lost). Every call records the sink group's committed offsets first.
    """

    bootstrap = group = ""
    usccs: list[str] = []
    where: list[tuple[str, int, int]] = []

    def __init__(self, client) -> None:
        super().__init__(client)
        self.calls: list[tuple[str, bool]] = []  # (table, committed offsets already covered our records)

    def write(self, table, rows, dedup_token):
        if not any(v in self.usccs for r in rows for v in r[:5]):
            return super().write(table, rows, dedup_token)
        self.calls.append((table, covers(committed(self.bootstrap, self.group, self.where), self.where)))
        if len(self.calls) == 1:
            raise SinkError("ClickHouse is down (test double)")
        super().write(table, rows, dedup_token)
        if len(self.calls) == 2:
            raise SinkError("acknowledgement lost after the insert (test double)")


def test_offsets_are_committed_only_after_the_write_and_a_failed_batch_is_retried_not_skipped(
        kafka_admin, store, usccs, unique):
    group = f"test-sink-{unique}"
    start_group_at(kafka_admin, group, current_ends(kafka_admin))
    out = Produced(kafka_admin)
    for i, u in enumerate(usccs):
        out.avro("enterprise.profiles", "enterprise/profile", profile(u, version=2000 + i))
        out.avro("risk.changes", "risk/change", change(u, 2000 + i))
    where = out.flush()

    FlakyWriter.bootstrap, FlakyWriter.group, FlakyWriter.usccs, FlakyWriter.where = kafka_admin, group, usccs, where
    writer = store.open(FlakyWriter)
    sink = RunningSink(kafka_admin, group, writer)
    try:
        wait_for(lambda: store.count("enterprise_profile", usccs) == 3 and store.count("risk_change", usccs) == 3,
                 30, "the retried batch to be written")
        wait_for(lambda: covers(committed(kafka_admin, group, where), where), 30, "the commit after the write")
    finally:
        sink.stop()
    assert len(writer.calls) >= 3, f"the failing inserts were not retried: {writer.calls}"
    assert not any(done for _, done in writer.calls), f"offsets were committed before the write: {writer.calls}"
    # the retry carries the same de-duplication token: the insert whose ack was lost is not doubled
    assert store.count("enterprise_profile", usccs, final=False) == 3
    assert store.count("risk_change", usccs, final=False) == 3


def test_undecodable_records_are_dead_lettered_and_the_stream_keeps_flowing(
        kafka_admin, store, usccs, unique, topic_reader):
    group = f"test-sink-{unique}"
    start_group_at(kafka_admin, group, current_ends(kafka_admin))
    key = f"bad-{unique}".encode()
    garbage = b"\x00\x01 not avro at all " + unique.encode()
    wrong_schema = schema_store().encode("enterprise/event", event(usccs[0], 3000))  # valid Avro, wrong topic
    out = Produced(kafka_admin)
    out.send("enterprise.profiles", key, garbage)
    out.producer.flush(30)
    out.send("enterprise.profiles", key, wrong_schema)
    out.producer.flush(30)
    out.avro("enterprise.profiles", "enterprise/profile", profile(usccs[1], version=3001))
    (g_at, w_at, ok_at) = out.flush()

    reader = topic_reader(["dlq.enterprise.profiles"])
    writer = store.open()
    sink = RunningSink(kafka_admin, group, writer)

    def dead_letters() -> dict[int, object]:
        reader.poll()
        return {int(parse_dlq_headers(m.headers())["offset"]): m for m in reader.messages
                if m.key() == key and parse_dlq_headers(m.headers()).get("component") == "sink"}

    def dlq_rows() -> list[tuple]:
        return store.query("SELECT source_offset, error_kind, error_class, value_bytes, component FROM dlq_event FINAL"
                           " WHERE source_topic = 'enterprise.profiles' AND source_partition = {p:Int32}"
                           " AND source_offset IN {o:Array(Int64)} ORDER BY source_offset",
                           p=g_at[1], o=[g_at[2], w_at[2]])
    try:
        dl = wait_for(lambda: {g_at[2], w_at[2]} <= set(dead_letters()) and dead_letters(), 30,
                      "dead letters for both bad records on dlq.enterprise.profiles")
        wait_for(lambda: store.count("enterprise_profile", [usccs[1]]) == 1, 30, "the valid record after the bad ones")
        # (another sink on the shared stack may dead-letter the same records: one row each at least)
        rows = wait_for(lambda: {r[0] for r in dlq_rows()} == {g_at[2], w_at[2]} and dlq_rows(), 30,
                        "dlq_event rows for both bad records")
    finally:
        sink.stop()

    for (_, part, off), original, kind in ((g_at, garbage, "decode"), (w_at, wrong_schema, "schema_mismatch")):
        msg = dl[off]
        h = parse_dlq_headers(msg.headers())
        assert msg.value() == original, "a dead letter keeps the original bytes"
        assert (h["topic"], h["partition"], h["offset"], h["error.kind"]) == ("enterprise.profiles", str(part), str(off), kind)
        assert h["error.message"]
    assert set(rows) == {(g_at[2], "decode", "DecodeError", len(garbage), "sink"),
                         (w_at[2], "schema_mismatch", "SchemaMismatchError", len(wrong_schema), "sink")}
    assert store.count("enterprise_profile", [usccs[0]]) == 0  # the event record did not become a profile
    assert covers(committed(kafka_admin, group, [ok_at]), [ok_at])
