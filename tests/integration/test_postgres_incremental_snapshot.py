"""Incremental snapshots on demand (signal table, DBLog watermarks) against real PostgreSQL and Kafka:
chunks are read while streaming goes on, and a snapshot row never overwrites a newer change."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time

import psycopg2
import pytest

from connectors.simulator.market import MarketSimulator
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.errors import DecodeError
from streams.settings import SourceSettings
from tests.conftest import wait_for
from tests.harness import RunningConnector as _Running

pytestmark = pytest.mark.integration

REG = "dept.market.enterprise_registration"
ROWS = 3000
CHUNK = 250  # small chunks: many windows overlap the concurrent updates


class RunningConnector(_Running):
    """The market connector with a short keepalive interval and small incremental chunks."""

    def __init__(self, dsn: str, bootstrap: str) -> None:
        dept = catalogue().department("market")
        dept = dataclasses.replace(dept, options={**dept.options, "incremental_chunk": str(CHUNK)})
        super().__init__(dept, dsn, bootstrap, SourceSettings(status_interval_s=1.0))


def registrations(reader, db: str) -> list[dict]:
    """Our database's decoded registration envelopes, in the order read (per key: offset order)."""
    schemas = schema_store()
    out = []
    for m in reader.messages:
        if m.value() is None or m.topic() != REG:
            continue
        try:
            _, env = schemas.decode(m.value(), "dept/market/enterprise_registration")
        except DecodeError:
            continue
        if env["source"]["db"] == db:
            out.append(env)
    return out


def test_incremental_snapshot_while_streaming_keeps_the_newest_state(department_db, kafka_admin, topic_reader):
    dsn = department_db
    db = dsn.rsplit("/", 1)[1]
    sim = MarketSimulator(dsn, seed=23)
    sim.create_schema()
    usccs = sim.seed_enterprises(ROWS)
    reader = topic_reader([REG])
    conn = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and conn.source.snapshot_completed()
                 and len(registrations(reader, db)) >= ROWS, 90, "the initial snapshot")
        initial = len(registrations(reader, db))

        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:  # the signal table is set up by the connector
            cur.execute("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'yurong_market' AND tablename = 'yurong_signal'")
            assert cur.fetchone()[0] == 1

        # 200 status changes, each committed on its own, running while the snapshot is read
        rng = random.Random(5)
        targets = rng.sample(usccs, 200)
        statuses = ["suspended", "revoked", "cancelled", "moved_out", "active"]
        started = threading.Event()
        failures: list[BaseException] = []

        def update() -> None:
            try:
                pg = psycopg2.connect(dsn)
                try:
                    with pg.cursor() as cur:
                        started.set()
                        for i, code in enumerate(targets):
                            cur.execute("UPDATE enterprise_registration SET status = %s WHERE uscc = %s",
                                        (statuses[i % len(statuses)], code))
                            pg.commit()
                            time.sleep(0.01)
                finally:
                    pg.close()
            except BaseException as exc:  # noqa: BLE001 — reported below
                failures.append(exc)

        # Inside every chunk window (after the chunk is read, before its high watermark) change 5 rows
        # of that chunk: the chunk's copies are stale and must give way to the streamed updates.
        source = conn.source
        original_watermark = source._watermark
        in_window: list[str] = []

        def watermark(cur, kind, table):
            if kind == "snapshot-window-close":
                with psycopg2.connect(dsn) as pg, pg.cursor() as other:
                    other.execute(
                        "UPDATE enterprise_registration SET status = CASE WHEN status = 'revoked' THEN 'cancelled'"
                        " ELSE 'revoked' END WHERE uscc IN (SELECT uscc FROM enterprise_registration WHERE uscc > %s"
                        " ORDER BY uscc LIMIT 5) RETURNING uscc", (source._inc_last[0] if source._inc_last else "",))
                    in_window.extend(r[0] for r in other.fetchall())
                pg.close()
            return original_watermark(cur, kind, table)
        source._watermark = watermark

        writer = threading.Thread(target=update, daemon=True)
        writer.start()
        started.wait(10)
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("INSERT INTO yurong_signal (id, type, data) VALUES ('sig-1', 'execute-snapshot', %s)",
                        (json.dumps({"tables": ["public.enterprise_registration"]}),))
        writer.join(60)
        assert not failures, failures

        def done():
            reader.poll()
            later = registrations(reader, db)[initial:]
            updates = [e for e in later if e["op"] == "u"]
            snapped = {e["after"]["uscc"] for e in later if e["op"] == "r"}
            updated = {e["after"]["uscc"] for e in updates}
            return (len(updates) >= len(targets) + len(in_window) and snapped | updated >= set(usccs)
                    and not conn.source._inc_queue and conn.source._window is None)
        wait_for(done, 120, "the incremental snapshot and all 200 concurrent updates")
        reader.poll(1.0)
        assert conn.error is None

        events = registrations(reader, db)
        later = events[initial:]
        incremental = [e for e in later if e["op"] == "r"]
        updates = [e for e in later if e["op"] == "u"]
        assert in_window, "changes were made inside chunk windows"
        assert len(updates) == len(targets) + len(in_window), "the stream kept flowing: every concurrent update arrived once"
        superseded = set(in_window) - set(e["after"]["uscc"] for e in incremental)
        assert superseded == set(in_window), "a row changed inside its chunk window is not emitted from the chunk"
        keys = [e["after"]["uscc"] for e in incremental]
        assert len(keys) == len(set(keys)), "each row at most once per incremental snapshot"
        assert set(keys) | {e["after"]["uscc"] for e in updates} == set(usccs), "every row snapshotted or superseded"
        assert len(keys) >= ROWS - len(targets) - len(in_window)
        assert {e["source"]["snapshot"] for e in incremental} == {"true"}

        # the last event per key (one key → one partition → offset order) is the database's final state
        last = {}
        for e in events:
            last[e["after"]["uscc"]] = e["after"]
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("SELECT uscc, status FROM enterprise_registration")
            final = dict(cur.fetchall())
            cur.execute("SELECT count(*) FROM yurong_signal WHERE type LIKE 'snapshot-window-%%'")
            leftover_watermarks = cur.fetchone()[0]
        assert {k: v["status"] for k, v in last.items()} == final
        assert leftover_watermarks == 0, "watermark rows are removed once their chunk is emitted"
    finally:
        conn.stop()
    assert conn.error is None


def test_incremental_snapshot_goes_on_after_a_restart(department_db, kafka_admin, topic_reader):
    """Stopped halfway, the connector saved the last key in Kafka; restarted, it reads on from
    there (not from the first row) and ends with every row snapshotted."""
    dsn = department_db
    db = dsn.rsplit("/", 1)[1]
    sim = MarketSimulator(dsn, seed=29)
    sim.create_schema()
    usccs = sim.seed_enterprises(ROWS)
    reader = topic_reader([REG])

    first = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and first.source.snapshot_completed()
                 and len(registrations(reader, db)) >= ROWS, 90, "the initial snapshot")
        initial = len(registrations(reader, db))
        # stop the runner from inside after four chunks, as a restart would interrupt it
        source, read_chunk, chunks = first.source, first.source._read_incremental_chunk, []

        def read_then_stop_after_four() -> None:
            if len(chunks) == 4:
                first.runner.stop()
                return
            chunks.append(1)
            read_chunk()
        source._read_incremental_chunk = read_then_stop_after_four
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("INSERT INTO yurong_signal (id, type, data) VALUES ('sig-r', 'execute-snapshot', %s)",
                        (json.dumps({"tables": ["enterprise_registration"]}),))
        first.thread.join(60)
    finally:
        first.stop()
    assert first.error is None
    saved = first.offsets.load(first.source.name)["incremental"]
    assert saved["tables"] == ["public.enterprise_registration"]
    resume_after = json.loads(saved["last_key"])[0]
    reader.poll(1.0)
    before_restart = {e["after"]["uscc"] for e in registrations(reader, db)[initial:] if e["op"] == "r"}
    assert len(before_restart) == 4 * CHUNK and max(before_restart) == resume_after

    second = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and second.source.snapshot_completed()
                 and not second.source._inc_queue and second.source._window is None, 90,
                 "the rest of the incremental snapshot")
        reader.poll(1.0)
    finally:
        second.stop()
    assert second.error is None
    after_restart = [e["after"]["uscc"] for e in registrations(reader, db)[initial:] if e["op"] == "r"][len(before_restart):]
    assert min(after_restart) > resume_after, "the restarted connector went on after the saved key"
    assert len(after_restart) == len(set(after_restart)) == ROWS - 4 * CHUNK
    assert before_restart | set(after_restart) == set(usccs)
    assert second.offsets.load(second.source.name)["incremental"] is None, "a finished snapshot leaves nothing to resume"
