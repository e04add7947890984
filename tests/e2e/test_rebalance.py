"""Scale-out by partitions loses nothing: worker processes of one app joining and leaving the
group while a backlog is being drained.

Every rebalance seeks the partitions back to their committed offsets while records are being
fetched and handed on. Faust 0.15.3 counts records around such a seek as a hole ("handled") and
commits past them: a batch fetched from the old position, records fetched from the new position
before the read offsets follow, a seek while the fetch loop lets other tasks run
(streams/worker/faust_fixes/acks.py fix 6; tests/unit/test_faust_acks.py explains each). Those
records never come out, so without the fix this test fails; ``bench/risk_bench.py --workers 2``
(two workers starting together) meets the same.

Here: a backlog of registration changes; worker A drains it while worker B starts with it, then
joins and leaves again, three times in all, and more records arrive each time; every record must
come out on ``enterprise.events`` (its source partition and offset) or as a dead letter.
"""

from __future__ import annotations

import random
import urllib.request

import pytest
from confluent_kafka import Producer

from connectors.simulator.identities import make_uscc
from streams.cli.demo import pipeline
from streams.codecs.serde import schema_store
from streams.kafka.dlq import parse_dlq_headers
from tests.conftest import TEST_KEY, free_port, wait_for
from tests.e2e.test_no_skip import FAST_GROUP, REGISTRATION, change_envelope, registration
from tests.harness import IsolatedPipeline, skip_history

pytestmark = pytest.mark.e2e

BACKLOG = 30_000  # ~15 s of one worker's drain on the CI machine: the rebalances land mid-backlog
LATE = 6_000  # produced while B is in the group
CYCLES = 3  # B joins and leaves this often: six rebalances


class Backlog:
    """Registration changes of many enterprises on the shared department topic, and where each went."""

    def __init__(self, bootstrap: str, unique: str) -> None:
        self.schemas = schema_store()
        self.producer = Producer({**bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 20})
        rng = random.Random(f"rebalance-{unique}")
        self.codes = sorted({make_uscc(rng, "500103") for _ in range(2_000)})
        self.produced: set[tuple[int, int]] = set()  # (partition, offset) of every record of ours
        self.seq = 0x1000

    def produce(self, n: int) -> None:
        def done(err, msg) -> None:
            assert err is None, err
            self.produced.add((msg.partition(), msg.offset()))
        for i in range(n):
            u = self.codes[i % len(self.codes)]
            self.seq += 1
            status = "active" if self.seq % 2 else "suspended"
            env = change_envelope(u, "u", registration(u, "active"), registration(u, status), self.seq)
            self.producer.produce(REGISTRATION, key=u.encode(), value=self.schemas.encode(
                "dept/market/enterprise_registration", env), on_delivery=done)
            if i % 1000 == 999:
                self.producer.poll(0)
        assert self.producer.flush(30) == 0


def ingested(env: dict[str, str]) -> float:
    """Registration records a worker has taken in so far (its /metrics)."""
    port = env["YURONG_METRICS_WORKER_PORT"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    key = f'yurong_events_in_total{{component="worker",topic="{REGISTRATION}"}} '
    return sum(float(line[len(key):]) for line in text.splitlines() if line.startswith(key))


def test_workers_joining_and_leaving_mid_backlog_lose_no_record(tmp_path, kafka_admin, redis_url, unique, topic_reader):
    p = IsolatedPipeline(tmp_path / "a", "postgresql://unused@127.0.0.1:1/none", kafka_admin, redis_url, unique,
                         TEST_KEY, FAST_GROUP, label="rebalance")
    skip_history(kafka_admin, p.app_id, p.sink_group)
    reader = topic_reader(["enterprise.events", f"dlq.{REGISTRATION}"])
    backlog = Backlog(kafka_admin, unique)
    backlog.produce(BACKLOG)
    out: set[tuple[int, int]] = set()

    def collect() -> set[tuple[int, int]]:
        for m in reader.poll(0.3):
            if m.value() is None:
                continue
            if m.topic() == "enterprise.events":
                e = backlog.schemas.decode(m.value(), "enterprise/event")[1]
                if e["source_topic"] == REGISTRATION:
                    out.add((e["source_partition"], e["source_offset"]))
            else:
                h = parse_dlq_headers(m.headers())
                if h.get("topic") == REGISTRATION:
                    out.add((int(h["partition"]), int(h["offset"])))
        return backlog.produced - out

    left_when_b_stopped = []
    with pipeline(p.env, tmp_path / "a" / "logs", ("worker",)) as a:
        p.procs = a
        for cycle in range(CYCLES):  # B starts with A (as `--workers 2` does), then joins a running A
            env_b = {**p.env, "YURONG_HOME": str(tmp_path / f"b{cycle}" / "home"),
                     "YURONG_WORKER_WEB_PORT": str(free_port()), "YURONG_METRICS_WORKER_PORT": str(free_port())}
            with pipeline(env_b, tmp_path / f"b{cycle}" / "logs", ("worker",)) as b:
                p.procs = [*a, *b]
                wait_for(lambda env_b=env_b: (p.check_alive(), ingested(env_b) > 0 and ingested(p.env) > 0)[1], 120,
                         lambda: "both workers to take partitions\n" + p.logs_tail())
                backlog.produce(LATE)
                left_when_b_stopped.append(len(collect()))
            p.procs = a  # B left: A takes all partitions again
        wait_for(lambda: (p.check_alive(), not collect())[1], 90,
                 lambda: f"{len(collect())} of {len(backlog.produced)} records never came out, e.g. "
                         f"{sorted(collect())[:10]}\n" + p.logs_tail())
    assert min(left_when_b_stopped) > 0, "B always left with records still to drain: each rebalance hit a backlog"
