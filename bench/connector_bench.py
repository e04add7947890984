"""Connector benchmark: yurong's PostgreSQL connector against Debezium 3.6.1 on the same table,
the same data and the same machine, in one run.

    .venv/bin/python bench/connector_bench.py [--rows 100000] [--updates 50000] [--batch 1000]

What one run does (the local stack must be up: `make stack-up`; Debezium's jars are fetched by
`scripts/debezium.sh` on first use):

1. a fresh PostgreSQL database (unique name) gets the market schema and ``--rows`` enterprises
   (random seed, so the USCCs are this run's own);
2. **yurong**: ``python -m streams.cli connect market`` is started as a child process (own
   process, like Debezium's JVM). Snapshot: from process start until all ``--rows`` rows are on
   ``dept.market.enterprise_registration``. Streaming: ``--updates`` rows are updated in
   transactions of ``--batch`` rows (``UPDATE ... WHERE uscc = ANY(...)``, committed back to back),
   timed from just before the first commit until the last change event is on the topic. Then the
   connector is stopped;
3. **Debezium** (``scripts/debezium.sh run``: Kafka Connect standalone, PostgresConnector,
   JsonConverter with schemas, its own slot and publication, topic prefix of this run): the same
   two measurements on the same database, one after the other, never concurrently with yurong
   (the machine has two cores).

Completion times come from the records' Kafka timestamps (CreateTime, stamped by each
connector's producer), read back after the fact, so the bench does not consume while the
connectors work. Each snapshot figure is given twice: from process start (includes Python
import / JVM + Connect start-up) and from the first record to the last (start-up excluded).
The shared ``dept.*`` topic is filtered by this run's keys; the Debezium topic is this run's own.

Results go to ``bench/results/connectors-<date>.json`` and a summary table. Clean-up: Debezium
and the connector stopped, the database and both slots dropped, the Debezium topics and its
Connect state removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg2  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from connectors.simulator.market import MarketSimulator  # noqa: E402
from streams.settings import get_settings  # noqa: E402
from tests.conftest import drop_database, free_port, make_database  # noqa: E402

console = Console()
YURONG_TOPIC = "dept.market.enterprise_registration"


# --- Kafka ------------------------------------------------------------------------------------------

def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-wm-{uuid.uuid4().hex}"})
    try:
        md = c.list_topics(topic, timeout=15).topics[topic]
        if md.error is not None:
            return {}
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15) for p in sorted(md.partitions)}
    finally:
        c.close()


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    return {p: hi for p, (_, hi) in watermarks(bootstrap, topic).items()}


class Tally:
    """Records of one topic from ``start`` offsets on, read incrementally after the fact: count of
    non-null values (with a key in ``keys``, if given) and their first/last Kafka timestamp."""

    def __init__(self, bootstrap: str, topic: str, start: dict[int, int], keys: set[bytes] | None = None) -> None:
        self.bootstrap, self.topic, self.keys = bootstrap, topic, keys
        self.pos = dict(start)
        self.count = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    def produced(self) -> int:
        """Records on the topic since ``start`` (all keys): a cheap lower bound to wait on."""
        return sum(hi - self.pos.get(p, 0) for p, hi in ends(self.bootstrap, self.topic).items()) + self.count

    def catch_up(self) -> int:
        hi = ends(self.bootstrap, self.topic)
        todo = {p: h for p, h in hi.items() if h > self.pos.get(p, 0)}
        if not todo:
            return self.count
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
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
            if self.produced() >= n and self.catch_up() >= n:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.topic}: {self.count}/{n} records after {timeout:.0f} s")


def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
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
    """Commit ``m`` row updates in transactions of ``batch`` rows as fast as possible; return the
    wall time (ms) just before the first commit was sent."""
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


def measure(name: str, start, stop, alive, topic: str, keys: set[bytes] | None, args, dsn: str,
            usccs: list[str], round_no: int, bootstrap: str, pid_of) -> dict:
    snap = Tally(bootstrap, topic, ends(bootstrap, topic), keys)
    console.print(f"[bold]{name}[/]: starting, snapshot of {len(usccs)} rows …")
    t0 = time.time() * 1000
    start()
    try:
        snap.wait(len(usccs), args.timeout, alive)
        cpu_snap = proc_tree_cpu(pid_of())
        n = snap.count
        res = {"snapshot": {
            "rows": n,
            "from_start_s": round((snap.last_ms - t0) / 1000, 2),
            "first_record_after_start_s": round((snap.first_ms - t0) / 1000, 2),
            "first_to_last_s": round((snap.last_ms - snap.first_ms) / 1000, 2),
            "rows_per_s_incl_startup": round(n / max(1e-3, (snap.last_ms - t0) / 1000)),
            "rows_per_s": round(n / max(1e-3, (snap.last_ms - snap.first_ms) / 1000)),
            "process_cpu_s_until_snapshot_done": round(cpu_snap, 1),
        }}
        console.print(f"  snapshot: {res['snapshot']}")
        time.sleep(args.settle)  # let it switch to streaming and go idle
        topic_start = ends(bootstrap, topic)
        stream = Tally(bootstrap, topic, topic_start, keys)
        cpu0 = proc_tree_cpu(pid_of())
        console.print(f"  streaming: {args.updates} updates in transactions of {args.batch} …")
        t1 = update_batches(dsn, usccs, args.updates, args.batch, round_no)
        t_committed = time.time() * 1000
        stream.wait(args.updates, args.timeout, alive)
        cpu1 = proc_tree_cpu(pid_of())
        res["streaming"] = {
            "events": stream.count,
            "commit_s": round((t_committed - t1) / 1000, 2),
            "first_commit_to_last_event_s": round((stream.last_ms - t1) / 1000, 2),
            "lag_after_last_commit_s": round((stream.last_ms - t_committed) / 1000, 2),
            "events_per_s": round(stream.count / max(1e-3, (stream.last_ms - t1) / 1000)),
            "process_cpu_s": round(cpu1 - cpu0, 1),
        }
        console.print(f"  streaming: {res['streaming']}")
        return res
    finally:
        stop()


def machine(admin_dsn: str) -> dict:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    def f(k):
        m = re.search(rf"^{k}:\s*(.+)$", out, re.M)
        return m.group(1).strip() if m else None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    with psycopg2.connect(admin_dsn) as pg, pg.cursor() as cur:
        cur.execute("SHOW server_version")
        pgv = cur.fetchone()[0]
    pg.close()
    import confluent_kafka
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    libs = sorted(p.name for p in (get_settings().paths.home / "debezium" / "libs").glob("debezium-connector-postgres-*.jar"))
    return {"cpu_model": f("Model name"), "cpus": os.cpu_count(), "hypervisor": f("Hypervisor vendor"),
            "mem_gib": round(mem_kib / 1024 / 1024, 1), "kernel": platform.release(),
            "versions": {"python": platform.python_version(), "java": java[0] if java else "?",
                         "librdkafka": confluent_kafka.libversion()[0], "postgresql": pgv,
                         "debezium": libs[0] if libs else "?"}}


def report(res: dict) -> None:
    t = Table(title=f"PostgreSQL connectors, {res['params']['rows']} rows / {res['params']['updates']} updates")
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
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="enterprises in the table before the snapshot")
    ap.add_argument("--updates", type=int, default=50_000, help="row updates in the streaming phase")
    ap.add_argument("--batch", type=int, default=1000, help="rows per UPDATE transaction")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds between snapshot done and the updates")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up a phase after this many seconds")
    ap.add_argument("--only", choices=("yurong", "debezium"), default=None, help="measure one connector only")
    ap.add_argument("--out", type=Path, default=None, help="result file (default bench/results/connectors-<date>.json)")
    args = ap.parse_args()

    s = get_settings()
    bootstrap = s.kafka.bootstrap_servers
    admin_dsn = s.source.dsn("market", "postgres")
    tag = secrets.token_hex(3)
    db = f"market_cb{tag}"
    dbz_prefix = f"bench{tag}"
    dbz_name = f"bench-{tag}"
    home = Path(tempfile.mkdtemp(prefix="yurong-connbench-"))
    dbz_env = {**os.environ, "YURONG_DEBEZIUM_DBNAME": db, "YURONG_DEBEZIUM_NAME": dbz_name,
               "YURONG_DEBEZIUM_TOPIC_PREFIX": dbz_prefix, "YURONG_DEBEZIUM_SLOT": f"debezium_{db}",
               "YURONG_DEBEZIUM_PUBLICATION": f"debezium_{db}", "YURONG_DEBEZIUM_REST_PORT": str(free_port())}
    dbz_script = str(REPO / "scripts" / "debezium.sh")
    res: dict = {"date": dt.date.today().isoformat(), "db": db,
                 "params": {"rows": args.rows, "updates": args.updates, "batch": args.batch, "settle_s": args.settle}}
    dsn = make_database(admin_dsn, db)
    proc: dict = {}
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
        env = {**os.environ, "YURONG_HOME": str(home / "home"), "YURONG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "YURONG_SOURCE_MARKET_DSN": dsn, "YURONG_METRICS_CONNECTOR_PORT": str(free_port())}

        def y_start():
            log = open(home / "connect.log", "ab")
            proc["y"] = subprocess.Popen([sys.executable, "-m", "streams.cli", "connect", "market"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)

        def y_alive():
            if proc["y"].poll() is not None:
                raise RuntimeError("yurong connector exited:\n" + (home / "connect.log").read_text()[-3000:])

        def y_stop():
            p = proc.get("y")
            if p and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()

        def dbz_pid() -> int:
            return int((s.paths.home / "debezium" / dbz_name / "connect.pid").read_text().split()[0])

        def d_start():
            subprocess.run(["bash", dbz_script, "run"], env=dbz_env, check=True)

        def d_stop():
            subprocess.run(["bash", dbz_script, "stop"], env=dbz_env, check=False)

        if args.only != "debezium":
            res["yurong"] = measure("yurong", y_start, y_stop, y_alive, YURONG_TOPIC, keys, args, dsn, usccs, 1,
                                    bootstrap, lambda: proc["y"].pid)
        if args.only != "yurong":
            res["debezium"] = measure("Debezium", d_start, d_stop, lambda: None,
                                      f"{dbz_prefix}.public.enterprise_registration", None, args, dsn, usccs, 2,
                                      bootstrap, dbz_pid)
        res["machine"] = machine(admin_dsn)
        if "yurong" in res and "debezium" in res:
            res["ratios_yurong_over_debezium"] = {
                "snapshot_rows_per_s": round(res["yurong"]["snapshot"]["rows_per_s"] / res["debezium"]["snapshot"]["rows_per_s"], 2),
                "snapshot_rows_per_s_incl_startup": round(res["yurong"]["snapshot"]["rows_per_s_incl_startup"]
                                                          / res["debezium"]["snapshot"]["rows_per_s_incl_startup"], 2),
                "streaming_events_per_s": round(res["yurong"]["streaming"]["events_per_s"] / res["debezium"]["streaming"]["events_per_s"], 2),
            }
            report(res)
        out = args.out or REPO / "bench" / "results" / f"connectors-{res['date']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        console.print(f"written {out}")
    finally:
        p = proc.get("y")
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
        subprocess.run(["bash", dbz_script, "stop"], env=dbz_env, check=False, capture_output=True)
        drop_database(admin_dsn, db)
        delete_topics(bootstrap, [f"{dbz_prefix}.public.enterprise_registration", f"{dbz_prefix}.public.abnormal_operation"])
        shutil.rmtree(s.paths.home / "debezium" / dbz_name, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
