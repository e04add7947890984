"""`yurong erase` against the real Kafka, Redis and an embedded chDB: one enterprise's rows,
compacted-topic values and Redis entries go, the audit record is on audit.erasures, and another
enterprise is untouched.

The CLI reaches the embedded store through the sink's gateway (``streams.cli.common.erase_via_gateway``);
here that hook is pointed at ``erase_enterprise`` on the test's own chDB, which stands in for the sink.
"""

from __future__ import annotations

import json
import random
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
from streams.cli.erase import murmur2_partition
from streams.codecs.serde import schema_store
from streams.core.access import ERASURE_AUDIT_TOPIC, OPERATOR, WORKER, profile_changelog
from streams.kafka.admin import ensure_topics, watermark_offsets
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


def seed_kafka(kafka_admin, codes) -> dict[tuple[str, str], tuple[int, int]]:
    """A profile per USCC on enterprise.profiles and on the profile changelog, produced as the worker
    produces them; (topic, uscc) → (partition, offset)."""
    admin_md = Consumer({**kafka_admin, "group.id": "erase-md"}).list_topics(timeout=15).topics
    events_partitions = len(admin_md["enterprise.events"].partitions)
    changelog = profile_changelog(get_settings().worker.app_id)
    ensure_topics(kafka_admin, {changelog: {"cleanup.policy": "compact"}}, partitions=events_partitions)
    where: dict[tuple[str, str], tuple[int, int]] = {}
    producer = Producer({**as_principal(WORKER), "partitioner": "murmur2_random", "acks": "all"})
    value = schema_store().encode("enterprise/profile", profile(codes[0], 1))

    def remember(uscc: str):
        return lambda err, msg: where.__setitem__((msg.topic(), uscc), (msg.partition(), msg.offset())) if err is None else None

    for uscc in codes:
        producer.produce(PROFILES, key=uscc.encode(), value=value, on_delivery=remember(uscc))
    assert producer.flush(30) == 0
    for uscc in codes:  # the worker writes the changelog to the partition of enterprise.events it merged from
        events_partition = murmur2_partition(uscc.encode(), events_partitions)
        producer.produce(changelog, key=json.dumps(uscc).encode(), value=value, partition=events_partition,
                         on_delivery=remember(uscc))
    assert producer.flush(30) == 0
    return where


def latest(kafka_admin, topic: str, partition: int, start: int, key: bytes) -> tuple[bool, bytes | None]:
    """(found, value) of the newest record with ``key`` in the partition from ``start`` to its end."""
    c = Consumer({**kafka_admin, "group.id": f"erase-check-{uuid.uuid4().hex}", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    tp = TopicPartition(topic, partition)
    _, high = watermark_offsets(c, tp)
    c.assign([TopicPartition(topic, partition, start)])
    found, value = False, None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error() is not None:
                break  # end of partition
            if msg.key() == key:
                found, value = True, msg.value()
            if msg.offset() >= high - 1:
                break
    finally:
        c.close()
    return found, value


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
    r.xadd(f"{p}throttled:b0001", {"alert_id": "b0001/z", "uscc": gone, "category": "registration"})
    return r


def test_erase_removes_one_enterprise_everywhere_and_audits_it(kafka_admin, redis_url, prefix, codes, chdb, monkeypatch):
    gone, kept = codes
    for code in codes:
        seed_clickhouse(chdb, code)
    where = seed_kafka(kafka_admin, codes)
    r = seed_redis(redis_url, prefix, gone, kept)
    asked: list[tuple[str, str]] = []

    def sink_erases(uscc: str, reason: str) -> dict[str, int]:  # the sink's side of the gateway
        asked.append((uscc, reason))
        return erase_enterprise(chdb, uscc)

    monkeypatch.setattr("streams.cli.common.erase_via_gateway", sink_erases)
    from streams.cli import main

    out = CliRunner().invoke(main, ["erase", "--uscc", gone.lower(), "--reason", "request ER-2026-001"])
    assert out.exit_code == 0, out.output
    assert asked == [(gone, "request ER-2026-001")]

    # ClickHouse: the enterprise's rows are gone, the other's are there
    assert rows_of(chdb, gone) == dict.fromkeys(ERASABLE, 0)
    assert rows_of(chdb, kept) == dict.fromkeys(ERASABLE, 1)

    # Kafka: the newest record of the key is a tombstone, on the partition holding its values
    changelog = profile_changelog(get_settings().worker.app_id)
    for topic, key in ((PROFILES, gone.encode()), (changelog, json.dumps(gone).encode())):
        partition, offset = where[(topic, gone)]
        assert latest(kafka_admin, topic, partition, offset, key) == (True, None), topic
    for topic, key in ((PROFILES, kept.encode()), (changelog, json.dumps(kept).encode())):
        partition, offset = where[(topic, kept)]
        found, value = latest(kafka_admin, topic, partition, offset, key)
        assert found and value is not None, topic

    # Redis: watchlists and throttle windows of the enterprise gone; the other's and the consent kept
    assert r.smembers(f"{prefix}watchlist:b0001") == {kept}
    assert r.smembers(f"{prefix}watchlist:b0002") == set()
    assert not r.exists(f"{prefix}throttle:b0001:{gone}:registration", f"{prefix}throttle:b0002:{gone}:court")
    assert r.exists(f"{prefix}throttle:b0001:{kept}:registration", f"{prefix}throttle:b0002:{kept}:court") == 2
    assert r.hgetall(f"{prefix}consent:c-{gone}")["uscc"] == gone  # legal evidence of authorisation: kept

    # the audit record: on audit.erasures and printed
    records = [a for a in audit_records(kafka_admin, gone) if a["reason"] == "request ER-2026-001"]
    assert len(records) == 1
    a = records[0]
    assert a["kafka_principal"] == OPERATOR and a["os_user"] and a["failed"] == {}
    assert a["erased"]["clickhouse"] == dict.fromkeys(ERASABLE, 1)
    assert a["erased"]["kafka"][PROFILES]["partition"] == where[(PROFILES, gone)][0]
    assert a["erased"]["kafka"][changelog]["partition"] == where[(changelog, gone)][0]
    assert a["erased"]["redis"] == {"watchlists": ["b0001", "b0002"], "throttle_windows": 2,
                                    "held_back_entries_not_erased": {"b0001": 1}}
    assert any("restart the worker" in n for n in a["not_erased"])
    assert a["started_ts_ms"] <= a["finished_ts_ms"]
    assert json.loads(out.stdout[:out.stdout.rindex("}") + 1])["uscc"] == gone

    # again: idempotent, nothing left to erase
    again = CliRunner().invoke(main, ["erase", "--uscc", gone, "--reason", "request ER-2026-001 (repeat)"])
    assert again.exit_code == 0, again.output
    assert rows_of(chdb, kept) == dict.fromkeys(ERASABLE, 1)


def test_erase_stops_before_kafka_and_redis_when_the_store_cannot_erase(kafka_admin, redis_url, prefix, codes):
    """Embedded store, no sink gateway answering: nothing is erased, the attempt is audited, exit 2."""
    gone, kept = codes
    r = seed_redis(redis_url, prefix, gone, kept)
    from streams.cli import main

    out = CliRunner().invoke(main, ["erase", "--uscc", gone, "--reason", "request ER-2026-002"])
    assert out.exit_code == 2, out.output
    assert r.smembers(f"{prefix}watchlist:b0002") == {gone}
    a = [x for x in audit_records(kafka_admin, gone) if x["reason"] == "request ER-2026-002"]
    assert len(a) == 1 and "clickhouse" in a[0]["failed"] and a[0]["erased"] == {}


def test_erase_refuses_a_bad_code_or_no_reason(prefix):
    from streams.cli import main

    assert CliRunner().invoke(main, ["erase", "--uscc", "91500000MA5U7Q1X2Z", "--reason", "request"]).exit_code == 2
    assert CliRunner().invoke(main, ["erase", "--uscc", "91500000MA5U7Q1X2K", "--reason", " "]).exit_code == 2
