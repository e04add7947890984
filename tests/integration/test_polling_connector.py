"""Polling connector (gas / procurement / emergency) against the real PostgreSQL and Kafka."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random

import psycopg2
import pytest
from psycopg2 import sql

from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.market import Enterprise
from connectors.simulator.polled_depts import DEPTS, PolledDepartmentsSimulator
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.errors import DecodeError
from streams.settings import SourceSettings
from tests.conftest import wait_for
from tests.harness import RunningConnector as _Running

pytestmark = pytest.mark.integration

TOPICS = {"gas": "dept.gas.gas_usage", "procurement": "dept.procurement.bid_award", "emergency": "dept.emergency.safety_penalty"}


class RunningConnector(_Running):
    def __init__(self, dept_name: str, dsn: str, bootstrap: str, chunk: int | None = None) -> None:
        dept = catalogue().department(dept_name)
        if chunk is not None:  # tiny chunks put rows of one updated_at on both sides of a chunk boundary
            dept = dataclasses.replace(dept, options={**dept.options, "chunk": str(chunk)})
        super().__init__(dept, dsn, bootstrap, SourceSettings(poll_interval_s=0.2))


def ours(reader, dept: str, db: str) -> list[dict]:
    """Decoded envelopes of our database; other tests' records on the shared topics are skipped."""
    schemas = schema_store()
    out = []
    for m in reader.messages:
        if m.value() is None or m.topic() != TOPICS[dept]:
            continue
        try:
            _, env = schemas.decode(m.value(), "dept/" + TOPICS[dept].split(".", 1)[1].replace(".", "/"))
        except DecodeError:
            continue
        if env["source"]["db"] == db:
            out.append(env)
    return out


def enterprises(n: int, seed: int) -> list[Enterprise]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        uscc = make_uscc(rng, pick_district(rng))
        out.append(Enterprise(uscc, uscc[2:8], distressed=i % 5 == 0))
    return out


@pytest.fixture
def polled(pg_admin_dsn, unique):
    base = pg_admin_dsn.rpartition("/")[0]
    names = {d: f"{d}_t{unique}" for d in DEPTS}
    sim = PolledDepartmentsSimulator(base + "/{db}", seed=7, databases=names)
    sim.create_databases()
    yield sim
    admin = psycopg2.connect(pg_admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        for name in names.values():
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


def _count(dsn: str, table: str) -> int:
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        n = cur.fetchone()[0]
    pg.close()
    return n


def test_snapshot_then_incremental_changes_including_equal_updated_at(polled, kafka_admin, topic_reader):
    sim = polled
    counts = sim.seed(enterprises(60, 1), today=dt.date(2026, 3, 15))
    assert counts["gas_usage"] > 0
    db = sim.databases["gas"]
    dsn = sim.dsn("gas")
    reader = topic_reader([TOPICS["gas"]])
    conn = RunningConnector("gas", dsn, kafka_admin, chunk=2)
    try:
        total = _count(dsn, "gas_usage")
        wait_for(lambda: reader.poll() is not None and len(ours(reader, "gas", db)) >= total, 60, f"the snapshot of {total} bills")
        snap = ours(reader, "gas", db)
        assert len(snap) == total and len({e["after"]["id"] for e in snap}) == total  # each row exactly once
        assert {e["op"] for e in snap} == {"r"} and {e["source"]["snapshot"] for e in snap} == {"true"}
        assert snap[0]["before"] is None and snap[0]["after"]["contact_phone"]  # raw PII stays in dept.*
        wait_for(conn.source.snapshot_completed, 20, "the snapshot to complete")

        # three rows in one transaction share updated_at = now(); chunk = 2 splits them
        uscc = snap[0]["after"]["uscc"]
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            ids = []
            for i in range(3):
                cur.execute(
                    "INSERT INTO gas_usage (uscc, account_no, billing_month, customer_type, volume_m3, amount, arrears,"
                    " payment_status) VALUES (%s, %s, '2026-04-01', 'commercial', 100, 341, 341, 'unpaid') RETURNING id",
                    (uscc, f"RQTEST{i}"))
                ids.append(cur.fetchone()[0])
            cur.execute("SELECT DISTINCT updated_at FROM gas_usage WHERE id = ANY(%s)", (ids,))
            assert cur.rowcount == 1
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("UPDATE gas_usage SET arrears = 0, payment_status = 'paid', updated_at = now() WHERE id = %s",
                        (snap[0]["after"]["id"],))

        def streamed():
            reader.poll()
            return [e for e in ours(reader, "gas", db) if e["op"] != "r"]

        changes = wait_for(lambda: len(streamed()) >= 4 and streamed(), 30, "four polled changes")
        inserts = [e for e in changes if e["op"] == "c"]
        assert sorted(e["after"]["id"] for e in inserts) == sorted(ids)
        assert len({e["source"]["seq"] for e in inserts}) == 1  # same updated_at, none lost
        upd = [e for e in changes if e["op"] == "u"]
        assert [(e["after"]["id"], e["after"]["payment_status"], e["before"]) for e in upd] == [(snap[0]["after"]["id"], "paid", None)]
        assert all(e["source"]["snapshot"] == "false" for e in changes)
        assert upd[0]["source"]["seq"] > inserts[0]["source"]["seq"]
        assert upd[0]["source"]["position"].endswith(f"|{snap[0]['after']['id']}")

        # the cursor in connect.<dept>.offsets reaches the update once Kafka acknowledged it
        def saved_cursor():
            rec = conn.offsets.load(conn.source.name)
            return rec and rec["snapshot_completed"] and json.loads(rec["position"]).get("public.gas_usage")
        wait_for(lambda: (c := saved_cursor()) and c["key"] == [snap[0]["after"]["id"]], 30, "the saved cursor")
    finally:
        conn.stop()
    assert conn.error is None


def test_restart_resumes_from_the_saved_cursor(polled, kafka_admin, topic_reader):
    sim = polled
    sim.seed(enterprises(40, 2), today=dt.date(2026, 1, 20))
    db = sim.databases["emergency"]
    dsn = sim.dsn("emergency")
    reader = topic_reader([TOPICS["emergency"]])
    # make sure there is something to snapshot even if the draw gave no penalties
    sim.step(5, today=dt.date(2026, 1, 21))
    total = _count(dsn, "safety_penalty")
    first = RunningConnector("emergency", dsn, kafka_admin)
    wait_for(lambda: reader.poll() is not None and len(ours(reader, "emergency", db)) >= total
             and first.source.snapshot_completed(), 60, "the snapshot")
    first.stop()
    assert first.error is None
    assert first.offsets.load(first.source.name)["snapshot_completed"]

    # changes while the connector is down: new penalties and a status update
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("SELECT uscc FROM safety_penalty LIMIT 1")
        uscc = cur.fetchone()[0]
        new_ids = []
        for i in range(6):
            cur.execute(
                "INSERT INTO safety_penalty (uscc, decision_no, penalty_type, amount, decision_date, reason)"
                " VALUES (%s, %s, 'fine', 20000, '2026-02-01', '未按规定开展安全生产教育和培训') RETURNING id",
                (uscc, f"渝应急罚〔2026〕T{i}号"))
            new_ids.append(cur.fetchone()[0])
            pg.commit()
        cur.execute("UPDATE safety_penalty SET status = 'paid', updated_at = now() WHERE id = %s RETURNING id", (new_ids[0],))
    snapshot_rows = len(ours(reader, "emergency", db))

    second = RunningConnector("emergency", dsn, kafka_admin)
    try:
        def streamed():
            reader.poll()
            return [e for e in ours(reader, "emergency", db) if e["op"] != "r"]
        wait_for(lambda: len(streamed()) >= 6, 30, "the changes made while the connector was down")
        reader.poll(1.0)
        rows = ours(reader, "emergency", db)
        assert sum(1 for e in rows if e["op"] == "r") == snapshot_rows == total, "the restart must not snapshot again"
        changes = [e for e in rows if e["op"] != "r"]
        # the insert and the later update of new_ids[0] happened before the poll: one event with the
        # latest state (polling sees no intermediate states), op 'u' because updated_at moved
        assert sorted(e["after"]["id"] for e in changes) == sorted(new_ids)
        latest = {e["after"]["id"]: e for e in changes}
        assert latest[new_ids[0]]["op"] == "u" and latest[new_ids[0]]["after"]["status"] == "paid"
        assert {latest[i]["op"] for i in new_ids[1:]} == {"c"}
        positions = [e["source"]["position"] for e in changes]
        assert len(positions) == len(set(positions)), "no change twice after a clean stop"
    finally:
        second.stop()
    assert second.error is None
