"""``yurong`` — the one console script. Each subcommand has ``--help``.

\b
    yurong stack up|down|status|env     local embedded stack (Kafka, PostgreSQL, Redis)
    yurong demo                         the whole platform on the local stack, end to end
    yurong simulate                     seed and change the department databases
    yurong connect <dept>               run a CDC connector
    yurong worker                       run the Faust worker (mask, merge, score, route alerts)
    yurong sink                         run the ClickHouse sink (+ read-only SQL endpoint for chDB)
    yurong consent grant|revoke|list    enterprise → bank consents
    yurong watchlist add|remove|import|list
    yurong sql "<query>"                analyst SQL on ClickHouse (read-only, audited)
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .errors import YurongError
from .settings import REPO_ROOT, get_settings

console = Console()
err_console = Console(stderr=True)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class YurongGroup(click.Group):
    """Turns ``YurongError`` into a clear one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except YurongError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(2)


@click.group(cls=YurongGroup, help=__doc__)
def main() -> None:
    pass


# --- stack ------------------------------------------------------------------------------------

@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("action", type=click.Choice(["up", "down", "status", "env"]))
def stack(action: str) -> None:
    """Start, stop or inspect the local stack (scripts/stack.sh): Kafka (KRaft, from Maven
    Central jars), PostgreSQL with wal_level=logical, Redis. Data under $YURONG_HOME."""
    env = {**os.environ, "YURONG_HOME": str(get_settings().paths.home)}
    sys.exit(subprocess.call(["bash", str(REPO_ROOT / "scripts" / "stack.sh"), action], env=env))


# --- simulate -----------------------------------------------------------------------------------

@main.command()
@click.option("--enterprises", "-n", default=3000, show_default=True, help="enterprises to register and give a history (0: keep the existing ones)")
@click.option("--rate", default=20.0, show_default=True, help="changes per second after seeding (0: seed only)")
@click.option("--duration", default=0.0, help="seconds to keep changing (0: until interrupted)")
@click.option("--seed", default=2019, show_default=True, help="random seed: the same seed gives the same data")
@click.option("--distress-share", default=0.05, show_default=True, help="share of enterprises on a distress path")
@click.option("--kinds", default="postgres,mysql,polling,file", show_default=True,
              help="department groups besides the market register: postgres, mysql, polling, file (empty: market only)")
def simulate(enterprises: int, rate: float, duration: float, seed: int, distress_share: float, kinds: str) -> None:
    """Create the department databases and drop folders, fill them with realistic enterprises,
    then keep changing them (deterministic from --seed)."""
    from rich.progress import Progress

    from connectors.simulator.city import CitySimulator

    s = get_settings()
    groups = tuple(k for k in kinds.split(",") if k)
    city = CitySimulator(s, seed=seed, distress_share=distress_share, kinds=groups if enterprises else ())
    city.create()
    if enterprises:
        with Progress(console=console) as progress:
            tasks = {name: progress.add_task(f"seeding {name}", total=enterprises) for name in ("market", *city.groups)}
            city.seed(enterprises, progress=lambda name, k: progress.advance(tasks[name], k))
    else:
        city.load_population()  # continuing a population changes the market register only
    if rate <= 0:
        return
    console.print(f"changing {len(city.market.enterprises)} enterprises at {rate:g}/s (Ctrl-C stops)")
    started = time.monotonic()
    totals: dict[str, int] = {}
    try:
        while not duration or time.monotonic() - started < duration:
            tick = time.monotonic()
            for k, v in city.step(max(1, int(rate))).items():
                totals[k] = totals.get(k, 0) + v
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        pass
    console.print(totals)


# --- connect -------------------------------------------------------------------------------------

@main.command()
@click.argument("dept", required=False)
@click.option("--all", "all_", is_flag=True, help="run every department of the catalogue")
@click.option("--resnapshot", is_flag=True, help="drop the slot and read every table again (after a lost slot)")
@click.option("--log-level", default="info")
def connect(dept: str | None, all_: bool, resnapshot: bool, log_level: str) -> None:
    """Run the connector of department DEPT (e.g. market) until stopped; `--all` runs the whole
    catalogue; `yurong connect status` shows position, lag and throughput per source."""
    _setup_logging(log_level)
    from connectors.catalogue import catalogue
    from monitoring.metrics import serve
    from streams.errors import ConfigError
    from streams.serde import schema_store

    s = get_settings()
    if dept == "status":
        return _connect_status()
    if all_ == bool(dept):
        raise ConfigError("name one department (e.g. `yurong connect market`) or use --all")
    serve(s.metrics.connector_port, "connector", s.metrics.bind)
    if all_:
        from connectors.fleet import Fleet

        fleet = Fleet(catalogue(), s, schema_store())
        fleet.install_signal_handlers()
        fleet.run()
        return
    from connectors.fleet import build_runner

    runner = build_runner(catalogue().department(dept), s, schema_store(), resnapshot)
    runner.install_signal_handlers()
    runner.run()


def _connect_status() -> None:
    from connectors.catalogue import catalogue
    from connectors.fleet import fleet_status
    from streams.serde import schema_store

    rows = fleet_status(catalogue(), get_settings(), schema_store())
    t = Table("dept", "kind", "source", "snapshot", "position", "acknowledged", "heartbeat", "lag", "records", "events/s")
    for r in rows:
        t.add_row(r.dept, r.kind, r.source, r.snapshot, r.position[:36], r.acknowledged, r.heartbeat, r.lag, str(r.records),
                  f"{r.per_second:.1f}")
    console.print(t)


# --- worker ---------------------------------------------------------------------------------------

@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("faust_args", nargs=-1, type=click.UNPROCESSED)
def worker(faust_args: tuple[str, ...]) -> None:
    """Run the Faust worker (extra arguments go to `faust worker`, e.g. -l debug)."""
    from monitoring.metrics import serve
    from streams.secrets import load_pseudonymizer

    from connectors.catalogue import catalogue
    from streams.kafka_admin import ensure_topics, pipeline_topics

    s = get_settings()
    load_pseudonymizer(s)  # fail fast with a clear message, before Faust starts
    if s.risk.scorecard:
        from streams.risk import Scorecard

        Scorecard.load(s.risk.scorecard)  # a broken card is a start-up error, not a crash per event
    topics = pipeline_topics(sorted(catalogue().by_topic()), s.kafka.dept_retention_ms)
    from streams.debezium import topic_datasets

    for prefix, dept_name in s.worker.debezium_prefixes.items():  # dead letters of Debezium-fed departments
        topics.update({f"dlq.{t}": {} for t in topic_datasets(catalogue().department(dept_name), prefix)})
    ensure_topics(s.kafka.bootstrap_servers, topics, partitions=s.kafka.topic_partitions,
                  replication_factor=s.kafka.replication_factor)
    serve(s.metrics.worker_port, "worker", s.metrics.bind)
    (s.paths.home / "faust").mkdir(parents=True, exist_ok=True)
    from .app import app

    args = list(faust_args) or ["-l", "info"]
    sys.argv = ["yurong", "worker", *args]
    app.main()


# --- sink -------------------------------------------------------------------------------------------

@main.command()
@click.option("--group", default="yurong-clickhouse-sink", show_default=True, help="Kafka consumer group")
@click.option("--log-level", default="info")
def sink(group: str, log_level: str) -> None:
    """Run the ClickHouse sink; with embedded chDB it also serves read-only SQL for `yurong sql`."""
    _setup_logging(log_level)
    from confluent_kafka import Consumer, Producer

    from connectors.runner import producer_config
    from monitoring.metrics import serve
    from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
    from sinks.query_server import AnalystSQL, serve_queries
    from sinks.runner import ClickHouseSink, consumer_config
    from streams.serde import schema_store

    s = get_settings()
    client = open_client(s.clickhouse_dsn, s.clickhouse.database)
    apply_schema(client)
    writer = ClickHouseWriter(client)
    if s.clickhouse.is_embedded:
        serve_queries(AnalystSQL(s.clickhouse_dsn, s.clickhouse.database, writer), s.clickhouse.query_port)
    serve(s.metrics.sink_port, "sink", s.metrics.bind)
    runner = ClickHouseSink(Consumer(consumer_config(s.kafka.bootstrap_servers, group)),
                            Producer(producer_config(s.kafka.bootstrap_servers)), writer, schema_store(),
                            batch_size=s.clickhouse.batch_size, batch_seconds=s.clickhouse.batch_seconds)
    runner.install_signal_handlers()
    runner.run()


# --- consent & watchlist ------------------------------------------------------------------------------

def _registry():
    from sinks.consent import ConsentRegistry

    s = get_settings()
    return ConsentRegistry.from_url(s.redis.url.get_secret_value(), s.redis.key_prefix)


def _run(coro_fn):
    async def go():
        reg = _registry()
        try:
            return await coro_fn(reg)
        finally:
            await reg.close()

    return asyncio.run(go())


def _ms(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else ""


@main.group()
def consent() -> None:
    """Enterprise → bank consents (授权): an alert reaches a bank only under an active one."""


@consent.command("grant")
@click.option("--bank", "bank_id", required=True, help="bank id, b + 4 digits (b0001)")
@click.option("--uscc", required=True, help="the consenting enterprise's 统一社会信用代码")
@click.option("--purpose", default="post-loan monitoring", show_default=True)
@click.option("--days", default=365, show_default=True, help="validity in days")
@click.option("--scope", default="", help="comma-separated alert categories (empty: all)")
def consent_grant(bank_id: str, uscc: str, purpose: str, days: int, scope: str) -> None:
    """Record a consent and create the bank's alert topic if needed."""
    from streams.kafka_admin import ensure_topics

    expiry = int((time.time() + days * 86400) * 1000)
    g = _run(lambda reg: reg.grant(bank_id, uscc, purpose, expiry, [c for c in scope.split(",") if c]))
    s = get_settings()
    ensure_topics(s.kafka.bootstrap_servers, {f"alerts.{bank_id}": {}}, partitions=s.kafka.topic_partitions,
                  replication_factor=s.kafka.replication_factor)
    console.print(f"granted consent {g.consent_id} ({bank_id} ← {uscc}, until {_ms(g.expiry_ms)})")


@consent.command("revoke")
@click.option("--bank", "bank_id", required=True)
@click.option("--uscc", required=True)
def consent_revoke(bank_id: str, uscc: str) -> None:
    """Revoke every active consent of USCC for BANK; alerts stop with the next change."""
    ids = _run(lambda reg: reg.revoke(bank_id, uscc))
    console.print(f"revoked {len(ids)} consent(s)")


@consent.command("list")
@click.option("--bank", "bank_id", default=None)
def consent_list(bank_id: str | None) -> None:
    """List consents (all banks, or one)."""
    grants = _run(lambda reg: reg.all_grants(bank_id))
    now = int(time.time() * 1000)
    t = Table("consent", "bank", "uscc", "purpose", "scope", "from", "until", "state")
    for g in grants:
        state = "active" if g.is_active(now) else ("revoked" if g.revoked_ms else "inactive")
        t.add_row(g.consent_id[:12], g.bank_id, g.uscc, g.purpose, ",".join(g.scope) or "all", _ms(g.start_ms), _ms(g.expiry_ms), state)
    console.print(t)


@main.group()
def watchlist() -> None:
    """Bank watchlists: the enterprises a bank monitors."""


@watchlist.command("add")
@click.option("--bank", "bank_id", required=True)
@click.argument("usccs", nargs=-1, required=True)
def watchlist_add(bank_id: str, usccs: tuple[str, ...]) -> None:
    n = _run(lambda reg: reg.watch(bank_id, usccs))
    console.print(f"{bank_id}: {n} added")


@watchlist.command("remove")
@click.option("--bank", "bank_id", required=True)
@click.argument("usccs", nargs=-1, required=True)
def watchlist_remove(bank_id: str, usccs: tuple[str, ...]) -> None:
    n = _run(lambda reg: reg.unwatch(bank_id, usccs))
    console.print(f"{bank_id}: {n} removed")


@watchlist.command("import")
@click.option("--bank", "bank_id", required=True)
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def watchlist_import(bank_id: str, csv_file: Path) -> None:
    """Import USCCs from a CSV file (a 'uscc' column, or the first column)."""
    with csv_file.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    col = rows[0].index("uscc") if rows and "uscc" in rows[0] else 0
    codes = [r[col].strip() for r in rows[1 if rows and "uscc" in rows[0] else 0:] if r and r[col].strip()]
    n = _run(lambda reg: reg.watch(bank_id, codes))
    console.print(f"{bank_id}: {n} of {len(codes)} added")


@watchlist.command("list")
@click.option("--bank", "bank_id", required=True)
def watchlist_list(bank_id: str) -> None:
    for code in _run(lambda reg: reg.watchlist(bank_id)):
        console.print(code)


# --- sql -----------------------------------------------------------------------------------------------

def run_sql(query: str, parameters: dict[str, str] | None = None) -> dict:
    """Run a read-only analyst query: through the sink's endpoint when it owns the embedded
    chDB, else directly (a stopped sink, or a ClickHouse server DSN)."""
    from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
    from sinks.query_server import AnalystSQL

    s = get_settings()
    principal = os.environ.get("USER") or os.environ.get("LOGNAME") or "analyst"
    if s.clickhouse.is_embedded:
        body = json.dumps({"sql": query, "parameters": parameters or {}, "principal": principal}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{s.clickhouse.query_port}/query", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise YurongError(json.loads(exc.read()).get("error", str(exc))) from None
        except urllib.error.URLError:
            pass  # no sink running: open the embedded engine ourselves
    client = open_client(s.clickhouse_dsn, s.clickhouse.database)
    apply_schema(client)
    analyst = AnalystSQL(s.clickhouse_dsn, s.clickhouse.database, ClickHouseWriter(client))
    try:
        return analyst.query(query, parameters, principal)
    except YurongError:
        raise
    except Exception as exc:  # noqa: BLE001 — an analyst's SQL error is a message, not a traceback
        raise YurongError(str(exc)) from None
    finally:
        analyst.close()
        client.close()


@main.command()
@click.argument("query")
@click.option("--param", "-p", multiple=True, help="server-side parameter name=value, used as {name:Type} in the query")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def sql(query: str, param: tuple[str, ...], fmt: str) -> None:
    """Run QUERY read-only on the analytics store (works while the pipeline runs)."""
    params = dict(p.split("=", 1) for p in param)
    out = run_sql(query, params)
    if fmt == "json":
        console.print_json(json.dumps(out, ensure_ascii=False, default=str))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(out["columns"])
        w.writerows(out["rows"])
    else:
        t = Table(*out["columns"])
        for row in out["rows"]:
            t.add_row(*("" if v is None else str(v) for v in row))
        console.print(t)


# --- demo ----------------------------------------------------------------------------------------------

@main.command()
@click.option("--enterprises", "-n", default=3000, show_default=True)
@click.option("--seconds", default=45, show_default=True, help="how long live changes run")
@click.option("--rate", default=20.0, show_default=True, help="department changes per second")
def demo(enterprises: int, seconds: int, rate: float) -> None:
    """The whole platform on the local stack: stack up, seed, connector + worker + sink,
    live changes, alerts arriving for a consented bank, and an analyst query."""
    from .demo import run_demo

    run_demo(console, enterprises=enterprises, seconds=seconds, rate=rate)


if __name__ == "__main__":
    main()
