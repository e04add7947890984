"""``consent.grants``, the system of record of consents: publish versions, scan the topic.

The topic is compacted (key = consent id, ``avro/consent/grant.avsc``, every record the whole
state). ``yurong consent grant|revoke`` publish here; the worker's ``consent_sync`` agent
applies each record to Redis (``streams/worker/consent_store.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException, Producer

from streams.codecs.serde import schema_store
from streams.core.access import CONSENT_GROUP_PREFIX
from streams.core.consent import ConsentGrant, merge_grant
from streams.core.masking import assert_no_pii
from streams.errors import ConfigError, YurongError
from streams.kafka.admin import KafkaConf, ensure_topics, read_to_end

CONSENT_TOPIC = "consent.grants"

CONSENT_TOPIC_CONFIG = {"cleanup.policy": "compact"}


class ConsentPublisher:
    """Publishes consent versions to ``consent.grants`` (key = consent id), creating the compacted
    topic if needed. Connects on construction, so a caller can take the time of a revocation
    right before ``publish`` and the record reaches the worker milliseconds later."""

    def __init__(self, kafka: KafkaConf, partitions: int = 4, replication_factor: int = 1) -> None:
        self._schemas = schema_store()
        ensure_topics(kafka, {CONSENT_TOPIC: CONSENT_TOPIC_CONFIG}, partitions=partitions,
                      replication_factor=replication_factor)
        # acks=all; no idempotent producer: its set-up costs ~0.5 s per CLI call, and a duplicate
        # from a retry is harmless here (versions merge idempotently, in any order: merge_grant)
        self._producer = Producer({**kafka, "acks": "all", "linger.ms": 0})
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


def publish_grants(kafka: KafkaConf, grants: Iterable[ConsentGrant], partitions: int = 4, replication_factor: int = 1,
                   timeout_s: float = 30.0) -> int:
    """Publish consent versions to ``consent.grants`` and wait for Kafka's acks (acks=all);
    ``YurongError`` if any is not acknowledged. Returns the number published."""
    grants = list(grants)
    if not grants:
        return 0
    return ConsentPublisher(kafka, partitions, replication_factor).publish(grants, timeout_s)


def scan_grants(kafka: KafkaConf, keep, timeout_s: float = 120.0) -> dict[str, ConsentGrant]:
    """Read ``consent.grants`` (the system of record) to its current end and return the merged
    state (``merge_grant``) of every consent for which ``keep(grant)`` is true — what a
    revocation must cover even if the worker has not applied everything to Redis yet."""
    schemas = schema_store()
    out: dict[str, ConsentGrant] = {}

    def merge(key: bytes | None, value: bytes | None) -> None:
        if value is None:
            out.pop((key or b"").decode(), None)
            return
        try:
            g = ConsentGrant.from_record(schemas.decode(value, "consent/grant")[1])
        except Exception:  # noqa: BLE001 — a bad record is the worker's dead letter, not ours
            return
        if keep(g):
            try:
                out[g.consent_id] = merge_grant(out.get(g.consent_id), g)
            except ConfigError:
                pass  # a refused version, as the worker refuses it

    try:
        read_to_end(kafka, CONSENT_TOPIC, merge, f"{CONSENT_GROUP_PREFIX}.scan", timeout_s)
    except KafkaException as exc:
        raise YurongError(f"could not read {CONSENT_TOPIC} to its end: {exc}") from None
    return out
