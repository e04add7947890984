"""PostgreSQL logical-replication connector against the real PostgreSQL and Kafka."""

from __future__ import annotations

import psycopg2
import pytest

from connectors.simulator.market import MarketSimulator
from streams.codecs.positions import parse_lsn
from streams.codecs.serde import schema_store
from streams.errors import DecodeError, SourceError
from streams.settings import SourceSettings
from tests.conftest import wait_for
from tests.harness import RunningConnector as _Running

pytestmark = pytest.mark.integration

TOPICS = ["dept.market.enterprise_registration", "dept.market.abnormal_operation"]


class RunningConnector(_Running):
    """The market department's PostgreSQL connector, with a short keepalive interval."""

    def __init__(self, dsn: str, bootstrap: str, resnapshot: bool = False) -> None:
        super().__init__("market", dsn, bootstrap, SourceSettings(status_interval_s=1.0), resnapshot)


def ours(reader, db: str) -> list[dict]:
    """Decoded envelopes of our database among everything read so far. The topics are shared:
    other tests' records, including deliberately bad ones, are skipped."""
    schemas = schema_store()
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue
        try:
            _, env = schemas.decode(m.value(), "dept/market/" + m.topic().rsplit(".", 1)[1])
        except DecodeError:
            continue
        if env["source"]["db"] == db:
            out.append(env)
    return out


@pytest.fixture
def market_db(department_db):
    sim = MarketSimulator(department_db, seed=11)
    sim.create_schema()
    return department_db, sim


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def test_snapshot_then_stream_with_before_images_and_tombstones(market_db, kafka_admin, topic_reader):
    dsn, sim = market_db
    db = _db(dsn)
    usccs = sim.seed_enterprises(120)
    reader = topic_reader(TOPICS)
    conn = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and
                 sum(1 for e in ours(reader, db) if e["source"]["table"] == "enterprise_registration") >= 120,
                 60, "the snapshot of 120 registrations")
        snap = [e for e in ours(reader, db) if e["source"]["table"] == "enterprise_registration"]
        assert sorted(e["after"]["uscc"] for e in snap) == sorted(usccs)  # each row exactly once
        assert {e["op"] for e in snap} == {"r"} and {e["source"]["snapshot"] for e in snap} == {"true"}
        assert snap[0]["after"]["legal_rep_id_number"]  # raw PII stays inside dept.* only

        target = usccs[0]
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", (target,))
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) "
                        "VALUES (%s, 'unreachable_address', '2026-11-01') RETURNING id", (target,))
            listing_id = cur.fetchone()[0]
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("DELETE FROM abnormal_operation WHERE id = %s", (listing_id,))

        def streamed():
            reader.poll()
            return [e for e in ours(reader, db) if e["op"] in "cud"]

        changes = wait_for(lambda: len(streamed()) >= 3 and streamed(), 30, "three streamed changes")
        upd, ins, dele = changes[:3]
        assert (upd["op"], upd["before"]["status"], upd["after"]["status"]) == ("u", "active", "suspended")
        assert (ins["op"], ins["after"]["id"], ins["before"]) == ("c", listing_id, None)
        assert (dele["op"], dele["before"]["id"], dele["after"]) == ("d", listing_id, None)
        assert upd["source"]["seq"] < ins["source"]["seq"] < dele["source"]["seq"]
        assert all(c["source"]["snapshot"] == "false" and c["source"]["ts_ms"] > 0 for c in changes)
        tombstones = [m for m in reader.messages if m.value() is None and m.key() == str(listing_id).encode()]
        assert tombstones, "a delete is followed by a tombstone"

        # The slot is acknowledged only up to what Kafka has: wait for it to pass the delete.
        def confirmed() -> int:
            with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
                cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = %s", (db,))
                return parse_lsn(cur.fetchone()[0])
        wait_for(lambda: confirmed() > dele["source"]["seq"], 20, "the slot to acknowledge the delete")
    finally:
        conn.stop()
    assert conn.error is None


def test_restart_resumes_without_resnapshot_and_loses_nothing(market_db, kafka_admin, topic_reader):
    dsn, sim = market_db
    db = _db(dsn)
    usccs = sim.seed_enterprises(50)
    reader = topic_reader(TOPICS)
    first = RunningConnector(dsn, kafka_admin)
    wait_for(lambda: reader.poll() is not None and len(ours(reader, db)) >= 50, 60, "the snapshot")
    first.stop()
    assert first.error is None

    # 40 committed changes while the connector is down
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        for i, code in enumerate(usccs[:30]):
            cur.execute("UPDATE enterprise_registration SET registered_capital = %s WHERE uscc = %s", (1000 + i, code))
            pg.commit()
        for code in usccs[30:40]:
            cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) "
                        "VALUES (%s, 'annual_report_missing', '2026-06-30')", (code,))
            pg.commit()
    expected = 40
    second = RunningConnector(dsn, kafka_admin)
    try:
        def streamed():
            reader.poll()
            return [e for e in ours(reader, db) if e["op"] != "r"]
        wait_for(lambda: len(streamed()) >= expected, 60, f"{expected} changes made while the connector was down")
        reader.poll(1.0)
        assert sum(1 for e in ours(reader, db) if e["op"] == "r") >= 50
        snapshot_rows = [e for e in ours(reader, db) if e["op"] == "r"]
        snapshot_keys = {(e["source"]["table"], str(e["after"].get("uscc")), str(e["after"].get("id"))) for e in snapshot_rows}
        assert len(snapshot_rows) == len(snapshot_keys), "the restart must not snapshot again"
        seqs = [e["source"]["seq"] for e in streamed()]
        assert len(seqs) == len(set(seqs)), "no change twice after a clean stop"
    finally:
        second.stop()
    assert second.error is None


def test_lost_slot_is_reported_with_the_recovery(market_db, kafka_admin, topic_reader):
    dsn, sim = market_db
    db = _db(dsn)
    sim.seed_enterprises(5)
    reader = topic_reader(TOPICS)
    conn = RunningConnector(dsn, kafka_admin)
    wait_for(lambda: reader.poll() is not None and len(ours(reader, db)) >= 5 and conn.source.snapshot_completed(), 60, "the snapshot")
    conn.stop()
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s", (db,))

    again = RunningConnector(dsn, kafka_admin)
    again.thread.join(30)
    assert isinstance(again.error, SourceError)
    assert "--resnapshot" in str(again.error) and "is gone" in str(again.error)

    recovered = RunningConnector(dsn, kafka_admin, resnapshot=True)
    try:
        wait_for(lambda: reader.poll() is not None and sum(1 for e in ours(reader, db) if e["op"] == "r") >= 10, 60,
                 "the re-snapshot")
    finally:
        recovered.stop()
    assert recovered.error is None


def test_added_column_and_idle_tables_keep_the_slot_moving(market_db, kafka_admin, topic_reader):
    """ALTER TABLE ADD COLUMN mid-stream keeps columns mapped by name; writes to tables outside
    the publication still advance the slot (no WAL retained for an idle source)."""
    dsn, sim = market_db
    db = _db(dsn)
    usccs = sim.seed_enterprises(5)
    reader = topic_reader(TOPICS)
    conn = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and conn.source.snapshot_completed(), 60, "the snapshot")
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("ALTER TABLE enterprise_registration ADD COLUMN credit_note text")
            cur.execute("UPDATE enterprise_registration SET credit_note = 'x', status = 'suspended' WHERE uscc = %s", (usccs[0],))

        def streamed():
            reader.poll()
            return [e for e in ours(reader, db) if e["op"] == "u"]
        [upd] = wait_for(streamed, 30, "the update after ADD COLUMN")
        assert upd["after"]["status"] == "suspended" and upd["after"]["uscc"] == usccs[0]
        assert "credit_note" not in upd["after"], "a column the schema does not know yet is left out"

        def confirmed() -> int:
            with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
                cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = %s", (db,))
                return parse_lsn(cur.fetchone()[0])
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("CREATE TABLE unrelated (v int)")
            cur.execute("INSERT INTO unrelated SELECT generate_series(1, 1000)")
            cur.execute("SELECT pg_current_wal_lsn()::text")
            after_unrelated = parse_lsn(cur.fetchone()[0])
        wait_for(lambda: confirmed() >= after_unrelated, 30, "the idle slot to advance past unrelated WAL")
    finally:
        conn.stop()
    assert conn.error is None
