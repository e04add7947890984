"""A heavy analyst query and the pipeline at once: the changes keep flowing into ClickHouse while the
query runs, and the query is stopped by its time limit with a message that says so."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest

from connectors.simulator.market import MarketSimulator
from sinks.analyst.credentials import CredentialStore
from tests.conftest import TEST_KEY, drop_database, make_database, wait_for
from tests.harness import IsolatedPipeline, skip_history

pytestmark = pytest.mark.e2e

HEAVY = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1"


@pytest.fixture
def db(pg_admin_dsn, unique):
    name = f"market_iso{unique}"
    dsn = make_database(pg_admin_dsn, name)
    yield dsn
    drop_database(pg_admin_dsn, name)


def test_ingestion_flows_while_a_heavy_query_runs_and_the_query_is_cut(db, kafka_admin, redis_url, unique, tmp_path):
    sim = MarketSimulator(db, seed=int(unique[:6], 16), distress_share=0.0)
    sim.create_schema()
    usccs = sim.seed_enterprises(50)
    p = IsolatedPipeline(tmp_path, db, kafka_admin, redis_url, unique, TEST_KEY,
                         {"YURONG_CLICKHOUSE_BATCH_SECONDS": "0.3", "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.1",
                          "YURONG_ANALYST_MAX_EXECUTION_TIME_S": "20",
                          "YURONG_ANALYST_MAX_ROWS_TO_READ": "1000000000000"}, label="iso")
    token = CredentialStore(tmp_path / "home" / "secrets" / "analysts.json").add("heavy", "analyst")
    skip_history(kafka_admin, p.app_id, p.sink_group)
    with p.running():
        wait_for(lambda: (rows := p.sql("SELECT count() FROM enterprise_profile FINAL")) and rows[0][0] == 50,
                 180, lambda: "50 snapshot profiles\n" + p.logs_tail())
        before = p.sql("SELECT count() FROM enterprise_event")[0][0]

        heavy: dict = {}

        def run_heavy() -> None:
            req = urllib.request.Request(f"http://127.0.0.1:{p.query_port}/query", method="POST",
                                         data=json.dumps({"sql": HEAVY}).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    heavy["result"] = (resp.status, json.loads(resp.read()))
            except urllib.error.HTTPError as exc:
                heavy["result"] = (exc.code, json.loads(exc.read()))

        query = threading.Thread(target=run_heavy)
        query.start()
        time.sleep(1.0)  # the heavy query holds its session
        with psycopg2.connect(db) as pg, pg.cursor() as cur:
            for code in usccs[:10]:
                cur.execute("UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", (code,))
            pg.commit()
        wait_for(lambda: (rows := p.sql("SELECT count() FROM enterprise_event")) and rows[0][0] >= before + 10,
                 60, lambda: "10 new events in ClickHouse\n" + p.logs_tail())
        assert query.is_alive(), "the heavy query ended before the changes landed: it did not overlap them"
        query.join(90)
        status, out = heavy["result"]
        assert status == 400, out
        assert "time limit of 20 s" in out["error"] and "YURONG_ANALYST_MAX_EXECUTION_TIME_S" in out["error"]
        # the sink is still alive and its rows are complete
        p.check_alive()
        rows = p.sql("SELECT count() FROM enterprise_profile FINAL WHERE status = 'suspended' AND has({u:Array(String)}, uscc)",
                     u=usccs[:10])
        assert rows == [[10]]
