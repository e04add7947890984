"""Heartbeats (like Debezium's heartbeat.interval.ms) against real PostgreSQL and Kafka: the
connector reports snapshot progress while snapshotting, then its acknowledged position at every
interval — also while its tables are idle — and the position moves once a change is in Kafka."""

from __future__ import annotations

import psycopg2
import pytest

from connectors.fleet import _snapshot_state
from connectors.offsets import connect_topic
from connectors.runner import HEARTBEAT_SCHEMA
from connectors.simulator.market import MarketSimulator
from streams.codecs.positions import parse_lsn
from streams.codecs.serde import schema_store
from streams.kafka.admin import ensure_topics
from streams.settings import SourceSettings
from tests.conftest import wait_for
from tests.harness import RunningConnector

pytestmark = pytest.mark.integration

ROWS = 300


def test_heartbeats_carry_snapshot_progress_then_the_moving_position(department_db, kafka_admin, topic_reader):
    dsn = department_db
    db = dsn.rsplit("/", 1)[1]
    sim = MarketSimulator(dsn, seed=31)
    sim.create_schema()
    usccs = sim.seed_enterprises(ROWS)
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:  # registrations plus the listings and pledges seeded with them
        cur.execute("SELECT (SELECT count(*) FROM enterprise_registration) + (SELECT count(*) FROM abnormal_operation)"
                    " + (SELECT count(*) FROM equity_pledge)")
        rows = cur.fetchone()[0]
    pg.close()
    heartbeats = connect_topic("market", "heartbeats")
    ensure_topics(kafka_admin, {heartbeats: {"cleanup.policy": "compact"}}, partitions=1)
    reader = topic_reader([heartbeats])
    schemas = schema_store()

    def beats() -> list[dict]:
        reader.poll()
        decoded = (schemas.decode(m.value(), HEARTBEAT_SCHEMA)[1] for m in reader.messages if m.value())
        return [b for b in decoded if b["source"] == f"market@{db}"]

    conn = RunningConnector("market", dsn, kafka_admin, SourceSettings(status_interval_s=1.0))
    conn.runner.heartbeat_interval_s = 0.3
    try:
        wait_for(lambda: len([b for b in beats() if not b["snapshotting"]]) >= 3, 60,
                 lambda: f"three heartbeats after the snapshot (error {conn.error!r}, {len(reader.messages)} read: {beats()[-3:]})")
        first = beats()[0]
        assert (first["snapshotting"], first["snapshot_total"], first["dept"], first["kind"]) == (True, rows, "market", "postgres")
        assert 0 < first["snapshot_rows"] <= rows
        assert _snapshot_state({}, first) == f"running {100 * first['snapshot_rows'] / rows:.0f}% ({first['snapshot_rows']:,}/{rows:,})"

        # idle tables: heartbeats keep coming, each later than the one before
        idle = [b for b in beats() if not b["snapshotting"]]
        assert [b["ts_ms"] for b in idle] == sorted(b["ts_ms"] for b in idle) and idle[-1]["ts_ms"] > idle[0]["ts_ms"]
        assert idle[-1]["events"] == rows

        # a committed change moves the position the heartbeat reports
        before = parse_lsn(idle[-1]["position"])
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", (usccs[0],))
            cur.execute("SELECT pg_current_wal_lsn()")
            committed = parse_lsn(cur.fetchone()[0])
        pg.close()
        wait_for(lambda: parse_lsn(beats()[-1]["position"]) >= committed and beats()[-1]["events"] == rows + 1, 30,
                 "a heartbeat at or past the change's commit")
        assert parse_lsn(beats()[-1]["position"]) > before
    finally:
        conn.stop()
    assert conn.error is None
