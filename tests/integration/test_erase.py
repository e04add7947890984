"""`yurong erase` against the real Kafka, Redis and an embedded chDB: the erase request reaches
the worker on control.erasures and the command waits for its confirmation; one enterprise's rows,
watchlist, throttle and held-back entries go, the audit record is on audit.erasures, and another
enterprise is untouched.

Two stand-ins, each on the real service: the CLI reaches the embedded store through the sink's
gateway (``streams.cli.common.erase_via_gateway``), here pointed at ``erase_enterprise`` on the
test's own chDB; and the worker's side of the protocol (read the request as ``worker``, confirm on
control.erasures.applied) is a thread here. The real worker and sink do it in
tests/e2e/test_erase_running_pipeline.py.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition

from connectors.simulator.identities import make_uscc
from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
from sinks.clickhouse.erase import ERASABLE, erase_enterprise
from sinks.rows import alert_row, change_row, event_row, profile_row
from streams.codecs.serde import schema_store
from streams.core.access import (
    ERASURE_APPLIED_TOPIC,
    ERASURE_AUDIT_TOPIC,
    ERASURE_REQUEST_TOPIC,
    OPERATOR,
    WORKER,
)
from streams.core.erasure import erase_applied, erase_marker
from streams.kafka.admin import watermark_offsets
from streams.kafka.partitioner import murmur2_partition
from streams.settings import get_settings
from tests.conftest import as_principal
from tests.integration.test_clickhouse_sink import alert, change, event, profile

pytestmark = pytest.mark.integration

PROFILES = "enterprise.profiles"


@pytest.fixture
def codes(unique) -> tuple[str, str]:
    rng = random.Random(unique)
    gone = make_uscc(rng, "500103")
    kept = make_uscc(rng, "500106")
    return gone, kept


@pytest.fixture
def prefix(unique, monkeypatch) -> Iterator[str]:
    p = f"yurong-test:erase{unique}:"
    monkeypatch.setenv("YURONG_REDIS_KEY_PREFIX", p)
    get_settings.cache_clear()
    yield p
    get_settings.cache_clear()


@pytest.fixture
def chdb(tmp_path) -> Iterator:
    client = open_client(f"chdb://{tmp_path / 'chdb'}", "yurong")
    apply_schema(client)
    yield client
    client.close()


def seed_clickhouse(client, uscc: str) -> None:
    now = int(time.time() * 1000)
    p = {**profile(uscc, 1), "last_event_ts_ms": now, "updated_ts_ms": now}
    c = {**change(uscc, 1), "event_ts_ms": now}
    writer = ClickHouseWriter(client)
    rows = {"enterprise_profile": [profile_row(p)], "enterprise_profile_history": [profile_row(p)],
            "enterprise_event": [event_row({**event(uscc, 1), "event_ts_ms": now})], "risk_change": [change_row(c)],
            "alert_delivery": [alert_row({**alert("b0001", c), "published_ts_ms": now}, "alerts.b0001", 0, 1)]}
    for table, batch in rows.items():
        writer.write(table, batch, uuid.uuid4().hex)


def rows_of(client, uscc: str) -> dict[str, int]:
    return {t: int(client.query("SELECT count() FROM {t:Identifier} WHERE uscc = {u:String}",
                                parameters={"t": t, "u": uscc}).result_rows[0][0]) for t in ERASABLE}


class StandInWorker:
    """The worker's side of `yurong erase` on the real Kafka, as the ``worker`` principal: read the
    erase requests on control.erasures (from their end now) and, for ``uscc`` only, confirm each on
    control.erasures.applied as the merge would (app id from the settings, keyed by the USCC).
    ``requests`` holds what it read."""

    def __init__(self, uscc: str) -> None:
        self.uscc = uscc
        self.schemas = schema_store()
        self.requests: list[tuple[int, int, dict]] = []
        self.consumer = Consumer({**as_principal(WORKER), "group.id": f"yurong-worker-erase-test-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False})
        md = self.consumer.list_topics(ERASURE_REQUEST_TOPIC, timeout=15).topics[ERASURE_REQUEST_TOPIC]
        self.consumer.assign([TopicPartition(ERASURE_REQUEST_TOPIC, p, watermark_offsets(
            self.consumer, TopicPartition(ERASURE_REQUEST_TOPIC, p))[1]) for p in md.partitions])
        self.producer = Producer({**as_principal(WORKER), "partitioner": "murmur2_random", "acks": "all"})
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            _, request = self.schemas.decode(msg.value(), "control/erasure_request")
            if request["uscc"] != self.uscc:
                continue  # another run's
            self.requests.append((msg.partition(), msg.offset(), request))
            marker = erase_marker(request, msg.topic(), msg.partition(), msg.offset(), int(time.time() * 1000))
            applied = erase_applied(marker, get_settings().worker.app_id, 0, 1000 + msg.offset(), True,
                                    int(time.time() * 1000))
            self.producer.produce(ERASURE_APPLIED_TOPIC, key=self.uscc.encode(),
                                  value=self.schemas.encode("control/erasure_applied", applied))
            self.producer.flush(30)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.consumer.close()


@pytest.fixture
def worker(codes) -> Iterator[StandInWorker]:
    w = StandInWorker(codes[0])
    yield w
    w.stop()


def audit_records(kafka_admin, uscc: str) -> list[dict]:
    c = Consumer({**kafka_admin, "group.id": f"erase-audit-{uuid.uuid4().hex}", "enable.auto.commit": False})
    tp = TopicPartition(ERASURE_AUDIT_TOPIC, 0)
    low, high = watermark_offsets(c, tp)
    c.assign([TopicPartition(ERASURE_AUDIT_TOPIC, 0, low)])
    out = []
    try:
        offset = low
        deadline = time.monotonic() + 30
        while offset < high and time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            offset = msg.offset() + 1
            if msg.key() == uscc.encode() and msg.value():
                out.append(json.loads(msg.value()))
    finally:
        c.close()
    return out


def seed_redis(redis_url: str, p: str, gone: str, kept: str) -> redis.Redis:
    r = redis.from_url(redis_url, decode_responses=True)
    r.sadd(f"{p}banks", "b0001", "b0002")
    r.sadd(f"{p}watchlist:b0001", gone, kept)
    r.sadd(f"{p}watchlist:b0002", gone)
    for code in (gone, kept):
        r.zadd(f"{p}throttle:b0001:{code}:registration", {f"b0001/x-{code}": 1})
        r.zadd(f"{p}throttle:b0002:{code}:court", {f"b0002/y-{code}": 1})
    r.hset(f"{p}consent:c-{gone}", mapping={"bank_id": "b0001", "uscc": gone})
    r.sadd(f"{p}consents:uscc:{gone}", f"c-{gone}")
    for n, code in enumerate((gone, kept, gone)):  # held-back alerts, as the worker's throttle records them
        r.xadd(f"{p}throttled:b0001", {"alert_id": f"b0001/z{n}", "uscc": code, "category": "registration"})
    return r


def held_back(r: redis.Redis, p: str, bank: str) -> list[str]:
    return [fields["uscc"] for _, fields in r.xrange(f"{p}throttled:{bank}")]


def test_erase_asks_the_worker_first_then_removes_one_enterprise_everywhere_and_audits_it(
        kafka_admin, redis_url, prefix, codes, chdb, worker, monkeypatch):
    gone, kept = codes
    for code in codes:
        seed_clickhouse(chdb, code)
    r = seed_redis(redis_url, prefix, gone, kept)
    asked: list[tuple[str, str]] = []

    def sink_erases(uscc: str, reason: str) -> dict[str, int]:  # the sink's side of the gateway
        asked.append((uscc, reason))
        assert len(worker.requests) == len(asked), "the worker had the request (and confirmed) before the rows went"
        assert held_back(r, prefix, "b0001") == [kept], "Redis (no more alerts about it) before the rows went"
        return erase_enterprise(chdb, uscc)

    monkeypatch.setattr("streams.cli.common.erase_via_gateway", sink_erases)
    from streams.cli import main

    out = CliRunner().invoke(main, ["erase", "--uscc", gone.lower(), "--reason", "request ER-2026-001"])
    assert out.exit_code == 0, out.output
    assert asked == [(gone, "request ER-2026-001")]

    # Kafka: one request for the worker, keyed by the USCC, on its partition; nothing else of the enterprise
    [(partition, offset, request)] = worker.requests
    n = len(Consumer({**kafka_admin, "group.id": "erase-md"}).list_topics(timeout=15).topics[ERASURE_REQUEST_TOPIC].partitions)
    assert partition == murmur2_partition(gone.encode(), n)
    assert request["uscc"] == gone and request["requested_by"] == OPERATOR and len(request["request_id"]) == 32

    # ClickHouse: the enterprise's rows are gone, the other's are there
    assert rows_of(chdb, gone) == dict.fromkeys(ERASABLE, 0)
    assert rows_of(chdb, kept) == dict.fromkeys(ERASABLE, 1)

    # Redis: watchlists, throttle windows and held-back entries of the enterprise gone; the other's and the consent kept
    assert r.smembers(f"{prefix}watchlist:b0001") == {kept}
    assert r.smembers(f"{prefix}watchlist:b0002") == set()
    assert not r.exists(f"{prefix}throttle:b0001:{gone}:registration", f"{prefix}throttle:b0002:{gone}:court")
    assert r.exists(f"{prefix}throttle:b0001:{kept}:registration", f"{prefix}throttle:b0002:{kept}:court") == 2
    assert held_back(r, prefix, "b0001") == [kept]
    assert r.hgetall(f"{prefix}consent:c-{gone}")["uscc"] == gone  # legal evidence of authorisation: kept

    # the audit record: on audit.erasures and printed
    records = [a for a in audit_records(kafka_admin, gone) if a["reason"] == "request ER-2026-001"]
    assert len(records) == 1
    a = records[0]
    assert a["kafka_principal"] == OPERATOR and a["os_user"] and a["failed"] == {}
    assert a["erased"]["worker"]["request_id"] == request["request_id"]
    assert a["erased"]["worker"]["request"] == {"partition": partition, "offset": offset}
    assert a["erased"]["worker"]["applied"]["app_id"] == get_settings().worker.app_id
    assert a["erased"]["clickhouse"] == dict.fromkeys(ERASABLE, 1)
    assert a["erased"]["redis"] == {"watchlists": ["b0001", "b0002"], "throttle_windows": 2,
                                    "held_back_entries": {"b0001": 2}}
    assert not any("restart the worker" in n for n in a["not_erased"])
    assert a["started_ts_ms"] <= a["finished_ts_ms"]
    assert json.loads(out.stdout[:out.stdout.rindex("}") + 1])["uscc"] == gone
    assert "dropped the profile" in out.stderr

    # again: idempotent, nothing left to erase, a new request confirmed
    again = CliRunner().invoke(main, ["erase", "--uscc", gone, "--reason", "request ER-2026-001 (repeat)"])
    assert again.exit_code == 0, again.output
    assert len(worker.requests) == 2
    assert rows_of(chdb, kept) == dict.fromkeys(ERASABLE, 1)


def test_without_the_worker_or_the_store_the_rest_is_erased_and_the_failures_audited(
        kafka_admin, redis_url, prefix, codes, monkeypatch):
    """No worker confirms (none runs with this app id) and no sink gateway answers: Redis is still
    erased, both failures are in the audit record, exit 2; the request stays for the worker."""
    gone, kept = codes
    r = seed_redis(redis_url, prefix, gone, kept)
    monkeypatch.setenv("YURONG_WORKER_APP_ID", f"yurong-worker-absent-{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    from streams.cli import main

    out = CliRunner().invoke(main, ["erase", "--uscc", gone, "--reason", "request ER-2026-002", "--worker-wait", "2"])
    assert out.exit_code == 2, out.output
    assert r.smembers(f"{prefix}watchlist:b0002") == set() and held_back(r, prefix, "b0001") == [kept]
    a = [x for x in audit_records(kafka_admin, gone) if x["reason"] == "request ER-2026-002"]
    assert len(a) == 1 and set(a[0]["failed"]) == {"worker", "clickhouse"}
    assert "did not confirm" in a[0]["failed"]["worker"] and "run the command again" in a[0]["failed"]["worker"]
    assert a[0]["erased"]["redis"]["watchlists"] == ["b0001", "b0002"]
    assert "run the command again" in out.stderr


def test_erase_refuses_a_bad_code_or_no_reason(prefix):
    from streams.cli import main

    assert CliRunner().invoke(main, ["erase", "--uscc", "91500000MA5U7Q1X2Z", "--reason", "request"]).exit_code == 2
    assert CliRunner().invoke(main, ["erase", "--uscc", "91500000MA5U7Q1X2K", "--reason", " "]).exit_code == 2
