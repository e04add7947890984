"""The stream layer accepts what a real Debezium PostgreSQL connector writes.

One fresh market database; yurong's own connector and Debezium 3.6.1.Final (Kafka Connect
standalone, scripts/debezium.sh) both snapshot it and then stream the same live changes. Both
record streams are turned into enterprise events (``streams.codecs.debezium`` for Debezium's JSON
records, Avro decoding for ours), merged per USCC in source order with the pure
``to_enterprise_event`` + ``merge_event``, and the resulting profiles must be identical in every
business field. Needs Java 17 and Maven (fails under CI when missing, skips otherwise).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg2
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.simulator.market import MarketSimulator
from streams.codecs.debezium import DebeziumConverter, topic_datasets
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import merge_event
from streams.errors import DecodeError
from streams.kafka.admin import ensure_topics
from tests.conftest import TEST_KEY, end_offsets, free_port
from tests.harness import DebeziumScript, StreamPair, need_tools
from tests.integration.test_postgres_connector import RunningConnector

pytestmark = pytest.mark.integration

OUR_TOPICS = ["dept.market.enterprise_registration", "dept.market.abnormal_operation", "dept.market.equity_pledge"]
PROFILE_FIELDS = (
    "uscc", "name", "status", "district_code", "industry_code", "registered_capital", "established_date",
    "legal_rep_pseudonym", "legal_rep_id_masked", "legal_rep_name_masked", "legal_rep_phone_masked",
    "address_masked", "abnormal_listings_total", "risk_score", "risk_level", "reason_codes",
)


class Debezium(DebeziumScript):
    """scripts/debezium.sh run/stop for one database, with its own instance name and REST port."""

    def __init__(self, db: str, bootstrap: dict, pg_port: int) -> None:
        super().__init__(f"test-{db}", {
            "YURONG_DEBEZIUM_DBNAME": db,
            "YURONG_DEBEZIUM_REST_PORT": str(free_port()),
            "YURONG_KAFKA_PORT": bootstrap["bootstrap.servers"].split(",")[0].rpartition(":")[2],
            "YURONG_PG_PORT": str(pg_port),
        })
        self.slot = f"debezium_{db}"


class TailReader:
    """Reads topics from their current end on (the shared topics hold every earlier test's records)."""

    def __init__(self, bootstrap: dict, topics: list[str]) -> None:
        self.consumer = Consumer({**bootstrap, "group.id": f"test-tail-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False})
        assignment = []
        for topic in topics:
            for p, end in end_offsets(bootstrap, topic).items():
                assignment.append(TopicPartition(topic, p, end))
        self.consumer.assign(assignment)
        self.messages: list = []

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.messages.extend(m for m in self.consumer.consume(num_messages=5000, timeout=0.2) if m.error() is None)

    def close(self) -> None:
        self.consumer.close()


def _debezium_envelopes(reader, conv: DebeziumConverter, db: str) -> list[tuple]:
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue  # tombstone
        got = conv.envelope(m.value())
        if got is not None and got[1]["source"]["db"] == db:
            out.append((got[0], got[1], m.topic(), m.partition(), m.offset()))
    return out


def _our_envelopes(reader, db: str) -> list[tuple]:
    schemas = schema_store()
    datasets = {ds.topic: ds for ds in catalogue().department("market").datasets.values()}
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue
        ds = datasets[m.topic()]
        try:
            _, env = schemas.decode(m.value(), ds.schema_name)
        except DecodeError:
            continue  # other tests' deliberately bad records
        if env["source"]["db"] == db:
            out.append((ds, env, m.topic(), m.partition(), m.offset()))
    return out


def _drop_slot(dsn: str, slot: str) -> None:
    """Drop Debezium's slot once its walsender has gone (it outlives the JVM by a moment)."""
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        deadline = time.monotonic() + 15
        while True:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if row is None:
                break
            if not row[0]:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    pg.close()


def _profiles(records: list[tuple]) -> dict[str, dict]:
    """Ingest + merge, per USCC in source order (snapshot first, then by position)."""
    pseudonymizer = Pseudonymizer(TEST_KEY.encode())
    events = []
    for ds, env, topic, partition, offset in records:
        ev = to_enterprise_event(ds, env, Provenance(topic, partition, offset), pseudonymizer, 0)
        events.append((env["op"] != "r", ev["seq"], ev))
    events.sort(key=lambda t: (t[0], t[1]))  # stable: same-seq snapshot rows keep topic order
    profiles: dict[str, dict] = {}
    for version, (_, _, ev) in enumerate(events):
        profiles[ev["uscc"]], _ = merge_event(profiles.get(ev["uscc"]), ev, version, 0)
    return {u: {f: p[f] for f in PROFILE_FIELDS} | {"abnormal_open": len(p["abnormal_open_ids"])}
            for u, p in profiles.items()}


def _changes(dsn: str, sim: MarketSimulator, usccs: list[str]) -> str:
    """Live changes, one transaction each; returns the sentinel USCC changed last."""
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("UPDATE enterprise_registration SET status = 'revoked', updated_at = now() WHERE uscc = %s", (usccs[0],))
        pg.commit()
        cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date, authority)"
                    " VALUES (%s, 'unreachable_address', '2026-11-01', '重庆市市场监督管理局')", (usccs[1],))
        pg.commit()
        cur.execute("UPDATE enterprise_registration SET registered_capital = registered_capital * 1.5 WHERE uscc = %s", (usccs[2],))
        pg.commit()
        cur.execute("UPDATE enterprise_registration SET legal_rep_name = '王小明', legal_rep_id_number = '34052419800101001X',"
                    " legal_rep_phone = '13800138000' WHERE uscc = %s", (usccs[3],))
        pg.commit()
        cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) VALUES (%s, 'annual_report_missing',"
                    " '2026-06-30') RETURNING id", (usccs[4],))
        listing = cur.fetchone()[0]
        pg.commit()
        cur.execute("DELETE FROM abnormal_operation WHERE id = %s", (listing,))
        pg.commit()
    sim.step(40, today=dt.date(2026, 11, 27))  # the simulator's own mix, incl. distress paths
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("UPDATE enterprise_registration SET status = 'suspended', updated_at = now() WHERE uscc = %s", (usccs[-1],))
    return usccs[-1]


def _has_sentinel(sentinel: str) -> Callable[[list[tuple]], bool]:
    """Whether records hold the last of ``_changes``: the sentinel's suspension."""
    def has(records: list[tuple]) -> bool:
        return any(e[1]["op"] == "u" and e[1]["after"]["uscc"] == sentinel and e[1]["after"]["status"] == "suspended"
                   for e in records)
    return has


def test_debezium_and_our_connector_give_the_same_profiles(department_db, pg_admin_dsn, kafka_admin):
    need_tools("java", "mvn")
    started = time.monotonic()
    dsn = department_db
    db = dsn.rsplit("/", 1)[1]
    sim = MarketSimulator(dsn, seed=11)
    sim.create_schema()
    usccs = sim.seed_enterprises(50)
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM abnormal_operation")
        listings_at_start = cur.fetchone()[0]

    dept = catalogue().department("market")
    conv = DebeziumConverter(dept)
    dbz_topics = list(topic_datasets(dept))
    # Created up front: a consumer subscribed to a topic that appears later waits for a rebalance
    # (tens of seconds); Debezium would otherwise auto-create them on its first record.
    ensure_topics(kafka_admin, {t: {} for t in dbz_topics}, partitions=4)
    ours_reader = TailReader(kafka_admin, OUR_TOPICS)
    dbz_reader = TailReader(kafka_admin, dbz_topics)

    dbz = Debezium(db, kafka_admin, urlsplit(pg_admin_dsn).port or 5432)
    ours = None
    try:
        dbz.run()
        ours = RunningConnector(dsn, kafka_admin)
        t_up = time.monotonic() - started
        streams = StreamPair({"ours": (ours_reader, lambda: _our_envelopes(ours_reader, db)),
                              "debezium": (dbz_reader, lambda: _debezium_envelopes(dbz_reader, conv, db))}, dbz.log_tail)
        snapshot_done = {k: t - started for k, t in
                         streams.wait_snapshots(50 + listings_at_start, f"both snapshots of {db}").items()}
        t_snap = time.monotonic() - started

        streams.wait_caught_up(_has_sentinel(_changes(dsn, sim, usccs)), "both streams to carry every change")
        t_stream = time.monotonic() - started
    finally:
        if ours is not None:
            ours.stop()
        dbz.stop()
        ours_reader.close()
        dbz_reader.close()
        shutil.rmtree(dbz.home, ignore_errors=True)
        _drop_slot(dsn, dbz.slot)  # department_db drops ours and the database
    assert ours.error is None

    mine, theirs = _our_envelopes(ours_reader, db), _debezium_envelopes(dbz_reader, conv, db)
    assert len(mine) == len(theirs)

    # Row images of every streamed change agree exactly, and so do the change positions.
    def streamed(records):
        return sorted((e[1]["source"]["seq"], e[1]["op"], e[0].name, repr(e[1]["before"]), repr(e[1]["after"]))
                       for e in records if e[1]["op"] != "r")
    s_mine, s_theirs = streamed(mine), streamed(theirs)
    assert [x[1:] for x in s_mine] == [x[1:] for x in s_theirs]
    assert [x[0] for x in s_mine] == [x[0] for x in s_theirs], "both connectors report the change's LSN"
    assert {e[1]["source"]["snapshot"] for e in theirs if e[1]["op"] == "r"} <= {"true", "last"}

    p_mine, p_theirs = _profiles(mine), _profiles(theirs)
    assert len(p_mine) >= 50
    assert p_theirs == p_mine
    assert p_mine[usccs[0]]["status"] == "revoked" and p_mine[usccs[1]]["abnormal_open"] >= 1
    assert p_mine[usccs[3]]["legal_rep_id_masked"] != "34052419800101001X"

    print(f"\ndebezium interop: connectors up {t_up:.1f}s, snapshots {t_snap:.1f}s, "
          f"(ours {snapshot_done['ours']:.1f}s, debezium {snapshot_done['debezium']:.1f}s), changes streamed {t_stream:.1f}s, "
          f"{len(mine)} envelopes each, {len(p_mine)} profiles")
