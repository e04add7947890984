"""Connector offsets on a compacted Kafka topic (``connect.offsets``, key = source name).

Records what the source itself cannot: whether the initial snapshot of a slot completed and,
while it has not, where in the dataset topics its first run started (``snapshot_start``, see
``connectors.snapshot``). The streaming position of a PostgreSQL source lives in its replication
slot (``confirmed_flush_lsn``), which only advances after Kafka acknowledged the events.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException, Producer

from streams.codecs.serde import SchemaStore
from streams.kafka.admin import ensure_topics, read_compacted

OFFSETS_TOPIC = "connect.offsets"
SCHEMA = "connect/source_offset"


class OffsetStore:
    def __init__(self, bootstrap: str, schemas: SchemaStore, producer: Producer, replication_factor: int = 1) -> None:
        self._bootstrap = bootstrap
        self._schemas = schemas
        self._producer = producer
        self._replication_factor = replication_factor
        ensure_topics(bootstrap, {OFFSETS_TOPIC: {"cleanup.policy": "compact"}}, partitions=1,
                      replication_factor=replication_factor)

    @property
    def bootstrap(self) -> str:
        """The Kafka cluster the offsets (and the source's topics) live on."""
        return self._bootstrap

    @property
    def replication_factor(self) -> int:
        """Replication factor of the topics created for the source (``connect.offsets``, ``connect.files``)."""
        return self._replication_factor

    @property
    def schemas(self) -> SchemaStore:
        return self._schemas

    def load(self, source: str) -> dict[str, Any] | None:
        """Latest offset record of ``source``; None if it has none."""
        return self.load_all().get(source)

    def load_all(self) -> dict[str, dict[str, Any]]:
        """Latest offset record of every source, read to the end of the topic."""
        return read_compacted(self._bootstrap, OFFSETS_TOPIC, lambda value: self._schemas.decode(value, SCHEMA)[1])

    def save(self, record: dict[str, Any]) -> None:
        """Write and wait for Kafka's acknowledgement."""
        record = {**record, "ts_ms": int(time.time() * 1000)}
        self._producer.produce(OFFSETS_TOPIC, key=record["source"].encode(), value=self._schemas.encode(SCHEMA, record))
        if self._producer.flush(30) != 0:
            raise KafkaException(f"offset for {record['source']} not acknowledged by Kafka within 30 s")
