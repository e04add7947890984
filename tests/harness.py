"""An isolated pipeline on the shared local stack, for e2e tests and benchmarks.

Connector, worker and sink run as child processes (``streams.cli.demo.pipeline``) with their own
Faust app id, sink consumer group, ports, Redis key prefix and chDB folder, against one
department database. Only the Kafka topics are shared with everything else on the stack.

Also the Debezium interop tests' Kafka Connect runner (``DebeziumScript``) and their waits for
two connectors' record streams (``StreamPair``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.base import Source
from connectors.offsets import OffsetStore
from connectors.runner import ConnectorRunner, producer_config
from connectors.sources import source_class
from sinks.analyst.credentials import CredentialStore
from streams.cli.demo import pipeline
from streams.codecs.serde import schema_store
from streams.core.access import connector_principal
from streams.core.catalogue import Department, catalogue
from streams.errors import DecodeError
from streams.kafka.admin import commit_sync, watermark_offsets
from streams.kafka.security import client_conf
from streams.settings import SourceSettings, get_settings
from streams.worker.consent_store import REDIS_ADMIN, ConsentRegistry, RedisLogin, redis_login, without_credentials
from tests.conftest import IN_CI, TEST_KEY, TopicReader, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]


class RunningConnector:
    """One department's connector (source + ``ConnectorRunner``) in a background thread, in
    this process; ``stop()`` stops it cleanly, ``error`` holds what it died of."""

    def __init__(self, dept: Department | str, location: str, kafka: dict,
                 settings: SourceSettings | None = None, resnapshot: bool = False) -> None:
        department = catalogue().department(dept) if isinstance(dept, str) else dept
        schemas = schema_store()
        # the cluster of ``kafka``, logged in as the department's own principal, as `yurong connect` does
        kafka = {**client_conf(connector_principal(department.dept)), "bootstrap.servers": kafka["bootstrap.servers"]}
        producer = Producer(producer_config(kafka))
        self.offsets = OffsetStore(kafka, department.dept, schemas, producer)
        self.source: Source = source_class(department.kind)(
            department, location, self.offsets, schemas, settings or SourceSettings(), resnapshot=resnapshot)
        self.runner = ConnectorRunner(self.source, department, producer, schemas, kafka, flush_interval_s=0.1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 — reported to the test
            self.error = exc

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "connector did not stop"


class ConnectorProcess:
    """``yurong connect <dept>`` as a child process that can be killed with SIGKILL.

    ``env`` adds to the inherited environment what the department's source needs, e.g.
    ``YURONG_SOURCE_DSNS`` (JSON) or ``YURONG_SOURCE_DROP_DIR``. Output goes to ``log``
    (appended over restarts)."""

    def __init__(self, dept: str, kafka: dict, log: Path, env: dict[str, str] | None = None) -> None:
        self.dept = dept
        self.env = {**os.environ, "YURONG_KAFKA_BOOTSTRAP_SERVERS": kafka["bootstrap.servers"], "YURONG_MASKING_HMAC_KEY": TEST_KEY,
                    "YURONG_METRICS_CONNECTOR_PORT": str(free_port()), "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.05",
                    **(env or {})}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "connect", self.dept], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        assert self.proc.poll() is None, f"the connector died before the kill\n{self.log_tail()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_since_start(self) -> str:
        """Output of the current (last started) process only."""
        return self.log_text().rpartition(f"--- start {self.starts}\n")[2]

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_text()[-chars:]

    def metric(self, name: str) -> float:
        """Sum of the samples of ``name`` on the connector's /metrics (0 before it serves)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.env['YURONG_METRICS_CONNECTOR_PORT']}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name + "{"))

    def snapshot_rows(self) -> float:
        """``yurong_connector_snapshot_rows_total`` of the running process."""
        return self.metric("yurong_connector_snapshot_rows_total")


class Envelopes:
    """The ``dept.*`` change envelopes a ``TopicReader`` read, decoded once each (``refresh``
    polls and decodes only what is new) and filtered by ``keep(envelope)`` — the topics are
    shared, so a test keeps its own database's or folder's events. ``items`` keeps Kafka's
    order per partition, i.e. per row key; tombstones and undecodable records are skipped."""

    def __init__(self, reader: TopicReader, keep: Callable[[dict], bool]) -> None:
        self.reader = reader
        self.keep = keep
        self.items: list[dict] = []
        self._schemas = schema_store()
        self._done = 0

    def refresh(self, seconds: float = 0.5) -> list[dict]:
        self.reader.poll(seconds)
        msgs = self.reader.messages
        for m in msgs[self._done:]:
            if m.value() is None or not m.topic().startswith("dept."):
                continue
            try:
                _, env = self._schemas.decode(m.value(), "dept/" + m.topic().split(".", 1)[1].replace(".", "/"))
            except DecodeError:
                continue
            if self.keep(env):
                self.items.append(env)
        self._done = len(msgs)
        return self.items


class PipelineDied(RuntimeError):
    """A component exited while it should be running; the message carries the log tails."""


class IsolatedPipeline:
    @staticmethod
    def names(label: str, tag: str) -> tuple[str, str, str]:
        """``(Faust app id, sink consumer group, Redis key prefix)`` of a pipeline: known before
        it starts, e.g. to position its consumer groups. The prefix is under ``yurong-test:``, the
        tests' key space that the stack's Redis ACL users may reach besides ``yurong:``."""
        return f"yurong-worker-{label}-{tag}", f"yurong-sink-{label}-{tag}", f"yurong-test:{label}{tag}:"

    def __init__(self, home: Path, dsn: str, kafka: dict, redis_url: str, tag: str, key: str,
                 extra_env: dict[str, str] | None = None, label: str = "e2e") -> None:
        self.home = home
        self.logs = home / "logs"
        self.redis_url = redis_url
        self.query_port = free_port()
        # the harness asks the sink's SQL gateway as an operator (reads the data tables, not the audit)
        self.token = CredentialStore(home / "home" / "secrets" / "analysts.json").add("harness", "operator", replace=True)
        self.app_id, self.sink_group, self.prefix = self.names(label, tag)
        self.env = {
            **os.environ,
            "YURONG_HOME": str(home / "home"),
            "YURONG_KAFKA_BOOTSTRAP_SERVERS": kafka["bootstrap.servers"],
            # no credentials: the components log in as their own ACL users (``redis_url`` may be the admin's)
            "YURONG_REDIS_URL": without_credentials(redis_url),
            "YURONG_REDIS_KEY_PREFIX": self.prefix,
            "YURONG_SOURCE_MARKET_DSN": dsn,
            "YURONG_MASKING_HMAC_KEY": key,
            "YURONG_WORKER_APP_ID": self.app_id,
            "YURONG_WORKER_WEB_PORT": str(free_port()),
            "YURONG_METRICS_CONNECTOR_PORT": str(free_port()),
            "YURONG_METRICS_WORKER_PORT": str(free_port()),
            "YURONG_METRICS_SINK_PORT": str(free_port()),
            "YURONG_CLICKHOUSE_QUERY_PORT": str(self.query_port),
            "YURONG_ANALYST_QUOTA_QUERIES_PER_HOUR": "1000000",  # tests poll the gateway every 0.2 s
            **(extra_env or {}),
        }
        self.procs: list = []

    @contextmanager
    def running(self):
        """Start connector, worker and sink; stop them on exit."""
        with pipeline(self.env, self.logs, ("connect market", "worker", f"sink --group {self.sink_group}")) as procs:
            self.procs = procs
            try:
                yield procs
            finally:
                self.procs = []

    def check_alive(self) -> None:
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                raise PipelineDied(f"{name} exited with {proc.returncode}; logs in {self.logs}\n{self.logs_tail()}")

    def logs_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-chars:] for p in sorted(self.logs.glob("*.log")))

    def sql(self, query: str, **params) -> list[list] | None:
        """Rows from the sink's read-only endpoint; None while the sink is not up yet."""
        self.check_alive()
        body = json.dumps({"sql": query, "parameters": params}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.query_port}/query", data=body,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["rows"]
        except urllib.error.HTTPError as exc:  # the gateway answered: a refusal is the test's to see
            raise AssertionError(f"the SQL gateway refused {query!r}: {exc.code} {exc.read()[:500]!r}") from None
        except OSError:  # not listening yet
            return None

    def metrics(self, component: str) -> dict[str, float]:
        """Samples of a component's /metrics page (``name{labels}`` → value); component is
        CONNECTOR, WORKER or SINK."""
        port = self.env[f"YURONG_METRICS_{component}_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            lines = resp.read().decode().splitlines()
        return {k: float(v) for k, _, v in (line.rpartition(" ") for line in lines if line and not line.startswith("#"))}

    def registry(self, fn):
        """Run ``await fn(ConsentRegistry)`` against this pipeline's Redis prefix."""
        async def go():
            reg = ConsentRegistry.from_url(self.redis_url, self.prefix)
            try:
                return await fn(reg)
            finally:
                await reg.close()
        return asyncio.run(go())


def commit_at_end(bootstrap: dict, group: str, topics: list[str]) -> int:
    """Commit ``group`` at the current end of ``topics``: a new group then starts there instead
    of replaying the history other runs left on the shared topics. Returns records skipped."""
    c = Consumer({**bootstrap, "group.id": group, "enable.auto.commit": False})
    skipped, offsets = 0, []
    try:
        md = c.list_topics(timeout=15).topics
        for t in topics:
            if t not in md:
                continue
            for p in md[t].partitions:
                lo, hi = watermark_offsets(c, TopicPartition(t, p))
                skipped += hi - lo
                offsets.append(TopicPartition(t, p, hi))
        if offsets:
            commit_sync(c, offsets)  # a broker that just started may still be loading its coordinator
    finally:
        c.close()
    return skipped


def seed_every_dataset(city, first: int, more: int = 30, rounds: int = 5,
                       optional: frozenset[str] = frozenset({"abnormal_operation"})) -> list[str]:
    """Seed ``first`` enterprises into ``city`` (a CitySimulator), then ``more`` at a time until
    every catalogue dataset has records: rare ones (IP pledges, about 4 % of enterprises) may
    have none in a small city, and a test waiting for every dataset would wait forever. Datasets in
    ``optional`` the test provides itself. Returns the USCCs seeded."""
    names = {ds.name for ds in catalogue().by_topic().values()} - optional
    usccs: list[str] = []
    seeded: dict[str, int] = {}
    for n in (first, *[more] * rounds):
        usccs += city.seed(n)
        for report in city.seeded.values():
            for name, rows in report.rows.items():
                seeded[name] = seeded.get(name, 0) + rows
        if all(seeded.get(name) for name in names):
            return usccs
    raise AssertionError(f"datasets still without records after {len(usccs)} enterprises: "
                         f"{sorted(n for n in names if not seeded.get(n))}")


def skip_history(bootstrap: dict, app_id: str, sink_group: str) -> dict[str, int]:
    """Position a new pipeline's worker and sink groups at the end of the shared topics, so it
    processes its own records only. Returns the records skipped per component."""
    md = AdminClient(dict(bootstrap)).list_topics(timeout=15).topics
    worker_topics = [*sorted(catalogue().by_topic()), "enterprise.events", "risk.changes", "consent.grants",
                     "control.erasures"]  # other runs' erase requests are not this pipeline's
    sink_topics = ["enterprise.events", "enterprise.profiles", "risk.changes",
                   *(t for t in md if re.fullmatch(r"alerts\.b[0-9]{4}", t) or t.startswith("dlq.")
                     or re.fullmatch(r"connect\.[a-z_]+\.heartbeats", t))]  # other runs' connectors are not this one's
    return {"worker": commit_at_end(bootstrap, app_id, worker_topics),
            "sink": commit_at_end(bootstrap, sink_group, sink_topics)}


# --- a test's own redis-server with the stack's ACL users (tests/e2e/test_no_skip.py) -----------

def stack_redis_acl() -> Path:
    """The stack's Redis ACL file (scripts/stack.sh): ``--aclfile`` of a test's own redis-server."""
    return get_settings().paths.home / "redis" / "users.acl"


def redis_admin_url(url: str) -> str:
    """``url`` logged in as the stack's Redis ``admin`` (whose users a test's own redis-server has too)."""
    return RedisLogin(without_credentials(url), REDIS_ADMIN, redis_login(REDIS_ADMIN).password).authenticated_url()


# --- Kafka Connect / Debezium (tests/integration/test_debezium_*.py) ---------------------------

def need_tools(*tools: str) -> None:
    """Fail under CI, skip otherwise, when a tool Kafka Connect needs is not installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = f"{', '.join(missing)} not installed: Debezium runs in Kafka Connect (scripts/stack.sh up installs them)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def yurong_home() -> Path:
    return Path(os.environ.get("YURONG_HOME") or REPO / ".yurong")


def run_script(script: Path, action: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``bash <script> <action>``; fails with the tail of its stderr unless it exits 0."""
    done = subprocess.run(["bash", str(script), action], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script.name} {action} failed:\n{done.stderr[-4000:]}"
    return done


def file_tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, for a timeout's diagnosis."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class DebeziumScript:
    """``scripts/debezium.sh`` run/stop for one Kafka Connect instance: ``run`` returns once the
    script has seen Kafka Connect and its connector RUNNING. ``env`` selects the source and database
    (``YURONG_DEBEZIUM_SOURCE``, ``YURONG_DEBEZIUM_DBNAME``, ports, ...)."""

    SCRIPT = REPO / "scripts" / "debezium.sh"

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = {**os.environ, "YURONG_DEBEZIUM_NAME": name, **env}
        self.home = yurong_home() / "debezium" / name

    def run(self) -> None:
        run_script(self.SCRIPT, "run", self.env, 600)

    def stop(self) -> None:
        run_script(self.SCRIPT, "stop", self.env, 90)
        again = run_script(self.SCRIPT, "stop", self.env, 30)  # idempotent
        assert "not running" in again.stderr

    def log_tail(self) -> str:
        return file_tail(self.home / "connect.log")


def census(records: list[tuple]) -> dict[str, int]:
    """``dataset:op`` → count of ``(dataset, envelope, ...)`` records."""
    out: dict[str, int] = {}
    for e in records:
        k = f"{e[0].name}:{e[1]['op']}"
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


class StreamPair:
    """Two connectors' records of one database side by side (yurong's and Debezium's, or Debezium's
    JSON and Avro connectors). ``sides`` maps a name to ``(reader, records)``: a reader with
    ``poll(seconds)`` and a function giving the ``(dataset, envelope, ...)`` records it has read.
    The waits have deadlines; a timeout shows each side's census and ``log_tail()`` (Kafka Connect's)."""

    def __init__(self, sides: dict[str, tuple[Any, Callable[[], list[tuple]]]], log_tail: Callable[[], str]) -> None:
        self.sides = sides
        self.log_tail = log_tail

    def records(self) -> dict[str, list[tuple]]:
        return {name: records() for name, (_, records) in self.sides.items()}

    def poll(self, seconds: float = 0.3) -> dict[str, list[tuple]]:
        for reader, _ in self.sides.values():
            reader.poll(seconds)
        return self.records()

    def wait_snapshots(self, rows: int, what: str, timeout: float = 120) -> dict[str, float]:
        """Until every side has ``rows`` snapshot records (op ``r``); returns when each got there
        (``time.monotonic()``)."""
        done: dict[str, float] = {}

        def all_done() -> bool:
            for name, records in self.poll().items():
                if name not in done and sum(e[1]["op"] == "r" for e in records) >= rows:
                    done[name] = time.monotonic()
            return len(done) == len(self.sides)

        wait_for(all_done, timeout, lambda: f"{what}\n{self.log_tail()}")
        return done

    def wait_caught_up(self, sentinel: Callable[[list[tuple]], bool], what: str, timeout: float = 90) -> None:
        """Until every side holds the ``sentinel`` change (made last) and as many records as the
        others; then reads one second more."""
        def caught_up() -> bool:
            got = self.poll()
            return all(sentinel(r) for r in got.values()) and len({len(r) for r in got.values()}) == 1

        def diagnosis() -> str:
            sides = ", ".join(f"{name} {census(r)} sentinel={sentinel(r)}" for name, r in self.records().items())
            return f"{what}: {sides}\n{self.log_tail()}"

        wait_for(caught_up, timeout, diagnosis)
        for reader, _ in self.sides.values():
            reader.poll(1.0)
