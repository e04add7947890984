"""The sink's read-only SQL endpoint and `yurong sql` through it, on an embedded chDB in tmp_path."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.simulator.identities import make_uscc
from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
from sinks.query_server import AnalystSQL, serve_queries
from sinks.rows import profile_row
from tests.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
YURONG = Path(sys.executable).with_name("yurong")
_RNG = random.Random("sql-endpoint")
USCCS = sorted({make_uscc(_RNG, "500103") for _ in range(3)})


def profile(uscc: str, version: int, status: str) -> dict:
    return {
        "uscc": uscc, "name": None, "status": status, "district_code": "500103", "industry_code": "C3011",
        "registered_capital": 100.0, "established_date": "2018-05-01", "legal_rep_pseudonym": "p1",
        "legal_rep_id_masked": "5001**********123X", "legal_rep_name_masked": "李*", "legal_rep_phone_masked": None,
        "address_masked": None, "abnormal_open_ids": [], "abnormal_listings_total": 0, "risk_score": 700,
        "indicators": {}, "ratings": {}, "score_factors": [],
        "risk_level": "B", "reason_codes": [], "version": version, "last_event_id": f"e{version}",
        "last_event_ts_ms": 1_767_225_600_000, "updated_ts_ms": 1_767_225_600_000,
    }


@dataclass
class Endpoint:
    dsn: str
    port: int
    writer: ClickHouseWriter

    def post(self, sql: str, parameters: dict | None = None, principal: str | None = "analyst-1") -> tuple[int, dict]:
        body = {"sql": sql, **({"parameters": parameters} if parameters else {}),
                **({"principal": principal} if principal else {})}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/query", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def audit(self) -> list[tuple]:
        with self.writer.lock:
            return self.writer.client.query("SELECT principal, query, rows, ok, error != '' FROM sql_audit ORDER BY ts").result_rows

    def table_rows(self) -> int:
        with self.writer.lock:
            return self.writer.client.query("SELECT count() FROM enterprise_profile").result_rows[0][0]


@pytest.fixture
def endpoint(tmp_path) -> Iterator[Endpoint]:
    dsn = f"chdb://{tmp_path / 'chdb'}"
    client = open_client(dsn, "yurong")
    try:
        apply_schema(client)
        writer = ClickHouseWriter(client)
        writer.write("enterprise_profile", [profile_row(profile(u, 10 + i, "active")) for i, u in enumerate(USCCS)], "t1")
        writer.write("enterprise_profile", [profile_row(profile(USCCS[0], 50, "suspended"))], "t2")
        port = free_port()
        analyst = AnalystSQL(dsn, "yurong", writer)
        server = serve_queries(analyst, port)
        try:
            yield Endpoint(dsn, port, writer)
        finally:
            server.shutdown()
            server.server_close()
            analyst.close()
    finally:
        client.close()


def test_queries_return_columns_and_rows(endpoint):
    status, out = endpoint.post("SELECT uscc, status, version FROM enterprise_profile FINAL ORDER BY uscc")
    assert status == 200
    assert out["columns"] == ["uscc", "status", "version"]
    assert out["rows"] == [[USCCS[0], "suspended", 50], [USCCS[1], "active", 11], [USCCS[2], "active", 12]]


def test_parameters_are_bound_server_side(endpoint):
    sql = "SELECT uscc, version FROM enterprise_profile FINAL WHERE uscc = {u:String} AND version >= {v:Int64}"
    assert endpoint.post(sql, {"u": USCCS[1], "v": 11}) == (200, {"columns": ["uscc", "version"], "rows": [[USCCS[1], 11]]})
    # a value is data, never SQL: a quote cannot widen the filter
    status, out = endpoint.post(sql, {"u": f"{USCCS[1]}' OR '1'='1", "v": 0})
    assert (status, out["rows"]) == (200, [])


@pytest.mark.parametrize("sql", [
    "INSERT INTO enterprise_profile (uscc, risk_level, version, last_event_id, last_event_ts, updated_ts)"
    " VALUES ('x', 'A', 1, 'e', now64(3), now64(3))",
    "DROP TABLE enterprise_profile",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT count() FROM enterprise_profile SETTINGS readonly = 0",
])
def test_writes_and_file_access_are_refused_and_the_store_keeps_working(endpoint, sql):
    status, out = endpoint.post(sql, principal="mallory")
    assert status == 400
    assert "readonly" in out["error"].lower()
    assert endpoint.table_rows() == 4  # nothing inserted, nothing dropped
    # the refusal is audited, and neither the analysts nor the sink are locked out afterwards
    assert ("mallory", sql, 0, False, True) in endpoint.audit()
    assert endpoint.post("SELECT count() FROM enterprise_profile FINAL") == (200, {"columns": ["count()"], "rows": [[3]]})
    endpoint.writer.write("enterprise_profile", [profile_row(profile(USCCS[1], 99, "revoked"))], "after-refusal")
    assert endpoint.post("SELECT max(version) FROM enterprise_profile FINAL")[1]["rows"] == [[99]]


def test_every_query_is_audited_with_principal_and_outcome(endpoint):
    endpoint.post("SELECT uscc FROM enterprise_profile FINAL", principal="alice")
    endpoint.post("SELECT no_such_column FROM enterprise_profile", principal="bob")
    endpoint.post("SELEC 1", principal="bob")
    endpoint.post("SELECT 1", principal=None)
    assert endpoint.audit() == [
        ("alice", "SELECT uscc FROM enterprise_profile FINAL", 3, True, False),
        ("bob", "SELECT no_such_column FROM enterprise_profile", 0, False, True),
        ("bob", "SELEC 1", 0, False, True),
        ("anonymous", "SELECT 1", 1, True, False),
    ]


def test_only_the_query_path_is_served(endpoint):
    req = urllib.request.Request(f"http://127.0.0.1:{endpoint.port}/admin", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 404
    assert endpoint.audit() == []


def _yurong_sql(endpoint: Endpoint, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "YURONG_CLICKHOUSE_DSN": endpoint.dsn, "YURONG_CLICKHOUSE_QUERY_PORT": str(endpoint.port),
           "USER": "cli-analyst", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([str(YURONG), "sql", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_yurong_sql_goes_through_the_running_endpoint(endpoint):
    # the endpoint's process holds the chDB path: the CLI can only answer through it
    done = _yurong_sql(endpoint, "SELECT count() FROM enterprise_profile FINAL WHERE status = {s:String}",
                       "--param", "s=active", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"columns": ["count()"], "rows": [[2]]}
    assert endpoint.audit() == [("cli-analyst", "SELECT count() FROM enterprise_profile FINAL WHERE status = {s:String}",
                                 1, True, False)]


def test_yurong_sql_reports_a_refused_query_as_a_one_line_error(endpoint):
    done = _yurong_sql(endpoint, "DROP TABLE enterprise_profile")
    assert done.returncode == 2
    assert "error:" in done.stderr and "readonly" in done.stderr.lower()
    assert "Traceback" not in done.stderr
    assert endpoint.table_rows() == 4


def test_analysts_read_profiles_as_of_a_date_and_related_parties(endpoint):
    """History holds every version; the as-of view gives the one in force at a time; enterprises
    sharing a legal representative are linked by the person's pseudonym alone."""
    day = 86_400_000
    t0 = 1_767_225_600_000  # 2026-01-01

    def version(uscc: str, v: int, status: str, ts: int, person: str) -> list:
        return profile_row({**profile(uscc, v, status), "last_event_ts_ms": ts, "legal_rep_pseudonym": person,
                            "risk_level": "E" if status == "revoked" else "B"})

    history = [
        version(USCCS[0], 100, "active", t0, "p_same"),
        version(USCCS[0], 140, "suspended", t0 + 30 * day, "p_same"),
        version(USCCS[0], 180, "revoked", t0 + 60 * day, "p_same"),
        version(USCCS[1], 110, "active", t0 + 10 * day, "p_same"),
        version(USCCS[2], 120, "active", t0 + 10 * day, "p_other"),
    ]
    endpoint.writer.write("enterprise_profile_history", history, "history")
    endpoint.writer.write("enterprise_profile", [history[2], history[3], history[4]], "latest")

    sql = "SELECT uscc, status FROM enterprise_profile_as_of(as_of = {t:DateTime64(3, 'UTC')}) ORDER BY uscc"
    assert endpoint.post(sql, {"t": "2026-01-05 00:00:00"})[1]["rows"] == [[USCCS[0], "active"]]
    assert endpoint.post(sql, {"t": "2026-02-15 00:00:00"})[1]["rows"] == [
        [USCCS[0], "suspended"], [USCCS[1], "active"], [USCCS[2], "active"]]
    assert endpoint.post(sql, {"t": "2026-12-31 00:00:00"})[1]["rows"][0] == [USCCS[0], "revoked"]

    status, out = endpoint.post("SELECT person_pseudonym, enterprises, arraySort(usccs), enterprises_at_risk FROM related_party")
    assert (status, out["rows"]) == (200, [["p_same", 2, sorted(USCCS[:2]), 1]])
    status, out = endpoint.post("SELECT related_uscc, related_risk_level FROM enterprise_related WHERE uscc = {u:String}",
                                {"u": USCCS[1]})
    assert (status, out["rows"]) == (200, [[USCCS[0], "E"]])
