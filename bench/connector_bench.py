"""Connector benchmark: yurong's own connectors against Debezium on the same table, the same data
and the same machine, in one run: PostgreSQL (yurong's pgoutput connector vs Debezium 3.6.1
``PostgresConnector``) and MariaDB (yurong's binlog connector vs Debezium 3.5.0 ``MariaDbConnector``).

    .venv/bin/python -m bench.connector_bench [--source both|postgres|mariadb] [--rows 100000]
                                              [--updates 50000] [--batch 1000]

What one run does per source (the local stack must be up: `make stack-up`; Debezium's jars are
fetched by `scripts/debezium.sh` on first use):

1. a fresh database (unique name) gets ``--rows`` rows: PostgreSQL the market schema and
   ``--rows`` enterprises in ``enterprise_registration``; MariaDB the department simulator's
   databases (``hrss_cb<hex>`` …) with ``--rows`` / 12 enterprises × 12 months of
   ``social_insurance`` (the simulator also fills the other three department databases, which
   neither connector reads). Random seed, so the keys are this run's own;
2. **yurong**: ``python -m streams.cli connect market|hrss`` is started as a child process (own
   process, like Debezium's JVM). Snapshot: from process start until all rows are on
   ``dept.market.enterprise_registration`` / ``dept.hrss.social_insurance``. Streaming:
   ``--updates`` rows are updated in transactions of ``--batch`` rows (PostgreSQL ``UPDATE ...
   WHERE uscc = ANY(...)``, MariaDB ``UPDATE ... WHERE (uscc, period) IN (...)``, committed back to
   back), timed from just before the first commit until the last change event is on the topic.
   Then the connector is stopped;
3. **Debezium** (``scripts/debezium.sh run``, ``YURONG_DEBEZIUM_SOURCE=postgres|mariadb``: Kafka
   Connect standalone, JsonConverter with schemas, its own slot and publication (PostgreSQL) or
   replica server id and schema-history topic (MariaDB), topic prefix of this run): the same two
   measurements on the same database, one after the other, never concurrently with yurong (the
   machine has two cores). The sources run one after the other too (PostgreSQL first).

Completion times come from the records' Kafka timestamps (CreateTime, stamped by each
connector's producer), read back after the fact, so the bench does not consume while the
connectors work. Each snapshot figure is given twice: from process start (includes Python
import / JVM + Connect start-up) and from the first record to the last (start-up excluded).
The shared ``dept.*`` topics are filtered by this run's keys; the Debezium topics are this run's
own. Other processes may share the machine: the 1-minute load average before each phase and the
CPU the whole machine used during it (``/proc/stat``, until the watermarks show the last record)
are recorded beside the connector's own CPU.

Results go to ``bench/results/connectors-<date>.json`` (``-run<N>`` appended when that exists) and
a summary table per source. Clean-up: Debezium and the connectors stopped, the databases (and the
PostgreSQL slots) dropped, the Debezium topics (and the MariaDB schema-history topic) and its
Connect state removed.
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
import time
import uuid
from pathlib import Path

import psycopg2
import pymysql
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from connectors.mysql import parse_dsn
from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.market import Enterprise, MarketSimulator
from connectors.simulator.mysql_depts import DEPARTMENTS as MYSQL_DEPARTMENTS
from connectors.simulator.mysql_depts import MySqlDepartmentsSimulator
from streams.core.access import ADMIN
from streams.kafka.security import client_conf
from streams.settings import get_settings
from tests.conftest import drop_database, free_port, make_database

REPO = Path(__file__).resolve().parent.parent

console = Console()
YURONG_TOPIC = "dept.market.enterprise_registration"
YURONG_MARIADB_TOPIC = "dept.hrss.social_insurance"


# --- Kafka ------------------------------------------------------------------------------------------

def watermarks(bootstrap: dict, topic: str) -> dict[int, tuple[int, int]]:
    c = Consumer({**bootstrap, "group.id": f"bench-wm-{uuid.uuid4().hex}"})
    try:
        md = c.list_topics(topic, timeout=15).topics[topic]
        if md.error is not None:
            return {}
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15) for p in sorted(md.partitions)}
    finally:
        c.close()


def ends(bootstrap: dict, topic: str) -> dict[int, int]:
    return {p: hi for p, (_, hi) in watermarks(bootstrap, topic).items()}


class Tally:
    """Records of one topic from ``start`` offsets on, read incrementally after the fact: count of
    non-null values (with a key in ``keys``, if given) and their first/last Kafka timestamp."""

    def __init__(self, bootstrap: dict, topic: str, start: dict[int, int], keys: set[bytes] | None = None) -> None:
        self.bootstrap, self.topic, self.keys = bootstrap, topic, keys
        self.pos = dict(start)
        self.count = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        # machine_busy_s() and the wall time when the watermarks first showed all records
        self.all_produced_busy_s: float | None = None
        self.all_produced_at: float | None = None

    def produced(self) -> int:
        """Records on the topic since ``start`` (all keys): a cheap lower bound to wait on."""
        return sum(hi - self.pos.get(p, 0) for p, hi in ends(self.bootstrap, self.topic).items()) + self.count

    def catch_up(self) -> int:
        hi = ends(self.bootstrap, self.topic)
        todo = {p: h for p, h in hi.items() if h > self.pos.get(p, 0)}
        if not todo:
            return self.count
        c = Consumer({**self.bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                      "enable.auto.commit": False, "fetch.max.bytes": 52428800})
        try:
            c.assign([TopicPartition(self.topic, p, self.pos.get(p, 0)) for p in todo])
            left = dict(todo)
            while left:
                for m in c.consume(10000, timeout=5):
                    if m.error():
                        continue
                    p = m.partition()
                    self.pos[p] = m.offset() + 1
                    if p in left and self.pos[p] >= left[p]:
                        del left[p]
                    if m.value() is None or (self.keys is not None and m.key() not in self.keys):
                        continue
                    self.count += 1
                    ts = m.timestamp()[1]
                    self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
                    self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)
        finally:
            c.close()
        return self.count

    def wait(self, n: int, timeout: float, alive=lambda: None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive()
            if self.produced() >= n:
                if self.all_produced_busy_s is None:
                    self.all_produced_busy_s, self.all_produced_at = machine_busy_s(), time.time()
                if self.catch_up() >= n:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"{self.topic}: {self.count}/{n} records after {timeout:.0f} s")


def delete_topics(bootstrap: dict, names: list[str]) -> None:
    admin = AdminClient(dict(bootstrap))
    existing = set(admin.list_topics(timeout=15).topics)
    names = [n for n in names if n in existing]
    for f in admin.delete_topics(names, operation_timeout=30).values() if names else []:
        try:
            f.result()
        except Exception:  # noqa: BLE001 — best-effort clean-up
            pass


# --- CPU --------------------------------------------------------------------------------------------

def proc_tree_cpu(pid: int) -> float:
    """user + system CPU seconds of a process (incl. reaped children)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


# --- one connector ----------------------------------------------------------------------------------

def update_batches(dsn: str, usccs: list[str], m: int, batch: int, round_no: int) -> float:
    """PostgreSQL: commit ``m`` row updates in transactions of ``batch`` rows as fast as possible;
    return the wall time (ms) just before the first commit was sent."""
    targets = usccs[:m] if m <= len(usccs) else [usccs[i % len(usccs)] for i in range(m)]
    chunks = [targets[i:i + batch] for i in range(0, len(targets), batch)]
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            t0 = time.time() * 1000
            for ch in chunks:
                cur.execute("UPDATE enterprise_registration SET registered_capital = registered_capital + %s"
                            " WHERE uscc = ANY(%s)", (round_no, ch))
                conn.commit()
            return t0
    finally:
        conn.close()


def mysql_update_batches(dsn: str, keys: list[tuple[str, str]], m: int, batch: int, round_no: int) -> float:
    """MariaDB: the same for ``social_insurance`` rows, addressed by primary key
    ``(uscc, period) IN ((%s, %s), …)`` (one placeholder pair per row; the values are parameters)."""
    targets = keys[:m] if m <= len(keys) else [keys[i % len(keys)] for i in range(m)]
    chunks = [targets[i:i + batch] for i in range(0, len(targets), batch)]
    settings, db = parse_dsn(dsn)
    conn = pymysql.connect(**settings, database=db, autocommit=False)
    try:
        with conn.cursor() as cur:
            t0 = time.time() * 1000
            for ch in chunks:
                pairs = ", ".join(["(%s, %s)"] * len(ch))
                cur.execute(f"UPDATE social_insurance SET paid_amount = paid_amount + %s WHERE (uscc, period) IN ({pairs})",
                            [round_no] + [v for key in ch for v in key])
                conn.commit()
            return t0
    finally:
        conn.close()


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat user, nice,
    system, irq, softirq — not idle, iowait or steal). Over a phase, minus the connector's own
    CPU, it is what the broker, the database, the bench — and anything else running on the
    machine — used meanwhile."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


def measure(name: str, start, stop, alive, topic: str, keys: set[bytes] | None, args, n_rows: int, update,
            bootstrap: dict, pid_of) -> dict:
    """Snapshot of ``n_rows`` rows, then ``args.updates`` row updates by ``update()`` (which returns
    the wall time in ms just before its first commit), for one connector process."""
    snap = Tally(bootstrap, topic, ends(bootstrap, topic), keys)
    load = {"load1_before_snapshot": load1()}
    console.print(f"[bold]{name}[/]: starting, snapshot of {n_rows} rows (load average {load['load1_before_snapshot']}) …")
    t0 = time.time() * 1000
    busy0 = machine_busy_s()
    start()
    try:
        snap.wait(n_rows, args.timeout, alive)
        cpu_snap = proc_tree_cpu(pid_of())
        busy_snap = snap.all_produced_busy_s - busy0
        n = snap.count
        res = {"snapshot": {
            "rows": n,
            "from_start_s": round((snap.last_ms - t0) / 1000, 2),
            "first_record_after_start_s": round((snap.first_ms - t0) / 1000, 2),
            "first_to_last_s": round((snap.last_ms - snap.first_ms) / 1000, 2),
            "rows_per_s_incl_startup": round(n / max(1e-3, (snap.last_ms - t0) / 1000)),
            "rows_per_s": round(n / max(1e-3, (snap.last_ms - snap.first_ms) / 1000)),
            "process_cpu_s_until_snapshot_done": round(cpu_snap, 1),
            "machine_busy_cpu_s": round(busy_snap, 1),
            "machine_busy_pct_of_cores": round(100 * busy_snap / (os.cpu_count() * (snap.all_produced_at - t0 / 1000))),
        }}
        console.print(f"  snapshot: {res['snapshot']}")
        time.sleep(args.settle)  # let it switch to streaming and go idle
        topic_start = ends(bootstrap, topic)
        stream = Tally(bootstrap, topic, topic_start, keys)
        cpu0, busy0 = proc_tree_cpu(pid_of()), machine_busy_s()
        load["load1_before_streaming"] = load1()
        console.print(f"  streaming: {args.updates} updates in transactions of {args.batch} …")
        t1 = update()
        t_committed = time.time() * 1000
        stream.wait(args.updates, args.timeout, alive)
        cpu1, busy1 = proc_tree_cpu(pid_of()), stream.all_produced_busy_s
        res["streaming"] = {
            "events": stream.count,
            "commit_s": round((t_committed - t1) / 1000, 2),
            "first_commit_to_last_event_s": round((stream.last_ms - t1) / 1000, 2),
            "lag_after_last_commit_s": round((stream.last_ms - t_committed) / 1000, 2),
            "events_per_s": round(stream.count / max(1e-3, (stream.last_ms - t1) / 1000)),
            "process_cpu_s": round(cpu1 - cpu0, 1),
            "machine_busy_cpu_s": round(busy1 - busy0, 1),
            "machine_busy_pct_of_cores": round(100 * (busy1 - busy0) / (os.cpu_count() * (stream.all_produced_at - t1 / 1000))),
        }
        res["load"] = load
        console.print(f"  streaming: {res['streaming']}")
        return res
    finally:
        stop()


def ratios(res: dict) -> dict:
    y, d = res["yurong"], res["debezium"]
    return {
        "snapshot_rows_per_s": round(y["snapshot"]["rows_per_s"] / d["snapshot"]["rows_per_s"], 2),
        "snapshot_rows_per_s_incl_startup": round(y["snapshot"]["rows_per_s_incl_startup"]
                                                  / d["snapshot"]["rows_per_s_incl_startup"], 2),
        "streaming_events_per_s": round(y["streaming"]["events_per_s"] / d["streaming"]["events_per_s"], 2),
    }


def machine(s) -> dict:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    def f(k):
        m = re.search(rf"^{k}:\s*(.+)$", out, re.M)
        return m.group(1).strip() if m else None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    versions = {"python": platform.python_version(), "java": java[0] if java else "?"}
    try:
        with psycopg2.connect(s.source.dsn("market", "postgres"), connect_timeout=5) as pg, pg.cursor() as cur:
            cur.execute("SHOW server_version")
            versions["postgresql"] = cur.fetchone()[0]
        pg.close()
    except psycopg2.Error:
        versions["postgresql"] = "?"
    try:
        settings, _ = parse_dsn(s.source.dsn("hrss", "mysql"))
        conn = pymysql.connect(**settings)
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            versions["mariadb"] = cur.fetchone()[0]
        conn.close()
    except pymysql.Error:
        versions["mariadb"] = "?"
    import confluent_kafka
    versions["librdkafka"] = confluent_kafka.libversion()[0]
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    for source, libs, jar in (("postgres", "libs", "debezium-connector-postgres"),
                              ("mariadb", "libs-mariadb", "debezium-connector-mariadb")):
        found = sorted(p.name for p in (s.paths.home / "debezium" / libs).glob(f"{jar}-*.jar"))
        versions[f"debezium_{source}"] = found[0] if found else "?"
    return {"cpu_model": f("Model name"), "cpus": os.cpu_count(), "hypervisor": f("Hypervisor vendor"),
            "mem_gib": round(mem_kib / 1024 / 1024, 1), "kernel": platform.release(), "versions": versions}


def report(title: str, res: dict) -> None:
    t = Table(title=f"{title} connectors, {res['params']['rows_in_table']} rows / {res['params']['updates']} updates")
    for c in ("measure", "yurong", "Debezium", "yurong ÷ Debezium"):
        t.add_column(c, justify="right" if c != "measure" else "left")
    y, d = res["yurong"], res["debezium"]
    for label, sec, key in (("snapshot rows/s (first → last record)", "snapshot", "rows_per_s"),
                            ("snapshot rows/s (incl. start-up)", "snapshot", "rows_per_s_incl_startup"),
                            ("streaming events/s (first commit → last event)", "streaming", "events_per_s")):
        a, b = y[sec][key], d[sec][key]
        t.add_row(label, f"{a:,}", f"{b:,}", f"{a / b:.2f}")
    t.add_row("start → first snapshot record (s)", str(y["snapshot"]["first_record_after_start_s"]),
              str(d["snapshot"]["first_record_after_start_s"]), "")
    t.add_row("CPU s, start → snapshot done", str(y["snapshot"]["process_cpu_s_until_snapshot_done"]),
              str(d["snapshot"]["process_cpu_s_until_snapshot_done"]), "")
    t.add_row("CPU s, streaming phase", str(y["streaming"]["process_cpu_s"]), str(d["streaming"]["process_cpu_s"]), "")
    for label, sec in (("machine CPU, start → snapshot done", "snapshot"), ("machine CPU, streaming phase", "streaming")):
        t.add_row(f"{label} (s; % of all cores)", f"{y[sec]['machine_busy_cpu_s']}; {y[sec]['machine_busy_pct_of_cores']} %",
                  f"{d[sec]['machine_busy_cpu_s']}; {d[sec]['machine_busy_pct_of_cores']} %", "")
    t.add_row("load average (1 min) before snapshot", str(y["load"]["load1_before_snapshot"]),
              str(d["load"]["load1_before_snapshot"]), "")
    console.print(t)


# --- one pair: yurong's connector, then Debezium -----------------------------------------------------

class Yurong:
    """``python -m streams.cli connect <dept>`` as a child process with its own YURONG_HOME."""

    def __init__(self, dept: str, env: dict[str, str], home: Path) -> None:
        self.dept, self.env, self.log = dept, env, home / f"connect-{dept}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "connect", self.dept], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"yurong connector ({self.dept}) exited:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        p = self.proc
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


class Debezium:
    """``scripts/debezium.sh run|stop`` for one bench instance."""

    def __init__(self, s, env: dict[str, str]) -> None:
        self.s, self.env, self.name = s, env, env["YURONG_DEBEZIUM_NAME"]
        self.script = str(REPO / "scripts" / "debezium.sh")

    def start(self) -> None:
        subprocess.run(["bash", self.script, "run"], env=self.env, check=True)

    def stop(self, quiet: bool = False) -> None:
        subprocess.run(["bash", self.script, "stop"], env=self.env, check=False, capture_output=quiet)

    def pid(self) -> int:
        return int((self.s.paths.home / "debezium" / self.name / "connect.pid").read_text().split()[0])

    def remove_state(self) -> None:
        shutil.rmtree(self.s.paths.home / "debezium" / self.name, ignore_errors=True)


def run_postgres(args, s, bootstrap: dict, home: Path) -> dict:
    admin_dsn = s.source.dsn("market", "postgres")
    tag = secrets.token_hex(3)
    db = f"market_cb{tag}"
    dbz_prefix = f"bench{tag}"
    dbz = Debezium(s, {**os.environ, "YURONG_DEBEZIUM_SOURCE": "postgres", "YURONG_DEBEZIUM_DBNAME": db,
                       "YURONG_DEBEZIUM_NAME": f"bench-{tag}", "YURONG_DEBEZIUM_TOPIC_PREFIX": dbz_prefix,
                       "YURONG_DEBEZIUM_SLOT": f"debezium_{db}", "YURONG_DEBEZIUM_PUBLICATION": f"debezium_{db}",
                       "YURONG_DEBEZIUM_REST_PORT": str(free_port())})
    res: dict = {"db": db, "params": {"rows": args.rows, "updates": args.updates, "batch": args.batch, "settle_s": args.settle}}
    dsn = make_database(admin_dsn, db)
    yurong = None
    try:
        sim = MarketSimulator(dsn, seed=int.from_bytes(os.urandom(4), "big"))
        sim.create_schema()
        t = time.monotonic()
        sim.seed_enterprises(args.rows)
        res["seed_s"] = round(time.monotonic() - t, 1)
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:  # the simulator may draw a USCC twice
            cur.execute("SELECT uscc FROM enterprise_registration")
            usccs = [r[0] for r in cur.fetchall()]
        pg.close()
        res["params"]["rows_in_table"] = len(usccs)
        console.print(f"seeded {len(usccs)} enterprises into {db} in {res['seed_s']} s")
        keys = {u.encode() for u in usccs}

        # yurong: own process, like Debezium's JVM
        yurong = Yurong("market", {**os.environ, "YURONG_HOME": str(home / "home-pg"),
                                   "YURONG_KAFKA_BOOTSTRAP_SERVERS": bootstrap["bootstrap.servers"],
                                   "YURONG_SOURCE_MARKET_DSN": dsn, "YURONG_METRICS_CONNECTOR_PORT": str(free_port())}, home)
        if args.only != "debezium":
            res["yurong"] = measure("yurong (PostgreSQL)", yurong.start, yurong.stop, yurong.alive, YURONG_TOPIC, keys, args,
                                    len(usccs), lambda: update_batches(dsn, usccs, args.updates, args.batch, 1),
                                    bootstrap, lambda: yurong.proc.pid)
        if args.only != "yurong":
            res["debezium"] = measure("Debezium (PostgreSQL)", dbz.start, dbz.stop, lambda: None,
                                      f"{dbz_prefix}.public.enterprise_registration", None, args, len(usccs),
                                      lambda: update_batches(dsn, usccs, args.updates, args.batch, 2), bootstrap, dbz.pid)
        if "yurong" in res and "debezium" in res:
            res["ratios_yurong_over_debezium"] = ratios(res)
            report("PostgreSQL", res)
        return res
    finally:
        if yurong is not None:
            yurong.stop()
        dbz.stop(quiet=True)
        drop_database(admin_dsn, db)
        delete_topics(bootstrap, [f"{dbz_prefix}.public.enterprise_registration", f"{dbz_prefix}.public.abnormal_operation"])
        dbz.remove_state()


def run_mariadb(args, s, bootstrap: dict, home: Path) -> dict:
    admin_dsn = s.source.dsn("hrss", "mysql")
    template = admin_dsn.rsplit("/", 1)[0] + "/{db}"
    tag = secrets.token_hex(3)
    databases = {d: f"{d}_cb{tag}" for d in MYSQL_DEPARTMENTS}
    db = databases["hrss"]
    dbz_prefix = f"bench{tag}"
    dbz_topic = f"{dbz_prefix}.{db}.social_insurance"
    history_topic = f"debezium-history.bench-mariadb-{tag}"
    dbz = Debezium(s, {**os.environ, "YURONG_DEBEZIUM_SOURCE": "mariadb", "YURONG_DEBEZIUM_DBNAME": db,
                       "YURONG_DEBEZIUM_NAME": f"bench-mariadb-{tag}", "YURONG_DEBEZIUM_TOPIC_PREFIX": dbz_prefix,
                       "YURONG_DEBEZIUM_HISTORY_TOPIC": history_topic, "YURONG_DEBEZIUM_REST_PORT": str(free_port()),
                       "YURONG_MYSQL_PORT": str(parse_dsn(admin_dsn)[0]["port"])})
    res: dict = {"db": db, "params": {"rows": args.rows, "updates": args.updates, "batch": args.batch, "settle_s": args.settle}}
    sim = MySqlDepartmentsSimulator(template, seed=int.from_bytes(os.urandom(4), "big"), databases=databases)
    yurong = None
    try:
        sim.create()
        rng = random.Random(sim.rng.random())
        codes = {make_uscc(rng, pick_district(rng)) for _ in range(-(-args.rows // 12))}
        enterprises = [Enterprise(c, c[2:8], distressed=rng.random() < 0.05) for c in sorted(codes)]
        t = time.monotonic()
        counts = sim.seed(enterprises, today=dt.date.today())
        res["seed_s"] = round(time.monotonic() - t, 1)
        keys_list = [(u, p) for u, p in sim.rows("hrss", "SELECT uscc, period FROM social_insurance")]
        res["params"]["rows_in_table"] = len(keys_list)
        res["params"]["other_department_rows"] = {k: v for k, v in counts.items() if k != "social_insurance"}
        console.print(f"seeded {len(keys_list)} social_insurance rows ({len(enterprises)} enterprises) into {db} "
                      f"(and the other department databases) in {res['seed_s']} s")
        keys = {f"{u}|{p}".encode() for u, p in keys_list}  # yurong's record key: the row key joined by '|'

        yurong = Yurong("hrss", {**os.environ, "YURONG_HOME": str(home / "home-mariadb"),
                                 "YURONG_KAFKA_BOOTSTRAP_SERVERS": bootstrap["bootstrap.servers"],
                                 "YURONG_SOURCE_DSNS": json.dumps({"hrss": sim.dsn("hrss")}),
                                 "YURONG_METRICS_CONNECTOR_PORT": str(free_port())}, home)
        if args.only != "debezium":
            res["yurong"] = measure("yurong (MariaDB)", yurong.start, yurong.stop, yurong.alive, YURONG_MARIADB_TOPIC, keys, args,
                                    len(keys_list), lambda: mysql_update_batches(sim.dsn("hrss"), keys_list, args.updates, args.batch, 1),
                                    bootstrap, lambda: yurong.proc.pid)
        if args.only != "yurong":
            res["debezium"] = measure("Debezium (MariaDB)", dbz.start, dbz.stop, lambda: None, dbz_topic, None, args,
                                      len(keys_list), lambda: mysql_update_batches(sim.dsn("hrss"), keys_list, args.updates, args.batch, 2),
                                      bootstrap, dbz.pid)
        if "yurong" in res and "debezium" in res:
            res["ratios_yurong_over_debezium"] = ratios(res)
            report("MariaDB", res)
        return res
    finally:
        if yurong is not None:
            yurong.stop()
        dbz.stop(quiet=True)
        settings, _ = parse_dsn(admin_dsn)
        conn = pymysql.connect(**settings, autocommit=True)
        try:
            with conn.cursor() as cur:
                for name in databases.values():
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")  # generated names, quoted identifiers
        finally:
            conn.close()
        delete_topics(bootstrap, [dbz_topic, history_topic])
        dbz.remove_state()


def result_path(date: str) -> Path:
    """``bench/results/connectors-<date>.json``, or ``…-run<N>.json`` with the next free N."""
    base = REPO / "bench" / "results" / f"connectors-{date}"
    out, n = base.with_suffix(".json"), 2
    while out.exists():
        out = Path(f"{base}-run{n}.json")
        n += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.connector_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=("both", "postgres", "mariadb"), default="both",
                    help="which pair to measure (default both, PostgreSQL first)")
    ap.add_argument("--rows", type=int, default=100_000, help="rows in the table before the snapshot")
    ap.add_argument("--updates", type=int, default=50_000, help="row updates in the streaming phase")
    ap.add_argument("--batch", type=int, default=1000, help="rows per UPDATE transaction")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds between snapshot done and the updates")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up a phase after this many seconds")
    ap.add_argument("--only", choices=("yurong", "debezium"), default=None, help="measure one connector only")
    ap.add_argument("--out", type=Path, default=None, help="result file (default bench/results/connectors-<date>.json)")
    args = ap.parse_args()

    s = get_settings()
    bootstrap = client_conf(ADMIN, s)  # the bench sets up and observes as the super user
    home = Path(tempfile.mkdtemp(prefix="yurong-connbench-"))
    res: dict = {"date": dt.date.today().isoformat(), "command": " ".join(["python -m bench.connector_bench", *sys.argv[1:]]),
                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        if args.source in ("both", "postgres"):
            res["postgres"] = run_postgres(args, s, bootstrap, home)
        if args.source in ("both", "mariadb"):
            res["mariadb"] = run_mariadb(args, s, bootstrap, home)
        res["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        res["machine"] = machine(s)
        out = args.out or result_path(res["date"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
        console.print(f"written {out}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
