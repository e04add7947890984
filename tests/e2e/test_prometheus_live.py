"""Operations watched for real (issue 15, items 3 and 4): the local stack's Prometheus
(scripts/stack.sh, Debian's package, the project's rules) scrapes a running pipeline, every panel
of both Grafana dashboards returns data from it, and the connector alerts fire and resolve.

One pipeline for the module: the market department (PostgreSQL) through connector, worker and
sink (``IsolatedPipeline``), and a MariaDB department (hrss, binlog CDC) as a connector process of
its own. The test writes a file_sd file for them into the stack's ``prometheus/targets/`` (with the
jobs rules.yml and the dashboards expect), makes the run produce what every pipeline panel shows
(dead letters, alerts, throttled and blocked alerts, analysts' SQL), then evaluates every panel's
every query through ``/api/v1/query``. Then it stops the hrss connector and polls ``/api/v1/alerts``
until YurongTargetDown and YurongConnectorHeartbeatMissing fire for it, starts it again and polls
until both are gone.

No Grafana server runs here (no Debian package; compose has one): the dashboards are proven by
their PromQL against the real Prometheus. On the test stack (scripts/test.sh) every alert's
``for:`` is 5 s (YURONG_PROMETHEUS_ALERT_FOR); the test reads the durations Prometheus loaded and
waits accordingly, so it also passes, slower, against the shipped durations.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg2
import pymysql
import pytest
from confluent_kafka import Producer

from connectors.mysql import parse_dsn
from connectors.simulator.market import MarketSimulator
from connectors.simulator.mysql_depts import DEPARTMENTS as MYSQL_DEPTS
from connectors.simulator.mysql_depts import MySqlDepartmentsSimulator
from streams.worker.consent_store import ConsentRegistry
from tests.conftest import TEST_KEY, _unavailable, drop_database, make_database, wait_for
from tests.harness import ConnectorProcess, IsolatedPipeline, skip_history

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "monitoring" / "grafana" / "dashboards"
PIPELINE, ASSESSMENT = "yurong-pipeline", "yurong-assessment"

# Grafana's substitutions: $__rate_interval is what Grafana gives the compose datasource (15 s
# scrapes: 4 x 15 s); a multi-value variable set to All is its allValue (.* in both dashboards).
RATE_INTERVAL = "1m"
HEARTBEAT_STALE_S = 60  # YurongConnectorHeartbeatMissing: time() - heartbeat > 60


# ---------------------------------------------------------------- Prometheus's HTTP API


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400 bad_data (a parse error), 422 execution error
            return json.loads(exc.read())

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def targets(self) -> list[dict]:
        return self.get("/api/v1/targets", state="active")["data"]["activeTargets"]

    def alerts(self) -> list[dict]:
        return self.get("/api/v1/alerts")["data"]["alerts"]

    def alert_rules(self) -> dict[str, dict]:
        return {r["name"]: r for g in self.get("/api/v1/rules", type="alert")["data"]["groups"] for r in g["rules"]}


def prometheus_or_skip() -> Prometheus:
    url = os.environ.get("YURONG_PROMETHEUS_URL", "")
    prom = Prometheus(url)
    try:
        if url and prom.get("/api/v1/status/buildinfo")["status"] == "success":
            return prom
    except OSError:
        pass
    _unavailable(f"the stack's Prometheus (YURONG_PROMETHEUS_URL={url or 'unset'})")
    raise AssertionError("unreachable")


def targets_dir() -> Path:
    d = os.environ.get("YURONG_PROMETHEUS_TARGETS_DIR")
    return Path(d) if d else Path(os.environ["YURONG_HOME"]) / "prometheus" / "targets"


# ---------------------------------------------------------------- the dashboards' queries


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return [p for p in out if p.get("type") != "row"]


def grafana_expr(expr: str) -> str:
    """A panel's expression as Grafana sends it: its variables substituted (All = .*)."""
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "15s").replace("$__range", "1h")
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", ".*", expr)


def dashboard_queries(uid: str) -> list[tuple[str, str]]:
    """(panel title · refId, expression) of every target of every panel."""
    dash = json.loads((DASHBOARDS / f"{uid}.json").read_text(encoding="utf-8"))
    out = [(f"{p['title']} · {t['refId']}", grafana_expr(t["expr"])) for p in panels(dash) for t in p.get("targets", [])]
    assert out and all(expr for _, expr in out), f"{uid}: a panel without an expression"
    return out


def variable_queries(uid: str) -> list[tuple[str, str, str]]:
    """(variable, metric, label) of the dashboard's label_values(metric, label) variables."""
    dash = json.loads((DASHBOARDS / f"{uid}.json").read_text(encoding="utf-8"))
    out = []
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*", q)
        assert m, f"{uid}: variable {var['name']} is not label_values(metric, label): {q}"
        out.append((var["name"], m.group(1), m.group(2)))
    return out


_SELECTOR = re.compile(r"\b(yurong_\w+)(?:\{([^{}]*)\})?")


def scoped(expr: str, matcher: str) -> str:
    """``expr`` with ``matcher`` (e.g. ``run="e2e-…"``) added to every yurong_* selector: its data
    must come from this run's targets, not from series an earlier run left in Prometheus."""
    def one(m: re.Match) -> str:
        inner = (m.group(2) or "").strip().rstrip(",")
        return f"{m.group(1)}{{{matcher}{', ' + inner if inner else ''}}}"
    return _SELECTOR.sub(one, expr)


def test_scoped_adds_the_matcher_to_every_selector():
    assert scoped('sum(rate(yurong_a_total[1m])) / max by (x) (yurong_b{x=~".*"}) - time()', 'run="r"') == \
        'sum(rate(yurong_a_total{run="r"}[1m])) / max by (x) (yurong_b{run="r", x=~".*"}) - time()'


def has_data(result: dict) -> bool:
    """A query's result shows something: a sample that is a number (NaN, e.g. a quantile of no
    observations, shows as no data)."""
    data = result["data"]
    if data["resultType"] == "scalar":
        return not math.isnan(float(data["result"][1]))
    return any(not math.isnan(float(s["value"][1])) for s in data["result"])


def check_panels(prom: Prometheus, uid: str, run: str, timeout: float, drive=None) -> None:
    """Every query of dashboard ``uid`` parses as Grafana sends it and, scoped to this run's
    targets (label ``run``), returns data within ``timeout`` s; every template variable has values.
    ``drive()`` is called between rounds (more traffic)."""
    queries = dashboard_queries(uid)
    for title, expr in queries:
        result = prom.query(expr)
        assert result["status"] == "success", f"{uid}: panel {title}: {expr}\n{result.get('errorType')}: {result.get('error')}"
    pending = {title: scoped(expr, f'run="{run}"') for title, expr in queries}
    variables = {name: (metric, label) for name, metric, label in variable_queries(uid)}
    deadline = time.monotonic() + timeout
    while True:
        for name, (metric, label) in list(variables.items()):
            values = prom.get(f"/api/v1/label/{label}/values", **{"match[]": scoped(metric, f'run="{run}"')})
            assert values["status"] == "success", f"{uid}: variable {name}: {values}"
            if values["data"]:
                del variables[name]
        for title, expr in list(pending.items()):
            result = prom.query(expr)
            assert result["status"] == "success", f"{uid}: panel {title}: {expr}\n{result.get('errorType')}: {result.get('error')}"
            if has_data(result):
                del pending[title]
        if not pending and not variables:
            return
        if time.monotonic() > deadline:
            empty = "\n".join(f"  {t}: {e}" for t, e in pending.items())
            pytest.fail(f"{uid}: no data within {timeout:.0f}s from\n{empty}\nvariables without values: {sorted(variables)}")
        if drive:
            drive()
        time.sleep(2)


# ---------------------------------------------------------------- the run


class LiveRun:
    def __init__(self, prom: Prometheus, pipeline: IsolatedPipeline, hrss: ConnectorProcess, hrss_source: str,
                 market: MarketSimulator, market_dsn: str, kafka: dict, tag: str) -> None:
        self.prom, self.pipeline, self.hrss, self.hrss_source = prom, pipeline, hrss, hrss_source
        self.market, self.market_dsn, self.kafka, self.tag = market, market_dsn, kafka, tag

    def hrss_instance(self) -> str:
        return f"127.0.0.1:{self.hrss.env['YURONG_METRICS_CONNECTOR_PORT']}"

    def drive(self) -> None:
        """A few more market changes, so that rates and latency quantiles have fresh observations."""
        self.pipeline.check_alive()
        self.market.step(3)


@pytest.fixture(scope="module")
def live(kafka_admin, redis_url, pg_admin_dsn, settings, tmp_path_factory):
    prom = prometheus_or_skip()
    tag = secrets.token_hex(4)
    home = tmp_path_factory.mktemp("prometheus-live")

    # the market department: a database of its own, 40 enterprises
    market_dsn = make_database(pg_admin_dsn, f"market_prom{tag}")
    market = MarketSimulator(market_dsn, seed=int(tag[:6], 16), distress_share=0.0)
    market.create_schema()
    usccs = market.seed_enterprises(40)
    # the MariaDB departments under unique names; hrss is the one whose connector runs
    mysql_dsn = settings.source.dsn("hrss", "mysql")
    try:
        pymysql.connect(**{**parse_dsn(mysql_dsn)[0], "connect_timeout": 3}).close()
    except pymysql.err.OperationalError:
        _unavailable("MariaDB")
    depts = MySqlDepartmentsSimulator(mysql_dsn.rsplit("/", 1)[0] + "/{db}", seed=7,
                                      databases={d: f"{d}_prom{tag}" for d in MYSQL_DEPTS})
    depts.create()
    depts.seed(market.enterprises[:20])

    # consents: bank `consented` may be told about a and b; c is watched without a consent (blocked)
    a, b, c = usccs[:3]
    bank = f"b{int(tag[:4], 16) % 9000 + 1000}"
    pipeline = IsolatedPipeline(home, market_dsn, kafka_admin, redis_url, tag, TEST_KEY,
                                {"YURONG_CLICKHOUSE_BATCH_SECONDS": "0.3", "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.1",
                                 "YURONG_ALERTS_THROTTLE_MAX": "1"}, label="prom")

    async def consents(reg: ConsentRegistry):
        for code in (a, b):
            await reg.grant(bank, code, "post-loan monitoring", expiry_ms=4_102_444_800_000,
                            recorded_by="consent", evidence_ref="auth-letter:test/0001")
        await reg.watch(bank, [a, b, c])
    pipeline.registry(consents)
    hrss = ConnectorProcess("hrss", kafka_admin, home / "hrss.log",
                            {"YURONG_SOURCE_DSNS": json.dumps({"hrss": depts.dsn("hrss")})})
    hrss_source = f"hrss@{depts.databases['hrss']}"

    # the targets: the jobs of rules.yml and of compose's prometheus.yml, a label naming this run
    env = pipeline.env
    ports = {"connector-market": (env["YURONG_METRICS_CONNECTOR_PORT"], "yurong-connector"),
             "connector-hrss": (hrss.env["YURONG_METRICS_CONNECTOR_PORT"], "yurong-connector"),
             "worker": (env["YURONG_METRICS_WORKER_PORT"], "yurong-worker"),
             "sink": (env["YURONG_METRICS_SINK_PORT"], "yurong-sink")}
    groups = [{"targets": [f"127.0.0.1:{port}"], "labels": {"job": job, "service": service, "run": f"e2e-{tag}"}}
              for service, (port, job) in ports.items()]
    targets_file = targets_dir() / f"e2e-{tag}.json"
    targets_file.write_text(json.dumps(groups), encoding="utf-8")

    skip_history(kafka_admin, pipeline.app_id, pipeline.sink_group)
    run = LiveRun(prom, pipeline, hrss, hrss_source, market, market_dsn, kafka_admin, tag)
    try:
        with pipeline.running():
            hrss.start()
            started = time.monotonic()
            mine = {t for g in groups for t in g["targets"]}
            wait_for(lambda: {t["labels"]["instance"] for t in prom.targets()
                              if t["labels"].get("run") == f"e2e-{tag}" and t["health"] == "up"} == mine, 90,
                     lambda: f"Prometheus to scrape {sorted(mine)}: {[(t['labels'], t['lastError']) for t in prom.targets()]}"
                             f"\n{pipeline.logs_tail()}\n--- hrss\n{hrss.log_tail()}")
            print(f"scraped {len(mine)} targets {time.monotonic() - started:.1f}s after start")
            produce_events(run, a, b, c)
            yield run
    finally:
        hrss.stop()
        targets_file.unlink(missing_ok=True)
        drop_database(pg_admin_dsn, f"market_prom{tag}")
        admin = pymysql.connect(**parse_dsn(mysql_dsn)[0], autocommit=True)
        with admin.cursor() as cur:
            for db in depts.databases.values():
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()


def produce_events(run: LiveRun, a: str, b: str, c: str) -> None:
    """What the pipeline dashboard shows: the snapshot in ClickHouse, a dead letter, alerts (one
    held back by the throttle of 1), changes nobody consented to (blocked), analysts' SQL."""
    p = run.pipeline
    wait_for(lambda: (rows := p.sql("SELECT count() FROM enterprise_profile FINAL WHERE uscc = {u:String}", u=a)) and rows[0][0] == 1,
             120, lambda: "the snapshot in ClickHouse\n" + p.logs_tail())
    producer = Producer(dict(run.kafka))
    producer.produce("dept.market.enterprise_registration", key=f"garbage-{run.tag}".encode(), value=b"\x00not avro")
    assert producer.flush(10) == 0
    with psycopg2.connect(run.market_dsn) as pg, pg.cursor() as cur:
        for status in ("suspended", "revoked"):  # two status alerts for a: the throttle holds the second back
            cur.execute("UPDATE enterprise_registration SET status = %s WHERE uscc = %s", (status, a))
            pg.commit()
        cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) "
                    "VALUES (%s, 'unreachable_address', CURRENT_DATE)", (b,))
        cur.execute("UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", (c,))
        pg.commit()


# ---------------------------------------------------------------- the tests


def test_every_pipeline_panel_returns_data(live: LiveRun):
    started = time.monotonic()
    check_panels(live.prom, PIPELINE, f"e2e-{live.tag}", 120, drive=live.drive)
    print(f"every {PIPELINE} panel returned data within {time.monotonic() - started:.1f}s")


def test_connector_alerts_fire_and_resolve(live: LiveRun):
    prom, hrss = live.prom, live.hrss
    rules = prom.alert_rules()
    hb_for, down_for = rules["YurongConnectorHeartbeatMissing"]["duration"], rules["YurongTargetDown"]["duration"]
    instance = live.hrss_instance()

    def firing() -> dict[str, dict]:
        out = {}
        for alert in prom.alerts():
            labels = alert["labels"]
            if (labels["alertname"] == "YurongTargetDown" and labels.get("instance") == instance
                    or labels["alertname"] == "YurongConnectorHeartbeatMissing" and labels.get("source") == live.hrss_source):
                out[labels["alertname"]] = alert
        return out

    # the connector serves its heartbeat, nothing fires for it
    wait_for(lambda: prom.query(f'yurong_connector_heartbeat_timestamp_seconds{{source="{live.hrss_source}"}}')["data"]["result"],
             60, lambda: f"the hrss heartbeat in Prometheus\n{hrss.log_tail()}")
    assert not firing()

    stopped = time.monotonic()
    hrss.stop()
    wait_for(lambda: firing().get("YurongTargetDown", {}).get("state") == "firing", down_for + 30,
             lambda: f"YurongTargetDown firing for {instance}: {prom.alerts()}")
    print(f"YurongTargetDown firing {time.monotonic() - stopped:.1f}s after the connector stopped (for: {down_for}s)")
    wait_for(lambda: firing().get("YurongConnectorHeartbeatMissing", {}).get("state") == "firing",
             HEARTBEAT_STALE_S + hb_for + 40,
             lambda: f"YurongConnectorHeartbeatMissing firing for {live.hrss_source}: {prom.alerts()}")
    alert = firing()["YurongConnectorHeartbeatMissing"]
    assert alert["labels"]["severity"] == "critical"
    assert live.hrss_source in alert["annotations"]["summary"]
    print(f"YurongConnectorHeartbeatMissing firing {time.monotonic() - stopped:.1f}s after the connector stopped "
          f"(> {HEARTBEAT_STALE_S}s, for: {hb_for}s)")

    back = time.monotonic()
    hrss.start()
    wait_for(lambda: not firing(), 90, lambda: f"the hrss alerts to resolve: {firing()}\n{hrss.log_since_start()[-2000:]}")
    print(f"both resolved {time.monotonic() - back:.1f}s after the connector came back")


def test_every_assessment_panel_returns_data(live: LiveRun):
    """数据汇集考核: the sink assesses the departments (sinks/assessment.py) and exports the
    yurong_dept_assessment_* gauges; every panel and the $dept variable show them."""
    wait_for(lambda: any(k.startswith("yurong_dept_assessment_score{") for k in live.pipeline.metrics("SINK")), 60,
             lambda: "the sink's yurong_dept_assessment_score\n" + live.pipeline.logs_tail(), interval=1)
    started = time.monotonic()
    check_panels(live.prom, ASSESSMENT, f"e2e-{live.tag}", 90, drive=live.drive)
    print(f"every {ASSESSMENT} panel returned data within {time.monotonic() - started:.1f}s")
