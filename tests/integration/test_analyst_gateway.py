"""The analysts' SQL gateway on an embedded chDB in tmp_path, over HTTP, as `yurong sql` uses it:
identity and roles, the sandbox (every bypass found when the endpoint was a bare read-only
session), limits and quotas, concurrency, and the audit's hash chain."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.simulator.identities import make_uscc
from sinks.analyst import open_gateway, serve
from sinks.analyst.credentials import CredentialStore
from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
from sinks.clickhouse.writer import stored_ttl_days
from sinks.rows import profile_row
from streams.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
YURONG = Path(sys.executable).with_name("yurong")
_RNG = random.Random("sql-endpoint")
USCCS = sorted({make_uscc(_RNG, "500103") for _ in range(3)})
KEY_TEXT = "8f1c0b6d2e7a4f95b3c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9"  # the pseudonymisation key's bytes


def profile(uscc: str, version: int, status: str) -> dict:
    return {
        "uscc": uscc, "name": None, "status": status, "district_code": "500103", "industry_code": "C3011",
        "registered_capital": 100.0, "established_date": "2018-05-01", "legal_rep_pseudonym": "p1_ab",
        "legal_rep_id_masked": "5001**********123X", "legal_rep_name_masked": "李*", "legal_rep_phone_masked": None,
        "address_masked": None, "abnormal_open_ids": [], "abnormal_listings_total": 0, "risk_score": 700,
        "indicators": {}, "ratings": {}, "score_factors": [],
        "risk_level": "B", "reason_codes": [], "version": version, "last_event_id": f"e{version}",
        "last_event_ts_ms": 1_767_225_600_000, "updated_ts_ms": 1_767_225_600_000,
    }


@dataclass
class Gateway:
    port: int
    home: Path
    dsn: str
    writer: ClickHouseWriter
    tokens: dict[str, str]
    credentials: CredentialStore

    def post(self, sql: str, parameters: dict | None = None, as_: str | None = "analyst", path: str = "/query",
             headers: dict | None = None, body: bytes | None = None, token: str | None = None) -> tuple[int, dict]:
        hdrs = {"Content-Type": "application/json"}
        if token or as_:
            hdrs["Authorization"] = f"Bearer {token or self.tokens[as_ or '']}"
        hdrs.update(headers or {})
        data = body if body is not None else json.dumps({"sql": sql, "parameters": parameters or {}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, headers=hdrs, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def audit(self, *columns: str) -> list[tuple]:
        cols = ", ".join(columns or ("principal", "role", "action", "outcome", "query"))
        with self.writer.lock:
            return [tuple(r) for r in self.writer.client.query(
                f"SELECT {cols} FROM yurong_audit.sql_audit ORDER BY seq").result_rows]

    def table_rows(self) -> int:
        with self.writer.lock:
            return self.writer.client.query("SELECT count() FROM enterprise_profile").result_rows[0][0]


@pytest.fixture
def gw(tmp_path, monkeypatch) -> Iterator[Gateway]:
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "pseudonym.key").write_text(KEY_TEXT)
    dsn = f"chdb://{tmp_path / 'chdb'}"
    for k, v in {"YURONG_HOME": str(home), "YURONG_CLICKHOUSE_DSN": dsn, "YURONG_ANALYST_MAX_EXECUTION_TIME_S": "3",
                 "YURONG_ANALYST_MAX_ROWS_TO_READ": "2000000000", "YURONG_ANALYST_MAX_RESULT_ROWS": "1000",
                 "YURONG_ANALYST_QUOTA_QUERIES_PER_HOUR": "40", "YURONG_ANALYST_AUDIT_CHAIN": "test",
                 "YURONG_ANALYST_QUEUE_WAIT_S": "30"}.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    credentials = CredentialStore(settings.analyst.credentials_path(home))
    tokens = {r: credentials.add(r, r) for r in ("analyst", "auditor", "operator")}
    tokens["analyst2"] = credentials.add("analyst2", "analyst")
    client = open_client(dsn, "yurong")
    try:
        apply_schema(client, settings.retention)  # not the process-wide settings: this env is the test's
        writer = ClickHouseWriter(client)
        writer.write("enterprise_profile", [profile_row(profile(u, 10 + i, "active")) for i, u in enumerate(USCCS)], "t1")
        writer.write("enterprise_profile", [profile_row(profile(USCCS[0], 50, "suspended"))], "t2")
        gateway = open_gateway(settings, client, writer.lock)
        port = free_port()
        server = serve(gateway, "127.0.0.1", port)
        try:
            yield Gateway(port, home, dsn, writer, tokens, credentials)
        finally:
            server.shutdown()
            server.server_close()
            gateway.close()
    finally:
        client.close()


# --- what analysts do ------------------------------------------------------------------------------

def test_queries_return_columns_and_rows(gw):
    status, out = gw.post("SELECT uscc, status, version FROM enterprise_profile FINAL ORDER BY uscc")
    assert status == 200, out
    assert out["columns"] == ["uscc", "status", "version"]
    assert out["rows"] == [[USCCS[0], "suspended", 50], [USCCS[1], "active", 11], [USCCS[2], "active", 12]]


@pytest.mark.parametrize("sql", [
    "SELECT risk_level, count() AS n, round(avg(risk_score)) FROM enterprise_profile FINAL GROUP BY risk_level",
    "SELECT countIf(status = 'active'), uniqExact(uscc), quantileExact(0.9)(risk_score), sumIf(version, version > 1)"
    " FROM enterprise_profile",
    "WITH latest AS (SELECT uscc, argMax(status, version) AS s FROM enterprise_profile GROUP BY uscc)"
    " SELECT s, count() FROM latest GROUP BY s ORDER BY s",
    "SELECT uscc, version, row_number() OVER (PARTITION BY uscc ORDER BY version DESC) AS rn FROM enterprise_profile",
    "SELECT arrayMap(x -> x * 2, [1, 2, 3]), toStartOfMonth(now()), formatReadableSize(1024), lower(concat('A', 'B'))",
    "SELECT p.uscc, count(e.event_id) FROM enterprise_profile AS p LEFT JOIN enterprise_event AS e ON e.uscc = p.uscc"
    " WHERE p.uscc IN (SELECT uscc FROM risk_change) OR p.version > 0 GROUP BY p.uscc",
    "SELECT uscc FROM enterprise_profile_as_of(as_of = now64(3)) LIMIT 1",
    "SELECT count() FROM dlq_event UNION ALL SELECT count() FROM alert_delivery",
    "SELECT number FROM numbers(3)",
])
def test_ordinary_analyst_sql_is_allowed(gw, sql):
    status, out = gw.post(sql)
    assert status == 200, out


def test_parameters_are_bound_server_side(gw):
    sql = "SELECT uscc, version FROM enterprise_profile FINAL WHERE uscc = {u:String} AND version >= {v:Int64}"
    assert gw.post(sql, {"u": USCCS[1], "v": 11}) == (200, {"columns": ["uscc", "version"], "rows": [[USCCS[1], 11]]})
    status, out = gw.post(sql, {"u": f"{USCCS[1]}' OR '1'='1", "v": 0})  # a value is data, never SQL
    assert (status, out["rows"]) == (200, [])


# --- the sandbox: every way out that a bare readonly session allowed -----------------------------------

def _bypasses(home: Path) -> list[str]:
    key = home / "secrets" / "pseudonym.key"
    return [
        "SELECT file('/etc/passwd')",
        f"SELECT file('{key}')",
        f"SELECT length(file('{key}'))",
        "SELECT file('/proc/self/environ')",
        f"SELECT file('{home}/../../.env')",
        f"SELECT file('{home}/kafka/data/dept.market.enterprise_registration-0/00000000000000000000.log')",
        "SELECT/**/file('/etc/passwd')",
        "SELECT FiLe('/etc/passwd')",
        "WITH x AS (SELECT file('/etc/passwd') AS f) SELECT f FROM x",
        "SELECT uscc FROM enterprise_profile WHERE uscc = file('/etc/hostname')",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        f"SELECT * FROM file('{key}', 'RawBLOB')",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
        "SELECT * FROM s3('http://127.0.0.1:9/b/k', 'LineAsString')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
        "SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'u', 'p')",
        "SELECT * FROM executable('cat /etc/passwd', 'LineAsString', 'x String')",
        "SELECT * FROM view(SELECT file('/etc/passwd'))",
        "SELECT * FROM merge('yurong_audit', '.*')",
        "SELECT * FROM dictionary('d')",
        "SELECT * FROM system.tables",
        "SELECT * FROM system.processes",
        "SELECT * FROM INFORMATION_SCHEMA.TABLES",
        "SELECT * FROM yurong_audit.sql_audit",
        "SELECT * FROM sql_audit",
        "SELECT * FROM {t:Identifier}",
        "SELECT 1 WHERE 1 IN system.tables",
        "SELECT getSetting('max_execution_time')",
        "SELECT getServerSetting('path')",
        "SELECT hostName(), currentUser()",
        "SELECT dictGet('d', 'x', 1)",
        "SELECT joinGet('j', 'x', 1)",
        "SELECT sleep(3)",
        "SELECT aiGenerate('say hi')",
        "SELECT count() FROM enterprise_profile SETTINGS max_execution_time = 1000",
        "SELECT count() FROM enterprise_profile SETTINGS readonly = 0",
        "SELECT 1 INTO OUTFILE '/tmp/yurong-outfile'",
        "SELECT 1 FORMAT TSV",
        "SELECT 1; SELECT file('/etc/passwd')",
        "INSERT INTO enterprise_profile (uscc, risk_level, version, last_event_id, last_event_ts, updated_ts)"
        " VALUES ('x', 'A', 1, 'e', now64(3), now64(3))",
        "DROP TABLE enterprise_profile",
        "ALTER TABLE enterprise_profile DELETE WHERE 1",
        "SET readonly = 0",
        "SHOW TABLES",
        "EXPLAIN SELECT file('/etc/passwd')",
        "SYSTEM FLUSH LOGS",
    ]


def test_no_query_leaves_the_data(gw):
    for sql in _bypasses(gw.home):
        params = {"t": "system.tables"} if "{t:" in sql else None
        status, out = gw.post(sql, params)
        assert status == 403, f"{sql!r} → {status} {out}"
        assert "root:" not in json.dumps(out) and KEY_TEXT[:16] not in json.dumps(out)
    assert not Path("/tmp/yurong-outfile").exists()
    assert gw.table_rows() == 4  # nothing inserted, nothing dropped
    refused = [r for r in gw.audit() if r[3] == "refused"]
    assert len(refused) == len(_bypasses(gw.home))  # every attempt audited, with who tried
    assert {r[0] for r in refused} == {"analyst"}
    # the store and the analysts are fine afterwards
    assert gw.post("SELECT count() FROM enterprise_profile FINAL") == (200, {"columns": ["count()"], "rows": [[3]]})


def test_each_role_reads_its_tables_only(gw):
    gw.post("SELECT 1")  # an audit row exists
    assert gw.post("SELECT count() FROM yurong_audit.sql_audit", as_="auditor")[0] == 200
    assert gw.post("SELECT count() FROM alert_delivery", as_="auditor")[0] == 200
    assert gw.post("SELECT count() FROM enterprise_profile", as_="auditor")[0] == 403
    # a WITH name covers its own query only: it cannot stand in for a table elsewhere
    assert gw.post("SELECT * FROM (WITH enterprise_profile AS (SELECT 1) SELECT 1) AS a, enterprise_profile",
                   as_="auditor")[0] == 403
    assert gw.post("WITH enterprise_profile AS (SELECT 1 AS x) SELECT x FROM enterprise_profile", as_="auditor")[0] == 200
    assert gw.post("SELECT count() FROM yurong_audit.sql_audit", as_="analyst")[0] == 403
    assert gw.post("SELECT count() FROM yurong_audit.sql_audit", as_="operator")[0] == 403
    assert gw.post("SELECT count() FROM dlq_event", as_="operator")[0] == 200


# --- identity ---------------------------------------------------------------------------------------

def test_requests_without_a_valid_credential_are_refused_and_audited(gw):
    name_token = gw.tokens["analyst"]
    wrong = name_token[: name_token.rindex(".") + 1] + "x" * 43
    assert gw.post("SELECT 1", as_=None)[0] == 401
    assert gw.post("SELECT 1", token=wrong)[0] == 401
    assert gw.post("SELECT 1", token="yra1.nobody.secret")[0] == 401
    assert gw.post("SELECT 1", token="Basic-looking-garbage")[0] == 401
    gw.credentials.revoke("analyst2")
    assert gw.post("SELECT 1", as_="analyst2")[0] == 401
    assert gw.audit("principal", "outcome", "error") == [
        ("", "unauthenticated", "no credential (Authorization: Bearer <token>)"),
        ("analyst", "unauthenticated", "wrong credential"),
        ("nobody", "unauthenticated", "unknown or revoked credential"),
        ("", "unauthenticated", "malformed credential"),
        ("analyst2", "unauthenticated", "unknown or revoked credential"),
    ]


def test_cross_site_and_rebinding_requests_are_refused(gw):
    # a page elsewhere can send text/plain without a preflight, and after DNS rebinding its own Host
    assert gw.post("SELECT 1", headers={"Content-Type": "text/plain"})[0] == 415
    assert gw.post("SELECT 1", headers={"Host": "evil.example"})[0] == 421
    assert gw.post("SELECT 1", headers={"Host": f"evil.example:{gw.port}"})[0] == 421
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/query", method="OPTIONS")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 405 and "Access-Control-Allow-Origin" not in err.value.headers
    assert [r[3] for r in gw.audit()] == ["rejected", "rejected", "rejected"]


def test_the_audit_names_the_verified_principal_not_the_clients_claim(gw):
    env = {**os.environ, "YURONG_HOME": str(gw.home), "YURONG_CLICKHOUSE_DSN": gw.dsn,
           "YURONG_CLICKHOUSE_QUERY_PORT": str(gw.port), "YURONG_ANALYST_TOKEN": gw.tokens["analyst2"],
           "USER": "somebody-else", "LOGNAME": "somebody-else", "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run([str(YURONG), "sql", "SELECT count() FROM enterprise_profile FINAL WHERE status = {s:String}",
                           "--param", "s=active", "--format", "json"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"columns": ["count()"], "rows": [[2]]}
    (row,) = gw.audit("principal", "role", "outcome", "parameters", "rows_returned", "client")
    assert row[:5] == ("analyst2", "analyst", "ok", '{"s": "active"}', 1)
    assert row[5].startswith("127.0.0.1:")


def test_yurong_sql_without_a_credential_says_how_to_get_one(gw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("YURONG_ANALYST_TOKEN")}
    env.update({"YURONG_HOME": str(gw.home), "YURONG_CLICKHOUSE_QUERY_PORT": str(gw.port)})
    done = subprocess.run([str(YURONG), "sql", "SELECT 1"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "yurong analyst add" in done.stderr and "Traceback" not in done.stderr


def test_only_operators_erase(gw):
    status, out = gw.post("", path="/erase", as_="analyst", body=json.dumps({"uscc": USCCS[0], "reason": "x"}).encode())
    assert status == 403
    assert gw.table_rows() == 4
    status, out = gw.post("", path="/erase", as_="operator",
                          body=json.dumps({"uscc": USCCS[0], "reason": "court order 1"}).encode())
    assert status == 200, out
    assert out["erased"]["enterprise_profile"] == 2
    assert gw.table_rows() == 2
    assert [r[:4] for r in gw.audit()] == [("analyst", "analyst", "erase", "forbidden"),
                                           ("operator", "operator", "erase", "ok")]


# --- limits, quotas, concurrency ------------------------------------------------------------------------

def test_a_heavy_query_is_cut_by_its_time_limit_with_a_clear_message(gw):
    status, out = gw.post("SELECT count() FROM numbers(1500000000) WHERE sipHash64(number) % 7 = 1")
    assert status == 400
    assert "time limit of 3 s" in out["error"] and "YURONG_ANALYST_MAX_EXECUTION_TIME_S" in out["error"]
    status, out = gw.post("SELECT count() FROM numbers(3000000000)")
    assert status == 400 and "YURONG_ANALYST_MAX_ROWS_TO_READ" in out["error"]
    status, out = gw.post("SELECT number FROM numbers(5000)")
    assert status == 400 and "YURONG_ANALYST_MAX_RESULT_ROWS" in out["error"]
    assert [r[3] for r in gw.audit()] == ["failed", "failed", "failed"]


def test_two_analysts_query_side_by_side(gw):
    """No lock for all: a short query of another analyst is answered while a long one runs."""
    heavy: dict = {}
    t = threading.Thread(target=lambda: heavy.update(r=gw.post(
        "SELECT count() FROM numbers(1500000000) WHERE sipHash64(number) % 7 = 1", as_="analyst")))
    t.start()
    try:
        time.sleep(0.5)  # let the heavy query take its session
        assert gw.post("SELECT count() FROM enterprise_profile FINAL", as_="analyst2")[0] == 200
        assert t.is_alive(), "the short query should have been answered while the long one ran"
    finally:
        t.join(30)
    assert heavy["r"][0] == 400 and "time limit" in heavy["r"][1]["error"]


def test_one_analyst_runs_one_query_at_a_time(gw):
    heavy: dict = {}
    t = threading.Thread(target=lambda: heavy.update(r=gw.post(
        "SELECT count() FROM numbers(1500000000) WHERE sipHash64(number) % 7 = 1", as_="analyst")))
    t.start()
    try:
        time.sleep(0.5)
        status, out = gw.post("SELECT 1", as_="analyst")
        assert status == 429 and "already runs 1 query" in out["error"]
    finally:
        t.join(30)


def test_an_analyst_over_the_hourly_quota_is_refused(gw):
    for _ in range(40):
        assert gw.post("SELECT 1")[0] == 200
    status, out = gw.post("SELECT 1")
    assert status == 429 and "40 queries in the last hour" in out["error"]
    assert gw.post("SELECT 1", as_="analyst2")[0] == 200  # per analyst
    assert gw.audit("outcome")[-2] == ("quota",)


# --- the audit chain ----------------------------------------------------------------------------------

def _verify(gw: Gateway, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "YURONG_HOME": str(gw.home), "YURONG_CLICKHOUSE_DSN": gw.dsn,
           "YURONG_CLICKHOUSE_QUERY_PORT": str(gw.port), "YURONG_ANALYST_TOKEN": gw.tokens["auditor"],
           "NO_COLOR": "1", "COLUMNS": "250"}
    return subprocess.run([str(YURONG), "audit", "verify", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_audit_chain_detects_edits_and_deletions(gw):
    for i in range(5):
        gw.post("SELECT {i:UInt8}", {"i": i})
    gw.post("SELECT file('/etc/passwd')")
    done = _verify(gw)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout
    (head,) = gw.audit("chain", "seq", "hash")[-1:]
    noted = f"{head[0]}:{head[1]}:{head[2]}"

    with gw.writer.lock:  # someone with write access to the store hides who ran the file() query
        gw.writer.client.command("ALTER TABLE yurong_audit.sql_audit UPDATE principal = 'nobody' WHERE seq = 6 "
                                 "SETTINGS mutations_sync = 2")
    done = _verify(gw)
    assert done.returncode == 1 and "row 6 was altered" in done.stdout, done.stdout

    with gw.writer.lock:
        gw.writer.client.command("ALTER TABLE yurong_audit.sql_audit DELETE WHERE seq IN (3, 6) SETTINGS mutations_sync = 2")
    done = _verify(gw)
    assert done.returncode == 1 and "3..3 are missing" in done.stdout, done.stdout

    # cutting the newest rows leaves a shorter chain that looks valid; the head noted earlier exposes it
    with gw.writer.lock:
        gw.writer.client.command("ALTER TABLE yurong_audit.sql_audit DELETE WHERE seq >= 3 SETTINGS mutations_sync = 2")
    done = _verify(gw, "--expect-head", noted)
    assert done.returncode == 1 and f"row {head[1]}, noted earlier as the head, is gone" in done.stdout, done.stdout
    # and the gateway's next rows go on from its own head, so the cut shows as a gap from then on
    done = _verify(gw)
    assert done.returncode == 1 and "are missing (deleted)" in done.stdout, done.stdout


def test_the_audit_is_kept_at_least_180_days(gw, monkeypatch):
    with gw.writer.lock:
        assert stored_ttl_days(gw.writer.client, "sql_audit", "yurong_audit") == 365
    monkeypatch.setenv("YURONG_ANALYST_AUDIT_RETENTION_DAYS", "90")
    with pytest.raises(ValueError, match="180"):
        Settings()
