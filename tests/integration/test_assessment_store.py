"""The assessment over a real chDB store: each indicator measured from rows as the sink writes them,
kept in dept_assessment and on the gauges, and reported by `yurong assess` through the gateway as a
table, CSV and XLSX; recomputing is an operator's."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from openpyxl import load_workbook
from prometheus_client import REGISTRY

from connectors.simulator.identities import make_uscc
from sinks.analyst import open_gateway, serve
from sinks.analyst.credentials import CredentialStore
from sinks.assessment import Assessor, open_assessor
from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
from streams.core.catalogue import catalogue
from streams.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
YURONG = Path(sys.executable).with_name("yurong")
RNG = random.Random("assessment-store")
ACTIVE = sorted({make_uscc(RNG, "500103") for _ in range(10)})
CANCELLED = make_uscc(RNG, "500104")
UNKNOWN = make_uscc(RNG, "500105")


@dataclass
class Store:
    home: Path
    dsn: str
    port: int
    writer: ClickHouseWriter
    assessor: Assessor
    tokens: dict[str, str]

    def cli(self, *args: str, role: str = "analyst") -> subprocess.CompletedProcess:
        env = {**os.environ, "YURONG_HOME": str(self.home), "YURONG_CLICKHOUSE_DSN": self.dsn,
               "YURONG_CLICKHOUSE_QUERY_PORT": str(self.port), "YURONG_ANALYST_TOKEN": self.tokens[role],
               "NO_COLOR": "1", "COLUMNS": "400"}
        return subprocess.run([str(YURONG), "assess", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)


def _event(i: int, uscc: str, dept: str, dataset: str, op: str, attrs: dict, ts: dt.datetime, lag_s: float = 1.0):
    return [f"e{dept}{dataset}{i}", uscc, dept, dataset, op, attrs, {}, f"dept.{dept}.{dataset}", 0, i, str(i), i,
            "true" if op == "r" else "false", ts, ts + dt.timedelta(seconds=lag_s)]


def _seed(writer: ClickHouseWriter, now: dt.datetime) -> None:
    today = now.date().isoformat()
    late = (now.date() - dt.timedelta(days=30)).isoformat()
    future = (now.date() + dt.timedelta(days=60)).isoformat()
    t = now - dt.timedelta(minutes=2)
    registered = t - dt.timedelta(days=40)  # cancelled well before the grace period
    ev = []
    # the market register: ten active enterprises and a cancelled one, read by the snapshot
    for i, u in enumerate(ACTIVE):
        ev.append(_event(i, u, "market", "enterprise_registration", "r",
                         {"uscc": u, "name": "某公司", "status": "active", "established_date": "2019-01-01",
                          "legal_rep_id_number_pseudonym": f"p1_rep{i}"}, registered))
    ev.append(_event(99, CANCELLED, "market", "enterprise_registration", "r",
                     {"uscc": CANCELLED, "name": "某公司", "status": "cancelled", "established_date": "2019-01-01"},
                     registered))
    # tax: on time, complete, but files for half the active enterprises only
    for i, u in enumerate(ACTIVE[:5]):
        ev.append(_event(i, u, "tax", "tax_filing", "c", {"uscc": u, "period": "2026-11", "filing_date": today,
                                                         "tax_type": "vat"}, t))
    # tax arrears: one names the registered legal representative, one another person
    ev.append(_event(0, ACTIVE[0], "tax", "tax_arrears", "c", {"uscc": ACTIVE[0], "since_date": today,
                                                              "legal_rep_id_number_pseudonym": "p1_rep0"}, t))
    ev.append(_event(1, ACTIVE[1], "tax", "tax_arrears", "c", {"uscc": ACTIVE[1], "since_date": today,
                                                              "legal_rep_id_number_pseudonym": "p1_someone_else"}, t))
    # hrss: every active enterprise
    for i, u in enumerate(ACTIVE):
        ev.append(_event(i, u, "hrss", "social_insurance", "c", {"uscc": u, "period": "2026-10", "paid_date": today,
                                                                "payment_status": "paid"}, t))
    # environment: each penalty reported a month after its decision
    for i, u in enumerate(ACTIVE[:6]):
        ev.append(_event(i, u, "environment", "environmental_penalty", "c", {"uscc": u, "decision_date": late}, t))
    # power: half its records about an enterprise the register does not know, or the cancelled one, or dated ahead
    for i, u in enumerate(ACTIVE):
        ev.append(_event(i, u, "power", "electricity_usage", "c", {"uscc": u, "period": "2026-11",
                                                                   "meter_read_date": today}, t))
    for i in range(4):
        ev.append(_event(10 + i, UNKNOWN, "power", "electricity_usage", "c", {"uscc": UNKNOWN, "meter_read_date": today}, t))
        ev.append(_event(20 + i, CANCELLED, "power", "electricity_usage", "c",
                         {"uscc": CANCELLED, "meter_read_date": today}, t))
        ev.append(_event(30 + i, ACTIVE[i], "power", "electricity_usage", "c",
                         {"uscc": ACTIVE[i], "meter_read_date": future}, t))
    # customs: slow to arrive (an hour from commit to the platform)
    for i, u in enumerate(ACTIVE):
        ev.append(_event(i, u, "customs", "customs_trade", "c", {"uscc": u, "period": "2026-11", "customs_code": "8001"},
                         t - dt.timedelta(hours=1), lag_s=3600))
    writer.write("enterprise_event", ev, "assess-seed")
    # court: many of its records were refused
    dlq = [["dlq.dept.court.litigation_case", 0, i, "dept.court.litigation_case", 0, i, "worker", "validation",
            "ValidationError", "filed_date", "litigation_case.filed_date is not a date", 100, now] for i in range(30)]
    ev_court = [_event(i, ACTIVE[i % 10], "court", "litigation_case", "c", {"uscc": ACTIVE[i % 10], "filed_date": today},
                       t) for i in range(10)]
    writer.write("dlq_event", dlq, "assess-dlq")
    writer.write("enterprise_event", ev_court, "assess-court")
    # heartbeats every 5 s for the last two minutes from every department but water
    hb = [[f"{d}@{d}", d, "postgres", "", False, 1, 0, now - dt.timedelta(seconds=s)]
          for d in catalogue().departments if d != "water" for s in range(0, 120, 5)]
    writer.write("connector_heartbeat", hb, "assess-hb")


@pytest.fixture
def store(tmp_path, monkeypatch) -> Iterator[Store]:
    home = tmp_path / "home"
    dsn = f"chdb://{tmp_path / 'chdb'}"
    for k, v in {"YURONG_HOME": str(home), "YURONG_CLICKHOUSE_DSN": dsn, "YURONG_ANALYST_AUDIT_CHAIN": "test",
                 "YURONG_SOURCE_HEARTBEAT_INTERVAL_S": "5", "YURONG_ASSESS_INTERVAL_S": "3600"}.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    creds = CredentialStore(settings.analyst.credentials_path(home))
    tokens = {r: creds.add(r, r) for r in ("analyst", "operator", "auditor")}
    client = open_client(dsn, "yurong")
    try:
        apply_schema(client, settings.retention)
        writer = ClickHouseWriter(client)
        _seed(writer, dt.datetime.now(dt.UTC))
        assessor = open_assessor(settings, writer)
        gateway = open_gateway(settings, client, writer.lock,
                               assessor=lambda day: [asdict(a) for a in assessor.assess(day)])
        port = free_port()
        server = serve(gateway, "127.0.0.1", port)
        try:
            yield Store(home, dsn, port, writer, assessor, tokens)
        finally:
            server.shutdown()
            server.server_close()
            gateway.close()
            assessor.close()
    finally:
        client.close()


def _dept(rows, dept):
    return next(r for r in rows if r.dept == dept and r.dataset == "")


def test_each_department_is_scored_for_what_it_did(store):
    rows = store.assessor.assess(dt.datetime.now(dt.UTC).date())
    assert {r.dept for r in rows} == set(catalogue().departments)
    tax = next(r for r in rows if (r.dept, r.dataset) == ("tax", "tax_filing"))
    assert tax.indicators["coverage"] == pytest.approx(0.5)
    assert any("50% of active enterprises covered" in x for x in tax.reasons)
    arrears = next(r for r in rows if (r.dept, r.dataset) == ("tax", "tax_arrears"))
    assert arrears.indicators["conflict_share"] == 0.5  # counted, not scored (docs/assessment.md)
    hrss = next(r for r in rows if (r.dept, r.dataset) == ("hrss", "social_insurance"))
    assert hrss.indicators["coverage"] == 1.0 and "delay_p50_days" not in hrss.indicators  # no reporting date listed
    env = next(r for r in rows if (r.dept, r.dataset) == ("environment", "environmental_penalty"))
    assert env.indicators["delay_p50_days"] == pytest.approx(30, abs=1)  # a date 30 days back, at this time of day
    assert any("30 days after their business date" in x for x in env.reasons)
    power = next(r for r in rows if (r.dept, r.dataset) == ("power", "electricity_usage"))
    assert (power.indicators["unknown_uscc_share"], power.indicators["after_deregistration_share"],
            power.indicators["future_date_share"]) == pytest.approx((4 / 22, 4 / 22, 4 / 22))
    assert power.dimensions["consistency"] < 20
    customs = next(r for r in rows if (r.dept, r.dataset) == ("customs", "customs_trade"))
    assert customs.indicators["lag_p95_s"] == pytest.approx(3600, abs=1) and customs.dimensions["timeliness"] < 70
    court = next(r for r in rows if (r.dept, r.dataset) == ("court", "litigation_case"))
    assert court.indicators["valid_share"] == pytest.approx(10 / 40)
    assert any("validation:filed_date ×30" in x for x in court.reasons)
    water = _dept(rows, "water")
    assert water.dimensions["availability"] == 0.0 and any("connector up 0%" in x for x in water.reasons)
    assert _dept(rows, "tax").dimensions["availability"] == 100.0
    # kept, and on the gauges
    with store.writer.lock:
        kept = store.writer.client.query("SELECT count() FROM dept_assessment FINAL WHERE dataset = ''").result_rows[0][0]
    assert kept == 14
    assert REGISTRY.get_sample_value("yurong_dept_assessment_score", {"dept": "power"}) == _dept(rows, "power").score
    assert REGISTRY.get_sample_value("yurong_dept_assessment_indicator",
                                     {"dept": "water", "dimension": "availability"}) == 0.0


def test_yurong_assess_reports_as_table_csv_and_xlsx(store, tmp_path):
    store.assessor.assess(dt.datetime.now(dt.UTC).date())
    done = store.cli()
    assert done.returncode == 0, done.stderr
    assert "数据汇集考核" in done.stdout and "海关 customs" in done.stdout and "可访问性" in done.stdout
    done = store.cli("--format", "csv")
    assert done.returncode == 0, done.stderr
    table = list(csv.reader(io.StringIO(done.stdout)))
    assert table[0][0] == "部门 department" and len(table) == 15
    scores = [float(r[1]) for r in table[1:]]
    assert scores == sorted(scores)  # the weakest first
    out = tmp_path / "report.xlsx"
    done = store.cli("--format", "xlsx", "--out", str(out), "--datasets")
    assert done.returncode == 0, done.stderr
    ws = load_workbook(out).active
    assert ws["A2"].value == "部门 department" and ws.max_row > 16
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    done = store.cli("--month", month, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert "worst day" in done.stdout


def test_recomputing_a_day_is_an_operators(store):
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    assert store.cli("--date", yesterday).returncode == 2  # not assessed yet
    refused = store.cli("--date", yesterday, "--recompute", role="analyst")
    assert refused.returncode == 2 and "may not recompute" in refused.stderr
    done = store.cli("--date", yesterday, "--recompute", role="operator")
    assert done.returncode == 0, done.stderr
    assert "数据汇集考核 " + yesterday in done.stdout


def test_a_day_is_read_through_the_gateway_only(store):
    body = json.dumps({"sql": "SELECT count() FROM dept_assessment", "parameters": {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{store.port}/query", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401
