"""Declare topics with their configs, and read them back (confluent-kafka clients).

Every function takes ``kafka``: the librdkafka settings of the calling principal
(``streams.kafka.security.client_conf``), whose ACLs decide what it may declare and read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from streams.core.access import ERASURE_APPLIED_TOPIC, ERASURE_REQUEST_TOPIC

log = logging.getLogger(__name__)

KafkaConf = Mapping[str, Any]  # librdkafka settings: bootstrap servers and the login (security.client_conf)


def ensure_topics(
    kafka: KafkaConf,
    topics: Mapping[str, Mapping[str, str]],
    partitions: int = 4,
    replication_factor: int = 1,
) -> None:
    """Declare each topic (name → config): create it if missing; on an existing topic, set every
    given config that differs (e.g. a raw-PII topic's retention, corrected at each start-up, not
    only at creation). Partition counts of existing topics are left as they are."""
    admin = AdminClient(dict(kafka))
    existing = set(admin.list_topics(timeout=15).topics)
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, config=dict(cfg))
        for name, cfg in topics.items()
        if name not in existing
    ]
    for fut in (admin.create_topics(new, operation_timeout=15).values() if new else ()):
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    enforce_configs(admin, {name: cfg for name, cfg in topics.items() if name in existing and cfg})


def enforce_configs(admin: AdminClient, topics: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Set the given configs on existing topics where they differ; returns "topic key=value"
    for each change made (logged at WARNING: someone or something had changed it)."""
    if not topics:
        return []
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in topics])
    fixes: dict[str, dict[str, str]] = {}
    for resource, fut in described.items():
        current = fut.result()
        want = topics[resource.name]
        diff = {k: v for k, v in want.items() if k not in current or current[k].value != v}
        if diff:
            fixes[resource.name] = diff
    if not fixes:
        return []
    resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in cfg.items()]) for name, cfg in fixes.items()]
    for fut in admin.incremental_alter_configs(resources).values():
        fut.result()
    changed = [f"{name} {k}={v}" for name, cfg in fixes.items() for k, v in cfg.items()]
    log.warning("corrected topic configs: %s", ", ".join(changed))
    return changed


def pipeline_topics(dept_topics: list[str], retention_ms: int | None = None) -> dict[str, dict[str, str]]:
    """The stream layer's topics with their configs (DESIGN §4), including every dead-letter topic."""
    from streams.kafka.dlq import dlq_topic

    raw = {"retention.ms": str(retention_ms)} if retention_ms else {}
    topics: dict[str, dict[str, str]] = {t: dict(raw) for t in dept_topics}
    topics.update({
        "enterprise.events": {},
        "enterprise.profiles": {"cleanup.policy": "compact"},
        "risk.changes": {},
        "consent.grants": {"cleanup.policy": "compact"},  # consents: the system of record
        ERASURE_REQUEST_TOPIC: {},  # `yurong erase` → the worker (streams/core/erasure.py)
    })
    topics.update({dlq_topic(t): dict(raw) if t in dept_topics else {} for t in list(topics)})
    topics[ERASURE_APPLIED_TOPIC] = {}  # the worker's confirmations, read by `yurong erase` (which declares it)
    return topics


def worker_topics(dept_topics: list[str], retention_ms: int, raw_dlqs: Iterable[str] = ()) -> dict[str, dict[str, str]]:
    """What the worker declares at start-up (DESIGN §8): its outputs and every dead-letter topic,
    the departments' (and ``raw_dlqs``: those of Debezium-fed departments) with the raw-PII
    retention. ``dept.*`` belong to the connectors, ``consent.grants`` to the consent service,
    ``control.erasures.applied`` to ``yurong erase`` (``control.erasures``, the worker's input, is
    declared by both: it must exist before Faust subscribes, and before the first request)."""
    raw = {"retention.ms": str(retention_ms)}
    topics = {name: cfg for name, cfg in pipeline_topics(dept_topics, retention_ms).items()
              if not name.startswith("dept.") and name not in ("consent.grants", ERASURE_APPLIED_TOPIC)}
    topics.update({name: dict(raw) for name in raw_dlqs})
    return topics


_RETRIABLE = {
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}


def watermark_offsets(consumer, tp, timeout_s: float = 30.0) -> tuple[int, int]:
    """``(low, high)`` of a partition. A topic created a moment ago needs a few metadata rounds
    before its leader answers, so transient errors are retried until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            if exc.args[0].code() not in _RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


_COORDINATOR_BUSY = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
}


def commit_sync(consumer, offsets: list[TopicPartition] | None = None, timeout_s: float = 30.0) -> None:
    """Commit synchronously (``offsets``, or the consumer's current positions), retrying while the
    group coordinator is loading or moving — as on a broker that just started — until
    ``timeout_s``. A commit is idempotent, so a retry changes nothing but the outcome."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if offsets is None:
                consumer.commit(asynchronous=False)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
            return
        except KafkaException as exc:
            if exc.args[0].code() not in _COORDINATOR_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_to_end(kafka: KafkaConf, topics: str | Sequence[str], on_record: Callable[[bytes | None, bytes | None], None],
                group_id: str, timeout_s: float = 30.0) -> None:
    """Read every partition of ``topics`` (one name or several, with one consumer) from its start
    to its end as of now, calling ``on_record(key, value)`` per record in offset order within a
    partition (``value`` None: a tombstone). A missing or empty topic reads nothing;
    ``KafkaException`` if the end is not reached within ``timeout_s`` or the broker reports an
    error. ``group_id`` must be one of the principal's groups (it commits nothing: positions are
    assigned)."""
    names = [topics] if isinstance(topics, str) else list(topics)
    consumer = Consumer({**kafka, "group.id": group_id, "enable.auto.commit": False})
    try:
        known = consumer.list_topics(timeout=15).topics
        ends: dict[tuple[str, int], int] = {}
        starts = []
        for topic in names:
            md = known.get(topic)
            for p in sorted(md.partitions) if md is not None else ():
                low, high = watermark_offsets(consumer, TopicPartition(topic, p))
                if high > low:
                    ends[(topic, p)] = high
                    starts.append(TopicPartition(topic, p, low))
        if not ends:
            return
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise KafkaException(f"could not read {', '.join(names)} to the end ({ends}) within {timeout_s:.0f} s")
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                part, offset = msg.partition(), msg.offset()
                assert part is not None and offset is not None  # set on every fetched record
                where = (msg.topic() or "", part)
                if where not in ends:
                    continue  # that partition's end was reached already
                on_record(msg.key(), msg.value())
                if offset >= ends[where] - 1:
                    del ends[where]
    finally:
        consumer.close()


def read_compacted(kafka: KafkaConf, topic: str | Sequence[str], decode: Callable[[bytes], Any], group_id: str,
                   timeout_s: float = 30.0) -> dict[str, Any]:
    """Latest decoded value per key of a compacted topic (or several, whose keys do not collide),
    read to its end on every partition (a tombstone forgets the key; a keyless record is nobody's
    state). A missing or empty topic gives ``{}``."""
    latest: dict[str, Any] = {}

    def keep_latest(key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value:
            latest[key.decode()] = decode(value)
        else:
            latest.pop(key.decode(), None)

    read_to_end(kafka, topic, keep_latest, group_id, timeout_s)
    return latest
