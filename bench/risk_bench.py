"""Risk benchmark (issue 4): mask + merge + score throughput per worker process over every
department's data, and alert latency at a sustained input rate — each beside a baseline measured
in the same run.

    .venv/bin/python -m bench.risk_bench [--enterprises 1000] [--rate 2000] [--seconds 60] [--workers 1]

The local stack must be up (`make stack-up`). One run:

1. **Data from the simulator.** ``CitySimulator`` creates this run's department databases
   (PostgreSQL, MariaDB, polled tables, drop folders; unique names) and seeds ``--enterprises``
   enterprises with a year of history; ``yurong connect --all`` (in-process) brings every dataset
   onto the ``dept.*`` topics. The worker group is first committed at the end of the shared
   topics, so the worker reads exactly this run's records.
2. **Throughput (drain).** ``--workers`` Faust worker processes (``yurong worker``, own app id)
   drain that backlog: every record is validated, masked, merged into its enterprise's profile
   (facts, indicators, scorecard, alert rules) and published. Measured from the worker's
   ``yurong_events_in_total`` counters. Baselines on exactly the same offsets: a plain
   confluent-kafka consumer (no decode), and the worker's pure core without Faust.
3. **Sustained rate + alert latency.** The run's envelopes are replayed as live updates
   (``op = u``, new source positions; encoded before the clock starts, so the load generator
   takes little CPU) at ``--rate`` per second for ``--seconds``; ``--alert-share`` of them are
   status changes of enterprises a bank holds consent for and watches, so they raise alerts
   (encoded at sending, ``source.ts_ms`` = the moment of sending). Measured: the worker's
   processing rate and lag each second, the CPU of the workers, the load generator and the
   broker while sending, and per alert the latency from sending to published (in the alert) and
   to received by the bank's consumer. Baselines in the same run: the latency of a plain consumer
   reading the same input records (send → receive), and the pure core's rate on the replay's
   records (timed before sending), for the worker's merged rate.

Results: ``bench/results/risk-<date>.json`` and a summary table. The run's databases, drop
folder, Redis keys and alerts topic are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pymysql
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from rich.table import Table

from bench.pipeline_bench import CpuMeter, console, machine_facts, summary_ms
from connectors.fleet import Fleet
from connectors.mysql import parse_dsn
from connectors.simulator.city import CitySimulator
from streams.codecs.serde import schema_store
from streams.core.access import ADMIN
from streams.core.catalogue import catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import DecodedProfiles, merge_event
from streams.errors import RecordError
from streams.kafka.admin import ensure_topics, pipeline_topics, watermark_offsets
from streams.kafka.security import client_conf
from streams.settings import Settings
from streams.worker.consent_store import REDIS_ADMIN, ConsentRegistry, redis_login, without_credentials
from tests.conftest import drop_database, free_port
from tests.harness import commit_at_end

REPO = Path(__file__).resolve().parent.parent

DEPT_TOPICS = sorted(catalogue().by_topic())


def now_ms() -> float:
    return time.time() * 1000


def end_offsets(bootstrap: dict, topics: list[str]) -> dict[tuple[str, int], int]:
    c = Consumer({**bootstrap, "group.id": f"bench-wm-{uuid.uuid4().hex}"})
    try:
        md = c.list_topics(timeout=15).topics
        return {(t, p): watermark_offsets(c, TopicPartition(t, p))[1] for t in topics if t in md for p in md[t].partitions}
    finally:
        c.close()


def worker_counts(port: int) -> dict[str, float]:
    """One worker's progress from its /metrics: records read from dept.* (``ingested``), events
    it published to enterprise.events (``events``) and events the merge step read (``merged``)."""
    import urllib.request
    out = {"ingested": 0.0, "events": 0.0, "merged": 0.0}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if 'component="worker"' not in line:
            continue
        value = float(line.rpartition(" ")[2])
        if line.startswith("yurong_events_in_total{") and 'topic="dept.' in line:
            out["ingested"] += value
        elif line.startswith("yurong_events_out_total{") and 'topic="enterprise.events"' in line:
            out["events"] += value
        elif line.startswith("yurong_events_in_total{") and 'topic="enterprise.events"' in line:
            out["merged"] += value
    return out


class RunEnv:
    """This run's databases, folders, names and the environment of its worker processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"yurong-riskbench-{self.tag}-"))
        base = Settings()
        self.bootstrap = client_conf(ADMIN, base)  # the bench sets up and observes as the super user
        self.redis_url = redis_login(REDIS_ADMIN, base).authenticated_url()  # set up and observe as the admin
        self.dsns = {d.dept: base.source.dsn(d.dept, d.kind).rsplit("/", 1)[0] + f"/{d.dept}_rb{self.tag}"
                     for d in catalogue().departments.values() if d.kind != "file"}
        self.app_id, self.prefix = f"yurong-riskbench-{self.tag}", f"yurong-test:riskbench{self.tag}:"
        self.key = secrets.token_hex(32)
        os.environ.update({
            "YURONG_SOURCE_DSNS": json.dumps(self.dsns), "YURONG_SOURCE_DROP_DIR": str(self.tmp / "drops"),
            "YURONG_SOURCE_POLL_INTERVAL_S": "0.3", "YURONG_SOURCE_HEARTBEAT_INTERVAL_S": "0",
        })
        self.settings = Settings()
        pid_file = base.paths.home / "run" / "kafka.pid"  # the local stack's broker (scripts/stack.sh)
        self.kafka_pid = int(pid_file.read_text()) if pid_file.exists() else None
        self.procs: list[subprocess.Popen] = []
        self.metric_ports: list[int] = []
        self.bank = ""

    def worker_env(self) -> dict[str, str]:
        port = free_port()
        self.metric_ports.append(port)
        return {**os.environ, "YURONG_HOME": str(self.tmp / f"home{len(self.metric_ports)}"),
                "YURONG_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap["bootstrap.servers"],
                "YURONG_REDIS_URL": without_credentials(self.redis_url),  # the worker logs in as its own user
                "YURONG_REDIS_KEY_PREFIX": self.prefix, "YURONG_MASKING_HMAC_KEY": self.key,
                "YURONG_WORKER_APP_ID": self.app_id, "YURONG_WORKER_WEB_PORT": str(free_port()),
                "YURONG_METRICS_WORKER_PORT": str(port)}

    def start_workers(self) -> None:
        for _ in range(self.args.workers):
            env = self.worker_env()
            log = open(self.tmp / f"worker{len(self.procs)}.log", "ab")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "-l", "warn"], env=env,
                                               stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True))

    def counts(self) -> dict[str, float]:
        """Progress of all workers together (see ``worker_counts``)."""
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited ({p.returncode}); logs in {self.tmp}")
        total = Counter()
        for port in self.metric_ports:
            total.update(worker_counts(port))
        return {k: total[k] for k in ("ingested", "events", "merged")}

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, 15)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
        admin_dsn = self.dsns["market"].rsplit("/", 1)[0] + "/postgres"
        for dept, dsn in self.dsns.items():
            try:
                if catalogue().department(dept).kind == "mysql":
                    conn_settings, db = parse_dsn(dsn)
                    conn = pymysql.connect(**conn_settings, autocommit=True)
                    with conn.cursor() as cur:
                        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")  # this run's generated name
                    conn.close()
                else:
                    drop_database(admin_dsn, dsn.rsplit("/", 1)[1])
            except Exception as exc:  # noqa: BLE001 — cleanup is best effort, reported
                console.print(f"[yellow]could not drop the {dept} database: {exc}")
        r = redis.from_url(self.redis_url)
        for k in r.scan_iter(match=f"{self.prefix}*", count=1000):
            r.delete(k)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- 1. data from the simulator ---------------------------------------------------------------------

def load_city(run: RunEnv) -> dict[tuple[str, int], tuple[int, int]]:
    """Seed the city and run every connector until the run's records stop arriving; return the
    offset range of this run's records per (topic, partition)."""
    ensure_topics(run.bootstrap, pipeline_topics(DEPT_TOPICS))
    commit_at_end(run.bootstrap, run.app_id, [*DEPT_TOPICS, "enterprise.events", "risk.changes", "consent.grants"])
    before = end_offsets(run.bootstrap, DEPT_TOPICS)
    city = CitySimulator(run.settings, seed=run.args.seed, distress_share=0.1)
    with console.status(f"seeding {run.args.enterprises:,} enterprises in every department"):
        city.create()
        run.usccs = city.seed(run.args.enterprises)
    fleet = Fleet(catalogue(), run.settings, schema_store())
    thread = threading.Thread(target=fleet.run, daemon=True)
    thread.start()
    last, stable_since = -1, time.monotonic()
    with console.status("connectors: snapshots of every department onto Kafka") as status:
        while time.monotonic() - stable_since < 6:
            time.sleep(1)
            now = sum(end_offsets(run.bootstrap, DEPT_TOPICS).values()) - sum(before.values())
            status.update(f"connectors: {now:,} records on the dept.* topics")
            if now != last:
                last, stable_since = now, time.monotonic()
    fleet.stop()
    thread.join(30)
    after = end_offsets(run.bootstrap, DEPT_TOPICS)
    return {tp: (before.get(tp, 0), hi) for tp, hi in after.items() if hi > before.get(tp, 0)}


def read_ranges(bootstrap: dict, ranges: dict[tuple[str, int], tuple[int, int]], handle=None) -> dict:
    """Read exactly ``ranges``; ``handle(msg)`` per message; rate from the first message."""
    c = Consumer({**bootstrap, "group.id": f"bench-raw-{uuid.uuid4().hex}", "enable.auto.commit": False})
    todo = {tp: hi for tp, (lo, hi) in ranges.items()}
    c.assign([TopicPartition(t, p, lo) for (t, p), (lo, _) in ranges.items()])
    count, first = 0, None
    deadline = time.monotonic() + 300
    try:
        while todo and time.monotonic() < deadline:
            for m in c.consume(num_messages=2000, timeout=0.5):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(m.error())
                    continue
                first = first or time.perf_counter()
                tp = (m.topic(), m.partition())
                if tp not in todo or m.offset() >= todo[tp]:
                    continue
                count += 1
                if handle is not None:
                    handle(m)
                if m.offset() + 1 >= todo[tp]:
                    del todo[tp]
        last = time.perf_counter()
    finally:
        c.close()
    return {"messages": count, "per_s": round(count / (last - first), 1) if first and last > first else None}


# --- 2. throughput ------------------------------------------------------------------------------------

class PureCore:
    """The worker's per-record work in one process without Faust or Kafka: decode, validate,
    mask, encode; decode, merge, score, encode — profiles kept in a dict like the worker's table."""

    def __init__(self, key_hex: str) -> None:
        self.schemas = schema_store()
        self.datasets = catalogue().by_topic()
        self.pseudo = Pseudonymizer(bytes.fromhex(key_hex))
        self.profiles: dict[str, bytes] = {}
        self.decoded = DecodedProfiles(lambda b: self.schemas.decode(b, "enterprise/profile")[1])
        self.offsets: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def __call__(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        if value is None:
            return
        schemas, ds = self.schemas, self.datasets[topic]
        _, env = schemas.decode(value, ds.schema_name)
        try:
            ev = to_enterprise_event(ds, env, Provenance(topic, partition, offset), self.pseudo, int(now_ms()))
        except RecordError as exc:  # the worker dead-letters these; counted here
            self.rejected[f"{ds.qualified}: {exc.kind}"] += 1
            return
        _, ev = schemas.decode(schemas.encode("enterprise/event", ev), "enterprise/event")
        uscc = ev["uscc"]
        self.offsets[uscc] += 1
        old = self.decoded.get(uscc, self.profiles.get(uscc))
        new, changes = merge_event(old, ev, self.offsets[uscc], int(now_ms()))
        self.profiles[uscc] = b = schemas.encode("enterprise/profile", new)
        self.decoded.put(uscc, b, new)
        for ch in changes:
            schemas.encode("risk/change", ch)


def baselines(run: RunEnv, ranges) -> tuple[dict, list[tuple[str, bytes, bytes]], PureCore]:
    captured: list[tuple[str, bytes, bytes]] = []
    with console.status("baseline: raw consume of the run's records"):
        raw = read_ranges(run.bootstrap, ranges, lambda m: m.value() and captured.append((m.topic(), m.key(), m.value())))
    core = PureCore(run.key)
    with console.status("baseline: the worker's pure core without Faust"):
        pure = read_ranges(run.bootstrap, ranges, lambda m: core(m.topic(), m.partition(), m.offset(), m.value()))
    sizes = sorted(len(b) for b in core.profiles.values())
    return {"raw_consume": raw, "pure_core": pure, "rejected_by_validation": dict(core.rejected),
            "profile_bytes": {"p50": sizes[len(sizes) // 2], "max": sizes[-1]} if sizes else {}}, captured, core


def drain(run: RunEnv, total: int) -> dict:
    """Start the workers at the run's first records and time until every record is ingested and
    every resulting event merged into its profile (scored, alert rules applied)."""
    run.start_workers()
    meter = CpuMeter({f"worker{i}": p.pid for i, p in enumerate(run.procs)})
    first_t, spies = None, []
    deadline = time.monotonic() + 900
    with console.status("workers draining the backlog") as status:
        while time.monotonic() < deadline:
            c = run.counts()
            if c["ingested"] and first_t is None:
                first_t = time.monotonic()
                meter.start()
                spies = profile_workers(run, "drain")
            status.update(f"workers: {c['ingested']:,.0f} / {total:,} ingested, {c['merged']:,.0f} merged")
            if c["ingested"] >= total and c["merged"] >= c["events"]:
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"the workers did not finish {total} records within 900 s; logs in {run.tmp}")
    elapsed = time.monotonic() - first_t
    for spy in spies:
        spy.wait(60)
    return {"records": total, "events_merged": int(c["merged"]), "dead_lettered_or_skipped": int(total - c["events"]),
            "seconds": round(elapsed, 2), "per_s": round(total / elapsed, 1), "cpu": meter.stop()}


def profile_workers(run: RunEnv, phase: str) -> list[subprocess.Popen]:
    """``--profile``: sample every worker with py-spy for the first ``--profile`` seconds of the
    ``--profile-phase`` (drain, sustained or both); collapsed stacks in
    bench/results/profile-<tag>-<phase>-worker<i>.txt (flamegraph.pl/speedscope). Only threads
    holding the GIL are sampled (``--gil``): the stacks are where the worker's Python spends CPU,
    not where its threads wait."""
    if not run.args.profile or run.args.profile_phase not in (phase, "both"):
        return []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    out = REPO / "bench" / "results"
    return [subprocess.Popen([spy, "record", "--pid", str(p.pid), "--duration", str(run.args.profile), "--rate", "250",
                              "--gil", "--format", "raw", "--output", str(out / f"profile-{run.tag}-{phase}-worker{i}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, p in enumerate(run.procs)]


# --- 3. sustained rate and alert latency ----------------------------------------------------------------

class Collector(threading.Thread):
    """Stamps every record of ``topics`` with its arrival time."""

    def __init__(self, bootstrap: dict, topics: list[str]) -> None:
        super().__init__(daemon=True)
        self.c = Consumer({**bootstrap, "group.id": f"bench-c-{uuid.uuid4().hex}",
                           "enable.auto.commit": False, "auto.offset.reset": "latest"})
        self.c.subscribe(topics)
        self.got: list[tuple[object, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for m in self.c.consume(num_messages=500, timeout=0.05):
                if m.error() is None and m.value() is not None:
                    self.got.append((m, now_ms()))
        self.c.close()


def pure_core_on_replay(core: PureCore, replay: list[tuple[str, bytes, bytes] | None], limit: int = 20_000) -> dict:
    """Baseline for the sustained phase: the pure core on the replay's records — updates with a
    before image, merged into profiles that already hold the enterprise's year (the drain
    baseline's), as the worker meets them — timed here, before sending, on an otherwise idle machine."""
    records = [r for r in replay if r is not None][:limit]
    started = time.perf_counter()
    for i, (topic, _, value) in enumerate(records):
        core(topic, 0, i, value)
    return {"messages": len(records), "per_s": round(len(records) / (time.perf_counter() - started), 1)}


def sustained(run: RunEnv, captured: list[tuple[str, bytes, bytes]], core: PureCore, before: dict[str, float]) -> dict:
    args = run.args
    schemas = schema_store()
    datasets = catalogue().by_topic()
    rng = random.Random(run.tag)
    watched = rng.sample(run.usccs, min(200, len(run.usccs)))
    run.bank = f"b{rng.randint(9000, 9999)}"
    alerts_topic = f"alerts.{run.bank}"
    ensure_topics(run.bootstrap, {alerts_topic: {}})

    async def setup() -> None:
        reg = ConsentRegistry.from_url(run.redis_url, run.prefix)
        try:
            for u in watched:
                await reg.grant(run.bank, u, "credit monitoring", int((time.time() + 86400) * 1000),
                                recorded_by="consent", evidence_ref="auth-letter:bench/0001")
            await reg.watch(run.bank, watched)
        finally:
            await reg.close()
    asyncio.run(setup())

    reg_topic = "dept.market.enterprise_registration"
    registrations = {}
    for topic, _key, value in captured:
        if topic == reg_topic:
            env = schemas.decode(value, datasets[topic].schema_name)[1]
            if env["after"] and env["after"]["uscc"] in watched:
                registrations[env["after"]["uscc"]] = env
    status = {u: "active" for u in registrations}
    # The replay is encoded before the clock starts: the load generator only hands bytes to
    # librdkafka, so it takes little of the cores the worker and the broker share with it (a real
    # department's connector runs elsewhere). Its ``source.ts_ms`` is the time of encoding, up to
    # the encoding and ``--seconds`` before sending; the status changes that raise alerts are
    # encoded at sending, with the sending time, which is what their latency is measured from.
    seq = 10**15
    order = list(range(len(captured)))
    rng.shuffle(order)
    total = args.rate * args.seconds
    replay: list[tuple[str, bytes, bytes] | None] = []
    with console.status(f"encoding {total:,} replay records"):
        for i in range(total):
            if registrations and rng.random() < args.alert_share:
                replay.append(None)  # a status change, made at sending
                continue
            topic, key, value = captured[order[i % len(order)]]
            env = schemas.decode(value, datasets[topic].schema_name)[1]
            row = env["after"] or env["before"]
            seq += 1
            env = {**env, "op": "u", "before": row, "after": row,
                   "source": {**env["source"], "position": str(seq), "seq": seq, "ts_ms": int(now_ms()), "snapshot": "false"}}
            if topic == reg_topic and row["uscc"] in registrations:
                registrations[row["uscc"]] = env
            replay.append((topic, key, schemas.encode(datasets[topic].schema_name, env)))
    with console.status("baseline: the pure core on the replay's records"):
        pure_replay = pure_core_on_replay(core, replay)
    input_reader = Collector(run.bootstrap, DEPT_TOPICS)
    alert_reader = Collector(run.bootstrap, [alerts_topic])
    input_reader.start()
    alert_reader.start()
    time.sleep(3)  # both readers joined their groups before the first record
    producer = Producer({**run.bootstrap, "linger.ms": 5, "acks": "all"})
    sent, flips = 0, {}
    samples = []
    spies = profile_workers(run, "sustained")
    meter = CpuMeter({**{f"worker{i}": p.pid for i, p in enumerate(run.procs)}, "load_generator": os.getpid(),
                      **({"kafka": run.kafka_pid} if run.kafka_pid else {})})
    meter.start()
    start = time.monotonic()
    next_sample = start + 1
    tick = 0.01
    per_tick = args.rate * tick
    credit = 0.0
    with console.status(f"replaying at {args.rate:,}/s for {args.seconds}s") as st:
        while sent < total:
            credit += per_tick
            while credit >= 1 and sent < total:
                credit -= 1
                item = replay[sent]
                if item is None:
                    ts = int(now_ms())
                    seq += 1
                    u = rng.choice(list(registrations))
                    status[u] = "suspended" if status[u] == "active" else "active"
                    env = registrations[u]
                    after = {**env["after"], "status": status[u]}
                    flips[(u, str(seq))] = ts
                    env = registrations[u] = {
                        **env, "op": "u", "before": env["after"], "after": after,
                        "source": {**env["source"], "position": str(seq), "seq": seq, "ts_ms": ts, "snapshot": "false"}}
                    item = (reg_topic, u.encode(), schemas.encode(datasets[reg_topic].schema_name, env))
                topic, key, value = item
                producer.produce(topic, key=key, value=value, timestamp=int(now_ms()))
                sent += 1
            producer.poll(0)
            now = time.monotonic()
            if now >= next_sample:
                c = run.counts()
                samples.append({"t": round(now - start, 1), "sent": sent, "ingested": c["ingested"] - before["ingested"],
                                "merged": c["merged"] - before["merged"], "events": c["events"] - before["events"]})
                st.update(f"replaying at {args.rate:,}/s: sent {sent:,}, merged {samples[-1]['merged']:,.0f}")
                next_sample += 1
            time.sleep(max(0.0, start + (sent / args.rate) - time.monotonic()))
    producer.flush(30)
    produce_s = time.monotonic() - start
    cpu = meter.stop()
    for spy in spies:
        spy.wait(60)
    drain_start = time.monotonic()
    while time.monotonic() - drain_start < 300:
        c = run.counts()
        if c["ingested"] - before["ingested"] >= sent and c["merged"] >= c["events"]:
            break
        time.sleep(0.5)
    drained_s = time.monotonic() - drain_start
    deadline = time.monotonic() + 30
    while len(alert_reader.got) < len(flips) and time.monotonic() < deadline:
        time.sleep(0.2)
    input_reader.stop_event.set()
    alert_reader.stop_event.set()
    input_reader.join(5)
    alert_reader.join(5)

    # latencies: alert (by source position) and plain consume of the same inputs (by message timestamp)
    published, received = [], []
    for m, at in alert_reader.got:
        a = schemas.decode(m.value(), "risk/alert")[1]
        t0 = flips.get((a["uscc"], a["source_position"]))
        if t0 is not None:
            published.append(a["published_ts_ms"] - t0)
            received.append(at - t0)
    consume = [at - m.timestamp()[1] for m, at in input_reader.got]
    lag = [s["sent"] - s["ingested"] + s["events"] - s["merged"] for s in samples]
    steady = samples[len(samples) // 5:]
    rate = ((steady[-1]["merged"] - steady[0]["merged"]) / (steady[-1]["t"] - steady[0]["t"])) if len(steady) > 1 else None
    return {"target_per_s": args.rate, "sent": sent, "achieved_send_per_s": round(sent / produce_s, 1),
            "worker_merged_per_s_steady": round(rate, 1) if rate else None,
            "lag_records": {"max": max(lag) if lag else None, "last": lag[-1] if lag else None},
            "drain_after_send_s": round(drained_s, 2), "status_changes": len(flips),
            "alerts_received": len(received), "alert_published_ms": summary_ms(published),
            "alert_received_ms": summary_ms(received), "baseline_plain_consume_ms": summary_ms(consume),
            "baseline_pure_core_on_replay": pure_replay,
            "cpu_while_sending": cpu, "samples": samples}


# --- report ---------------------------------------------------------------------------------------------

def report(res: dict) -> None:
    d, b, s = res["drain"], res["baselines"], res["sustained"]
    t = Table(title=f"risk pipeline, {res['records']:,} records from {res['enterprises']:,} enterprises, "
                    f"{res['workers']} worker(s)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("baseline (same run)", justify="right")
    t.add_column("ratio", justify="right")
    raw = b["raw_consume"]["per_s"]
    t.add_row("worker: mask+merge+score, records/s", f"{d['per_s']:,.0f}", f"raw consume {raw:,.0f}",
              f"{d['per_s'] / raw:.4f}" if raw else "-")
    t.add_row("pure core without Faust, records/s", f"{b['pure_core']['per_s']:,.0f}", f"raw consume {raw:,.0f}",
              f"{b['pure_core']['per_s'] / raw:.4f}" if raw else "-")
    t.add_row(f"sustained: sent/s (target {s['target_per_s']:,})", f"{s['achieved_send_per_s']:,.0f}", "", "")
    merged, pure_replay = s["worker_merged_per_s_steady"] or 0, s["baseline_pure_core_on_replay"]["per_s"]
    t.add_row("sustained: worker merged/s (steady)", f"{merged:,.0f}", f"pure core on the replay {pure_replay:,.0f}",
              f"{merged / pure_replay:.3f}" if pure_replay else "-")
    t.add_row("sustained: max lag (records)", f"{s['lag_records']['max']:,}", "", "")
    cores = s["cpu_while_sending"]["cores_pct"]
    t.add_row("sustained: CPU while sending (% of a core)", ", ".join(f"{k} {v:.0f}" for k, v in cores.items()),
              f"machine {s['cpu_while_sending']['machine_busy_pct']:.0f} % busy", "")
    pc = s["baseline_plain_consume_ms"]
    for name in ("alert_published_ms", "alert_received_ms"):
        v = s[name]
        t.add_row(f"{name.replace('_ms', '')} p50 / p99 ms (n={v['n']})", f"{v['p50']} / {v['p99']}",
                  f"plain consume {pc['p50']} / {pc['p99']}",
                  f"{v['p50'] / pc['p50']:.1f}× / {v['p99'] / pc['p99']:.1f}×" if v["p50"] and pc["p50"] else "-")
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.risk_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--enterprises", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=2000, help="input records per second in the sustained phase")
    ap.add_argument("--seconds", type=int, default=60, help="length of the sustained phase")
    ap.add_argument("--workers", type=int, default=1, help="Faust worker processes (scale-out by partitions)")
    ap.add_argument("--alert-share", type=float, default=0.01, help="share of sustained records that are status changes")
    ap.add_argument("--seed", type=int, default=2019)
    ap.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                    help="sample the workers with py-spy for the first SECONDS of --profile-phase")
    ap.add_argument("--profile-phase", choices=("drain", "sustained", "both"), default="drain")
    args = ap.parse_args()
    run = RunEnv(args)
    try:
        ranges = load_city(run)
        total = sum(hi - lo for lo, hi in ranges.values())
        console.print(f"{total:,} records of this run on {len({t for t, _ in ranges})} dept.* topics")
        base, captured, core = baselines(run, ranges)
        d = drain(run, total)
        s = sustained(run, captured, core, run.counts())
        res = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "args": vars(args),
               "enterprises": args.enterprises, "records": total, "workers": args.workers,
               "per_topic": {t: sum(hi - lo for (tt, _), (lo, hi) in ranges.items() if tt == t) for t in DEPT_TOPICS},
               "baselines": base, "drain": d, "sustained": s, "machine": machine_facts()}
        out = REPO / "bench" / "results" / f"risk-{dt.date.today().isoformat()}-{run.tag}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(res, indent=2, ensure_ascii=False))
        report(res)
        console.print(f"results: {out.relative_to(REPO)}")
    finally:
        run.cleanup()


if __name__ == "__main__":
    main()
