"""Monitoring and deployment assets stay consistent with the code (no network).

- every PromQL expression in the Grafana dashboard and the Prometheus rules names only metrics
  that monitoring/metrics.py defines (or recording rules / Prometheus built-ins);
- the Prometheus rules pass their promtool unit tests (required when ``CI`` is set);
- docker-compose.yml parses and configures the app services only through ``YURONG_*`` variables;
  its Kafka is secured like the local stack's (no PLAINTEXT listener in the configuration
  scripts/compose/kafka-start.sh writes, each app with its own password, the CA's key in one volume
  that no app mounts). tests/integration/test_compose_kafka.py runs those scripts for real.
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

DASHBOARD_DIR = REPO / "monitoring" / "grafana" / "dashboards"
DASHBOARD = DASHBOARD_DIR / "yurong-pipeline.json"
# every dashboard Grafana provisions (the whole folder), by uid
DASHBOARDS = {"yurong-pipeline": DASHBOARD, "yurong-assessment": DASHBOARD_DIR / "yurong-assessment.json"}
PROVISIONING = REPO / "monitoring" / "grafana" / "provisioning"
PROM_DIR = REPO / "monitoring" / "prometheus"
RULES = PROM_DIR / "rules.yml"
RULES_TEST = PROM_DIR / "rules_test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_SCRIPTS = REPO / "scripts" / "compose"

# Series Prometheus itself produces, which rules and dashboards may use.
BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2", "start", "end",
}

# Environment variables an app service may set besides YURONG_* (runtime plumbing, no config).
ALLOWED_APP_ENV = {"TZ", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}

# One-shot set-up jobs built from the yurong image: not app services (kafka-security runs as the
# Kafka super user and holds the principals' passwords; tested on their own below).
SETUP_SERVICES = {"kafka-security"}

# The Kafka principal each app service logs in as (streams/core/access.py), by its command, and
# the .env variable holding that principal's password.
KAFKA_LOGINS = {
    ("yurong", "connect", "market"): ("connector-market", "KAFKA_CONNECTOR_MARKET_PASSWORD"),
    ("yurong", "worker"): ("worker", "KAFKA_WORKER_PASSWORD"),
    ("yurong", "sink"): ("sink", "KAFKA_SINK_PASSWORD"),
}


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
    return {name: svc for name, svc in compose["services"].items() if "build" in svc and name not in SETUP_SERVICES}


def kafka_clients(compose: dict) -> dict[str, dict]:
    """The app services that talk to Kafka (they wait for it)."""
    return {name: svc for name, svc in app_services(compose).items() if "kafka" in (svc.get("depends_on") or {})}


_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` against ``env``."""
    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"{name} is required: {arg}")
        return arg or ""
    return _INTERPOLATION.sub(one, value).replace("$$", "$")


def mounts(svc: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of a service's volumes, short or long syntax."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), v["target"], bool(v.get("read_only"))))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def required_vars(value: str) -> set[str]:
    return set(re.findall(r"\$\{(\w+)", value))


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


def test_dashboard_folder_holds_the_dashboards():
    assert {p.name for p in DASHBOARD_DIR.glob("*.json")} == {p.name for p in DASHBOARDS.values()}


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_dashboard_is_provisionable(uid):
    dash = json.loads(DASHBOARDS[uid].read_text(encoding="utf-8"))
    assert dash["uid"] == uid
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


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_dashboard_exprs_reference_known_metrics(uid):
    assert dashboard_metric_names(uid)


def dashboard_metric_names(uid: str) -> set[str]:
    """The series names a dashboard's expressions use, each checked to be a known one."""
    dash = json.loads(DASHBOARDS[uid].read_text(encoding="utf-8"))
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
    return used


def test_dashboards_cover_every_metric():
    used: set[str] = set()
    for uid in DASHBOARDS:
        used |= dashboard_metric_names(uid)
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in known_metric_names()}
    covered = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    assert families <= covered, f"metrics without a panel: {sorted(families - covered)}"
    assessment = promql_series_names(" ".join(dashboard_exprs(json.loads(DASHBOARDS["yurong-assessment"].read_text()))))
    assert {n for n in families if n.startswith("yurong_dept_assessment_")} <= assessment


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
    exprs = [e for path in DASHBOARDS.values() for e in dashboard_exprs(json.loads(path.read_text(encoding="utf-8")))]
    rules = []
    for i, expr in enumerate(exprs):
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
        "kafka-certs", "kafka", "kafka-security", "clickhouse", "redis", "market-db", "connector-market", "worker",
        "sink", "simulator", "prometheus", "grafana",
    ):
        assert name in services, name
    assert services["simulator"].get("profiles") == ["demo"]
    commands = {name: svc["command"] for name, svc in app_services(compose).items()}
    assert commands == {
        "connector-market": ["yurong", "connect", "market"],
        "worker": ["yurong", "worker"],
        "sink": ["yurong", "sink"],
        "simulator": ["yurong", "simulate", "--kinds", "", "--rate", "20"],
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


# ---------------------------------------------------------------- docker compose: Kafka secured


def kafka_start_config(tmp_path: Path) -> tuple[dict[str, str], dict[str, str], subprocess.CompletedProcess]:
    """Run scripts/compose/kafka-start.sh --config-only with the kafka service's environment
    (placeholder secrets); returns server.properties and admin.properties as dicts, and the run."""
    svc = load_compose()["services"]["kafka"]
    secrets = {"KAFKA_ADMIN_PASSWORD": "unit-admin-pw", "KAFKA_KEYSTORE_PASSWORD": "unit-keystore-pw"}
    env = {k: interpolate(v, secrets) for k, v in env_dict(svc["environment"]).items()}
    env.update(PATH=os.environ.get("PATH", "/usr/bin:/bin"), KAFKA_CONF_DIR=str(tmp_path / "conf"))
    done = subprocess.run(["sh", str(COMPOSE_SCRIPTS / "kafka-start.sh"), "--config-only"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr

    def props(path: Path) -> dict[str, str]:
        assert path.stat().st_mode & 0o777 == 0o600, f"{path.name} holds the admin password: mode 0600"
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        return dict(ln.split("=", 1) for ln in lines)

    for secret in secrets.values():
        assert secret not in done.stdout + done.stderr
    return props(tmp_path / "conf" / "server.properties"), props(tmp_path / "conf" / "admin.properties"), done


def test_compose_kafka_config_has_no_plaintext(tmp_path):
    server, admin, _ = kafka_start_config(tmp_path)
    text = "\n".join(f"{k}={v}" for k, v in server.items())
    assert "PLAINTEXT" not in text.upper(), "no PLAINTEXT (nor SASL_PLAINTEXT) listener"
    protocols = dict(pair.split(":", 1) for pair in server["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) == {"SASL_SSL"}
    for key in ("listeners", "advertised.listeners"):
        names = {item.split("://", 1)[0] for item in server[key].split(",")}
        assert names <= set(protocols), f"{key} names a listener without a protocol: {names - set(protocols)}"
    assert {item.split("://", 1)[0] for item in server["listeners"].split(",")} == {"SASL_SSL", "HOST", "CONTROLLER"}
    advertised = dict(item.split("://", 1) for item in server["advertised.listeners"].split(","))
    assert advertised["SASL_SSL"] == "kafka:9092" and advertised["HOST"] == "127.0.0.1:29092"
    assert server["inter.broker.listener.name"] == "SASL_SSL"
    # the local stack's rules (scripts/stack.sh kafka_write_config)
    assert server["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert server["allow.everyone.if.no.acl.found"] == "false"
    assert server["super.users"] == "User:admin"
    assert server["auto.create.topics.enable"] == "false"
    assert server["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert server["listener.name.host.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert server["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert server["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert server["ssl.keystore.type"] == "PKCS12" and server["ssl.truststore.type"] == "PEM"
    assert server["ssl.keystore.location"] == "/secrets/broker.p12"
    assert server["ssl.truststore.location"] == "/secrets/ca.crt"
    assert admin["security.protocol"] == "SASL_SSL" and admin["sasl.mechanism"] == "SCRAM-SHA-512"
    assert 'username="admin"' in admin["sasl.jaas.config"]


def test_compose_kafka_service_runs_the_start_script():
    services = load_compose()["services"]
    kafka, certs = services["kafka"], services["kafka-certs"]
    assert kafka["command"] == ["sh", "/opt/yurong/compose/kafka-start.sh"]
    assert certs["command"] == ["sh", "/opt/yurong/compose/kafka-certs.sh"]
    assert certs["restart"] == "no"
    assert kafka["depends_on"]["kafka-certs"]["condition"] == "service_completed_successfully"
    for svc in (kafka, certs):
        assert ("./scripts/compose", "/opt/yurong/compose", True) in mounts(svc)
        assert not [v for v in env_dict(svc["environment"]).values() if "PLAINTEXT" in v.upper()]
    # the health check logs in as admin with the client settings the start script writes
    env = env_dict(kafka["environment"])
    check = kafka["healthcheck"]["test"][1]
    assert "kafka-broker-api-versions.sh --bootstrap-server kafka:9092" in check
    assert f"--command-config {env['KAFKA_CONF_DIR']}/admin.properties" in check
    # the keystore password is the one kafka-certs protected the store with
    assert env["KAFKA_KEYSTORE_PASSWORD"] == env_dict(certs["environment"])["KAFKA_KEYSTORE_PASSWORD"]


def test_compose_every_kafka_client_has_its_own_password():
    compose = load_compose()
    services = compose["services"]
    clients = kafka_clients(compose)
    assert set(clients) == {"connector-market", "worker", "sink"}
    seen: dict[str, str] = {}
    for name, svc in clients.items():
        principal, var = KAFKA_LOGINS[tuple(svc["command"])]
        env = env_dict(svc["environment"])
        assert env.get("YURONG_KAFKA_USERNAME", "") == "", f"{name} logs in as its own principal {principal}"
        assert required_vars(env["YURONG_KAFKA_PASSWORD"]) == {var}, f"{name}: YURONG_KAFKA_PASSWORD must come from {var}"
        assert env["YURONG_KAFKA_PASSWORD"].startswith(f"${{{var}:?"), f"{name}: {var} must be required"
        others = {v for value in env.values() for v in required_vars(value)
                  if v.startswith("KAFKA_") and v.endswith("_PASSWORD")} - {var}
        assert not others, f"{name} gets other principals' passwords: {others}"
        assert var not in seen, f"{name} and {seen.get(var)} share {var}"
        seen[var] = name
        assert svc["depends_on"]["kafka-security"]["condition"] == "service_completed_successfully", name
    # the simulator writes to its database only: no Kafka login
    assert "YURONG_KAFKA_PASSWORD" not in env_dict(services["simulator"]["environment"])
    # nobody but the broker and the one-shot that applies the ACLs gets the super user's password
    for name, svc in services.items():
        text = yaml.safe_dump(svc)
        if name not in {"kafka", "kafka-security"}:
            assert "KAFKA_ADMIN_PASSWORD" not in text, f"{name} gets the Kafka admin password"


def test_compose_kafka_security_service():
    compose = load_compose()
    services = compose["services"]
    sec = services["kafka-security"]
    assert sec["restart"] == "no"
    assert sec["image"] == services["worker"]["image"], "kafka-security runs the yurong image"
    assert sec["command"] == ["sh", "/opt/yurong/compose/kafka-security.sh"]
    assert sec["depends_on"]["kafka"]["condition"] == "service_healthy"
    env = env_dict(sec["environment"])
    assert env["YURONG_KAFKA_USERNAME"] == "admin"
    assert required_vars(env["YURONG_KAFKA_PASSWORD"]) == {"KAFKA_ADMIN_PASSWORD"}
    assert env["YURONG_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    # the principals' passwords land in a tmpfs, never in a volume
    tmpfs = [t.split(":", 1)[0] for t in sec["tmpfs"]]
    assert any(env["YURONG_KAFKA_SECRETS_DIR"].startswith(t.rstrip("/") + "/") for t in tmpfs), tmpfs
    # it gets the password of every principal an app logs in as, under the name the script reads
    script = (COMPOSE_SCRIPTS / "kafka-security.sh").read_text()
    written = dict(re.findall(r"([a-z-]+)=(KAFKA_\w+_PASSWORD)", script))
    for principal, var in KAFKA_LOGINS.values():
        assert written.get(principal) == var, f"kafka-security.sh does not write {principal}'s password from {var}"
    for var in written.values():
        assert required_vars(env[var]) == {var}, f"kafka-security: {var}"
    assert {"consent", "operator"} <= set(written)


def test_compose_apps_mount_the_ca_certificate_only():
    compose = load_compose()
    services = compose["services"]
    certs_env = env_dict(services["kafka-certs"]["environment"])
    by_target = {target: source for source, target, _ in mounts(services["kafka-certs"])}
    key_volume, ca_volume = by_target[certs_env["KAFKA_SECRETS_DIR"]], by_target[certs_env["KAFKA_CA_DIR"]]
    assert key_volume != ca_volume
    assert {key_volume, ca_volume} <= set(compose["volumes"])
    # the volume with the CA's key and the broker's key store: kafka-certs writes it, kafka reads it
    holders = {name for name, svc in services.items() for source, _, _ in mounts(svc) if source == key_volume}
    assert holders == {"kafka-certs", "kafka"}
    assert (key_volume, "/secrets", True) in mounts(services["kafka"])
    # every Kafka client (and kafka-security) mounts the CA certificate's volume read-only where
    # YURONG_KAFKA_CA_LOCATION points
    for name, svc in {**kafka_clients(compose), "kafka-security": services["kafka-security"]}.items():
        ca = env_dict(svc["environment"])["YURONG_KAFKA_CA_LOCATION"]
        assert (ca_volume, str(Path(ca).parent), True) in mounts(svc), f"{name} must mount {ca_volume} read-only"
    for name, svc in app_services(compose).items():
        assert key_volume not in {source for source, _, _ in mounts(svc)}, f"{name} mounts the CA key's volume"


def test_compose_scripts_are_posix_sh():
    for script in sorted(COMPOSE_SCRIPTS.glob("*.sh")):
        assert script.read_text().startswith("#!/bin/sh\n"), f"{script.name}: the images' sh (busybox, dash) runs it"
        done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"
        if shutil.which("shellcheck"):
            done = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stdout


def stack_kafka_config() -> dict[str, str]:
    """The broker settings scripts/stack.sh ``kafka_write_config`` writes (variables unexpanded)."""
    text = (REPO / "scripts" / "stack.sh").read_text(encoding="utf-8")
    body = re.search(r"^kafka_write_config\(\) \{.*?<<EOF\n(.*?)^EOF$", text, re.S | re.M)
    assert body, "kafka_write_config's server.properties in scripts/stack.sh"
    lines = [ln for ln in body.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def test_compose_kafka_is_secured_like_the_local_stack(tmp_path):
    stack = stack_kafka_config()
    compose, _, _ = kafka_start_config(tmp_path)
    assert "authorizer.class.name" in stack and "super.users" in stack
    # by design: a PKCS12 store (keytool, no openssl in the image) and the published HOST listener
    different = {"ssl.keystore.type", "listener.security.protocol.map"}
    for key, value in stack.items():
        assert key in compose, f"compose's broker lacks {key}"
        if "$" not in value and key not in different:
            assert compose[key] == value, f"{key}: compose {compose[key]!r}, local stack {value!r}"
    stack_map = dict(p.split(":", 1) for p in stack["listener.security.protocol.map"].split(","))
    compose_map = dict(p.split(":", 1) for p in compose["listener.security.protocol.map"].split(","))
    assert stack_map.items() <= compose_map.items()
