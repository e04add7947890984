"""No record is ever skipped by the real Faust worker (an exception in an agent can make Faust's
consumer commit past a record it never handled: faust-streaming#315).

The worker runs as a child process of its own (app id, Redis prefix, ports) and is fed on
Kafka; every input record must end up *accounted for*: an ``enterprise.events`` record
(ingest), a profile on ``enterprise.profiles`` whose version is the event's offset (merge), an
alert on ``alerts.<bank>`` (route) — or a dead letter on ``dlq.<topic>`` naming its topic,
partition and offset. And the worker's committed offsets never pass a record that is not
accounted for.

1. Records that raise. At ingest: a change whose commit time is in microseconds (a department
   clock in the wrong unit) — a validation error. At merge: the same mistake on an
   ``enterprise.events`` record another producer wrote (an older worker, a backfill) — there the
   merge raises ``ValueError: year 58876 is out of range`` computing the profile's as-of day, an
   exception nobody planned for. No test hook: real records, real code paths.
2. An outage: the alert router and the consent sync need Redis. The tests run a redis-server of
   their own (same binary as ``scripts/stack.sh``; the shared stack's Redis is never stopped)
   that is down when the worker starts, comes up, is killed with SIGKILL mid-stream and started
   again: the waiting records are routed after it — not lost, not dead-lettered.
   Redis refusing writes (out of memory) is an outage too: the consent version waits.
3. Restarts during the outage: the worker is stopped (SIGTERM) and killed (SIGKILL) while a
   change waits for Redis; after the restarts that change must still be routed, and no commit
   may ever pass it. (A restarted Faust worker sometimes drops records it fetched around its seek
   to the committed offsets; the worker's guard reads them again: ``streams/worker/faust_fixes/liveness.py``,
   ``NoSkipRun.settle``.)
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from connectors.simulator.identities import make_uscc
from streams.cli.demo import pipeline
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.core.consent import new_grant, revocations
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.kafka.admin import ensure_topics
from streams.kafka.consent_log import publish_grants
from streams.kafka.dlq import parse_dlq_headers
from streams.worker.consent_store import ConsentRegistry
from tests.conftest import IN_CI, TEST_KEY, free_port, wait_for
from tests.harness import IsolatedPipeline, commit_at_end, redis_admin_url, skip_history, stack_redis_acl

pytestmark = pytest.mark.e2e

REGISTRATION = "dept.market.enterprise_registration"
DAY_MS = 86_400_000
# Faust's defaults wait 60 s for a killed member's session to expire before the restarted
# worker gets its partitions; the settings are read from the environment (faust Settings). The
# worker looks for dropped records every second instead of every five (streams/worker/faust_fixes/liveness.py).
FAST_GROUP = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1", "YURONG_ALERTS_THROTTLE_MAX": "0",
              "YURONG_WORKER_REREAD_CHECK_S": "1"}


def now_ms() -> int:
    return int(time.time() * 1000)


class OwnRedis:
    """A redis-server of the test's own on ``port``; the append-only file is fsynced on every
    write, so what was written before a SIGKILL is there after the restart."""

    def __init__(self, folder: Path, port: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            msg = "redis-server is not installed (scripts/stack.sh installs it)"
            pytest.fail(msg) if IN_CI else pytest.skip(msg)
        self.cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                    "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(folder / "redis.log"),
                    "--aclfile", str(stack_redis_acl())]  # the stack's ACL users: the worker logs in as its own
        self.folder, self.port, self.url = folder, port, redis_admin_url(f"redis://127.0.0.1:{port}/0")
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def up(self) -> bool:
        try:
            return redis.from_url(self.url, socket_connect_timeout=0.5).ping()
        except redis.exceptions.ConnectionError:
            return False

    def start(self) -> None:
        assert not self.up(), f"port {self.port} is taken"
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self.up, 30, "the test's redis-server to answer")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        wait_for(lambda: not self.up(), 10, "redis to be down")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Worker:
    """The worker of an ``IsolatedPipeline`` as a child process that can be stopped, killed and
    started again (logs appended)."""

    def __init__(self, p: IsolatedPipeline) -> None:
        self.p = p
        self.starts = 0
        self._cm = None

    def start(self) -> None:
        self.starts += 1
        self.p.logs.mkdir(parents=True, exist_ok=True)
        with (self.p.logs / "worker.log").open("ab") as f:
            f.write(f"\n--- start {self.starts}\n".encode())
        self._cm = pipeline(self.p.env, self.p.logs, ("worker",))
        self.p.procs = self._cm.__enter__()

    def proc(self) -> subprocess.Popen:
        return self.p.procs[0][1]

    def stop(self) -> None:
        """SIGTERM: Faust's graceful shutdown (commits what it acknowledged)."""
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None
            self.p.procs = []

    def kill9(self) -> None:
        proc = self.proc()
        assert proc.poll() is None, "the worker died before the kill\n" + self.p.logs_tail()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self.stop()

    def log_since_start(self) -> str:
        return (self.p.logs / "worker.log").read_text(errors="replace").rpartition(f"--- start {self.starts}\n")[2]


class Ledger:
    """What the test produced and where each record ended up."""

    def __init__(self, bootstrap: dict) -> None:
        self.schemas = schema_store()
        # murmur2 is the Java client's and aiokafka's partitioner: the worker re-keys by USCC with it,
        # so a record this test writes to enterprise.events lands where the worker's events of that USCC do
        self.producer = Producer({**bootstrap, "acks": "all", "enable.idempotence": True,
                                  "partitioner": "murmur2_random", "linger.ms": 2})
        self.produced: dict[str, tuple[str, int, int]] = {}  # label → (topic, partition, offset)

    def produce(self, label: str, topic: str, key: str, value: bytes) -> None:
        def done(err, msg):
            assert err is None, err
            self.produced[label] = (msg.topic(), msg.partition(), msg.offset())
        self.producer.produce(topic, key=key.encode(), value=value, on_delivery=done)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def registration(uscc: str, status: str) -> dict:
    return {"uscc": uscc, "name": "重庆渝融测试科技有限公司", "legal_rep_name": "张三丰", "legal_rep_id_number": None,
            "legal_rep_phone": "13812345678", "district_code": uscc[2:8], "industry_code": "I6513",
            "registered_capital": 500.0, "established_date": None, "status": status,
            "address": "重庆市渝中区解放碑88号", "updated_at": None}


def change_envelope(uscc: str, op: str, before: dict | None, after: dict | None, seq: int, ts_ms: int | None = None) -> dict:
    ts = ts_ms if ts_ms is not None else now_ms()
    return {"before": before, "after": after, "op": op, "ts_ms": now_ms(),
            "source": {"connector": "postgresql", "dept": "market", "db": "market_noskip", "schema": "public",
                       "table": "enterprise_registration", "position": f"0/{seq:X}", "seq": seq, "ts_ms": ts,
                       "snapshot": "false", "tx_id": seq}}


def committed(bootstrap: dict, group: str, tps: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The group's committed offset per (topic, partition); negative where it has none."""
    c = Consumer({**bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        out = c.committed([TopicPartition(t, p) for t, p in sorted(tps)], timeout=15)
    finally:
        c.close()
    return {(tp.topic, tp.partition): tp.offset for tp in out}


class NoSkipRun:
    """One worker, one Redis of its own, one bank watching eight enterprises; what was produced
    and what came out, and the accounting between them."""

    def __init__(self, tmp_path: Path, bootstrap: dict, unique: str, topic_reader) -> None:
        self.bootstrap = bootstrap
        self.schemas = schema_store()
        self.own = OwnRedis(tmp_path / "redis", free_port())
        self.p = IsolatedPipeline(tmp_path, "postgresql://unused@127.0.0.1:1/none", bootstrap, self.own.url, unique,
                                  TEST_KEY, FAST_GROUP, label="noskip")
        self.bank = f"b{int(unique[:4], 16) % 9000 + 1000:04d}"
        rng = random.Random(f"noskip-{unique}")
        self.codes: list[str] = []
        while len(self.codes) < 8:
            code = make_uscc(rng, "500103")
            if code not in self.codes:
                self.codes.append(code)
        self.ours = set(self.codes)
        # Watchlist and consents are in Redis before the outage (kept by the append-only file):
        # the router reads them for every change, and would rightly send nothing for a change it
        # routes before the consent_sync agent re-applied a consent. The consents are published on
        # consent.grants too (the system of record); one more only while Redis is down (``late_grant``).
        self.grants = [new_grant(self.bank, u, "post-loan monitoring", now_ms() + DAY_MS, recorded_by="consent",
                                 evidence_ref=f"auth-letter:{self.bank}/2026/00017") for u in self.codes[:-1]]
        self.late_grant = new_grant(self.bank, self.codes[-1], "post-loan monitoring", now_ms() + DAY_MS, recorded_by="consent",
                                    evidence_ref=f"auth-letter:{self.bank}/2026/late")

        async def setup(reg: ConsentRegistry) -> None:
            await reg.watch(self.bank, self.codes)
            for g in self.grants:
                await reg.apply(g)
        self.own.start()
        self.p.registry(setup)
        self.own.stop()

        self.alerts_topic = f"alerts.{self.bank}"
        ensure_topics(bootstrap, {self.alerts_topic: {}, "consent.grants": {"cleanup.policy": "compact"},
                                  "dlq.enterprise.events": {}, f"dlq.{REGISTRATION}": {}, "dlq.risk.changes": {},
                                  "dlq.consent.grants": {}})
        self.reader = topic_reader([REGISTRATION, f"dlq.{REGISTRATION}", "enterprise.events", "dlq.enterprise.events",
                                    "enterprise.profiles", "risk.changes", "dlq.risk.changes", "dlq.consent.grants",
                                    self.alerts_topic])
        skip_history(bootstrap, self.p.app_id, self.p.sink_group)  # other runs' records are not this test's
        commit_at_end(bootstrap, self.p.app_id, ["consent.grants"])
        self.worker = Worker(self.p)
        self.ledger = Ledger(bootstrap)
        self.seen: dict[str, list] = defaultdict(list)  # topic → records of ours, with their coordinates
        self.seq = 0x1000

    # --- input -----------------------------------------------------------------------------------

    def start_worker(self) -> None:
        """Start the worker and wait until it has its partitions (records produced before that
        would also be read, but this keeps each test's story in order)."""
        self.worker.start()
        wait_for(lambda: (self.p.check_alive(), "Worker ready" in self.worker.log_since_start())[1], 120,
                 lambda: "the worker to start\n" + self.p.logs_tail())

    def publish_consents(self) -> None:
        assert publish_grants(self.bootstrap, self.grants) == len(self.grants)
        record = self.late_grant.to_record()
        self.ledger.produce("late-grant", "consent.grants", record["consent_id"],
                            self.schemas.encode("consent/grant", record))

    def revocation(self, u: str, tag: str) -> None:
        """A registration created active, then revoked: one risk change, one alert for the bank."""
        for op, before, after in (("c", None, registration(u, "active")),
                                  ("u", registration(u, "active"), registration(u, "revoked"))):
            self.seq += 1
            env = change_envelope(u, op, before, after, self.seq)
            self.ledger.produce(f"{tag}-{op}-{u}", REGISTRATION, u,
                                self.schemas.encode("dept/market/enterprise_registration", env))

    def records_that_raise(self) -> None:
        bad_clock, victim = self.codes[6], self.codes[7]
        # a department whose commit times are in microseconds: stopped at ingest
        self.seq += 1
        env = change_envelope(bad_clock, "c", None, registration(bad_clock, "active"), self.seq, ts_ms=now_ms() * 1000)
        self.ledger.produce("microseconds-at-ingest", REGISTRATION, bad_clock,
                            self.schemas.encode("dept/market/enterprise_registration", env))
        # the same mistake on enterprise.events, written by another producer: the merge raises, and
        # the next event of the same enterprise (same partition) must still be merged
        ds = catalogue().dataset("market.enterprise_registration")
        pseudonymizer = Pseudonymizer(TEST_KEY.encode())
        for label, event_ts in (("merge-ok-before", now_ms()), ("merge-raises", now_ms() * 1000), ("merge-ok-after", now_ms())):
            self.seq += 1
            env = change_envelope(victim, "r", None, registration(victim, "active"), self.seq)
            event = to_enterprise_event(ds, env, Provenance("backfill", 0, self.seq), pseudonymizer, now_ms())
            event["event_ts_ms"] = event_ts  # what the other producer wrote
            self.ledger.produce(label, "enterprise.events", victim, self.schemas.encode("enterprise/event", event))

    # --- output and accounting ------------------------------------------------------------------

    def collect(self) -> None:
        for m in self.reader.poll(0.3):
            topic, value = m.topic(), m.value()
            if value is None:
                continue
            if topic.startswith("dlq."):
                self.seen[topic].append({"headers": parse_dlq_headers(m.headers()), "offset": m.offset()})
            elif m.key() and m.key().decode() in self.ours:
                self.seen[topic].append({"record": self.schemas.decode(value)[1], "partition": m.partition(),
                                         "offset": m.offset()})

    def dead_letters(self, topic: str) -> dict[tuple[int, int], dict]:
        return {(int(d["headers"]["partition"]), int(d["headers"]["offset"])): d["headers"]
                for d in self.seen[f"dlq.{topic}"] if d["headers"].get("topic") == topic}

    def unaccounted(self) -> dict[str, list]:
        """Records of ours with no output yet, per stage (reads what arrived first)."""
        self.collect()
        seen = self.seen
        events = {(e["record"]["source_partition"], e["record"]["source_offset"]) for e in seen["enterprise.events"]
                  if e["record"]["source_topic"] == REGISTRATION}
        ingest = [label for label, (t, part, off) in self.ledger.produced.items()
                  if t == REGISTRATION and (part, off) not in events and (part, off) not in self.dead_letters(REGISTRATION)]
        versions = {(pr["record"]["uscc"], pr["record"]["version"]) for pr in seen["enterprise.profiles"]}
        merge = [(e["partition"], e["offset"]) for e in seen["enterprise.events"]
                 if (e["record"]["uscc"], e["offset"]) not in versions
                 and (e["partition"], e["offset"]) not in self.dead_letters("enterprise.events")]
        alerted = {a["record"]["change_id"] for a in seen[self.alerts_topic]}
        route = [(c["partition"], c["offset"]) for c in seen["risk.changes"]
                 if c["record"]["change_id"] not in alerted and (c["partition"], c["offset"]) not in self.dead_letters("risk.changes")]
        return {k: v for k, v in (("ingest", ingest), ("merge", merge), ("route", route)) if v}

    def offsets_hold(self) -> None:
        """The worker's committed offset on risk.changes is at or before the first change of each
        partition that is not routed yet."""
        first: dict[int, int] = {}
        for part, off in self.unaccounted().get("route", []):
            first[part] = min(off, first.get(part, off))
        got = committed(self.bootstrap, self.p.app_id, {("risk.changes", part) for part in first})
        for part, off in first.items():
            assert got[("risk.changes", part)] <= off, (
                f"risk.changes[{part}] committed at {got[('risk.changes', part)]}, past change {off} that was not routed")

    def retrying_redis(self) -> bool:
        log = self.worker.log_since_start()
        return "consent lookup failed" in log or "consent apply failed" in log

    def diagnose(self) -> str:
        """On a timeout: the worker logs every asyncio task's stack on SIGUSR1 (mode's Worker)."""
        if self.p.procs and self.worker.proc().poll() is None:
            self.worker.proc().send_signal(signal.SIGUSR1)
        return f"(task stacks requested with SIGUSR1: see {self.p.logs / 'worker.log'})\n" + self.p.logs_tail()

    def wait_accounted(self, stages: set[str], what: str, timeout: float = 120) -> dict[str, list]:
        """Wait until no record of ours is pending in ``stages``; return what is still pending elsewhere."""
        def done():
            self.p.check_alive()
            left = self.unaccounted()
            return (not stages & set(left)) and (left or {"": []})
        left = wait_for(done, timeout, lambda: f"{what} ({self.unaccounted()})\n" + self.diagnose())
        return {k: v for k, v in left.items() if k}

    def settle(self, what: str, done: Callable[[], bool]) -> None:
        """Wait for ``done`` after a restart. A restarted Faust worker sometimes drops records it
        fetched around its seek to the committed offsets (streams/worker/faust_fixes/liveness.py); the worker's guard
        reads them again. The offsets must hold meanwhile; a re-read is reported."""
        wait_for(lambda: (self.p.check_alive(), self.offsets_hold(), done())[2], 120,
                 lambda: f"{what} ({self.unaccounted()})\n" + self.diagnose())
        if "were never handled" in self.worker.log_since_start():
            warnings.warn(f"the worker re-read records Faust had dropped while waiting for {what}", stacklevel=2)

    def changes_of(self, codes) -> set[str]:
        return {c["record"]["uscc"] for c in self.seen["risk.changes"]} & set(codes)

    def assert_all_in_and_committed(self) -> None:
        """Every record accounted for; then the committed offsets pass every one of them, also after a stop."""
        assert self.unaccounted() == {}
        last: dict[tuple[str, int], int] = defaultdict(int)
        for topic, part, off in self.ledger.produced.values():
            last[(topic, part)] = max(last[(topic, part)], off)
        for c in self.seen["risk.changes"]:
            last[("risk.changes", c["partition"])] = max(last[("risk.changes", c["partition"])], c["offset"])
        current = lambda: committed(self.bootstrap, self.p.app_id, set(last))  # noqa: E731
        wait_for(lambda: all(current()[tp] > off for tp, off in last.items()), 30,
                 lambda: f"the worker to commit past every record: {current()} vs {dict(last)}")
        self.worker.stop()
        assert all(current()[tp] > off for tp, off in last.items()), "a graceful stop keeps the commits"

    def close(self) -> None:
        self.worker.stop()
        self.own.stop()


@pytest.fixture
def run(tmp_path, kafka_admin, unique, topic_reader):
    r = NoSkipRun(tmp_path, kafka_admin, unique, topic_reader)
    yield r
    r.close()


def test_records_that_raise_are_dead_lettered_and_a_redis_outage_loses_nothing(run):
    first, second = run.codes[:3], run.codes[3:6]
    # --- the worker starts while Redis is down --------------------------------------------------
    assert not run.own.up()
    run.start_worker()
    run.publish_consents()
    for u in first:
        run.revocation(u, "first")
    run.records_that_raise()
    run.ledger.flush()

    # ingest and merge go on without Redis; the router and the consent sync wait for it
    left = run.wait_accounted({"ingest", "merge"}, "ingest and merge of the first batch")
    wait_for(lambda: (run.unaccounted(), run.changes_of(first) == set(first))[1], 60, "the first batch's risk changes")
    left = run.unaccounted()
    assert set(left) == {"route"} and len(left["route"]) == len(first), left
    assert run.retrying_redis()
    # what raised is in the dead-letter topics, with provenance, and nothing else is
    _, part, off = run.ledger.produced["microseconds-at-ingest"]
    h = run.dead_letters(REGISTRATION)[(part, off)]
    assert (h["error.kind"], h["error.field"], h["component"]) == ("validation", "source.ts_ms", "worker")
    assert "microseconds" in h["error.message"]
    _, part, off = run.ledger.produced["merge-raises"]
    h = run.dead_letters("enterprise.events")[(part, off)]
    assert (h["error.kind"], h["error.class"]) == ("unexpected", "ValueError") and "out of range" in h["error.message"]
    assert len(run.dead_letters(REGISTRATION)) == 1 and len(run.dead_letters("enterprise.events")) == 1
    _, after_part, after_off = run.ledger.produced["merge-ok-after"]
    assert (after_part, after_off > off) == (part, True), "the next event of that enterprise came after the one that raised"
    assert any(pr["record"]["version"] == after_off for pr in run.seen["enterprise.profiles"]), "and it was merged"
    run.offsets_hold()

    # --- Redis comes up: everything waiting is routed, the late consent applied -------------------
    run.own.start()
    run.wait_accounted({"route"}, "alerts for the first batch")
    wait_for(lambda: run.p.registry(lambda reg: reg.grant_by_id(run.late_grant.consent_id)) == run.late_grant, 60,
             lambda: "the consent published while Redis was down, applied\n" + run.diagnose())

    # --- Redis refuses writes (maxmemory reached: OOM): the consent version waits, no dead letter --
    own = redis.from_url(run.own.url)
    own.config_set("maxmemory-policy", "noeviction")
    own.config_set("maxmemory", "1")
    revoked = revocations([run.grants[1]], run.bank, now_ms(), recorded_by="consent")[0]
    run.ledger.produce("revoked-while-oom", "consent.grants", revoked.consent_id,
                       run.schemas.encode("consent/grant", revoked.to_record()))
    run.ledger.flush()
    wait_for(lambda: any("consent apply failed" in line and "used memory > 'maxmemory'" in line
                         for line in run.worker.log_since_start().splitlines()), 60,
             lambda: "the worker to retry the consent while Redis is out of memory\n" + run.diagnose())
    own.config_set("maxmemory", "0")
    wait_for(lambda: run.p.registry(lambda reg: reg.grant_by_id(revoked.consent_id)) == revoked, 60,
             lambda: "the revocation written once Redis took writes again\n" + run.diagnose())
    run.collect()
    _, part, off = run.ledger.produced["revoked-while-oom"]
    assert (part, off) not in run.dead_letters("consent.grants"), "an out-of-memory Redis is an outage, not a bad record"

    # --- Redis dies (SIGKILL) mid-stream and comes back -------------------------------------------
    run.own.kill9()
    for u in second:
        run.revocation(u, "second")
    run.ledger.flush()
    wait_for(lambda: (run.unaccounted(), run.changes_of(second) == set(second))[1], 120,
             lambda: f"the second batch's risk changes ({run.unaccounted()})\n" + run.diagnose())
    left = run.unaccounted()
    assert set(left) == {"route"} and len(left["route"]) == len(second), left
    run.offsets_hold()
    run.own.start()
    run.wait_accounted({"ingest", "merge", "route"}, "every record accounted for")

    alerts = {a["record"]["uscc"] for a in run.seen[run.alerts_topic] if a["record"]["reason_codes"][0] == "STATUS_REVOKED"}
    assert alerts == set(first) | set(second), "one revocation alert per enterprise, none lost"
    run.assert_all_in_and_committed()


def test_a_worker_stopped_or_killed_while_redis_is_down_skips_nothing(run):
    first = run.codes[:3]
    run.start_worker()
    run.publish_consents()
    for u in first:
        run.revocation(u, "first")
    run.ledger.flush()
    run.wait_accounted({"ingest", "merge"}, "ingest and merge")
    wait_for(lambda: (run.unaccounted(), run.changes_of(first) == set(first))[1], 60, "the risk changes")
    assert set(run.unaccounted()) == {"route"}
    run.offsets_hold()

    # stopped (SIGTERM) while the changes wait for Redis: the graceful shutdown commits only what
    # was handled; the restarted worker takes the waiting change up again
    run.worker.stop()
    run.offsets_hold()
    run.worker.start()
    run.settle("the restarted worker to retry Redis", run.retrying_redis)
    # killed (SIGKILL) while retrying: nothing committed past the change either
    run.worker.kill9()
    run.offsets_hold()
    run.start_worker()
    run.own.start()
    run.settle("every record accounted for after the restarts", lambda: not run.unaccounted())
    run.assert_all_in_and_committed()
