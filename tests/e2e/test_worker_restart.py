"""A restarted worker recovers its profile table from the changelog: the next change of an
enterprise is compared with what the worker knew before the restart, not with nothing."""

from __future__ import annotations

import random

import psycopg2
import pytest

from connectors.simulator.market import MarketSimulator
from streams.codecs.serde import schema_store
from streams.kafka.admin import ensure_topics
from streams.worker.consent_store import ConsentRegistry
from tests.conftest import TEST_KEY, drop_database, make_database, wait_for
from tests.harness import IsolatedPipeline, skip_history

pytestmark = pytest.mark.e2e


@pytest.fixture
def restart_db(pg_admin_dsn, unique):
    name = f"market_rs{unique}"
    dsn = make_database(pg_admin_dsn, name)
    yield dsn
    drop_database(pg_admin_dsn, name)


def test_profiles_survive_a_worker_restart(restart_db, kafka_admin, redis_url, unique, tmp_path, topic_reader):
    schemas = schema_store()
    sim = MarketSimulator(restart_db, seed=int(unique[:6], 16), distress_share=0.0)
    sim.create_schema()
    usccs = sim.seed_enterprises(30)
    target = usccs[0]
    bank = f"b{random.Random(unique).randint(1000, 9999)}"
    p = IsolatedPipeline(tmp_path, restart_db, kafka_admin, redis_url, unique, TEST_KEY,
                         {"YURONG_CLICKHOUSE_BATCH_SECONDS": "0.3", "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.1"})

    async def setup(reg: ConsentRegistry):
        await reg.grant(bank, target, "post-loan monitoring", expiry_ms=4_102_444_800_000,
                            recorded_by="consent", evidence_ref="auth-letter:test/0001")
        await reg.watch(bank, [target])
    p.registry(setup)
    ensure_topics(kafka_admin, {f"alerts.{bank}": {}})
    alerts = topic_reader([f"alerts.{bank}"])
    skip_history(kafka_admin, p.app_id, p.sink_group)

    def set_status(status: str) -> None:
        with psycopg2.connect(restart_db) as pg, pg.cursor() as cur:
            cur.execute("UPDATE enterprise_registration SET status = %s WHERE uscc = %s", (status, target))
        pg.close()

    def received() -> list[dict]:
        p.check_alive()
        alerts.poll(0.3)
        return [schemas.decode(m.value(), "risk/alert")[1] for m in alerts.messages]

    with p.running():
        wait_for(lambda: (rows := p.sql("SELECT count() FROM enterprise_profile FINAL WHERE has({u:Array(String)}, uscc)",
                                        u=usccs)) and rows[0][0] == 30, 120, lambda: "the snapshot profiles\n" + p.logs_tail())
        set_status("suspended")
        first = wait_for(lambda: received(), 60, lambda: "the first alert\n" + p.logs_tail())[0]
        assert (first["before"]["status"], first["after"]["status"]) == ("active", "suspended")

    with p.running():  # the worker starts again and rebuilds its table from the changelog
        set_status("revoked")
        second = wait_for(lambda: len(received()) > 1 and received()[1], 90, lambda: "the second alert\n" + p.logs_tail())
        worker_log = (p.logs / "worker.log").read_text(errors="replace")

    assert (second["before"]["status"], second["after"]["status"]) == ("suspended", "revoked"), \
        "the restarted worker compared with the profile it had before the restart"
    assert second["score_before"] == first["score_after"] < 850
    assert "Error in recovery" not in worker_log
