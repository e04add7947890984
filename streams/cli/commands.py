"""``yurong`` — the one console script. Each subcommand has ``--help``.

\b
    yurong stack up|down|status|env     local embedded stack (Kafka, PostgreSQL, Redis)
    yurong demo                         the whole platform on the local stack, end to end
    yurong simulate                     seed and change the department databases
    yurong connect <dept>               run a CDC connector
    yurong worker                       run the Faust worker (mask, merge, score, route alerts)
    yurong sink                         run the ClickHouse sink (+ the analysts' SQL gateway, the assessment)
    yurong consent grant|revoke|list    enterprise → bank consents (published to consent.grants)
    yurong watchlist add|remove|import|list
    yurong bank onboard|offboard|list   banks' Kafka logins, ACLs and client bundles
    yurong bank rules|throttled         per-bank alert rules, held-back alerts
    yurong security apply               the platform's Kafka principals and ACL matrix
    yurong sql "<query>"                analyst SQL on ClickHouse (authenticated, sandboxed, audited)
    yurong analyst add|revoke|list      SQL principals and their roles
    yurong audit verify                 check the SQL audit's hash chain
    yurong assess [--date|--month]      数据汇集考核: each department's data-sharing score
    yurong erase --uscc … --reason …    erase an enterprise's data on request
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from streams.cli.common import console, err_console, gateway_call, run_sql, setup_logging, with_registry
from streams.cli.output import csv_row, result_table
from streams.errors import ConfigError, YurongError
from streams.settings import REPO_ROOT, get_settings


class YurongGroup(click.Group):
    """Turns ``YurongError`` into a clear one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except YurongError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")  # a message is text, not markup
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
@click.option("--enterprises", "-n", default=3000, show_default=True,
              help="enterprises to register and give a history (0: keep the existing ones)")
@click.option("--rate", default=20.0, show_default=True, help="changes per second after seeding (0: seed only)")
@click.option("--duration", default=0.0, help="seconds to keep changing (0: until interrupted)")
@click.option("--seed", default=2019, show_default=True, help="random seed: the same seed gives the same data")
@click.option("--distress-share", default=0.05, show_default=True, help="share of enterprises on a distress path")
@click.option("--kinds", default="postgres,mysql,polling,file", show_default=True,
              help="department groups besides the market register: postgres, mysql, polling, file (empty: market only)")
@click.option("--misbehave", default="", metavar="DEPT=KIND,...",
              help="departments that misbehave, e.g. tax=late,hrss=silent; kinds: silent, late, bad_rows, missing, "
                   "inconsistent (connectors/simulator/misbehave.py)")
def simulate(enterprises: int, rate: float, duration: float, seed: int, distress_share: float, kinds: str,
             misbehave: str) -> None:
    """Create the department databases and drop folders, fill them with realistic enterprises,
    then keep changing them (deterministic from --seed); --misbehave makes departments late,
    silent, send bad rows, miss enterprises or contradict the register."""
    from rich.progress import Progress, TimeElapsedColumn

    try:
        from connectors.simulator.city import CitySimulator
    except ModuleNotFoundError as exc:
        if exc.name != "faker":
            raise
        raise ConfigError("the simulator is tooling, installed with the [sim] extra: pip install 'yurong[sim]'") from None

    from connectors.simulator.misbehave import Misbehaviour, parse_plan

    s = get_settings()
    groups = tuple(k for k in kinds.split(",") if k)
    try:
        plan = Misbehaviour(parse_plan(misbehave), seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--misbehave") from None
    if plan:
        console.print("misbehaving: " + ", ".join(f"{d}={k}" for d, k in sorted(plan.plan.items())))
    city = CitySimulator(s, seed=seed, distress_share=distress_share, kinds=groups if enterprises else (), misbehave=plan)
    city.create()
    if enterprises:
        with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), console=console) as progress:
            tasks = {name: progress.add_task(f"seeding {name}", total=enterprises) for name in ("market", *city.groups)}
            city.seed(enterprises, progress=lambda name, k: progress.advance(tasks[name], k))
        t = Table("group", "seconds", "dataset", "rows", title=f"seeded {enterprises:,} enterprises")
        for name, done in city.seeded.items():
            for i, (dataset, rows) in enumerate(done.rows.items()):
                t.add_row(name if i == 0 else "", f"{done.seconds:.1f}" if i == 0 else "", dataset, f"{rows:,}")
        console.print(t)
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
    elapsed = time.monotonic() - started
    console.print(totals)
    changes = sum(totals.values())
    console.print(f"{changes:,} changes in {elapsed:.1f} s: {changes / elapsed:.1f}/s (asked for {rate:g}/s)")


# --- connect -------------------------------------------------------------------------------------

@main.command()
@click.argument("dept", required=False)
@click.option("--all", "all_", is_flag=True, help="run every department of the catalogue")
@click.option("--resnapshot", is_flag=True, help="drop the slot and read every table again (after a lost slot)")
@click.option("--log-level", default="info")
def connect(dept: str | None, all_: bool, resnapshot: bool, log_level: str) -> None:
    """Run the connector of department DEPT (e.g. market) until stopped; `--all` runs the whole
    catalogue; `yurong connect status` shows position, lag and throughput per source."""
    setup_logging(log_level)
    from monitoring.metrics import serve
    from streams.codecs.serde import schema_store
    from streams.core.catalogue import catalogue

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

    assert dept is not None  # checked above: a department or --all
    runner = build_runner(catalogue().department(dept), s, schema_store(), resnapshot)
    runner.install_signal_handlers()
    runner.run()


def _connect_status() -> None:
    from connectors.fleet import fleet_status
    from streams.codecs.serde import schema_store
    from streams.core.catalogue import catalogue

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
    from streams.core.access import WORKER
    from streams.core.catalogue import catalogue
    from streams.kafka.admin import ensure_topics, worker_topics
    from streams.kafka.security import client_conf
    from streams.worker.faust_fixes import check_version
    from streams.worker.secrets import load_pseudonymizer

    s = get_settings()
    check_version()  # the Faust fixes are written for one faust-streaming version
    load_pseudonymizer(s)  # fail fast with a clear message, before Faust starts
    if s.risk.scorecard:
        from streams.core.scorecard import Scorecard

        Scorecard.load(s.risk.scorecard)  # a broken card is a start-up error, not a crash per event
    # The worker declares what it owns, with the raw-PII retention enforced at each start on every
    # department's dead letters, Debezium-fed ones included (kafka.admin.worker_topics).
    from streams.codecs.debezium import topic_datasets

    debezium_dlqs = [f"dlq.{t}" for prefix, dept_name in s.worker.debezium_prefixes.items()
                     for t in topic_datasets(catalogue().department(dept_name), prefix)]
    topics = worker_topics(sorted(catalogue().by_topic()), s.kafka.dept_retention_ms, debezium_dlqs)
    from streams.worker.topics import profiles

    # The profile table's changelog exists, with the partitions of enterprise.events, before Faust
    # starts: a changelog topic created while the worker runs is missing from its consumer's metadata
    # (0 partitions) and every merge fails Faust's partition check until that metadata is refreshed.
    topics[profiles.changelog_topic_name] = {"cleanup.policy": "compact"}
    ensure_topics(client_conf(WORKER, s), topics, partitions=s.kafka.topic_partitions,
                  replication_factor=s.kafka.replication_factor)
    serve(s.metrics.worker_port, "worker", s.metrics.bind)
    (s.paths.home / "faust").mkdir(parents=True, exist_ok=True)
    from streams.worker.app import app

    args = list(faust_args) or ["-l", "info"]
    sys.argv = ["yurong", "worker", *args]
    app.main()


# --- sink -------------------------------------------------------------------------------------------

@main.command()
@click.option("--group", default="yurong-sink", show_default=True, help="Kafka consumer group (prefix yurong-sink: the sink's ACL)")
@click.option("--log-level", default="info")
def sink(group: str, log_level: str) -> None:
    """Run the ClickHouse sink; it also serves the analysts' SQL gateway for `yurong sql` and
    computes the departments' data-sharing assessment (`yurong assess`)."""
    setup_logging(log_level)
    from dataclasses import asdict
    from functools import partial

    from confluent_kafka import Consumer, Producer

    from connectors.runner import producer_config
    from monitoring.metrics import serve
    from sinks.analyst import open_gateway
    from sinks.analyst import serve as serve_gateway
    from sinks.assessment import open_assessor
    from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
    from sinks.runner import ClickHouseSink, consumer_config, wait_caught_up
    from streams.codecs.serde import schema_store
    from streams.core.access import SINK
    from streams.kafka.security import client_conf

    s = get_settings()
    kafka = client_conf(SINK, s)
    client = open_client(s.clickhouse_dsn, s.clickhouse.database, wait_s=s.clickhouse.store_wait_s)
    apply_schema(client)
    writer = ClickHouseWriter(client)
    # an erasure through the gateway first waits until this group stored what was published about the enterprise
    assessor = open_assessor(s, writer)  # 数据汇集考核: today live, each day once it has ended
    assessor.start()
    gateway = open_gateway(s, client, writer.lock, before_erase=partial(wait_caught_up, kafka, group),
                           assessor=lambda day: [asdict(a) for a in assessor.assess(day)])
    serve_gateway(gateway, s.analyst.bind, s.clickhouse.query_port, s.analyst.allowed_hosts)
    serve(s.metrics.sink_port, "sink", s.metrics.bind)
    runner = ClickHouseSink(Consumer(consumer_config(kafka, group)), Producer(producer_config(kafka)), writer, schema_store(),
                            batch_size=s.clickhouse.batch_size, batch_seconds=s.clickhouse.batch_seconds)
    runner.install_signal_handlers()
    runner.run()


# --- consent & watchlist ------------------------------------------------------------------------------

def _ms(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M") if ts else ""


@main.group()
def consent() -> None:
    """Enterprise → bank consents (授权): an alert reaches a bank only under an active one.

    The system of record is the compacted Kafka topic consent.grants: grant and revoke publish
    there (and wait for Kafka's ack); the worker applies each record to Redis, where the router
    reads consents for every alert."""


def _publisher():
    from streams.core.access import CONSENT
    from streams.kafka.consent_log import ConsentPublisher
    from streams.kafka.security import client_conf

    s = get_settings()
    return ConsentPublisher(client_conf(CONSENT, s), partitions=s.kafka.topic_partitions,
                            replication_factor=s.kafka.replication_factor)


def _parse_day(text: str | None) -> int | None:

    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--start {text!r} is not a date (YYYY-MM-DD)") from None
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000)


@consent.command("grant")
@click.option("--bank", "bank_id", required=True, help="bank id, b + 4 digits (b0001)")
@click.option("--uscc", required=True, help="the consenting enterprise's 统一社会信用代码")
@click.option("--purpose", default="post-loan monitoring", show_default=True)
@click.option("--days", default=365, show_default=True, help="validity in days (from the start)")
@click.option("--start", default=None, help="first day in force, YYYY-MM-DD UTC (default: now)")
@click.option("--scope", default="", help="comma-separated alert categories (empty: all)")
@click.option("--evidence", required=True, help="reference to the enterprise's signed authorisation (授权书), "
              "e.g. a document id or sha256:<hash> of the scan — never personal data")
def consent_grant(bank_id: str, uscc: str, purpose: str, days: int, start: str | None, scope: str, evidence: str) -> None:
    """Publish a new consent to consent.grants as the consent service; the record names the
    Kafka principal that recorded it and the evidence of authorisation."""
    from streams.core.access import CONSENT
    from streams.core.consent import new_grant
    from streams.kafka.security import kafka_login

    now = int(time.time() * 1000)
    start_ms = _parse_day(start)
    expiry = (start_ms if start_ms is not None else now) + days * 86_400_000
    g = new_grant(bank_id, uscc.strip().upper(), purpose, expiry, [c.strip() for c in scope.split(",") if c.strip()],
                  start_ms=start_ms, now_ms=now, recorded_by=kafka_login(CONSENT).username, evidence_ref=evidence)
    _publisher().publish([g])
    console.print(f"granted consent {g.consent_id} ({bank_id} ← {g.uscc}, {_ms(g.start_ms)} – {_ms(g.expiry_ms)}, "
                  f"scope {','.join(g.scope) or 'all'})")


@consent.command("revoke")
@click.option("--bank", "bank_id", default=None, help="with --uscc: every consent of the pair")
@click.option("--uscc", default=None)
@click.option("--consent", "consent_id", default=None, help="one consent by id (instead of --bank/--uscc)")
def consent_revoke(bank_id: str | None, uscc: str | None, consent_id: str | None) -> None:
    """Revoke every active or scheduled consent of USCC for BANK (or one consent by id): the
    revocation is published to consent.grants and stops alerts within a second.

    The consents to revoke are looked up in consent.grants itself and in Redis, so a grant the
    worker has not applied yet is revoked too."""
    from streams.core.consent import check_bank_id, merge_grant, revocations
    from streams.kafka.consent_log import scan_grants

    if consent_id and not (bank_id or uscc):
        def wanted(g) -> bool:
            return g.consent_id == consent_id
        from_redis = with_registry(lambda reg: reg.grant_by_id(consent_id))
        known = [from_redis] if from_redis else []
    elif bank_id and uscc and not consent_id:
        bank_id, uscc = check_bank_id(bank_id), uscc.strip().upper()
        def wanted(g) -> bool:
            return g.bank_id == bank_id and g.uscc == uscc
        known = [g for g in with_registry(lambda reg: reg.grants_of(uscc)) if wanted(g)]
    else:
        raise ConfigError("name --bank and --uscc, or --consent")
    from streams.core.access import CONSENT
    from streams.kafka.security import client_conf, kafka_login

    found = scan_grants(client_conf(CONSENT), wanted)
    for g in known:
        found[g.consent_id] = merge_grant(found.get(g.consent_id), g)
    publisher = _publisher()
    now = int(time.time() * 1000)  # after the look-up: the revocation applies from the moment it is published
    who = kafka_login(CONSENT).username
    todo = [r for g in found.values() for r in revocations([g], g.bank_id, now, recorded_by=who)]
    if not todo:
        raise ConfigError("nothing to revoke: no active or scheduled consent matches")
    publisher.publish(todo)
    console.print(f"revoked {len(todo)} consent(s) from {_ms(now)}" + "".join(f"\n  {g.consent_id}" for g in todo))


@consent.command("list")
@click.option("--bank", "bank_id", default=None)
def consent_list(bank_id: str | None) -> None:
    """List consents as the router sees them (Redis; all banks, or one)."""
    grants = with_registry(lambda reg: reg.all_grants(bank_id))
    now = int(time.time() * 1000)
    t = Table("consent", "bank", "uscc", "purpose", "scope", "from", "until", "state")
    for g in grants:
        state = ("active" if g.is_active(now) else "revoked" if g.revoked_ms and g.revoked_ms <= now
                 else "scheduled" if now < g.start_ms else "expired")
        t.add_row(g.consent_id[:12], g.bank_id, g.uscc, g.purpose, ",".join(g.scope) or "all", _ms(g.start_ms), _ms(g.expiry_ms), state)
    console.print(t)


@main.group()
def watchlist() -> None:
    """Bank watchlists: the enterprises a bank monitors."""


@watchlist.command("add")
@click.option("--bank", "bank_id", required=True)
@click.argument("usccs", nargs=-1, required=True)
def watchlist_add(bank_id: str, usccs: tuple[str, ...]) -> None:
    """Add USCCs to the bank's watchlist (all or none: an invalid code refuses the command)."""
    n = with_registry(lambda reg: reg.watch(bank_id, [u.strip().upper() for u in usccs]))
    console.print(f"{bank_id}: {n} added")


@watchlist.command("remove")
@click.option("--bank", "bank_id", required=True)
@click.argument("usccs", nargs=-1, required=True)
def watchlist_remove(bank_id: str, usccs: tuple[str, ...]) -> None:
    """Remove USCCs from the bank's watchlist."""
    n = with_registry(lambda reg: reg.unwatch(bank_id, [u.strip().upper() for u in usccs]))
    console.print(f"{bank_id}: {n} removed")


@watchlist.command("import")
@click.option("--bank", "bank_id", required=True)
@click.option("--replace", is_flag=True, help="make the watchlist exactly the file (removes codes not in it)")
@click.option("--skip-invalid", is_flag=True, help="import the valid codes even if some lines are invalid")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def watchlist_import(bank_id: str, replace: bool, skip_invalid: bool, csv_file: Path) -> None:
    """Import a bank's CSV of USCCs (a 'uscc' / '统一社会信用代码' column, or the first column).

    Every invalid line is reported with its number and the reason (length, alphabet, GB 32100
    check digit); then nothing is imported (exit code 2) unless --skip-invalid."""
    from streams.core.consent import check_bank_id, parse_watchlist

    check_bank_id(bank_id)
    parsed = parse_watchlist(csv_file.read_text(encoding="utf-8-sig"))
    for problem in parsed.problems:
        err_console.print(f"{csv_file.name}: {problem}", markup=False, highlight=False, soft_wrap=True)
    if parsed.problems and not skip_invalid:
        err_console.print(f"{len(parsed.problems)} invalid line(s): nothing imported (fix them, or use --skip-invalid)")
        sys.exit(2)
    if replace:
        added, removed = with_registry(lambda reg: reg.replace_watchlist(bank_id, parsed.codes))
    else:
        added, removed = with_registry(lambda reg: reg.watch(bank_id, parsed.codes)), 0
    console.print(f"{bank_id}: {added} added, {removed} removed, {len(parsed.codes)} valid code(s) in the file"
                  + (f", {parsed.duplicates} repeated" if parsed.duplicates else "")
                  + (f", {len(parsed.problems)} invalid line(s) skipped" if parsed.problems else ""))


@watchlist.command("list")
@click.option("--bank", "bank_id", required=True)
def watchlist_list(bank_id: str) -> None:
    """Print the bank's watchlist, one USCC a line."""
    for code in with_registry(lambda reg: reg.watchlist(bank_id)):
        console.print(code)


@main.group()
def bank() -> None:
    """Banks: onboarding (Kafka login, ACLs, client bundle), alert rules, held-back (throttled) alerts."""


@bank.command("rules")
@click.argument("bank_id")
@click.option("--categories", default=None, help="comma-separated alert categories the bank wants ('all': every one)")
@click.option("--min-severity", default=None, type=click.Choice(["info", "low", "medium", "high", "critical"]))
@click.option("--score-band-drop", default=None, type=click.IntRange(0, 4),
              help="score_band alerts only when the level fell at least N bands (0: any)")
@click.option("--reset", is_flag=True, help="drop the bank's rules (everything passes)")
def bank_rules(bank_id: str, categories: str | None, min_severity: str | None, score_band_drop: int | None,
               reset: bool) -> None:
    """Show or set BANK_ID's rules, applied by the router after consent and watchlist. Options
    not given keep their current value."""
    from streams.core.consent import BankRules, check_bank_id

    check_bank_id(bank_id)

    async def go(reg):
        if reset:
            await reg.clear_rules(bank_id)
        current = None if reset else await reg.rules(bank_id)
        if categories is None and min_severity is None and score_band_drop is None:
            return current
        base = current or BankRules()
        cats = base.categories if categories is None else tuple(
            c.strip() for c in categories.split(",") if c.strip() and c.strip() != "all")
        new = BankRules(categories=cats, min_severity=min_severity or base.min_severity,
                        score_band_drop=base.score_band_drop if score_band_drop is None else score_band_drop)
        await reg.set_rules(bank_id, new)
        return new

    rules = with_registry(go)
    if rules is None:
        console.print(f"{bank_id}: no rules (every consented, watched alert goes out)")
    else:
        console.print(f"{bank_id}: categories {','.join(rules.categories) or 'all'}; minimum severity "
                      f"{rules.min_severity}; score-band drop ≥ {rules.score_band_drop or 'any'}")


@bank.command("throttled")
@click.argument("bank_id")
@click.option("--limit", default=50, show_default=True)
def bank_throttled(bank_id: str, limit: int) -> None:
    """Alerts held back by the throttle for BANK_ID, newest first (YURONG_ALERTS_THROTTLE_*)."""
    rows = with_registry(lambda reg: reg.throttled(bank_id, limit))
    t = Table("held back at", "uscc", "category", "severity", "reasons", "alert")
    for r in rows:
        t.add_row(_ms(int(r["throttled_ts_ms"])), r["uscc"], r["category"], r["severity"], r["reason_codes"], r["alert_id"])
    console.print(t)


@bank.command("onboard")
@click.argument("bank_id")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder of the client bundle (default $YURONG_HOME/banks/BANK_ID)")
@click.option("--rotate", is_flag=True, help="issue a new password even if the bank has one")
def bank_onboard(bank_id: str, out: Path | None, rotate: bool) -> None:
    """Give BANK_ID its Kafka login, ACLs (its own alerts.BANK_ID and matches.BANK_ID) and topics,
    and write its client bundle (as operator). Idempotent: again, it re-applies and keeps the password."""
    from streams.cli.bundle import onboard

    folder, (created, deleted), files = onboard(bank_id, out, rotate)
    console.print(f"{bank_id} onboarded ({created} ACLs added, {deleted} removed); client bundle in {folder}: "
                  + ", ".join(p.name for p in files))


@bank.command("offboard")
@click.argument("bank_id")
def bank_offboard(bank_id: str) -> None:
    """Remove BANK_ID's Kafka login and every ACL naming it (as operator); its bundle stops working."""
    from streams.core.access import OPERATOR
    from streams.kafka.banks import offboard_bank
    from streams.kafka.security import client_conf

    had, deleted = offboard_bank(client_conf(OPERATOR), bank_id)
    console.print(f"{bank_id} offboarded: login {'deleted' if had else 'absent'}, {deleted} ACLs removed")


@bank.command("list")
def bank_list() -> None:
    """Banks with a Kafka login or ACLs, and what they may do."""
    from streams.core.access import OPERATOR
    from streams.kafka.banks import list_banks
    from streams.kafka.security import client_conf

    t = Table("bank", "login", "access")
    for b in list_banks(client_conf(OPERATOR)):
        t.add_row(b.bank_id, "yes" if b.has_login else "no", "\n".join(b.grants) or "-")
    console.print(t)


# --- security -----------------------------------------------------------------------------------------

@main.group()
def security() -> None:
    """Kafka principals and their ACLs (DESIGN §8, streams/core/access.py)."""


@security.command("apply")
def security_apply() -> None:
    """Create the platform's principals (passwords under YURONG_KAFKA_SECRETS_DIR) and make each
    one's ACLs exactly the matrix — as the super user admin (or YURONG_KAFKA_USERNAME). Idempotent."""
    from confluent_kafka.admin import AdminClient

    from streams.core.access import ADMIN, platform_rules
    from streams.core.catalogue import catalogue
    from streams.kafka.security import apply_matrix, client_conf

    s = get_settings()
    matrix = platform_rules(catalogue().departments, s.worker.debezium_prefixes)
    changes = apply_matrix(AdminClient(client_conf(ADMIN, s)), matrix, s)
    t = Table("principal", "rules", "ACLs added", "ACLs removed")
    for principal, (created, deleted) in changes.items():
        t.add_row(principal, str(len(matrix[principal])), str(created), str(deleted))
    console.print(t)


# --- sql -----------------------------------------------------------------------------------------------

TOKEN_FILE = click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                          help="the principal's token (default: YURONG_ANALYST_TOKEN / _TOKEN_FILE)")


def _token(path: Path | None) -> str | None:
    return path.read_text(encoding="utf-8").strip() if path else None


@main.command()
@click.argument("query")
@click.option("--param", "-p", multiple=True, help="server-side parameter name=value, used as {name:Type} in the query")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@TOKEN_FILE
def sql(query: str, param: tuple[str, ...], fmt: str, token_file: Path | None) -> None:
    """Run QUERY read-only on the analytics store, through the sink's gateway (authenticated,
    limited, audited; works while the pipeline runs)."""
    params = dict(p.split("=", 1) for p in param)
    out = run_sql(query, params, _token(token_file))
    if fmt == "json":
        console.print_json(json.dumps(out, ensure_ascii=False, default=str))
    elif fmt == "csv":  # formula-like cells neutralised (streams/cli/output.py)
        w = csv.writer(sys.stdout)
        w.writerow(csv_row(out["columns"]))
        w.writerows(csv_row(row) for row in out["rows"])
    else:  # cells are Text: data is never read as markup
        console.print(result_table(out["columns"], out["rows"]))


@main.group()
def analyst() -> None:
    """SQL principals (分析人员): each has a role (analyst, auditor, operator) and a token; the
    gateway keeps only scrypt hashes (YURONG_ANALYST_CREDENTIALS_FILE)."""


def _credentials():
    from sinks.analyst.credentials import CredentialStore

    s = get_settings()
    return CredentialStore(s.analyst.credentials_path(s.paths.home))


@analyst.command("add")
@click.argument("name")
@click.option("--role", "role_name", type=click.Choice(["analyst", "auditor", "operator"]), required=True)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the token to this file (0600) instead of printing it")
@click.option("--rotate", is_flag=True, help="issue a new token for an existing principal (the old one stops working)")
def analyst_add(name: str, role_name: str, token_file: Path | None, rotate: bool) -> None:
    """Create principal NAME with ROLE; the token is shown once (or written to --token-file)."""
    try:
        token = _credentials().add(name, role_name, replace=rotate)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if token_file is not None:
        token_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
        os.chmod(token_file, 0o600)
        console.print(f"{name} ({role_name}): token written to {token_file}")
    else:
        click.echo(token)
        err_console.print(f"{name} ({role_name}): the token above is shown once; give it to {name} only")


@analyst.command("revoke")
@click.argument("name")
def analyst_revoke(name: str) -> None:
    """Revoke NAME's token: the next request with it is refused."""
    _credentials().revoke(name)
    console.print(f"{name}: revoked")


@analyst.command("list")
def analyst_list() -> None:
    """Principals, roles, and when they were added or revoked (never tokens)."""
    t = Table("name", "role", "added", "revoked")
    for p in _credentials().list():
        t.add_row(p["name"], p["role"], p["added"], p["revoked"] or "")
    console.print(t)


@main.group()
def audit() -> None:
    """The SQL audit (安全审计): every analyst request, hash-chained, readable by auditors only."""


@audit.command("verify")
@click.option("--expect-head", default=None, metavar="CHAIN:SEQ:HASH",
              help="a head noted earlier (the sink logs it; metric yurong_sql_audit_seq): it must still be there")
@TOKEN_FILE
def audit_verify(expect_head: str | None, token_file: Path | None) -> None:
    """Recompute the audit's hash chains (as an auditor): edited, deleted or cut rows are reported."""
    from sinks.analyst.audit import verify

    s = get_settings()
    head = None
    if expect_head:
        chain, seq, digest = expect_head.rsplit(":", 2)
        head = (chain, int(seq), digest)
    token = _token(token_file)
    columns = ("chain", "seq", "ts", "principal", "role", "client", "action", "query", "parameters", "outcome",
               "rows_read", "bytes_read", "rows_returned", "elapsed_ms", "error", "prev_hash", "hash")
    select = ", ".join(c if c != "ts" else "toUnixTimestamp64Milli(ts) AS ts" for c in columns)
    # the database is a setting checked against ^[a-z_][a-z0-9_]*$; the gateway takes no identifier parameters

    def rows():
        after_chain, after_seq = "", 0
        while True:
            page = run_sql(f"SELECT {select} FROM {s.analyst.audit_database}.sql_audit"
                           " WHERE (chain, seq) > ({c:String}, {q:UInt64}) ORDER BY chain, seq LIMIT 20000",
                           {"c": after_chain, "q": str(after_seq)}, token)["rows"]
            for r in page:
                yield dict(zip(columns, r, strict=True))
            if len(page) < 20000:
                return
            after_chain, after_seq = page[-1][0], int(page[-1][1])

    reports = verify(rows(), int(time.time() * 1000), s.analyst.audit_retention_days, head)
    t = Table("chain", "rows", "seq", "head", "result")
    for r in reports.values():
        t.add_row(r.chain, str(r.rows), f"{r.first_seq}..{r.last_seq}", r.head[:16],
                  "intact" if r.ok else "; ".join(r.problems))
    console.print(t)
    if not reports:
        console.print("the audit is empty")
    if any(not r.ok for r in reports.values()):
        raise SystemExit(1)


# --- demo ----------------------------------------------------------------------------------------------

@main.command()
@click.option("--enterprises", "-n", default=1000, show_default=True,
              help="enterprises of the city (each with ~58 rows of history over the 14 departments); "
                   "a city seeded before gets a tenth as many more")
@click.option("--seconds", default=45, show_default=True, help="how long live changes run")
@click.option("--rate", default=20.0, show_default=True, help="changes per second, spread over every department")
def demo(enterprises: int, seconds: int, rate: float) -> None:
    """The whole city on the local stack: stack up, seed all 14 departments (PostgreSQL, MariaDB,
    polled databases, file drops), connect --all + worker + sink, live changes in every department,
    alerts arriving for a consented bank only, events per department, analyst queries, assessment."""
    from streams.cli.demo import run_demo

    run_demo(console, enterprises=enterprises, seconds=seconds, rate=rate)



# --- assess --------------------------------------------------------------------------------------------

@main.command()
@click.option("--date", "day", default=None, metavar="YYYY-MM-DD", help="one day (default: today, live)")
@click.option("--month", default=None, metavar="YYYY-MM", help="a month: each department's mean over its days")
@click.option("--datasets", is_flag=True, help="with --date: every dataset's row under its department")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "xlsx"]), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="file for csv or xlsx")
@click.option("--recompute", is_flag=True, help="(operator) compute the day again now, e.g. after a config change")
@TOKEN_FILE
def assess(day: str | None, month: str | None, datasets: bool, fmt: str, out: Path | None, recompute: bool,
           token_file: Path | None) -> None:
    """数据汇集考核: each department's data-sharing score (时效性, 完整性, 规范性, 一致性, 可访问性),
    grade and reasons, as the sink computes them (docs/assessment.md)."""
    from streams.cli import assess as report

    if day and month:
        raise click.UsageError("--date or --month, not both")
    if fmt == "xlsx" and out is None:
        raise click.UsageError("--format xlsx needs --out FILE.xlsx")
    token = _token(token_file)

    def query(sql: str, params: dict[str, str]) -> dict:
        return run_sql(sql, params, token)

    if month:
        try:
            dt.date.fromisoformat(f"{month}-01")
        except ValueError:
            raise click.UsageError(f"--month {month!r}: use YYYY-MM") from None
        rows, title = report.month_report(query, month, err_console), f"数据汇集考核 {month}"
    else:
        when = dt.date.fromisoformat(day) if day else dt.datetime.now(dt.UTC).date()
        if recompute:
            gateway_call("assess", {"day": when.isoformat()}, token)
        rows, title = report.day_report(query, when, datasets), f"数据汇集考核 {when.isoformat()}"
    if not rows:
        raise YurongError(f"no assessment for {month or day or 'today'}: the sink assesses each day while it runs "
                          "(`yurong sink`); an operator can compute a past day with --recompute")
    if fmt == "csv":
        report.write_csv(rows, out)
    elif fmt == "xlsx":
        assert out is not None
        report.write_xlsx(rows, out, title)
        console.print(f"{len(rows)} rows written to {out}")
    else:
        console.print(report.table(rows, title))


# --- erase ---------------------------------------------------------------------------------------------

@main.command()
@click.option("--uscc", required=True, help="the enterprise's 统一社会信用代码")
@click.option("--reason", required=True, help="why: the request's reference (kept in the audit record)")
@click.option("--worker-wait", "worker_wait_s", default=120.0, show_default=True,
              help="seconds to wait for the worker's confirmation that it dropped the profile")
def erase(uscc: str, reason: str, worker_wait_s: float) -> None:
    """Erase one enterprise's data on request — as the Kafka principal operator, audited on
    audit.erasures: the running worker drops its profile (an erase request on control.erasures,
    merged in order with the enterprise's events, confirmed by the worker), its Redis watchlist,
    throttle and held-back entries go, then its ClickHouse rows (once the sink has stored what was
    published about it). Consents are kept (evidence of authorisation); what is not erased is
    printed (docs/security.md, "Data lifecycle")."""
    from streams.cli import common
    from streams.cli.erase import erase as erase_enterprise_everywhere

    s = get_settings()

    def clickhouse(code: str, why: str) -> dict[str, int]:
        # the sink's gateway erases, as the verified operator (YURONG_ANALYST_TOKEN: an operator's
        # token), with its own writer: the CLI holds no ClickHouse credentials of its own
        return common.erase_via_gateway(code, why)

    record = erase_enterprise_everywhere(uscc, reason, clickhouse, s, worker_wait_s)
    console.print_json(json.dumps(record, ensure_ascii=False))
    if record["failed"]:
        err_console.print(f"[red]erasure of {escape(record['uscc'])} incomplete:[/red] "
                          + escape("; ".join(f"{k}: {v}" for k, v in record["failed"].items()))
                          + " — run the command again (every step is idempotent)")
        sys.exit(2)
    applied = record["erased"]["worker"]["applied"]
    err_console.print(f"the worker {escape(applied['app_id'])} dropped the profile (marker at enterprise.events"
                      f"[{applied['events_partition']}]@{applied['events_offset']}); the next change of the enterprise "
                      "starts a new profile")
    err_console.print(f"[yellow]note:[/yellow] {escape(record['not_erased'][-1])}")
