"""``yurong demo``: the whole platform on the local stack, end to end, in about a minute.

Starts the stack (Kafka secured: every component logs in as its own principal), seeds the
market-supervision database, runs connector, worker and sink as child processes (logs in
``$YURONG_HOME/logs``), onboards banks ``b0001`` and ``b0002`` (a login each, client bundles in
``$YURONG_HOME/banks``), grants ``b0001`` consent for a portfolio of enterprises (some on a
distress path) while ``b0002`` watches the same portfolio without consent, makes live changes,
shows the alerts as each bank reads them with its own bundle, and runs an analyst query.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.codecs.serde import schema_store
from streams.settings import REPO_ROOT, get_settings
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
CONSENTED_BANK = "b0001"
UNCONSENTED_BANK = "b0002"


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


def run_demo(console: Console, enterprises: int, seconds: int, rate: float) -> None:
    from connectors.simulator.market import MarketSimulator
    from streams.cli.bundle import onboard, read_bundle_conf
    from streams.cli.common import run_sql, with_registry
    from streams.cli.output import result_table
    from streams.core.access import CONSENT
    from streams.core.consent import new_grant
    from streams.kafka.consent_log import publish_grants
    from streams.kafka.security import kafka_login
    from streams.worker.consent_store import ConsentRegistry

    s = get_settings()
    console.rule("[bold]渝融 yurong demo")
    console.print("1/6 starting the local stack (Kafka KRaft from Maven Central jars, PostgreSQL, Redis)")
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "stack.sh"), "up"], check=True,
                   env={**os.environ, "YURONG_HOME": str(s.paths.home)})
    env = child_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith("YURONG_")})
    # the local stack's analyst (stack.sh made the credential): the demo's queries are audited as it
    analyst_token = s.analyst.read_token() or (s.paths.home / "secrets" / "analyst.token").read_text(encoding="utf-8").strip()

    sim = MarketSimulator(s.source.dsn("market", "postgres"), seed=2019)
    sim.create_schema()
    sim.load_population()
    if len(sim.enterprises) < enterprises:
        console.print(f"2/6 seeding {enterprises - len(sim.enterprises)} enterprises into the market department DB")
        from rich.progress import Progress

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("seeding", total=enterprises - len(sim.enterprises))
            sim.seed_enterprises(enterprises - len(sim.enterprises), progress=lambda k: progress.advance(task, k))
    else:
        console.print(f"2/6 market department DB already holds {len(sim.enterprises)} enterprises")

    rng = random.Random(7)
    portfolio = sorted({e.uscc for e in sim.enterprises if e.distressed} | {e.uscc for e in rng.sample(sim.enterprises, 150)})
    console.print(f"3/6 {CONSENTED_BANK} gets consent for {len(portfolio)} enterprises and watches them; "
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

    console.print("4/6 starting connector, worker and sink (logs in "
                  f"{s.paths.home / 'logs'}/{{connect,worker,sink}}.log)")
    schemas = schema_store()
    consumers = []
    for bank, folder in bundles.items():  # each bank reads its own topic with its own login
        c = Consumer({**read_bundle_conf(folder), "group.id": f"{bank}.demo-{time.time_ns()}", "auto.offset.reset": "latest",
                      "enable.auto.commit": False})
        c.subscribe([f"alerts.{bank}"])
        consumers.append(c)
    received = {CONSENTED_BANK: 0, UNCONSENTED_BANK: 0}
    latencies: list[float] = []
    with pipeline(env, s.paths.home / "logs") as procs:
        console.print(f"5/6 live changes at {rate:g}/s for {seconds}s; alerts as they arrive:")
        table = Table("bank", "enterprise", "category", "severity", "reasons", "latency")
        deadline = time.monotonic() + seconds
        next_tick = time.monotonic()
        with Live(table, console=console, refresh_per_second=4, vertical_overflow="visible"):
            while time.monotonic() < deadline:
                for name, p, _ in procs:
                    if p.poll() is not None:
                        raise SystemExit(f"{name} exited with {p.returncode}; see {s.paths.home / 'logs' / (name + '.log')}")
                if time.monotonic() >= next_tick:
                    sim.step(max(1, int(rate)))
                    next_tick += 1.0
                for consumer in consumers:
                    msg = consumer.poll(0.1)
                    if msg is None or msg.error() or msg.value() is None:
                        continue
                    _, alert = schemas.decode(msg.value(), "risk/alert")
                    received[alert["bank_id"]] += 1
                    latency = (alert["published_ts_ms"] - alert["event_ts_ms"]) / 1000
                    latencies.append(latency)
                    if table.row_count < 25:
                        table.add_row(alert["bank_id"], alert["uscc"], alert["category"], alert["severity"],
                                      ",".join(alert["reason_codes"][:2]), f"{latency:.2f}s")
        for consumer in consumers:
            consumer.close()
        console.print("6/6 analyst queries on ClickHouse while the pipeline runs (yurong sql):")
        for query in ANALYST_QUERIES:
            console.print(f"[dim]{query}[/dim]")
            out = run_sql(query, token=analyst_token)
            console.print(result_table(out["columns"], out["rows"]))
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    console.print(f"alerts received: {CONSENTED_BANK} (consented) = {received[CONSENTED_BANK]}, "
                  f"{UNCONSENTED_BANK} (no consent) = {received[UNCONSENTED_BANK]}; "
                  f"source commit → alert published p50 = {p50:.2f}s")
    console.print("The stack keeps running: `yurong sql \"...\"` to explore, `yurong stack down` to stop.")
