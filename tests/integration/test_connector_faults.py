"""kill -9 of a running connector loses nothing: every committed source row reaches Kafka
(duplicates allowed, at-least-once), both mid-snapshot and mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from connectors.simulator.market import MarketSimulator
from streams.errors import DecodeError
from streams.serde import schema_store
from tests.conftest import TEST_KEY, free_port, wait_for

pytestmark = pytest.mark.integration

REG = "dept.market.enterprise_registration"
LISTINGS = "dept.market.abnormal_operation"


class ConnectorProcess:
    """`yurong connect market` as a child process that can be killed with SIGKILL."""

    def __init__(self, dsn: str, bootstrap: str, log: Path) -> None:
        self.env = {**os.environ, "YURONG_SOURCE_MARKET_DSN": dsn, "YURONG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "YURONG_MASKING_HMAC_KEY": TEST_KEY, "YURONG_METRICS_CONNECTOR_PORT": str(free_port()),
                    "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.05"}
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "connect", "market"], env=self.env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def snapshot_rows(self) -> float:
        """``yurong_connector_snapshot_rows_total`` from the connector's /metrics (0 before it serves)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.env['YURONG_METRICS_CONNECTOR_PORT']}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith("yurong_connector_snapshot_rows_total{"))


def keys_of_db(reader, db: str, topic: str) -> list[str]:
    """Row keys of our database's change events on ``topic`` (all copies, so duplicates count)."""
    schemas = schema_store()
    out = []
    for m in reader.messages:
        if m.topic() != topic or m.value() is None:
            continue
        try:
            _, env = schemas.decode(m.value(), "dept/market/" + topic.rsplit(".", 1)[1])
        except DecodeError:
            continue
        if env["source"]["db"] == db:
            row = env["after"] or env["before"]
            out.append(str(row.get("id") or row.get("uscc")))
    return out


@pytest.fixture
def market_db(department_db):
    sim = MarketSimulator(department_db, seed=23)
    sim.create_schema()
    return department_db, department_db.rsplit("/", 1)[1], sim


def test_kill_mid_snapshot_then_restart_loses_no_row(market_db, kafka_bootstrap, topic_reader, tmp_path):
    dsn, db, sim = market_db
    usccs = set(sim.seed_enterprises(100_000))  # a snapshot of several seconds
    reader = topic_reader([REG])
    conn = ConnectorProcess(dsn, kafka_bootstrap, tmp_path / "connect.log")
    conn.start()
    try:
        # kill as soon as the connector has produced part of the snapshot
        wait_for(lambda: conn.snapshot_rows() >= 5000, 90,
                 lambda: "the first snapshot rows\n" + conn.log.read_text(errors="replace")[-2000:], interval=0.02)
        conn.kill9()
        assert "snapshot complete" not in conn.log.read_text(errors="replace"), "killed too late: seed more rows"

        conn.start()
        wait_for(lambda: reader.poll(0.5) is not None and set(keys_of_db(reader, db, REG)) >= usccs, 180,
                 lambda: "every row after the restart\n" + conn.log.read_text(errors="replace")[-2000:])
        assert "re-snapshotting" in conn.log.read_text(errors="replace")
    finally:
        conn.stop()


def test_kill_mid_stream_then_restart_loses_no_committed_change(market_db, kafka_bootstrap, topic_reader, tmp_path):
    dsn, db, sim = market_db
    usccs = sim.seed_enterprises(20)
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("SELECT id FROM abnormal_operation")
        seeded = {str(r[0]) for r in cur.fetchall()}  # listings the snapshot carries
    reader = topic_reader([LISTINGS])
    conn = ConnectorProcess(dsn, kafka_bootstrap, tmp_path / "connect.log")
    conn.start()
    committed: list[int] = []
    stop_writing = threading.Event()

    def writer() -> None:
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            i = 0
            while not stop_writing.is_set():
                cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) VALUES (%s, 'annual_report_missing', '2026-06-30') RETURNING id",
                            (usccs[i % len(usccs)],))
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
            wait_for(lambda: reader.poll(0.2) is not None and len(keys_of_db(reader, db, LISTINGS)) > len(committed) // 2, 60,
                     "some streamed changes")
            conn.kill9()
            down_at = len(committed)
            wait_for(lambda: len(committed) >= down_at + 20, 30, "changes committed while the connector is down")
            conn.start()
        stop_writing.set()
        t.join(10)
        expected = {str(i) for i in committed}
        wait_for(lambda: reader.poll(0.5) is not None and set(keys_of_db(reader, db, LISTINGS)) >= expected, 120,
                 lambda: f"all {len(expected)} committed inserts\n" + conn.log.read_text(errors="replace")[-2000:])
        seen = keys_of_db(reader, db, LISTINGS)
        assert set(seen) - expected <= seeded, "nothing but the committed and the seeded rows"
        print(f"{len(expected)} committed inserts delivered, {len(seen) - len(set(seen))} duplicates")
    finally:
        stop_writing.set()
        conn.stop()
