"""`yurong erase` against the running pipeline (connector, worker and sink as child processes):
the running worker forgets the enterprise, so its next change builds a profile from that change
alone; no row from before the erasure is left in ClickHouse; the other enterprises are untouched;
the banks' held-back alerts naming it are gone.

Before the worker took erase requests (control.erasures), the command deleted the rows and wrote
tombstones, but the running worker kept the profile in memory: the next change re-published it,
abnormal listings, pledges and statuses from before the erasure included.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import time

import psycopg2
import pytest
import redis

from connectors.simulator.market import ABNORMAL_REASONS, MarketSimulator
from sinks.analyst.credentials import CredentialStore
from sinks.clickhouse.erase import ERASABLE
from streams.kafka.admin import ensure_topics
from streams.worker.consent_store import ConsentRegistry
from tests.conftest import TEST_KEY, drop_database, make_database, wait_for
from tests.harness import IsolatedPipeline, skip_history

pytestmark = pytest.mark.e2e

ENTERPRISES = 8


@pytest.fixture
def erasure_db(pg_admin_dsn, unique):
    name = f"market_er{unique}"
    dsn = make_database(pg_admin_dsn, name)
    yield dsn
    drop_database(pg_admin_dsn, name)


def ts(text: str) -> float:
    """Epoch seconds of a DateTime64 the gateway returned as text (UTC)."""
    t = dt.datetime.fromisoformat(text)
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def execute(dsn: str, sql: str, *params) -> None:
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute(sql, params)
    pg.close()


def test_an_erased_enterprise_comes_back_only_with_what_happens_after_the_erasure(
        erasure_db, kafka_admin, redis_url, unique, tmp_path):
    sim = MarketSimulator(erasure_db, seed=int(unique[:6], 16), distress_share=0.0)
    sim.create_schema()
    usccs = sim.seed_enterprises(ENTERPRISES)
    target, others = usccs[0], usccs[1:]
    bank = f"b{random.Random(unique).randint(1000, 9999)}"
    # one alert per bank, enterprise and category an hour: the second status change is held back
    p = IsolatedPipeline(tmp_path, erasure_db, kafka_admin, redis_url, unique, TEST_KEY,
                         {"YURONG_CLICKHOUSE_BATCH_SECONDS": "0.3", "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.1",
                          "YURONG_ALERTS_THROTTLE_MAX": "1", "YURONG_ALERTS_THROTTLE_WINDOW_S": "3600"},
                         label="erase")
    token = CredentialStore(tmp_path / "home" / "secrets" / "analysts.json").add("dpo", "operator", replace=True)

    async def setup(reg: ConsentRegistry):
        for code in (target, others[0]):
            await reg.grant(bank, code, "post-loan monitoring", expiry_ms=4_102_444_800_000,
                            recorded_by="consent", evidence_ref="auth-letter:test/0001")
        await reg.watch(bank, [target, others[0]])
    p.registry(setup)
    ensure_topics(kafka_admin, {f"alerts.{bank}": {}})
    skip_history(kafka_admin, p.app_id, p.sink_group)
    admin_redis = redis.from_url(redis_url, decode_responses=True)
    throttled = f"{p.prefix}throttled:{bank}"

    def rows(sql: str, **params) -> list[list]:
        got = p.sql(sql, **params)
        assert got is not None, "the sink's gateway answers\n" + p.logs_tail()
        return got

    def profile(code: str) -> dict | None:
        got = p.sql("SELECT status, abnormal_open_count, abnormal_listings_total, version, registered_capital "
                    "FROM enterprise_profile FINAL WHERE uscc = {u:String}", u=code)
        if not got:
            return None
        return dict(zip(("status", "open", "listings", "version", "capital"), got[0], strict=True))

    def counts(code: str) -> dict[str, int]:
        return {t: rows(f"SELECT count() FROM {t} WHERE uscc = {{u:String}}", u=code)[0][0] for t in ERASABLE}

    def keys(code: str) -> dict[str, set]:
        """The distinct keys of the enterprise's rows per table (row counts shrink as merges collapse versions)."""
        key = {"enterprise_profile": "version", "enterprise_profile_history": "version", "enterprise_event": "event_id",
               "risk_change": "change_id", "alert_delivery": "alert_id"}
        return {t: {r[0] for r in rows(f"SELECT DISTINCT {k} FROM {t} WHERE uscc = {{u:String}}", u=code)}
                for t, k in key.items()}

    def held_back() -> list[str]:
        return [f["uscc"] for _, f in admin_redis.xrange(throttled)]

    with p.running():
        wait_for(lambda: (r := p.sql("SELECT count() FROM enterprise_profile FINAL WHERE has({u:Array(String)}, uscc)",
                                     u=usccs)) and r[0][0] == ENTERPRISES, 120,
                 lambda: "the snapshot profiles\n" + p.logs_tail())

        # facts from before the erasure: an abnormal listing, two status changes (the second held back)
        execute(erasure_db, "INSERT INTO abnormal_operation (uscc, reason_code, listed_date, authority) "
                "VALUES (%s, %s, %s, %s)", target, ABNORMAL_REASONS[0], dt.date.today(), "重庆市市场监督管理局")
        execute(erasure_db, "UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", target)
        execute(erasure_db, "UPDATE enterprise_registration SET status = 'revoked' WHERE uscc = %s", target)
        execute(erasure_db, "UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", others[0])
        execute(erasure_db, "UPDATE enterprise_registration SET status = 'revoked' WHERE uscc = %s", others[0])
        wait_for(lambda: (q := profile(target)) and q["status"] == "revoked" and q["listings"] >= 1
                 and (o := profile(others[0])) and o["status"] == "revoked", 90,
                 lambda: f"the changes before the erasure: {profile(target)}\n" + p.logs_tail())
        wait_for(lambda: target in held_back() and others[0] in held_back(), 60,
                 lambda: f"held-back alerts: {held_back()}\n" + p.logs_tail())
        wait_for(lambda: counts(target)["alert_delivery"] and counts(others[0])["alert_delivery"], 60,
                 lambda: "the first alerts stored\n" + p.logs_tail())
        before = profile(target)
        assert before is not None and before["open"] >= 1
        assert all(counts(target)[t] > 0 for t in ("enterprise_profile", "enterprise_profile_history",
                                                   "enterprise_event", "risk_change", "alert_delivery"))
        kept = {code: (profile(code), keys(code)) for code in others}
        held = held_back().count(target)

        started = time.time()
        done = subprocess.run([sys.executable, "-m", "streams.cli", "erase", "--uscc", target, "--reason",
                               f"request ER-{unique}"], env={**p.env, "YURONG_ANALYST_TOKEN": token},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr + "\n" + p.logs_tail()
        record = json.loads(done.stdout[:done.stdout.rindex("}") + 1])
        print(f"yurong erase took {record['finished_ts_ms'] - record['started_ts_ms']} ms "
              f"(the command: {time.time() - started:.1f} s)")
        assert counts(target) == dict.fromkeys(ERASABLE, 0), "no row of the enterprise right after the command"

        # a change after the erasure: the profile is built from it alone
        execute(erasure_db, "UPDATE enterprise_registration SET registered_capital = 4321 WHERE uscc = %s", target)
        after = wait_for(lambda: profile(target), 90, lambda: "the profile after the erasure\n" + p.logs_tail())
        time.sleep(2)  # anything the pipeline would still bring back from before the erasure
        after = profile(target)
        assert after is not None
        assert (after["capital"], after["status"]) == (4321, "revoked")  # the registration row as it is now
        assert (after["open"], after["listings"]) == (0, 0), f"the listing from before the erasure came back: {after}"
        applied = record["erased"]["worker"]["applied"]  # the worker's confirmation: its marker's offset
        assert applied["app_id"] == p.app_id and applied["had_profile"] is True
        assert after["version"] > applied["events_offset"] > before["version"]
        history = rows("SELECT version FROM enterprise_profile_history WHERE uscc = {u:String}", u=target)
        assert history and all(v > applied["events_offset"] for (v,) in history), history
        # (FINAL: an event stored twice, e.g. re-published by the ingest step after a re-read, is one row)
        events = rows("SELECT op, dataset, ingest_ts, event_id FROM enterprise_event FINAL WHERE uscc = {u:String}",
                      u=target)
        assert [e[:2] for e in events] == [["u", "enterprise_registration"]], events  # no marker, nothing older
        assert all(ts(e[2]) >= started for e in events), events
        changes = rows("SELECT detected_ts FROM risk_change WHERE uscc = {u:String}", u=target)
        assert all(ts(c) >= started for (c,) in changes), changes
        assert counts(target)["alert_delivery"] == 0  # off the watchlist: no alert about it any more

        # the others are untouched (their rows may only have grown: the sink was still storing some)
        for code, (was, was_keys) in kept.items():
            now = keys(code)
            assert profile(code) == was, code
            assert all(now[t] >= k for t, k in was_keys.items()) and now["enterprise_profile_history"], (code, now)
        assert counts(others[0])["alert_delivery"] >= 1

    # the banks' held-back alerts: the erased enterprise's entries deleted, the other's kept
    assert target not in held_back() and others[0] in held_back()
    assert record["erased"]["redis"]["held_back_entries"] == {bank: held}
