"""Monitoring and deployment assets stay consistent with the code (no network).

- every PromQL expression in the Grafana dashboard and the Prometheus rules names only metrics
  that monitoring/metrics.py defines (or recording rules / Prometheus built-ins);
- the Prometheus rules pass their promtool unit tests (required when ``CI`` is set);
- docker-compose.yml parses and configures the app services only through ``YURONG_*`` variables.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import monitoring.metrics  # noqa: F401  (registers the yurong_* metrics)

REPO = Path(__file__).resolve().parents[2]

DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "yurong-pipeline.json"
PROVISIONING = REPO / "monitoring" / "grafana" / "provisioning"
PROM_DIR = REPO / "monitoring" / "prometheus"
RULES = PROM_DIR / "rules.yml"
RULES_TEST = PROM_DIR / "rules_test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
COMPOSE = REPO / "docker-compose.yml"

# Series Prometheus itself produces, which rules and dashboards may use.
BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2", "start", "end",
}

# Environment variables an app service may set besides YURONG_* (runtime plumbing, no config).
ALLOWED_APP_ENV = {"TZ", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


# ---------------------------------------------------------------- helpers


def known_metric_names() -> set[str]:
    """Exposed series names of the yurong_* metrics in the default registry."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("yurong_"):
            continue
        base = family.name
        if family.type == "counter" and base.endswith("_total"):  # older clients keep the suffix
            base = base[: -len("_total")]
        names.update(base + s for s in suffixes.get(family.type, ("",)))
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:$])[A-Za-z_:][A-Za-z0-9_:]*")


def promql_series_names(expr: str) -> set[str]:
    """Metric (series) names referenced by a PromQL expression.

    Removes strings, label matchers, range/subquery brackets and grouping label lists, then
    keeps identifiers that are neither function calls nor keywords.
    """
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("("):  # function or aggregation
            continue
        if name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def test_promql_series_names_parser():
    assert promql_series_names(
        'histogram_quantile(0.99, sum by (stage, le) (rate(yurong_e2e_latency_seconds_bucket{stage=~"$stage"}[$__rate_interval])))'
    ) == {"yurong_e2e_latency_seconds_bucket"}
    assert promql_series_names(
        "changes(a_b[15m]) == 0 and on (source) c_d > 1e9 unless on () sum(x:y:z) offset 5m"
    ) == {"a_b", "c_d", "x:y:z"}


def dashboard_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def dashboard_exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in dashboard_panels(dash) for t in p.get("targets", []) if t.get("expr")]


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def recording_rule_names(rules: dict) -> set[str]:
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def env_keys(environment) -> list[str]:
    if environment is None:
        return []
    if isinstance(environment, dict):
        return list(environment)
    return [item.split("=", 1)[0] for item in environment]


def env_dict(environment) -> dict[str, str]:
    if isinstance(environment, dict):
        return {k: "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment or [])


def app_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


# ---------------------------------------------------------------- metrics registry


def test_metrics_module_registers_yurong_metrics():
    names = known_metric_names()
    for expected in (
        "yurong_events_in_total",
        "yurong_dlq_total",
        "yurong_e2e_latency_seconds_bucket",
        "yurong_connector_slot_lag_bytes",
    ):
        assert expected in names


# ---------------------------------------------------------------- Grafana


def test_dashboard_is_provisionable():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] == "yurong-pipeline"
    assert dash["schemaVersion"] >= 36
    panels = [p for p in dashboard_panels(dash) if p["type"] != "row"]
    assert panels
    ids = [p["id"] for p in dashboard_panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}, p["title"]
        assert p.get("targets"), p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] == "prometheus", p["title"]


def test_dashboard_exprs_reference_known_metrics():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    known = known_metric_names() | BUILTIN_SERIES | recording_rule_names(load_rules())
    exprs = dashboard_exprs(dash)
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        names = promql_series_names(expr)
        assert names, f"expression names no metric: {expr}"
        unknown = names - known
        assert not unknown, f"unknown metric(s) {sorted(unknown)} in dashboard expr: {expr}"
        used |= names
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.match(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,", q)
        if m:
            assert m.group(1) in known, f"template variable {var['name']} queries unknown metric {m.group(1)}"
    # the dashboard covers every yurong metric family
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in known_metric_names()}
    covered = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    assert families <= covered, f"metrics without a panel: {sorted(families - covered)}"


def test_grafana_provisioning():
    ds = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (prom,) = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert prom["uid"] == "prometheus"
    assert prom["url"] == "http://prometheus:9090"
    dp = yaml.safe_load((PROVISIONING / "dashboards" / "yurong.yml").read_text(encoding="utf-8"))
    assert any(p["options"]["path"] == "/var/lib/grafana/dashboards" for p in dp["providers"])


# ---------------------------------------------------------------- Prometheus


def test_rules_parse_and_reference_known_metrics():
    rules = load_rules()
    known = known_metric_names() | BUILTIN_SERIES | recording_rule_names(rules)
    alerts = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            names = promql_series_names(rule["expr"])
            assert names, rule
            unknown = names - known
            assert not unknown, f"unknown metric(s) {sorted(unknown)} in rule {rule.get('alert') or rule.get('record')}"
            if "alert" in rule:
                alerts.append(rule["alert"])
                assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
                assert rule["annotations"].get("summary"), rule["alert"]
    assert len(alerts) == len(set(alerts))
    # every alert has a promtool unit test
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert set(alerts) <= tested, f"alerts without a unit test: {sorted(set(alerts) - tested)}"


def test_prometheus_config_scrapes_the_app_services():
    cfg = yaml.safe_load(PROM_CONFIG.read_text(encoding="utf-8"))
    targets = {t for job in cfg["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert {"connector-market:9101", "worker:9102", "sink:9103"} <= targets
    for rf in cfg["rule_files"]:
        assert (PROM_CONFIG.parent / rf).is_file(), f"rule file {rf} does not resolve next to prometheus.yml"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}:
            pytest.fail("promtool is required in CI (Debian/Ubuntu package `prometheus`)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return promtool


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_promtool_rule_unit_tests():
    _run([_promtool(), "test", "rules", str(RULES_TEST.relative_to(REPO))])


def test_promtool_check_config_and_rules():
    promtool = _promtool()
    _run([promtool, "check", "rules", str(RULES.relative_to(REPO))])
    _run([promtool, "check", "config", "--syntax-only", str(PROM_CONFIG.relative_to(REPO))])


def test_promtool_parses_dashboard_exprs(tmp_path):
    """Every dashboard expression is valid PromQL (Grafana variables replaced by sample values)."""
    promtool = _promtool()
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rules = []
    for i, expr in enumerate(dashboard_exprs(dash)):
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    _run([promtool, "check", "rules", str(path)])


# ---------------------------------------------------------------- docker compose


def test_compose_parses_and_has_the_services():
    compose = load_compose()
    services = compose["services"]
    for name in (
        "kafka", "clickhouse", "redis", "market-db", "connector-market", "worker", "sink",
        "simulator", "prometheus", "grafana",
    ):
        assert name in services, name
    assert services["simulator"].get("profiles") == ["demo"]
    commands = {name: svc["command"] for name, svc in app_services(compose).items()}
    assert commands == {
        "connector-market": ["yurong", "connect", "market"],
        "worker": ["yurong", "worker"],
        "sink": ["yurong", "sink"],
        "simulator": ["yurong", "simulate", "--rate", "20"],
    }
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if isinstance(cond, dict) and cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, which has no healthcheck"


def test_compose_app_services_use_only_yurong_env():
    compose = load_compose()
    apps = app_services(compose)
    assert apps
    for name, svc in apps.items():
        keys = env_keys(svc.get("environment"))
        assert keys, f"{name} has no environment"
        bad = [k for k in keys if not k.startswith("YURONG_") and k not in ALLOWED_APP_ENV]
        assert not bad, f"{name} sets non-YURONG_ variables: {bad}"
        assert "env_file" not in svc, f"{name}: pass settings explicitly, not through env_file"
        env = env_dict(svc["environment"])
        assert env["YURONG_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["YURONG_METRICS_BIND"] == "0.0.0.0"
        # secrets come from the deployment's environment, never literals in the file
        for key, value in env.items():
            if re.search(r"(PASSWORD|SECRET|HMAC_KEY|TOKEN)$", key):
                assert value.startswith("${"), f"{name}: {key} must be interpolated from the environment"
            m = re.match(r"^[a-z][a-z0-9+]*://[^:/@]+:([^@]+)@", value)
            if m:
                assert m.group(1).startswith("${"), f"{name}: {key} embeds a literal password"


def test_compose_env_matches_settings_fields():
    """Every YURONG_* variable in compose is a field some settings class reads."""
    from streams import settings as s

    classes = [
        s.PathSettings, s.KafkaSettings, s.ClickHouseSettings, s.RedisSettings,
        s.MaskingSettings, s.SourceSettings, s.WorkerSettings, s.MetricsSettings, s.AlertSettings, s.RiskSettings,
    ]
    known = {
        (cls.model_config.get("env_prefix") or "") .upper() + field.upper()
        for cls in classes
        for field in cls.model_fields
    }
    for name, svc in app_services(load_compose()).items():
        unknown = [k for k in env_keys(svc.get("environment")) if k.startswith("YURONG_") and k not in known]
        assert not unknown, f"{name} sets variables no settings class reads: {unknown}"


def test_env_example_has_placeholders_only():
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    values = dict(
        line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    compose_text = "\n".join(
        line for line in COMPOSE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")
    )
    required = set(re.findall(r"\$\{(\w+):\?", compose_text))
    assert required <= set(values), f".env.example misses {sorted(required - set(values))}"
    for key in required:
        assert "CHANGE-ME" in values[key], f"{key} in .env.example must be a CHANGE-ME placeholder"
