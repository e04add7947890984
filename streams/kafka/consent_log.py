"""``consent.grants``, the system of record of consents: publish versions, scan the topic.

The topic is compacted (key = consent id, ``avro/consent/grant.avsc``, every record the whole
state). ``yurong consent grant|revoke`` publish here; the worker's ``consent_sync`` agent
applies each record to Redis (``streams/worker/consent_store.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.codecs.serde import schema_store
from streams.core.consent import ConsentGrant, merge_grant
from streams.core.masking import assert_no_pii
from streams.errors import ConfigError, YurongError
from streams.kafka.admin import ensure_topics, watermark_offsets

CONSENT_TOPIC = "consent.grants"

CONSENT_TOPIC_CONFIG = {"cleanup.policy": "compact"}


class ConsentPublisher:
    """Publishes consent versions to ``consent.grants`` (key = consent id), creating the compacted
    topic if needed. Connects on construction, so a caller can take the time of a revocation
    right before ``publish`` and the record reaches the worker milliseconds later."""

    def __init__(self, bootstrap: str, partitions: int = 4, replication_factor: int = 1) -> None:
        self._schemas = schema_store()
        ensure_topics(bootstrap, {CONSENT_TOPIC: CONSENT_TOPIC_CONFIG}, partitions=partitions,
                      replication_factor=replication_factor)
        # acks=all; no idempotent producer: its set-up costs ~0.5 s per CLI call, and a duplicate
        # from a retry is harmless here (versions merge idempotently, in any order: merge_grant)
        self._producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        self._producer.list_topics(CONSENT_TOPIC, timeout=15)  # connected, metadata known

    def publish(self, grants: Iterable[ConsentGrant], timeout_s: float = 30.0) -> int:
        """Publish and wait until Kafka acknowledged every record; ``YurongError`` otherwise."""
        records = [g.to_record() for g in grants]
        for r in records:
            assert_no_pii(r, "consent grant")  # the purpose is free text
        values = [(r["consent_id"].encode(), self._schemas.encode("consent/grant", r)) for r in records]
        errors: list[str] = []

        def on_delivery(err, _msg) -> None:
            if err is not None:
                errors.append(str(err))

        for key, value in values:
            self._producer.produce(CONSENT_TOPIC, key=key, value=value, on_delivery=on_delivery)
        if self._producer.flush(timeout_s) or errors:
            raise YurongError(f"Kafka did not acknowledge the consent records on {CONSENT_TOPIC}: {errors or 'timed out'}")
        return len(values)


def publish_grants(bootstrap: str, grants: Iterable[ConsentGrant], partitions: int = 4, replication_factor: int = 1,
                   timeout_s: float = 30.0) -> int:
    """Publish consent versions to ``consent.grants`` and wait for Kafka's acks (acks=all);
    ``YurongError`` if any is not acknowledged. Returns the number published."""
    grants = list(grants)
    if not grants:
        return 0
    return ConsentPublisher(bootstrap, partitions, replication_factor).publish(grants, timeout_s)


def scan_grants(bootstrap: str, keep, timeout_s: float = 120.0) -> dict[str, ConsentGrant]:
    """Read ``consent.grants`` (the system of record) to its current end and return the merged
    state (``merge_grant``) of every consent for which ``keep(grant)`` is true — what a
    revocation must cover even if the worker has not applied everything to Redis yet."""
    schemas = schema_store()
    out: dict[str, ConsentGrant] = {}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"yurong-consent-scan-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        md = consumer.list_topics(timeout=15).topics.get(CONSENT_TOPIC)
        if md is None:
            return out
        ends: dict[int, int] = {}
        starts = []
        for part in md.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(CONSENT_TOPIC, part))
            if high > low:
                ends[part] = high
                starts.append(TopicPartition(CONSENT_TOPIC, part, low))
        if not starts:
            return out
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise YurongError(f"could not read {CONSENT_TOPIC} to its end within {timeout_s:.0f} s")
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                if msg.error() is not None or msg.partition() not in ends:
                    continue
                if msg.value() is None:
                    out.pop((msg.key() or b"").decode(), None)
                else:
                    try:
                        g = ConsentGrant.from_record(schemas.decode(msg.value(), "consent/grant")[1])
                    except Exception:  # noqa: BLE001 — a bad record is the worker's dead letter, not ours
                        g = None
                    if g is not None and keep(g):
                        try:
                            out[g.consent_id] = merge_grant(out.get(g.consent_id), g)
                        except ConfigError:
                            pass  # a refused version, as the worker refuses it
                part, offset = msg.partition(), msg.offset()
                assert part is not None and offset is not None  # set on every fetched record
                if offset >= ends[part] - 1:
                    del ends[part]
    finally:
        consumer.close()
    return out
