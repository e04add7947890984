"""kill -9 of a running connector loses nothing: every committed source row reaches Kafka
(duplicates allowed, at-least-once), both mid-snapshot and mid-stream."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from connectors.simulator.market import MarketSimulator
from tests.conftest import wait_for
from tests.harness import ConnectorProcess, Envelopes

pytestmark = pytest.mark.integration

REG = "dept.market.enterprise_registration"
LISTINGS = "dept.market.abnormal_operation"


def market_connector(dsn: str, bootstrap: dict, log) -> ConnectorProcess:
    """`yurong connect market` on the test's database, as a child process."""
    return ConnectorProcess("market", bootstrap, log, {"YURONG_SOURCE_MARKET_DSN": dsn})


def row_keys(envelopes: list[dict]) -> list[str]:
    """Row keys of change events (all copies, so duplicates count)."""
    out = []
    for env in envelopes:
        row = env["after"] or env["before"]
        out.append(str(row.get("id") or row.get("uscc")))
    return out


@pytest.fixture
def market_db(department_db):
    sim = MarketSimulator(department_db, seed=23)
    sim.create_schema()
    return department_db, department_db.rsplit("/", 1)[1], sim


def test_kill_mid_snapshot_then_restart_loses_no_row(market_db, kafka_admin, topic_reader, tmp_path):
    dsn, db, sim = market_db
    usccs = set(sim.seed_enterprises(100_000))  # a snapshot of several seconds
    events = Envelopes(topic_reader([REG]), lambda env: env["source"]["db"] == db)
    conn = market_connector(dsn, kafka_admin, tmp_path / "connect.log")
    conn.start()
    try:
        # kill as soon as the connector has produced part of the snapshot
        wait_for(lambda: conn.snapshot_rows() >= 5000, 90,
                 lambda: "the first snapshot rows\n" + conn.log.read_text(errors="replace")[-2000:], interval=0.02)
        conn.kill9()
        assert "snapshot complete" not in conn.log.read_text(errors="replace"), "killed too late: seed more rows"

        conn.start()
        wait_for(lambda: set(row_keys(events.refresh(0.5))) >= usccs, 180,
                 lambda: "every row after the restart\n" + conn.log.read_text(errors="replace")[-2000:])
        assert "re-snapshotting" in conn.log.read_text(errors="replace")
    finally:
        conn.stop()


def test_kill_mid_stream_then_restart_loses_no_committed_change(market_db, kafka_admin, topic_reader, tmp_path):
    dsn, db, sim = market_db
    usccs = sim.seed_enterprises(20)
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("SELECT id FROM abnormal_operation")
        seeded = {str(r[0]) for r in cur.fetchall()}  # listings the snapshot carries
    events = Envelopes(topic_reader([LISTINGS]), lambda env: env["source"]["db"] == db)
    conn = market_connector(dsn, kafka_admin, tmp_path / "connect.log")
    conn.start()
    committed: list[int] = []
    stop_writing = threading.Event()

    def writer() -> None:
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            i = 0
            while not stop_writing.is_set():
                cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) "
                            "VALUES (%s, 'annual_report_missing', '2026-06-30') RETURNING id", (usccs[i % len(usccs)],))
                row_id = cur.fetchone()[0]
                pg.commit()
                committed.append(row_id)  # only after the commit returned
                i += 1
                time.sleep(0.002)

    t = threading.Thread(target=writer, daemon=True)
    try:
        wait_for(lambda: "streaming from slot" in conn.log.read_text(errors="replace"), 60, "the connector to stream")
        t.start()
        for _ in range(3):  # kill -9 three times while changes keep being committed
            wait_for(lambda: len(events.refresh(0.2)) > len(committed) // 2, 60,
                     "some streamed changes")
            conn.kill9()
            down_at = len(committed)
            wait_for(lambda down_at=down_at: len(committed) >= down_at + 20, 30, "changes committed while the connector is down")
            conn.start()
        stop_writing.set()
        t.join(10)
        expected = {str(i) for i in committed}
        wait_for(lambda: set(row_keys(events.refresh(0.5))) >= expected, 120,
                 lambda: f"all {len(expected)} committed inserts\n" + conn.log.read_text(errors="replace")[-2000:])
        seen = row_keys(events.items)
        assert set(seen) - expected <= seeded, "nothing but the committed and the seeded rows"
        print(f"{len(expected)} committed inserts delivered, {len(seen) - len(set(seen))} duplicates")
    finally:
        stop_writing.set()
        conn.stop()
