"""A snapshot restarted after kill -9 deletes the rows the killed run(s) published that are gone
from the source (connectors/snapshot.py).

Each test kills the connector twice mid-snapshot; after each kill it deletes rows the killed runs
already published (``op = 'r'``) and updates one, then lets the third run finish. Without the
deletes the stale ``r`` record would stay the last Kafka record of a deleted row, and the
profiles would keep a row that no longer exists.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable

import psycopg2
import pytest
from psycopg2 import sql

from streams.core.catalogue import catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import is_duplicate, merge_event
from tests.conftest import TEST_KEY, wait_for
from tests.harness import ConnectorProcess, Envelopes
from tests.integration.test_connector_faults import market_connector, market_db  # noqa: F401 — fixture
from tests.integration.test_connector_faults_other_kinds import (  # noqa: F401 — hrss_db is a fixture
    SOCIAL_INSURANCE,
    hrss_connector,
    hrss_db,
    mysql_conn,
    seed_social_insurance,
)

pytestmark = pytest.mark.integration

MARKET_TOPICS = ["dept.market.enterprise_registration", "dept.market.abnormal_operation", "dept.market.equity_pledge"]
KILLS = 2  # interrupted runs before the one that completes: the first run's rows must still be found
KILL_AFTER_ROWS = 5000

RowKey = tuple[str, Hashable]  # (source table, primary key)


def last_by_key(envelopes: list[dict], key: Callable[[dict], RowKey]) -> dict[RowKey, dict]:
    """The last change record of every row: what a compacted topic (or an upsert sink) ends with."""
    return {key(env): env for env in envelopes}


def state_problems(last: dict[RowKey, dict], source: dict[RowKey, object], version: Callable[[dict], object],
                   deleted: set[RowKey]) -> list[str]:
    """Where the last records disagree with the source rows now (key → version); empty if none."""
    problems = []
    for key, v in source.items():
        env = last.get(key)
        if env is None or env["op"] == "d" or version(env) != v:
            problems.append(f"{key}: last record {env and env['op']} {env and env['op'] != 'd' and version(env)}, row {v!r}")
    for key in last.keys() - source.keys():
        if last[key]["op"] != "d":
            problems.append(f"{key}: {'deleted' if key in deleted else 'not a row'} at the source, last record {last[key]['op']}")
    return problems


def kill_delete_restart(conn: ConnectorProcess, events: Envelopes, key: Callable[[dict], RowKey],
                        delete: Callable[[list[RowKey]], None], update: Callable[[RowKey], None],
                        source_now: Callable[[], dict[RowKey, object]], version: Callable[[dict], object]) -> None:
    """Kill mid-snapshot ``KILLS`` times, each time deleting two rows the killed runs published and
    updating one; then check that the completed snapshot left the source's state in Kafka."""
    rng = random.Random(7)
    stale: dict[RowKey, dict] = {}  # deleted row → its snapshot record of a killed run
    touched: set[RowKey] = set()  # deleted or updated: Kafka may hold more than one image of an updated row
    for _ in range(KILLS):
        conn.start()
        wait_for(lambda: conn.snapshot_rows() >= KILL_AFTER_ROWS, 90, lambda: "the first snapshot rows\n" + conn.log_tail(),
                 interval=0.02)
        conn.kill9()
        assert "snapshot complete" not in conn.log_since_start(), "killed too late: seed more rows"
        published = wait_for(lambda: {k: e for k, e in last_by_key(events.refresh(0.5), key).items()
                                      if e["op"] == "r" and k not in touched} or None, 30, "the killed run's rows in Kafka")
        chosen = rng.sample(sorted(published, key=str), 3)
        delete(chosen[:2])
        update(chosen[2])
        stale.update((k, published[k]) for k in chosen[:2])
        touched.update(chosen)
    if KILLS > 1:
        assert "interrupted snapshot run(s) published" in conn.log_since_start()

    conn.start()
    wait_for(lambda: "snapshot complete" in conn.log_since_start(), 120,
             lambda: "the restarted snapshot to complete\n" + conn.log_tail())
    source = source_now()
    wait_for(lambda: not state_problems(last_by_key(events.refresh(0.5), key), source, version, set(stale)), 60,
             lambda: "the source's rows as the last records: " + "; ".join(state_problems(
                 last_by_key(events.items, key), source, version, set(stale))[:5]) + "\n" + conn.log_tail())

    last = last_by_key(events.items, key)
    positions = {last[k]["source"]["position"] for k in source}
    assert len(positions) == 1, f"every row's last record is of the completed snapshot, positions {positions}"
    snapshot_position = positions.pop()
    pseudonymizer = Pseudonymizer(TEST_KEY.encode())
    by_table = {(ds.dept, ds.schema_table): ds for ds in catalogue().by_topic().values()}
    for row, old in stale.items():
        deleted = last[row]
        assert deleted["op"] == "d", f"{row}: deleted at the source, last record {deleted['op']}"
        assert deleted["before"] == old["after"], "the delete carries the row image the killed run published"
        assert (deleted["source"]["snapshot"], deleted["source"]["position"]) == ("true", snapshot_position)
        # the profile merge takes the delete after the stale snapshot record of the same row
        ds = by_table[old["source"]["dept"], row[0]]
        merged = [to_enterprise_event(ds, env, Provenance(ds.topic, 0, offset), pseudonymizer, 0)
                  for offset, env in enumerate((old, deleted))]
        profile, _ = merge_event(None, merged[0], 0, 0)
        assert not is_duplicate(profile, merged[1], 1), f"{row}: the merge would skip the delete as a replay"
    assert sum(1 for e in events.items if e["op"] == "d") == len(stale), "a delete only for the rows gone"
    print("".join(f"\n{line[:200]}" for line in conn.log_text().splitlines()
                  if "interrupted snapshot" in line or "gone from the source" in line))


# --- PostgreSQL (market) ------------------------------------------------------------------------


def market_key(env: dict) -> RowKey:
    row = env["after"] or env["before"]
    table = env["source"]["table"]
    return table, row["uscc"] if table == "enterprise_registration" else row["id"]


def test_postgres_restarted_snapshot_deletes_the_rows_gone_since_the_kill(market_db, kafka_admin, topic_reader,  # noqa: F811
                                                                         tmp_path):
    dsn, db, sim = market_db
    sim.seed_enterprises(100_000)  # a snapshot of several seconds
    events = Envelopes(topic_reader(MARKET_TOPICS), lambda env: env["source"]["db"] == db)
    conn = market_connector(dsn, kafka_admin, tmp_path / "connect.log")

    def execute(query: str | sql.Composable, params: tuple) -> None:
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute(query, params)
        pg.close()

    def delete(rows: list[RowKey]) -> None:
        for table, key in rows:
            column = "uscc" if table == "enterprise_registration" else "id"
            execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                sql.Identifier(table), sql.Identifier(column)), (key,))

    def update(row: RowKey) -> None:
        assert row[0] == "enterprise_registration", "the killed runs read the registrations first"
        execute("UPDATE enterprise_registration SET name = name || '（更名）' WHERE uscc = %s", (row[1],))

    def source_now() -> dict[RowKey, object]:
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("SELECT uscc, name FROM enterprise_registration")
            now: dict[RowKey, object] = {("enterprise_registration", u): name for u, name in cur.fetchall()}
            for table in ("abnormal_operation", "equity_pledge"):
                cur.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(table)))
                now.update(((table, i), None) for (i,) in cur.fetchall())
        pg.close()
        return now

    def version(env: dict) -> object:
        return env["after"]["name"] if env["source"]["table"] == "enterprise_registration" else None

    try:
        kill_delete_restart(conn, events, market_key, delete, update, source_now, version)
    finally:
        conn.stop()


# --- MariaDB (hrss) -----------------------------------------------------------------------------


def social_insurance_key(env: dict) -> RowKey:
    row = env["after"] or env["before"]
    return env["source"]["table"], (row["uscc"], row["period"])


def test_mariadb_restarted_snapshot_deletes_the_rows_gone_since_the_kill(hrss_db, kafka_admin, topic_reader,  # noqa: F811
                                                                        tmp_path):
    dsn, db = hrss_db
    seed_social_insurance(dsn, 3500, seed=61)  # 42,000 rows: a snapshot of a few seconds
    events = Envelopes(topic_reader([SOCIAL_INSURANCE]), lambda env: env["source"]["db"] == db)
    conn = hrss_connector(dsn, kafka_admin, tmp_path / "connect.log")

    def execute(query: str, params: tuple) -> None:
        my = mysql_conn(dsn)
        try:
            with my.cursor() as cur:
                cur.execute(query, params)
            my.commit()
        finally:
            my.close()

    def delete(rows: list[RowKey]) -> None:
        for _, key in rows:
            execute("DELETE FROM social_insurance WHERE uscc = %s AND period = %s", key)

    def update(row: RowKey) -> None:
        execute("UPDATE social_insurance SET insured_headcount = insured_headcount + 1 WHERE uscc = %s AND period = %s",
                row[1])

    def source_now() -> dict[RowKey, object]:
        my = mysql_conn(dsn)
        try:
            with my.cursor() as cur:
                cur.execute("SELECT uscc, period, insured_headcount FROM social_insurance")
                return {("social_insurance", (u, p)): n for u, p, n in cur.fetchall()}
        finally:
            my.close()

    try:
        kill_delete_restart(conn, events, social_insurance_key, delete, update, source_now,
                            lambda env: env["after"]["insured_headcount"])
    finally:
        conn.stop()
