"""Pipeline benchmark: end-to-end throughput and alert latency on the local stack, with the
broker's own figures measured in the same run as the yardstick.

    .venv/bin/python -m bench.pipeline_bench [--rows 20000] [--alerts 300] [--alert-rate 20]

What one run does (the local stack must be up: `make stack-up`):

1. seeds ``--rows`` enterprises into a fresh department database (unique name), then starts
   connector, worker and sink as child processes with their own app id, consumer groups, ports,
   Redis prefix and chDB folder (like tests/e2e). The worker's and the sink's groups are first
   committed at the current end of the shared topics, so the run measures its own records and
   not the history other runs left on the topics. Measured: PostgreSQL commit → profile
   written in ClickHouse, per stage (connector, worker ingest, worker merge, sink), total and
   steady state (10 % → 90 % of the profiles).
2. baselines on exactly the ``dept.market.enterprise_registration`` offsets this run produced:
   a plain confluent-kafka consumer (no decode), the same plus Avro decode, and the same plus
   the worker's pure core (validate, mask, encode, merge, score) without Faust.
3. a Kafka round trip (produce → consume one small message at a time on a scratch topic).
4. alert latency: a bank gets consent and a watch for some enterprises; ``--alerts`` status
   changes are committed at ``--alert-rate`` per second, one transaction each; every alert on
   ``alerts.<bank>`` is timed from the source commit to published and to received here.

Results go to ``bench/results/pipeline-<date>.json`` and a summary table. The database, the
Redis keys of the run's prefix, the run's own topics and its temporary folder are removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.simulator.market import MarketSimulator
from streams.codecs.serde import schema_store
from streams.core.access import ADMIN
from streams.core.catalogue import catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import merge_event
from streams.kafka.admin import ensure_topics
from streams.kafka.security import client_conf
from streams.settings import get_settings
from streams.worker.consent_store import REDIS_ADMIN, ConsentRegistry, redis_login
from tests.conftest import drop_database, make_database
from tests.harness import IsolatedPipeline, PipelineDied, skip_history

REPO = Path(__file__).resolve().parent.parent

console = Console(width=None if sys.stdout.isatty() else 120)
REG_TOPIC = "dept.market.enterprise_registration"
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUANTS = (0.0, 0.1, 0.5, 0.9, 1.0)


# --- small measuring helpers ------------------------------------------------------------------------

def now_ms() -> float:
    return time.time() * 1000


def pct(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def summary_ms(values: list[float]) -> dict:
    v = sorted(values)
    def r(x):
        return None if x is None else round(x, 1)
    return {"n": len(v), "p50": r(pct(v, 0.50)), "p95": r(pct(v, 0.95)), "p99": r(pct(v, 0.99)),
            "max": r(v[-1] if v else None), "mean": r(sum(v) / len(v) if v else None)}


def proc_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of one process (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def foreign_pipeline_processes(own: set[int]) -> list[str]:
    """Other yurong components or test runs on this machine (they share the 2 cores and topics)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in own or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "streams.cli" in cmd or ("pytest" in cmd and "python" in cmd):
            found.append(f"{d.name}: {cmd[:120]}")
    return found


class CpuMeter:
    """CPU used by named processes and by the machine between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.t = time.monotonic()
        self.proc = {n: proc_cpu_seconds(p) for n, p in self.pids.items()}
        self.sys = system_cpu()

    def stop(self) -> dict:
        wall = time.monotonic() - self.t
        busy, total = system_cpu()
        out = {"wall_s": round(wall, 2),
               "machine_busy_pct": round(100 * (busy - self.sys[0]) / max(1, total - self.sys[1]), 1),
               "cores_pct": {}}
        for n, p in self.pids.items():
            end = proc_cpu_seconds(p)
            if end is not None and self.proc[n] is not None:
                out["cores_pct"][n] = round(100 * (end - self.proc[n]) / wall, 1)  # 100 = one core busy
        return out


# --- Kafka helpers ----------------------------------------------------------------------------------

def partitions_of(admin: AdminClient, topic: str) -> list[int]:
    md = admin.list_topics(topic, timeout=15).topics[topic]
    return sorted(md.partitions)


def watermarks(bootstrap: dict, topic: str) -> dict[int, tuple[int, int]]:
    c = Consumer({**bootstrap, "group.id": f"bench-wm-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=15).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15) for p in sorted(parts)}
    finally:
        c.close()


def delete_topics(bootstrap: dict, names: list[str]) -> None:
    admin = AdminClient(dict(bootstrap))
    existing = set(admin.list_topics(timeout=15).topics)
    todo = [n for n in names if n in existing]
    if not todo:
        return
    for _, fut in admin.delete_topics(todo, operation_timeout=30).items():
        try:
            fut.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 — cleanup is best effort, reported
            console.print(f"[yellow]could not delete a topic: {exc}")


# --- the run ----------------------------------------------------------------------------------------

@dataclass
class Run:
    args: argparse.Namespace
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        s = get_settings()
        self.bootstrap = client_conf(ADMIN, s)  # the bench sets up and observes as the super user
        self.admin_dsn = s.source.dsn("market", "postgres")
        self.redis_url = redis_login(REDIS_ADMIN, s).authenticated_url()  # set up and observe as the admin
        self.db = f"market_bench{self.tag}"
        self.app_id, self.sink_group, self.prefix = IsolatedPipeline.names("bench", self.tag)
        self.key = secrets.token_hex(32)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"yurong-bench-{self.tag}-"))
        self.dsn = ""
        self.procs: list = []

    def start_pipeline(self) -> IsolatedPipeline:
        """Connector, worker and sink for this run (after ``seed`` created the database)."""
        self.pipe = IsolatedPipeline(self.tmp, self.dsn, self.bootstrap, self.redis_url, self.tag, self.key, label="bench")
        return self.pipe

    def check_alive(self) -> None:
        try:
            self.pipe.check_alive()
        except PipelineDied as exc:
            raise SystemExit(str(exc)) from None

    def logs_tail(self) -> str:
        return self.pipe.logs_tail(2000)

    def sql(self, query: str, **params) -> list[list] | None:
        """Query the sink's read-only endpoint; None while the sink is not up yet."""
        self.check_alive()
        return self.pipe.sql(query, **params)

    def registry(self, fn):
        return self.pipe.registry(fn)


# --- phase 1: end-to-end throughput -----------------------------------------------------------------

def seed(run: Run) -> dict:
    run.dsn = make_database(run.admin_dsn, run.db)
    sim = MarketSimulator(run.dsn, seed=int(run.tag, 16) % 100_000, distress_share=0.0)
    sim.create_schema()
    started = time.monotonic()
    with Progress(TextColumn("seeding {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(run.db, total=run.args.rows)
        run.usccs = sim.seed_enterprises(run.args.rows, progress=lambda k: progress.advance(task, k))
    seconds = time.monotonic() - started
    with psycopg2.connect(run.dsn) as pg, pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM abnormal_operation")
        run.listings = cur.fetchone()[0]
    pg.close()
    console.print(f"seeded {len(run.usccs)} enterprises (+{run.listings} abnormal-operation listings) "
                  f"into {run.db} in {seconds:.1f}s")
    return {"enterprises": len(run.usccs), "listings": run.listings, "seconds": round(seconds, 2)}


def stage_curve(times_ms: list[float], t0_ms: float) -> dict:
    """When 0/10/50/90/100 % of the records had passed a stage, in seconds after pipeline start,
    and the steady rate between 10 % and 90 %."""
    v = sorted(times_ms)
    marks = {f"t{int(q * 100)}_s": round((pct(v, q) - t0_ms) / 1000, 2) if v else None for q in QUANTS}
    span = (pct(v, 0.9) - pct(v, 0.1)) / 1000 if v else 0
    marks["steady_per_s"] = round(0.8 * len(v) / span, 1) if span > 0 else None
    marks["n"] = len(v)
    return marks


def throughput(run: Run, wm_before: dict[int, tuple[int, int]]) -> dict:
    n = len(run.usccs)
    pids = {name: proc.pid for name, proc, _ in run.procs}
    cpu = CpuMeter(pids)
    cpu.start()
    t0 = run.t0_ms
    visible, t_done = 0, None
    deadline = time.monotonic() + run.args.timeout
    with Progress(TextColumn("profiles in ClickHouse"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as progress:
        task = progress.add_task("", total=n)
        while visible < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {visible}/{n} profiles after {run.args.timeout}s\n{run.logs_tail()}")
            time.sleep(2.0)
            rows = run.sql("SELECT uniqExact(uscc) FROM enterprise_profile WHERE has({u:Array(String)}, uscc)", u=run.usccs)
            if rows:
                visible = int(rows[0][0])
                elapsed = (now_ms() - t0) / 1000
                progress.update(task, completed=visible, description=f"{visible / max(elapsed, 1e-9):.0f}/s overall")
    t_done = now_ms()
    cpu_use = cpu.stop()

    # Exact per-stage curves from the timestamps the pipeline itself records.
    def col_times(sql: str) -> list[float]:
        rows = run.sql(sql, u=run.usccs) or []
        return [float(r[0]) for r in rows]

    ingest = col_times("SELECT toUnixTimestamp64Milli(min(ingest_ts)) FROM enterprise_event"
                       " WHERE has({u:Array(String)}, uscc) GROUP BY event_id")
    merged = col_times("SELECT toUnixTimestamp64Milli(min(updated_ts)) FROM enterprise_profile"
                       " WHERE has({u:Array(String)}, uscc) GROUP BY uscc")
    written = col_times("SELECT toUnixTimestamp64Milli(min(written_ts)) FROM enterprise_profile"
                        " WHERE has({u:Array(String)}, uscc) GROUP BY uscc")
    dup = run.sql("SELECT count(), uniqExact(event_id) FROM enterprise_event WHERE has({u:Array(String)}, uscc)", u=run.usccs)
    wm_after = watermarks(run.bootstrap, REG_TOPIC)
    run.reg_range = {p: (wm_before.get(p, (0, 0))[1], wm_after[p][1]) for p in wm_after}
    return {
        "profiles": n,
        "source_rows": n + run.listings,
        "wall_from_start_s": round((t_done - t0) / 1000, 2),
        "worker_first_event_s": round((min(ingest) - t0) / 1000, 2) if ingest else None,
        "overall_profiles_per_s": round(n / ((max(written) - t0) / 1000), 1) if written else None,
        "from_first_profile_per_s": round(n / ((max(written) - min(written)) / 1000), 1) if len(written) > 1 else None,
        "stages": {"worker_ingest": stage_curve(ingest, t0), "worker_merge": stage_curve(merged, t0),
                   "sink_written": stage_curve(written, t0)},
        "duplicate_event_rows": (int(dup[0][0]) - int(dup[0][1])) if dup else None,
        "cpu": cpu_use,
    }


# --- phase 2: consume baselines on this run's offsets -----------------------------------------------

def consume_range(bootstrap: dict, ranges: dict[int, tuple[int, int]], handle=None) -> dict:
    """Read exactly the offsets ``ranges`` of the registration topic; ``handle(msg)`` per message.
    ``per_s`` counts from ``assign()`` to the last message (connection and first fetch included);
    ``per_s_after_first`` from the first message received (librdkafka has prefetched by then)."""
    c = Consumer({**bootstrap, "group.id": f"bench-raw-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    todo = {p: hi for p, (lo, hi) in ranges.items() if hi > lo}
    assigned = time.perf_counter()
    c.assign([TopicPartition(REG_TOPIC, p, lo) for p, (lo, hi) in ranges.items() if hi > lo])
    count, first, ts = 0, None, []
    deadline = time.monotonic() + 120
    try:
        while todo and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(m.error())
                    continue
                if first is None:
                    first = time.perf_counter()
                p = m.partition()
                if p not in todo or m.offset() >= todo[p]:
                    continue
                count += 1
                ts.append(m.timestamp()[1])
                if handle is not None:
                    handle(m)
                if m.offset() + 1 >= todo[p]:
                    del todo[p]
        last = time.perf_counter()
    finally:
        c.close()
    seconds = last - assigned
    after_first = last - first if first is not None else 0.0
    return {"messages": count, "seconds": round(seconds, 4), "per_s": round(count / seconds, 1) if seconds else None,
            "per_s_after_first": round(count / after_first, 1) if after_first else None, "_ts": ts}


def baselines(run: Run) -> dict:
    schemas = schema_store()
    ds = catalogue().by_topic()[REG_TOPIC]
    pseudo = Pseudonymizer(run.key.encode())
    out = {}
    with console.status("baseline: raw consume"):
        raw = consume_range(run.bootstrap, run.reg_range)
    run.connector_ts = raw.pop("_ts")
    out["raw_consume"] = raw
    with console.status("baseline: consume + Avro decode"):
        dec = consume_range(run.bootstrap, run.reg_range,
                            lambda m: schemas.decode(m.value(), ds.schema_name) if m.value() else None)
    dec.pop("_ts")
    out["consume_decode"] = dec

    profiles: dict[str, bytes] = {}

    def core(m) -> None:
        """The worker's pure per-record work (ingest + merge), without Faust and without producing."""
        if m.value() is None:
            return
        _, env = schemas.decode(m.value(), ds.schema_name)
        ev = to_enterprise_event(ds, env, Provenance(m.topic(), m.partition(), m.offset()), pseudo, int(now_ms()))
        ev_bytes = schemas.encode("enterprise/event", ev)
        _, ev = schemas.decode(ev_bytes, "enterprise/event")
        stored = profiles.get(ev["uscc"])
        old = schemas.decode(stored, "enterprise/profile")[1] if stored else None
        new, changes = merge_event(old, ev, m.offset(), int(now_ms()))
        profiles[ev["uscc"]] = schemas.encode("enterprise/profile", new)
        for ch in changes:
            schemas.encode("risk/change", ch)

    with console.status("baseline: consume + decode + validate/mask/merge/score (pure core, no Faust)"):
        pure = consume_range(run.bootstrap, run.reg_range, core)
    pure.pop("_ts")
    out["consume_pure_core"] = pure
    return out


# --- phase 3: Kafka round trip ----------------------------------------------------------------------

def kafka_round_trip(run: Run, samples: int) -> dict:
    topic = f"bench.rtt.{run.tag}"
    run.own_topics.append(topic)
    ensure_topics(run.bootstrap, {topic: {}}, partitions=1)
    producer = Producer(dict(run.bootstrap))
    c = Consumer({**run.bootstrap, "group.id": f"bench-rtt-{run.tag}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    rtts: list[float] = []
    try:
        # warm-up: connections, metadata, first fetch
        for i in range(5 + samples):
            sent = time.perf_counter()
            producer.produce(topic, key=b"k", value=str(i).encode())
            producer.poll(0)
            while True:
                m = c.poll(5.0)
                if m is None:
                    raise RuntimeError("round-trip message not received within 5s")
                if m.error() is None and m.value() == str(i).encode():
                    break
            if i >= 5:
                rtts.append((time.perf_counter() - sent) * 1000)
            time.sleep(0.02)
        producer.flush(10)
    finally:
        c.close()
    return summary_ms(rtts)


# --- phase 4: alert latency -------------------------------------------------------------------------

class AlertCollector(threading.Thread):
    """Reads ``alerts.<bank>`` and stamps each record with its arrival time (decode happens later)."""

    def __init__(self, bootstrap: dict, topic: str, partitions: list[int], tag: str) -> None:
        super().__init__(daemon=True)
        self.c = Consumer({**bootstrap, "group.id": f"bench-alerts-{tag}", "enable.auto.commit": False})
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.received: list[tuple[bytes, bytes, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            m = self.c.poll(0.1)  # poll returns on the first record; consume() would wait to fill a batch
            if m is not None and m.error() is None and m.value() is not None:
                self.received.append((m.key(), m.value(), now_ms()))
        self.c.close()


def alert_latency(run: Run) -> dict:
    m_total, rate = run.args.alerts, run.args.alert_rate
    k = min(len(run.usccs), max(1, run.args.alert_enterprises))
    rng = random.Random(run.tag)
    watched = rng.sample(run.usccs, k)
    admin = AdminClient(dict(run.bootstrap))
    existing = set(admin.list_topics(timeout=15).topics)
    bank = next(b for b in (f"b{rng.randint(1000, 9999)}" for _ in range(1000)) if f"alerts.{b}" not in existing)
    topic = f"alerts.{bank}"
    run.own_topics.append(topic)
    ensure_topics(run.bootstrap, {topic: {}}, partitions=get_settings().kafka.topic_partitions)

    async def setup(reg: ConsentRegistry) -> None:
        expiry = int(now_ms()) + 24 * 3600 * 1000
        for u in watched:
            await reg.grant(bank, u, "benchmark (post-loan monitoring)", expiry_ms=expiry,
                            recorded_by="consent", evidence_ref="auth-letter:bench/0001")
        await reg.watch(bank, watched)
    run.registry(setup)

    collector = AlertCollector(run.bootstrap, topic, partitions_of(admin, topic), run.tag)
    collector.start()
    time.sleep(1.0)  # consumer assigned and fetching before the first commit
    status = {u: "active" for u in watched}
    commits: list[tuple[str, str, float]] = []
    pg = psycopg2.connect(run.dsn)
    cpu = CpuMeter({name: proc.pid for name, proc, _ in run.procs})
    cpu.start()
    try:
        with pg.cursor() as cur, Progress(TextColumn("status changes"), BarColumn(), MofNCompleteColumn(),
                                          TextColumn("alerts received: {task.description}"),
                                          console=console, transient=True) as progress:
            task = progress.add_task("0", total=m_total)
            start = time.monotonic()
            for i in range(m_total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                u = watched[i % k]
                status[u] = "suspended" if status[u] == "active" else "active"
                cur.execute("UPDATE enterprise_registration SET status = %s, updated_at = now() WHERE uscc = %s",
                            (status[u], u))
                pg.commit()
                commits.append((u, status[u], now_ms()))
                progress.update(task, advance=1, description=str(len(collector.received)))
                if i % 50 == 0:
                    run.check_alive()
            offered_s = time.monotonic() - start
            deadline = time.monotonic() + run.args.alert_drain
            while len(collector.received) < m_total and time.monotonic() < deadline:
                time.sleep(0.2)
                progress.update(task, description=str(len(collector.received)))
            time.sleep(1.0)  # late extras (a second alert of the same commit, duplicates)
    finally:
        pg.close()
        cpu_use = cpu.stop()
        collector.stop_event.set()
        collector.join(10)

    schemas = schema_store()
    ours = set(watched)
    by_commit: dict[tuple[str, int], dict] = {}
    alerts_total = 0
    for key, value, recv in collector.received:
        if key is None or key.decode() not in ours:
            continue
        _, a = schemas.decode(value, "risk/alert")
        alerts_total += 1
        slot = (a["uscc"], a["event_ts_ms"])
        if slot not in by_commit or recv < by_commit[slot]["recv"]:  # first alert of a commit counts
            by_commit[slot] = {**a, "recv": recv}
    # bench-side commit clock ↔ PostgreSQL's commit timestamp, matched per enterprise in order
    commit_queue: dict[str, list[float]] = {}
    for u, _, t in commits:
        commit_queue.setdefault(u, []).append(t)
    skew = []
    for u, ev_ts in sorted(by_commit, key=lambda slot: slot[1]):
        if commit_queue.get(u):
            skew.append(commit_queue[u].pop(0) - ev_ts)
    alerts = list(by_commit.values())
    return {
        "bank": bank, "enterprises": k, "commits": len(commits), "offered_rate_per_s": round(len(commits) / offered_s, 1),
        "commits_alerted": len(alerts), "alerts_received": alerts_total,
        "commit_to_published_ms": summary_ms([a["published_ts_ms"] - a["event_ts_ms"] for a in alerts]),
        "commit_to_received_ms": summary_ms([a["recv"] - a["event_ts_ms"] for a in alerts]),
        "hops_ms": {
            "commit_to_detected": summary_ms([a["detected_ts_ms"] - a["event_ts_ms"] for a in alerts]),
            "detected_to_published": summary_ms([a["published_ts_ms"] - a["detected_ts_ms"] for a in alerts]),
            "published_to_received": summary_ms([a["recv"] - a["published_ts_ms"] for a in alerts]),
        },
        "bench_commit_return_minus_pg_commit_ts_ms": summary_ms(skew),
        "cpu": cpu_use,
    }


# --- machine and versions ---------------------------------------------------------------------------

def machine(run: Run) -> dict:
    facts = machine_facts()
    ch = run.sql("SELECT version()")
    facts["versions"]["clickhouse (chDB engine)"] = ch[0][0] if ch else "?"
    return facts


def machine_facts() -> dict:
    """CPU, memory, kernel and the versions of the parts on this machine."""
    def lscpu(field_name: str) -> str | None:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except OSError:
            return None
        m = re.search(rf"^{field_name}:\s*(.+)$", out, re.M)
        return m.group(1).strip() if m else None

    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    import aiokafka
    import chdb
    import confluent_kafka
    import fastavro
    import faust
    versions = {
        "python": platform.python_version(),
        "faust-streaming": faust.__version__,
        "aiokafka": aiokafka.__version__,
        "confluent-kafka": getattr(confluent_kafka, "__version__", None) or str(confluent_kafka.version()[0]),
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": fastavro.__version__,
        "chdb": getattr(chdb, "__version__", "?"),
    }
    jars = sorted(p.name for p in (get_settings().paths.home / "kafka" / "libs").glob("kafka-server-*.jar"))
    versions["kafka"] = jars[0].removeprefix("kafka-server-").removesuffix(".jar") if jars else "?"
    s = get_settings()
    try:
        with psycopg2.connect(s.source.dsn("market", "postgres")) as pg, pg.cursor() as cur:
            cur.execute("SHOW server_version")
            versions["postgresql"] = cur.fetchone()[0]
        pg.close()
        versions["redis"] = redis.from_url(redis_login(REDIS_ADMIN, s).authenticated_url()).info("server")["redis_version"]
    except Exception:  # noqa: BLE001 — versions are informative only
        pass
    return {
        "cpu_model": lscpu("Model name"), "cpus": os.cpu_count(), "hypervisor": lscpu("Hypervisor vendor"),
        "mem_gib": round(mem_kib / 1024 / 1024, 1), "kernel": platform.release(), "versions": versions,
    }


# --- report -----------------------------------------------------------------------------------------

def report(res: dict) -> None:
    tp, bl, lat, rtt = res["throughput"], res["baselines"], res["alert_latency"], res["kafka_round_trip_ms"]
    pipe = tp["stages"]["sink_written"]["steady_per_s"]
    t = Table(title=f"throughput — {tp['profiles']} enterprises (+{tp['source_rows'] - tp['profiles']} listings)")
    for c in ("measure", "records/s", "pipeline ÷ this"):
        t.add_column(c, justify="right" if c != "measure" else "left")

    def ratio(x):
        return f"{pipe / x:.3f}" if pipe and x else "–"
    t.add_row("pipeline, steady 10→90 % (PG → ClickHouse)", f"{pipe}", "1")
    t.add_row("pipeline, overall from pipeline start", f"{tp['overall_profiles_per_s']}", "")
    t.add_row("pipeline, from first profile", f"{tp['from_first_profile_per_s']}", "")
    t.add_row("baseline: raw consume (confluent-kafka)", f"{bl['raw_consume']['per_s']}", ratio(bl["raw_consume"]["per_s"]))
    t.add_row("baseline: consume + Avro decode", f"{bl['consume_decode']['per_s']}", ratio(bl["consume_decode"]["per_s"]))
    t.add_row("baseline: consume + pure core (no Faust)", f"{bl['consume_pure_core']['per_s']}",
              ratio(bl["consume_pure_core"]["per_s"]))
    console.print(t)

    s = Table(title="stages (seconds after pipeline start; rate 10→90 %)")
    for c in ("stage", "0 %", "10 %", "50 %", "90 %", "100 %", "steady/s"):
        s.add_column(c, justify="right" if c != "stage" else "left")
    for name, st in [("connector → Kafka", res["throughput"].get("connector")), *tp["stages"].items()]:
        if st:
            s.add_row(name, *(str(st[f"t{q}_s"]) for q in (0, 10, 50, 90, 100)), str(st["steady_per_s"]))
    console.print(s)

    a = Table(title=f"alert latency — {lat['commits']} commits at {lat['offered_rate_per_s']}/s, "
                    f"{lat['commits_alerted']} alerted (ms)")
    for c in ("measure", "p50", "p95", "p99", "max", "p50 ÷ Kafka RTT p50"):
        a.add_column(c, justify="right" if c != "measure" else "left")

    def row(name, d, rel=True):
        def f(v):
            return "–" if v is None else f"{v:.1f}"
        a.add_row(name, f(d["p50"]), f(d["p95"]), f(d["p99"]), f(d["max"]),
                  f"{d['p50'] / rtt['p50']:.0f}×" if rel and d["p50"] and rtt["p50"] else "")
    row("commit → alert published", lat["commit_to_published_ms"])
    row("commit → alert received", lat["commit_to_received_ms"])
    for hop, d in lat["hops_ms"].items():
        row(f"  hop: {hop.replace('_', ' ')}", d, rel=False)
    row("baseline: Kafka produce → consume", rtt)
    console.print(a)
    cpu = tp["cpu"]
    console.print("CPU during throughput phase (100 % = one core): "
                  + ", ".join(f"{k} {v}%" for k, v in cpu["cores_pct"].items())
                  + f"; whole machine {cpu['machine_busy_pct']}% busy of {res['machine']['cpus']} cores")
    if res["contention"]["foreign_processes"]:
        console.print(f"[yellow]other yurong processes ran during the bench: {len(res['contention']['foreign_processes'])}"
                      " — figures are pessimistic")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline_bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000, help="enterprises seeded for the throughput phase")
    ap.add_argument("--alerts", type=int, default=300, help="status changes committed in the latency phase")
    ap.add_argument("--alert-rate", type=float, default=20.0, help="status changes per second")
    ap.add_argument("--alert-enterprises", type=int, default=100, help="enterprises with consent + watch")
    ap.add_argument("--alert-drain", type=float, default=60.0, help="seconds to wait for the last alerts")
    ap.add_argument("--rtt-samples", type=int, default=200, help="Kafka round trips for the latency baseline")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up the throughput phase after this many seconds")
    ap.add_argument("--wait-idle", type=float, default=120.0,
                    help="wait up to this many seconds for other yurong pipelines/tests to finish before starting")
    ap.add_argument("--out", type=Path, default=None, help="result file (default bench/results/pipeline-<date>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, chDB) for inspection")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too

    run = Run(args)
    run.own_topics = []
    res: dict = {"started": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "tag": run.tag,
                 "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    console.rule(f"[bold]yurong pipeline bench[/bold] · run {run.tag}")
    failed = True
    try:
        deadline = time.monotonic() + args.wait_idle
        with console.status("waiting for other yurong pipelines/tests to finish (--wait-idle)") as st:
            while (others := foreign_pipeline_processes(set())) and time.monotonic() < deadline:
                st.update(f"waiting for {len(others)} other yurong processes to finish (--wait-idle {args.wait_idle:.0f}s)")
                time.sleep(2)
        res["contention"] = {"foreign_processes_at_start": foreign_pipeline_processes(set())}
        res["seed"] = seed(run)
        wm_before = watermarks(run.bootstrap, REG_TOPIC)
        res["skipped_history"] = skip_history(run.bootstrap, run.app_id, run.sink_group)
        run.own_topics += [f"{run.app_id}-enterprise_profile-changelog", f"{run.app_id}-__assignor-__leader"]

        run.t0_ms = now_ms()
        with run.start_pipeline().running() as run.procs:
            console.print("connector, worker and sink started "
                          f"(app {run.app_id}, logs {run.tmp / 'logs'})")
            res["throughput"] = throughput(run, wm_before)
            own = {p.pid for _, p, _ in run.procs}
            res["contention"]["foreign_processes"] = foreign_pipeline_processes(own)
            console.print(f"{res['throughput']['profiles']} profiles in ClickHouse "
                          f"{res['throughput']['wall_from_start_s']}s after pipeline start")
            res["baselines"] = baselines(run)
            res["throughput"]["connector"] = stage_curve(run.connector_ts, run.t0_ms)
            with console.status("baseline: Kafka round trip"):
                res["kafka_round_trip_ms"] = kafka_round_trip(run, args.rtt_samples)
            res["alert_latency"] = alert_latency(run)
            res["contention"]["foreign_processes"] = sorted(
                set(res["contention"]["foreign_processes"]) | set(foreign_pipeline_processes(own)))
            res["machine"] = machine(run)
        tp, bl = res["throughput"], res["baselines"]
        pipe = tp["stages"]["sink_written"]["steady_per_s"]
        res["ratios"] = {f"pipeline_steady_over_{k}": round(pipe / v["per_s"], 4) if pipe and v["per_s"] else None
                         for k, v in bl.items()}
        rtt = res["kafka_round_trip_ms"]["p50"]
        lat = res["alert_latency"]
        res["ratios"]["alert_received_p50_over_kafka_rtt_p50"] = (
            round(lat["commit_to_received_ms"]["p50"] / rtt, 1) if rtt and lat["commit_to_received_ms"]["p50"] else None)
        out = args.out or REPO / "bench" / "results" / f"pipeline-{dt.date.today().isoformat()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
        console.print()
        report(res)
        console.print(f"results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
        failed = False
    finally:
        with console.status("cleaning up"):
            if run.dsn:
                drop_database(run.admin_dsn, run.db)
            r = redis.from_url(run.redis_url)
            keys = list(r.scan_iter(match=f"{run.prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                r.delete(*keys[i:i + 500])
            try:
                delete_topics(run.bootstrap, getattr(run, "own_topics", []))
                groups = [run.app_id, run.sink_group, f"bench-alerts-{run.tag}", f"bench-rtt-{run.tag}"]
                admin = AdminClient(dict(run.bootstrap))  # kept alive until the futures resolve
                for fut in admin.delete_consumer_groups(groups, request_timeout=15).values():
                    try:
                        fut.result(timeout=30)
                    except Exception:  # noqa: BLE001 — a group that never committed does not exist
                        pass
            except Exception as exc:  # noqa: BLE001 — clean-up reports, the results are already written
                console.print(f"[yellow]Kafka cleanup: {exc}")
            if args.keep or failed:
                console.print(f"kept {run.tmp} (logs, chDB)")
            else:
                shutil.rmtree(run.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
