"""Connector offsets on a compacted Kafka topic per department (``connect.<dept>.offsets``, key =
source name): each department's connector writes its own positions and cannot touch another's
(its principal owns the prefix ``connect.<dept>.``, streams/core/access.py).

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
from streams.core.access import connector_group_prefix
from streams.kafka.admin import KafkaConf, ensure_topics, read_compacted

SCHEMA = "connect/source_offset"


def connect_topic(dept: str, what: str) -> str:
    """A department connector's own compacted topic: ``offsets``, ``heartbeats`` or ``files``."""
    return f"connect.{dept}.{what}"


def read_offsets(kafka: KafkaConf, dept: str, schemas: SchemaStore, group_id: str) -> dict[str, dict[str, Any]]:
    """Latest offset record of every source of ``dept``, read to the end of its topic."""
    return read_compacted(kafka, connect_topic(dept, "offsets"), lambda value: schemas.decode(value, SCHEMA)[1], group_id)


class OffsetStore:
    def __init__(self, kafka: KafkaConf, dept: str, schemas: SchemaStore, producer: Producer,
                 replication_factor: int = 1) -> None:
        self._kafka = kafka
        self.dept = dept
        self.topic = connect_topic(dept, "offsets")
        self._schemas = schemas
        self._producer = producer
        self._replication_factor = replication_factor
        ensure_topics(kafka, {self.topic: {"cleanup.policy": "compact"}}, partitions=1,
                      replication_factor=replication_factor)

    @property
    def kafka(self) -> KafkaConf:
        """The connector's Kafka client settings (cluster and login) the offsets and topics use."""
        return self._kafka

    @property
    def group_prefix(self) -> str:
        """Consumer groups the connector may use start with this."""
        return connector_group_prefix(self.dept)

    @property
    def replication_factor(self) -> int:
        """Replication factor of the topics created for the source (its ``connect.<dept>.*`` topics)."""
        return self._replication_factor

    @property
    def schemas(self) -> SchemaStore:
        return self._schemas

    def load(self, source: str) -> dict[str, Any] | None:
        """Latest offset record of ``source``; None if it has none."""
        return self.load_all().get(source)

    def load_all(self) -> dict[str, dict[str, Any]]:
        """Latest offset record of every source, read to the end of the topic."""
        return read_offsets(self._kafka, self.dept, self._schemas, f"{self.group_prefix}.offsets")

    def save(self, record: dict[str, Any]) -> None:
        """Write and wait for Kafka's acknowledgement."""
        record = {**record, "ts_ms": int(time.time() * 1000)}
        self._producer.produce(self.topic, key=record["source"].encode(), value=self._schemas.encode(SCHEMA, record))
        if self._producer.flush(30) != 0:
            raise KafkaException(f"offset for {record['source']} not acknowledged by Kafka within 30 s")
