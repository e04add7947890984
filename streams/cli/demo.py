"""``yurong demo``: the whole city on the local stack, end to end, in a few minutes.

Starts the stack (Kafka secured: every component logs in as its own principal; PostgreSQL,
MariaDB, Redis), seeds the whole city with the city simulator — the 14 departments over their
four kinds of source (PostgreSQL logical replication, MariaDB binlog, polled databases, file
drops) for one population of enterprises — runs every department's connector (``connect
--all``), the worker and the sink as child processes (logs in ``$YURONG_HOME/logs``), onboards
banks ``b0001`` and ``b0002`` (a login each, client bundles in ``$YURONG_HOME/banks``), grants
``b0001`` consent for a portfolio of enterprises (some on a distress path) while ``b0002``
watches the same portfolio without consent, waits for the city's history to land in ClickHouse,
makes live changes in every department, shows the alerts as each bank reads them with its own
bundle, what arrived per department, the analysts' queries and, last, the assessment.

Each phase is one function called from :func:`run_demo`, numbered from :data:`STEPS`: a new
phase is an entry there and a call in ``run_demo``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.codecs.serde import schema_store
from streams.errors import YurongError
from streams.settings import REPO_ROOT, Settings, get_settings
from streams.worker.secrets import generate_key_file

ANALYST_QUERIES = (
    "SELECT risk_level, count() AS enterprises, round(avg(risk_score)) AS avg_score, "
    "countIf(abnormal_open_count > 0) AS listed_abnormal FROM enterprise_profile FINAL "
    "GROUP BY risk_level ORDER BY risk_level",
    # what an analyst sees of a person: masks and a keyed pseudonym, never the raw values
    "SELECT uscc, status, risk_level, legal_rep_name_masked AS legal_rep, legal_rep_id_masked AS id_number, "
    "legal_rep_phone_masked AS phone, substring(legal_rep_pseudonym, 1, 12) AS pseudonym "
    "FROM enterprise_profile FINAL WHERE risk_level IN ('D', 'E') ORDER BY updated_ts DESC LIMIT 5",
)
# what arrived in ClickHouse per department: the initial load (the city's history) and the live phase
ARRIVALS_QUERY = (
    "SELECT dept, count() AS events, countIf(ingest_ts < {live:DateTime64(3)}) AS initial_load, "
    "countIf(ingest_ts >= {live:DateTime64(3)}) AS live, uniqExact(dataset) AS datasets, "
    "uniqExact(uscc) AS enterprises FROM enterprise_event WHERE ingest_ts >= {since:DateTime64(3)} "
    "AND op != 'erase' GROUP BY dept ORDER BY dept"
)
# the initial load's progress: events ingested (masked, keyed by USCC) and merged into profiles (a profile version each)
LOADED_QUERY = (
    "SELECT (SELECT count() FROM enterprise_event WHERE ingest_ts >= {since:DateTime64(3)} AND op != 'erase') AS ingested, "
    "(SELECT count() FROM enterprise_profile_history WHERE updated_ts >= {since:DateTime64(3)}) AS merged"
)
CONSENTED_BANK = "b0001"
UNCONSENTED_BANK = "b0002"
COMPONENTS = ("connect --all", "worker", "sink")

# The demo's phases, in order; `step(console, key)` prints "<n>/<total> <title>".
STEPS = {
    "stack": "starting the local stack (Kafka KRaft from Maven Central jars, PostgreSQL, MariaDB, Redis)",
    "seed": "seeding the city: 14 departments over PostgreSQL, MariaDB, polled databases and file drops",
    "banks": "banks, consents and watchlists",
    "pipeline": "starting every department's connector (connect --all), worker and sink",
    "load": "the city's history on its way to ClickHouse",
    "live": "live changes in every department; alerts as they arrive",
    "arrivals": "what arrived in ClickHouse, per department and source kind",
    "queries": "analyst queries on ClickHouse while the pipeline runs (yurong sql)",
    "assessment": "data-sharing assessment per department",
}


_STARTED = time.monotonic()


def step(console: Console, key: str, detail: str = "") -> None:
    """``<n>/<total> [<seconds since the demo started>] <title><detail>``."""
    n = list(STEPS).index(key) + 1
    console.print(f"[bold]{n}/{len(STEPS)}[/bold] [dim]+{time.monotonic() - _STARTED:.0f}s[/dim] {STEPS[key]}{detail}")


def child_env() -> dict[str, str]:
    s = get_settings()
    env = dict(os.environ)
    env.setdefault("YURONG_HOME", str(s.paths.home))
    if not (s.masking.hmac_key or s.masking.key_file):
        env["YURONG_MASKING_KEY_FILE"] = str(generate_key_file(s.paths.home / "secrets" / "pseudonym.key"))
    return env


@contextmanager
def pipeline(env: dict[str, str], log_dir: Path, components=("connect market", "worker", "sink")):
    """Run connector, worker and sink as child processes; stop them (SIGTERM) on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for comp in components:
            name = comp.split()[0]
            log = open(log_dir / f"{name}.log", "ab")
            procs.append((name, subprocess.Popen([sys.executable, "-m", "streams.cli", *comp.split()], env=env,
                                                 stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                                 start_new_session=True), log))
        yield procs
    finally:
        for _, p, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for _, p, log in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            log.close()


# --- the phases ----------------------------------------------------------------------------------

def start_stack(console: Console) -> Settings:
    """``stack.sh up``, then the stack's own settings (``stack.sh env``: ports, source templates,
    credentials) for this process and the children, unless set explicitly."""
    home = str(get_settings().paths.home)
    step(console, "stack")
    stack_sh = ["bash", str(REPO_ROOT / "scripts" / "stack.sh")]
    subprocess.run([*stack_sh, "up"], check=True, env={**os.environ, "YURONG_HOME": home})
    exports = subprocess.run([*stack_sh, "env"], check=True, capture_output=True, text=True,
                             env={**os.environ, "YURONG_HOME": home}).stdout
    for line in exports.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(name, " ".join(shlex.split(value)))
    get_settings.cache_clear()
    env = child_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith("YURONG_")})
    get_settings.cache_clear()
    return get_settings()


def seed_city(console: Console, s: Settings, enterprises: int):
    """Create every department's database and drop folder and give ``enterprises`` enterprises
    their history there (on a city seeded before: a tenth as many more, so that every department
    has enterprises to change). Returns the city simulator and the rows it seeded."""
    from rich.progress import Progress, TimeElapsedColumn

    from connectors.simulator.city import CitySimulator

    city = CitySimulator(s, seed=2019)
    city.create()
    city.load_population()
    before = len(city.market.enterprises)
    fresh = enterprises - before if before < enterprises else max(1, enterprises // 10)
    if before:
        # the groups know only what they seeded in this process: new enterprises give them some to change
        city = CitySimulator(s, seed=2019 + before)
        city.load_population()
    step(console, "seed", f": {fresh:,} enterprises" + (f" more ({before:,} registered before)" if before else ""))
    started = time.perf_counter()
    with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=console, transient=True) as progress:
        tasks = {name: progress.add_task(f"seeding {name}", total=fresh) for name in ("market", *city.groups)}
        city.seed(fresh, progress=lambda name, k: progress.advance(tasks[name], k))
    rows = {name: sum(g.rows.values()) for name, g in city.seeded.items()}
    console.print("   " + ", ".join(f"{name} {n:,} rows in {city.seeded[name].seconds:.1f}s" for name, n in rows.items())
                  + f" — {sum(rows.values()):,} rows in {time.perf_counter() - started:.1f}s")
    return city, sum(rows.values())


def setup_banks(console: Console, s: Settings, enterprises: list) -> dict[str, Path]:
    """Onboard both banks; ``b0001`` gets consent for a portfolio and watches it, ``b0002`` watches
    the same portfolio without consent. Returns each bank's client bundle."""
    from streams.cli.bundle import onboard
    from streams.cli.common import with_registry
    from streams.core.access import CONSENT
    from streams.core.consent import new_grant
    from streams.kafka.consent_log import publish_grants
    from streams.kafka.security import kafka_login
    from streams.worker.consent_store import ConsentRegistry

    rng = random.Random(7)
    portfolio = sorted({e.uscc for e in enterprises if e.distressed}
                       | {e.uscc for e in rng.sample(enterprises, min(150, len(enterprises)))})
    step(console, "banks", f": {CONSENTED_BANK} gets consent for {len(portfolio)} enterprises and watches them; "
                           f"{UNCONSENTED_BANK} watches the same ones [bold]without[/bold] consent")

    async def setup(reg: ConsentRegistry) -> list[str]:
        """Watch the portfolio at both banks; return the enterprises still without a consent for b0001."""
        now = int(time.time() * 1000)
        await reg.watch(CONSENTED_BANK, portfolio)
        await reg.watch(UNCONSENTED_BANK, portfolio)
        return [code for code in portfolio
                if not any(g.bank_id == CONSENTED_BANK and g.is_active(now) for g in await reg.grants_of(code))]

    # Both banks are onboarded as a bank would be: a Kafka login of its own that reads only its own
    # alerts.<bank_id>, and a client bundle ($YURONG_HOME/banks/<bank_id>) the demo reads alerts with.
    bundles = {bank: onboard(bank, settings=s)[0] for bank in (CONSENTED_BANK, UNCONSENTED_BANK)}
    console.print(f"   both banks onboarded: a Kafka login that reads only its own alerts.<bank>, client bundles in "
                  f"{s.paths.home / 'banks'}")
    # Consents go where they always go: onto consent.grants (written by the consent service only),
    # which the worker applies to Redis. Each names who recorded it and the signed authorisation.
    consent = kafka_login(CONSENT, s)
    expiry = int((time.time() + 365 * 86400) * 1000)
    publish_grants(consent.conf(),
                   [new_grant(CONSENTED_BANK, code, "post-loan monitoring (贷后监测)", expiry, recorded_by=consent.username,
                              evidence_ref=f"auth-letter:demo/{code}") for code in with_registry(setup)],
                   partitions=s.kafka.topic_partitions)
    return bundles


@dataclass
class AlertTap:
    """Each bank's alerts as the bank reads them, with its own bundle; latency counted for the
    alerts of live changes (source commit → alert published)."""

    bundles: dict[str, Path]
    live_since_ms: int | None = None
    received: dict[str, int] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)

    def __post_init__(self) -> None:
        from streams.cli.bundle import read_bundle_conf

        self.schemas = schema_store()
        for bank, folder in self.bundles.items():  # each bank reads its own topic with its own login
            c = Consumer({**read_bundle_conf(folder), "group.id": f"{bank}.demo-{time.time_ns()}",
                          "auto.offset.reset": "latest", "enable.auto.commit": False})
            c.subscribe([f"alerts.{bank}"])
            self.consumers.append(c)
            self.received[bank] = self.live[bank] = 0

    def poll(self, timeout: float = 0.1) -> list[tuple[dict, float | None]]:
        """New alerts with their latency in seconds (``None`` for alerts of the initial load)."""
        out = []
        for consumer in self.consumers:
            msg = consumer.poll(timeout)
            if msg is None or msg.error() or msg.value() is None:
                continue
            _, alert = self.schemas.decode(msg.value(), "risk/alert")
            self.received[alert["bank_id"]] += 1
            latency = None
            if self.live_since_ms is not None and alert["event_ts_ms"] >= self.live_since_ms:
                self.live[alert["bank_id"]] += 1
                latency = (alert["published_ts_ms"] - alert["event_ts_ms"]) / 1000
                self.latencies.append(latency)
            out.append((alert, latency))
        return out

    def p50(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[len(ordered) // 2] if ordered else float("nan")

    def close(self) -> None:
        for c in self.consumers:
            c.close()


def check_alive(procs, s: Settings) -> None:
    for name, p, _ in procs:
        if p.poll() is not None:
            raise SystemExit(f"{name} exited with {p.returncode}; see {s.paths.home / 'logs' / (name + '.log')}")


def ts_param(ms: int) -> str:
    """A DateTime64(3) query parameter (UTC) for a time in epoch milliseconds."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def routed(s: Settings) -> tuple[float, float]:
    """Risk changes the worker's merge produced and its router read (its ``/metrics``): equal when
    the router has caught up."""
    import urllib.request

    out = routed_in = 0.0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{s.metrics.worker_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0, -1.0  # not up yet
    for line in text.splitlines():
        if 'topic="risk.changes"' in line and 'component="worker"' in line:
            if line.startswith("yurong_events_out_total{"):
                out = float(line.rsplit(" ", 1)[1])
            elif line.startswith("yurong_events_in_total{"):
                routed_in = float(line.rsplit(" ", 1)[1])
    return out, routed_in


def wait_for_load(console: Console, procs, s: Settings, token: str, tap: AlertTap, since_ms: int, expected: int,
                  timeout_s: float = 600, stall_s: float = 30) -> tuple[int, int]:
    """Until ClickHouse holds the events of the rows just seeded, each merged into its enterprise's
    profile, and the router has read every risk change they made (or nothing moves for
    ``stall_s``): live changes then meet an idle pipeline. Returns the events ingested and merged."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.cli.common import run_sql

    step(console, "load", f": {expected:,} rows → connectors → worker (validate, mask, merge, score, route) → sink")
    ingested = merged = 0
    changes, read = 0.0, -1.0
    started = last_change = next_query = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("merged into profiles", total=expected)
        while merged < expected * 0.995 or read < changes:
            check_alive(procs, s)
            tap.poll(0.2)
            now = time.monotonic()
            if now < next_query:
                continue
            next_query = now + 2.0
            try:
                row = run_sql(LOADED_QUERY, {"since": ts_param(since_ms)}, token=token)["rows"][0]
            except YurongError:  # the sink's gateway is not up yet
                row = [ingested, merged]
            state = (int(row[0]), int(row[1]), *routed(s))
            if state != (ingested, merged, changes, read):
                (ingested, merged, changes, read), last_change = state, now
            progress.update(task, completed=min(merged, expected),
                            description=f"ingested {ingested:,}; risk changes routed {max(read, 0):,.0f}/{changes:,.0f}; "
                                        "alerts " + ", ".join(f"{b} {n}" for b, n in tap.received.items()) + "; merged")
            if now - started > timeout_s or (merged and now - last_change > stall_s):
                console.print(f"   [yellow]still loading[/yellow] after {now - started:.0f}s; going on")
                break
    console.print(f"   {ingested:,} events ingested, {merged:,} merged into profiles, {max(read, 0):,.0f} risk changes "
                  f"routed in {time.monotonic() - started:.0f}s; alerts during the load: "
                  + ", ".join(f"{b} {n}" for b, n in tap.received.items()))
    return ingested, merged


def live_phase(console: Console, procs, s: Settings, city, tap: AlertTap, seconds: int, rate: float) -> dict[str, int]:
    """``rate`` changes a second spread over every department for ``seconds``; the alerts as they
    arrive. Returns the changes made, per group and kind."""
    step(console, "live", f": {rate:g}/s for {seconds}s")
    table = Table("bank", "enterprise", "category", "severity", "reasons", "latency")
    changes: dict[str, int] = {}
    tap.live_since_ms = int(time.time() * 1000)
    deadline = time.monotonic() + seconds
    next_tick = time.monotonic()
    with Live(table, console=console, refresh_per_second=4, vertical_overflow="visible"):
        while time.monotonic() < deadline:
            check_alive(procs, s)
            if time.monotonic() >= next_tick:
                for kind, n in city.step(max(1, int(rate))).items():
                    changes[kind] = changes.get(kind, 0) + n
                next_tick += 1.0
            for alert, latency in tap.poll(0.1):
                if latency is not None and table.row_count < 25:
                    table.add_row(alert["bank_id"], alert["uscc"], alert["category"], alert["severity"],
                                  ",".join(alert["reason_codes"][:2]), f"{latency:.2f}s")
    console.print()  # the live table's last line ends here
    time.sleep(3)  # the last changes' events on their way to ClickHouse (polling and file drops: a poll interval)
    for _ in range(20):
        tap.poll(0.1)
    by_group: dict[str, int] = {}
    for kind, n in changes.items():
        by_group[kind.split(".")[0]] = by_group.get(kind.split(".")[0], 0) + n
    console.print("   changes made: " + ", ".join(f"{g} {n}" for g, n in by_group.items()))
    return changes


def show_alerts(console: Console, tap: AlertTap) -> None:
    console.print(f"alerts received: {CONSENTED_BANK} (consented) = {tap.received[CONSENTED_BANK]} "
                  f"({tap.live[CONSENTED_BANK]} from live changes), {UNCONSENTED_BANK} (no consent) = "
                  f"{tap.received[UNCONSENTED_BANK]}; source commit → alert published p50 = {tap.p50():.2f}s "
                  f"({len(tap.latencies)} live alerts)")


def show_arrivals(console: Console, token: str, since_ms: int, live_ms: int) -> dict[str, dict[str, Any]]:
    """Events per department in ClickHouse (one analyst query), beside each department's source
    kind; a department with nothing shows 0. Returns the rows by department."""
    from streams.cli.common import run_sql
    from streams.core.catalogue import catalogue

    step(console, "arrivals")
    console.print(f"[dim]{ARRIVALS_QUERY}[/dim]")
    out = run_sql(ARRIVALS_QUERY, {"since": ts_param(since_ms), "live": ts_param(live_ms)}, token=token)
    got = {row[0]: dict(zip(out["columns"], row, strict=True)) for row in out["rows"]}
    kinds = {"postgres": "PostgreSQL logical replication", "mysql": "MariaDB binlog", "polling": "polling",
             "file": "file drops"}
    t = Table("source kind", "dept", "", "datasets", "events", "initial load", "live", "enterprises")
    depts = sorted(catalogue().departments.values(), key=lambda d: (list(kinds).index(d.kind), d.dept))
    for d in depts:
        row = got.get(d.dept, {})
        t.add_row(kinds[d.kind], d.dept, d.name_zh, f"{row.get('datasets', 0)}/{len(d.datasets)}",
                  f"{int(row.get('events', 0)):,}", f"{int(row.get('initial_load', 0)):,}", f"{int(row.get('live', 0)):,}",
                  f"{int(row.get('enterprises', 0)):,}", style=None if row else "red")
    console.print(t)
    return got


def show_analyst_queries(console: Console, token: str) -> None:
    from streams.cli.common import run_sql
    from streams.cli.output import result_table

    step(console, "queries")
    for query in ANALYST_QUERIES:
        console.print(f"[dim]{query}[/dim]")
        out = run_sql(query, token=token)
        console.print(result_table(out["columns"], out["rows"]))


def show_assessment(console: Console, token: str) -> None:
    """The data-sharing assessment (数据汇集考核) of today so far, as `yurong assess` prints it: the
    sink assesses every YURONG_ASSESS_INTERVAL_S, and the demo waits for a computation made after
    its live phase."""
    from streams.cli import assess as report
    from streams.cli.common import run_sql

    step(console, "assessment", " (数据汇集考核: `yurong assess`, docs/assessment.md)")
    today = dt.datetime.now(dt.UTC).date()
    asked = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    deadline = time.monotonic() + 90
    rows: list = []
    while time.monotonic() < deadline:
        rows = report.day_report(lambda sql, params: run_sql(sql, params, token), today)
        if rows and all(dt.datetime.fromisoformat(str(r["computed_ts"])).replace(tzinfo=None) >= asked for r in rows):
            break
        time.sleep(2)
    if rows:
        console.print(report.table(rows, f"数据汇集考核 {today.isoformat()} (live)"))
    else:
        console.print("   [yellow]no assessment yet[/yellow]: the sink computes it every YURONG_ASSESS_INTERVAL_S")


# --- the demo ------------------------------------------------------------------------------------

def run_demo(console: Console, enterprises: int, seconds: int, rate: float) -> None:
    global _STARTED
    _STARTED = started = time.monotonic()
    console.rule("[bold]渝融 yurong demo — the whole city")
    s = start_stack(console)
    env = dict(os.environ)
    env.setdefault("YURONG_ASSESS_INTERVAL_S", "10")  # the sink's assessment follows the short demo closely
    # the local stack's analyst (stack.sh made the credential): the demo's queries are audited as it
    token = s.analyst.read_token() or (s.paths.home / "secrets" / "analyst.token").read_text(encoding="utf-8").strip()

    city, seeded_rows = seed_city(console, s, enterprises)
    bundles = setup_banks(console, s, city.market.enterprises)

    step(console, "pipeline", f" (logs in {s.paths.home / 'logs'}/{{connect,worker,sink}}.log)")
    tap = AlertTap(bundles)
    since_ms = int(time.time() * 1000)
    try:
        with pipeline(env, s.paths.home / "logs", COMPONENTS) as procs:
            wait_for_load(console, procs, s, token, tap, since_ms, seeded_rows)
            live_phase(console, procs, s, city, tap, seconds, rate)
            assert tap.live_since_ms is not None
            show_alerts(console, tap)
            show_arrivals(console, token, since_ms, tap.live_since_ms)
            show_analyst_queries(console, token)
            show_assessment(console, token)  # the assessment's table: keep it last
            stopping = time.monotonic()
    finally:
        tap.close()
    console.print(f"   connectors, worker and sink stopped in {time.monotonic() - stopping:.0f}s")
    console.print(f"demo done in {time.monotonic() - started:.0f}s. "
                  "The stack keeps running: `yurong sql \"...\"` to explore, `yurong stack down` to stop.")

