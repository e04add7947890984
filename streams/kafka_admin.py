"""Create topics idempotently with the right configs (confluent-kafka AdminClient)."""

from __future__ import annotations

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
