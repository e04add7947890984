"""docker-compose.yml runs what it says (issue 15, item 5), checked against the code rather than
against strings (no Docker engine here):

- every service that runs the project image runs a command the ``yurong`` CLI has: parsed by the
  real click command (``make_context``: every option known, every value converted) and its
  ``--help`` answered;
- every ``YURONG_*`` variable a service sets is a field of a settings class of
  streams/settings.py, and the settings classes accept the service's environment (pydantic
  validates every value, with .env.example's placeholders for the secrets);
- the simulator has the settings of every department group its ``--kinds`` names, and its
  databases are compose services it waits for;
- every ``${VAR}`` compose interpolates is in .env.example (set, or a commented optional line);
- Prometheus's scrape targets are the compose services and the ports their components serve
  metrics on (MetricsSettings and the service's own YURONG_METRICS_*), with the jobs rules.yml
  expects; promtool checks the compose configuration; Grafana mounts the provisioning and every
  dashboard where the provisioning looks.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from pydantic_settings import BaseSettings

from streams import settings as settings_module
from streams.cli.commands import main

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
PROM_DIR = REPO / "monitoring" / "prometheus"
GRAFANA = REPO / "monitoring" / "grafana"

# the component each metrics-serving command is, and its MetricsSettings port field
METRICS_COMPONENTS = {"connect": ("connector", "connector_port"), "worker": ("worker", "worker_port"),
                      "sink": ("sink", "sink_port")}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def project_services() -> dict[str, dict]:
    """The services built from this repository (the yurong image)."""
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def env_dict(environment) -> dict[str, str]:
    if isinstance(environment, dict):
        return {k: "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment or [])


def env_example() -> dict[str, str]:
    """.env.example's variables: set ones with their placeholder, commented optional ones (``# VAR=``) as ''."""
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out.setdefault(m.group(2), "" if m.group(1) else m.group(3))
    return out


_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"{name} is required: {arg}")
        return arg or ""
    return _INTERPOLATION.sub(one, value).replace("$$", "$")


def settings_classes() -> list[type[BaseSettings]]:
    return [cls for _, cls in inspect.getmembers(settings_module, inspect.isclass)
            if issubclass(cls, BaseSettings) and cls is not BaseSettings and cls.__module__ == settings_module.__name__]


def settings_env_names() -> set[str]:
    """Every variable a settings class reads: env_prefix + field name, upper-case."""
    return {(cls.model_config.get("env_prefix") or "").upper() + field.upper()
            for cls in settings_classes() for field in cls.model_fields}


def yurong_commands() -> dict[str, list[str]]:
    """service → its command, for the project's services that run the CLI."""
    out = {}
    for name, svc in project_services().items():
        command = svc.get("command")
        assert isinstance(command, list), f"{name}: give the command as a list (exec form)"
        if command[0] == "yurong":
            out[name] = command
    return out


def resolve(args: list[str]) -> tuple[click.Command, click.Context]:
    """The click command ``yurong args`` runs and its parsed context (no callback runs): unknown
    options, bad values and missing arguments raise click's usage errors here."""
    cmd: click.Command = main
    ctx: click.Context | None = None
    name, rest = "yurong", list(args)
    while isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=name, parent=ctx)
        if not rest:
            raise click.UsageError("no command", ctx)
        name, rest = rest[0], rest[1:]
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"yurong has no command {name!r}", ctx)
        cmd = sub
    return cmd, cmd.make_context(name, rest, parent=ctx)


# ---------------------------------------------------------------- commands


def test_every_project_service_runs_the_cli_or_a_repo_script():
    services = project_services()
    assert {"connector-market", "worker", "sink", "simulator"} <= set(yurong_commands())
    for name, svc in services.items():
        command = svc["command"]
        if command[0] != "yurong":  # a set-up script of scripts/compose, mounted from the repository
            assert command[0] == "sh" and command[1].startswith("/opt/yurong/compose/"), name
            script = REPO / "scripts" / "compose" / Path(command[1]).name
            assert script.is_file(), f"{name} runs {command[1]}, which is not in scripts/compose"
            for line in script.read_text().splitlines():  # the yurong commands the script runs
                if re.match(r"^\s*(exec\s+)?yurong\s", line):
                    resolve(line.split("#")[0].split()[1 if line.split()[0] == "yurong" else 2:])


@pytest.mark.parametrize("service", sorted(yurong_commands()))
def test_command_exists_with_its_options(service):
    command = yurong_commands()[service]
    cmd, ctx = resolve(command[1:])  # every option known and its value converted, e.g. --rate a float
    assert ctx.params is not None
    done = CliRunner().invoke(main, [*command[1:], "--help"])
    assert done.exit_code == 0, f"{service}: `{' '.join(command)} --help`\n{done.output}"
    assert f"Usage: yurong {ctx.info_name}" in done.output or "Usage: " in done.output
    assert cmd.callback is not None


def test_a_wrong_command_or_option_is_caught():
    with pytest.raises(click.UsageError):
        resolve(["simulate", "--rate", "20", "--no-such-option"])
    with pytest.raises(click.BadParameter):
        resolve(["simulate", "--rate", "fast"])
    with pytest.raises(click.UsageError):
        resolve(["no-such-command"])
    with pytest.raises(click.UsageError):
        resolve(["connect", "market", "extra-argument"])


# ---------------------------------------------------------------- settings


def test_every_yurong_variable_is_a_settings_field():
    known = settings_env_names()
    assert {"YURONG_KAFKA_BOOTSTRAP_SERVERS", "YURONG_SOURCE_MYSQL_TEMPLATE", "YURONG_METRICS_BIND"} <= known
    for name, svc in project_services().items():
        unknown = [k for k in env_dict(svc.get("environment")) if k.startswith("YURONG_") and k not in known]
        assert not unknown, f"{name} sets variables no settings class reads: {unknown}"


@pytest.mark.parametrize("service", sorted(project_services()))
def test_settings_accept_the_service_environment(service, monkeypatch):
    placeholders = env_example()
    env = {k: interpolate(v, placeholders) for k, v in env_dict(project_services()[service].get("environment")).items()}
    for key in list(os.environ):
        if key.startswith("YURONG_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for cls in settings_classes():
        cls(_env_file=None)  # type: ignore[call-arg]  # pydantic validates every value it reads


def test_simulator_has_the_settings_of_its_groups():
    services = compose()["services"]
    sim = services["simulator"]
    _, ctx = resolve(sim["command"][1:])
    groups = {k for k in ctx.params["kinds"].split(",") if k}
    env = env_dict(sim["environment"])
    # the market register always: its DSN names a compose database the simulator waits for
    needed = {"YURONG_SOURCE_MARKET_DSN"}
    if groups & {"postgres", "polling"}:
        needed.add("YURONG_SOURCE_POSTGRES_TEMPLATE")
    if "mysql" in groups:
        needed.add("YURONG_SOURCE_MYSQL_TEMPLATE")
    missing = sorted(needed - set(env))
    assert not missing, f"simulate --kinds {ctx.params['kinds']!r} needs {missing} (else it connects to 127.0.0.1 and restarts in a loop)"
    if "file" in groups:
        drops = env.get("YURONG_SOURCE_DROP_DIR") or env["YURONG_HOME"] + "/drops"
        targets = [str(v).split(":")[1] for v in sim.get("volumes") or []]
        assert any(drops.startswith(t) for t in targets), "the file-drop group needs a volume for its drop folders"
    for key in needed:
        host = re.match(r"^[a-z]+://[^@]*@([^:/]+)", env[key])
        assert host, f"{key}: {env[key]}"
        assert host.group(1) in services, f"{key} names {host.group(1)}, which is no compose service"
        assert services["simulator"]["depends_on"][host.group(1)]["condition"] == "service_healthy"


def test_every_interpolated_variable_is_in_env_example():
    text = "\n".join(line for line in COMPOSE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    missing = sorted(used - set(env_example()))
    assert not missing, f".env.example lacks {missing}"


# ---------------------------------------------------------------- Prometheus and Grafana


def test_prometheus_scrapes_the_services_on_their_metrics_ports():
    services = compose()["services"]
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    defaults = settings_module.MetricsSettings.model_fields
    scraped: dict[str, tuple[str, int]] = {}
    for job in cfg["scrape_configs"]:
        for group in job.get("static_configs", []):
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = (job["job_name"], int(port))
    # every metrics-serving service is scraped on the port its component serves, under its job
    for name, command in yurong_commands().items():
        if command[1] not in METRICS_COMPONENTS:
            continue
        component, field = METRICS_COMPONENTS[command[1]]
        env = env_dict(services[name]["environment"])
        port = int(env.get(f"YURONG_METRICS_{field.upper()}", defaults[field].default))
        assert scraped.get(name) == (f"yurong-{component}", port), f"{name} serves /metrics on {port}: {scraped.get(name)}"
        assert str(port) in [str(p) for p in services[name].get("expose", [])], f"{name} does not expose {port}"
        assert env["YURONG_METRICS_BIND"] == "0.0.0.0", f"{name} serves metrics on loopback only"
    for host, (job, port) in scraped.items():
        if job == "prometheus":
            assert (host, port) == ("localhost", 9090)
        else:
            assert host in services, f"{job} scrapes {host}, which is no compose service"
    # rules.yml's jobs are the ones scraped
    rules = (PROM_DIR / "rules.yml").read_text(encoding="utf-8")
    assert 'up{job=~"yurong-.*"}' in rules
    # the service runs this configuration with its rules next to it
    prom = services["prometheus"]
    config = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    assert ("./monitoring/prometheus", str(Path(config).parent)) in [tuple(v.split(":")[:2]) for v in prom["volumes"]]
    assert Path(config).name == "prometheus.yml"


def test_promtool_checks_the_compose_configuration():
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}:
            pytest.fail("promtool is required in CI (Debian's `prometheus` package)")
        pytest.skip("promtool not installed")
    done = subprocess.run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr  # the rule files it loads included


def test_grafana_provisions_every_dashboard():
    grafana = compose()["services"]["grafana"]
    mounts = dict(tuple(v.split(":")[:2]) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "yurong.yml").read_text(encoding="utf-8"))
    paths = {p["options"]["path"] for p in provider["providers"]}
    assert mounts["./monitoring/grafana/dashboards"] in paths
    dashboards = sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json"))
    assert {"yurong-pipeline.json", "yurong-assessment.json"} <= set(dashboards)
    home = env_dict(grafana["environment"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent.as_posix() == mounts["./monitoring/grafana/dashboards"] and Path(home).name in dashboards
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    url = datasources["datasources"][0]["url"]
    assert re.fullmatch(r"http://prometheus:9090", url) and "prometheus" in compose()["services"]
