"""Create topics idempotently with the right configs (confluent-kafka AdminClient)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, Mapping[str, str]],
    partitions: int = 4,
    replication_factor: int = 1,
) -> None:
    """Create each topic (name → config) unless it exists. Existing topics are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=15).topics)
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, config=dict(cfg))
        for name, cfg in topics.items()
        if name not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=15).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def pipeline_topics(dept_topics: list[str], retention_ms: int | None = None) -> dict[str, dict[str, str]]:
    """The stream layer's topics with their configs (DESIGN §4), including every dead-letter topic."""
    from .dlq import dlq_topic

    raw = {"retention.ms": str(retention_ms)} if retention_ms else {}
    topics: dict[str, dict[str, str]] = {t: dict(raw) for t in dept_topics}
    topics.update({
        "enterprise.events": {},
        "enterprise.profiles": {"cleanup.policy": "compact"},
        "risk.changes": {},
    })
    topics.update({dlq_topic(t): dict(raw) if t in dept_topics else {} for t in list(topics)})
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
