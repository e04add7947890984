"""Drive a ``Source`` into Kafka: poll → Avro envelope → produce → flush → acknowledge.

At-least-once: the source position is acknowledged only after ``Producer.flush`` returned
with every message delivered, so a crash between produce and acknowledge re-reads, never loses.
A delete is followed by a tombstone (key, null value), as Debezium does, so compacted copies
of a ``dept.*`` topic forget the row. Rows the connector cannot convert go to ``dlq.<topic>``
with their provenance and the stream goes on.

Heartbeats (like Debezium's ``heartbeat.interval.ms``): every ``heartbeat_interval_s`` the runner
writes the source's position, lag and snapshot progress to the compacted ``connect.<dept>.heartbeats``
(key = source name), whether or not anything changed, and logs snapshot progress. Operators see
a live but idle source apart from a dead one (``yurong connect status``, the
``yurong_connector_heartbeat_timestamp_seconds`` gauge and its Prometheus rule). Keeping an idle
PostgreSQL slot from retaining WAL is the source's part: it confirms the server's WAL end when
it has nothing unacknowledged (``PostgresSource._idle_feedback``).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from typing import Any

from confluent_kafka import KafkaException, Producer

from connectors.base import ChangeEvent, Source
from connectors.offsets import connect_topic
from monitoring.metrics import (
    CONNECTOR_FLUSHED_LSN,
    CONNECTOR_HEARTBEAT,
    CONNECTOR_LAG_BYTES,
    CONNECTOR_LAG_TRANSACTIONS,
    CONNECTOR_SNAPSHOT_PROGRESS,
    CONNECTOR_SNAPSHOT_ROWS,
    DLQ,
    EVENTS_OUT,
)
from streams.codecs.serde import SchemaStore
from streams.core.catalogue import Department
from streams.kafka.admin import KafkaConf, ensure_topics
from streams.kafka.dlq import dlq_headers, dlq_topic

log = logging.getLogger(__name__)

HEARTBEAT_SCHEMA = "connect/heartbeat"


def producer_config(kafka: KafkaConf) -> dict:
    """Idempotent, acks=all producer: retries cannot reorder or duplicate within a session."""
    return {
        **kafka,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
    }


class ConnectorRunner:
    def __init__(
        self,
        source: Source,
        dept: Department,
        producer: Producer,
        schemas: SchemaStore,
        kafka: KafkaConf,
        flush_interval_s: float = 0.2,
        retention_ms: int | None = None,
        partitions: int = 4,
        heartbeat_interval_s: float = 5.0,
        replication_factor: int = 1,
    ) -> None:
        self.source = source
        self.dept = dept
        self.producer = producer
        self.schemas = schemas
        self.flush_interval_s = flush_interval_s
        self.stopping = threading.Event()
        self.counts: Counter[str] = Counter()
        self.heartbeat_interval_s = heartbeat_interval_s  # 0: no heartbeats
        self._snapshot_rows = 0  # rows of the initial snapshot sent (op r before snapshot_completed)
        self._lag: int | None = None
        self._errors: list[str] = []
        cfg = {"retention.ms": str(retention_ms)} if retention_ms else {}
        topics = {ds.topic: cfg for ds in dept.datasets.values()}
        topics.update({dlq_topic(t): cfg for t in list(topics)})
        ensure_topics(kafka, topics, partitions=partitions, replication_factor=replication_factor)
        self.heartbeats_topic = connect_topic(dept.dept, "heartbeats")
        if heartbeat_interval_s:
            ensure_topics(kafka, {self.heartbeats_topic: {"cleanup.policy": "compact"}}, partitions=1,
                          replication_factor=replication_factor)

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def _produce(self, e: ChangeEvent) -> None:
        topic = e.dataset.topic
        key = e.key.encode()
        now_ms = int(time.time() * 1000)
        if e.error is not None:
            value = json.dumps(e.raw, ensure_ascii=False, default=str).encode()
            headers = dlq_headers("connector", topic, -1, -1, e.error) + [("yurong.dlq.position", e.source["position"].encode())]
            self._send(dlq_topic(topic), key, value, headers)
            DLQ.labels("connector", topic, "validation").inc()
            return
        value = self.schemas.encode(e.dataset.schema_name, e.envelope(now_ms))
        self._send(topic, key, value, None)
        if e.op == "d":
            self._send(topic, key, None, None)  # tombstone
        EVENTS_OUT.labels("connector", topic).inc()
        if e.op == "r":
            CONNECTOR_SNAPSHOT_ROWS.labels(self.source.name, e.dataset.name).inc()
            self._snapshot_rows += 1
        self.counts[e.dataset.name] += 1

    def _send(self, topic: str, key: bytes, value: bytes | None, headers) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain

    def flush_and_acknowledge(self, position: int) -> None:
        """Wait until Kafka acknowledged everything produced, then acknowledge ``position``."""
        remaining = self.producer.flush(60)
        if remaining or self._errors:
            raise KafkaException(f"Kafka did not acknowledge {remaining} events; errors: {self._errors[:3]}")
        if position:
            self.source.acknowledge(position)
            CONNECTOR_FLUSHED_LSN.labels(self.source.name).set(position)
        flushed = getattr(self.source, "flushed", None)  # optional: sources that checkpoint more than a position
        if flushed is not None:
            flushed()

    def run(self, max_seconds: float | None = None, on_progress=None) -> None:
        """Run until ``stop()``/SIGTERM (or ``max_seconds``)."""
        self.source.start()
        started = time.monotonic()
        last_flush = time.monotonic()
        last_lag = last_heartbeat = 0.0
        pending_position = 0
        was_snapshotting = not self.source.snapshot_completed()
        try:
            while not self.stopping.is_set():
                events = self.source.poll(timeout=self.flush_interval_s)
                for e in events:
                    self._produce(e)
                    pending_position = max(pending_position, e.ack_position)
                self.producer.poll(0)
                if was_snapshotting and self.source.snapshot_completed():
                    self.flush_and_acknowledge(0)
                    self.source.mark_snapshot_completed()
                    log.info("%s: snapshot complete (%s)", self.source.name, dict(self.counts))
                    was_snapshotting = False
                now = time.monotonic()
                if now - last_flush >= self.flush_interval_s and (pending_position or events):
                    self.flush_and_acknowledge(pending_position)
                    pending_position = 0
                    last_flush = now
                if now - last_lag > 10:
                    self._export_lag()
                    last_lag = now
                if self.heartbeat_interval_s and now - last_heartbeat >= self.heartbeat_interval_s:
                    self.heartbeat()
                    last_heartbeat = now
                if on_progress:
                    on_progress(self)
                if max_seconds is not None and now - started > max_seconds:
                    break
            self.flush_and_acknowledge(pending_position)
        finally:
            self.source.stop()

    def _export_lag(self) -> None:
        """Sources that can tell how far behind they are (PostgreSQL slot, MariaDB GTID)."""
        for method, gauge in (("slot_lag_bytes", CONNECTOR_LAG_BYTES), ("lag_transactions", CONNECTOR_LAG_TRANSACTIONS)):
            lag = getattr(self.source, method, lambda: None)()
            if lag is not None:
                gauge.labels(self.source.name).set(lag)
                self._lag = lag

    def snapshot_progress(self) -> tuple[int, int] | None:
        """(rows sent, rows in all; -1 unknown) of the running snapshot, None when none runs.

        A source that knows more (PostgreSQL counts its tables inside the exported snapshot and
        tracks incremental snapshots) answers through its own ``snapshot_progress``."""
        own = getattr(self.source, "snapshot_progress", None)
        if own is not None:
            return own()
        return None if self.source.snapshot_completed() else (self._snapshot_rows, -1)

    def heartbeat(self) -> None:
        """Write position, lag and snapshot progress to ``connect.<dept>.heartbeats`` (delivered with
        the next flush or in the background; a heartbeat needs no acknowledgement)."""
        name = self.source.name
        progress = self.snapshot_progress()
        rows, total = progress or (0, -1)
        ts_ms = int(time.time() * 1000)
        record: dict[str, Any] = {
            "source": name, "dept": self.dept.dept, "kind": self.dept.kind,
            "position": str(getattr(self.source, "position", lambda: "")()),
            "snapshotting": progress is not None, "snapshot_rows": rows, "snapshot_total": total,
            "events": sum(self.counts.values()), "lag": self._lag, "ts_ms": ts_ms,
        }
        self._send(self.heartbeats_topic, name.encode(), self.schemas.encode(HEARTBEAT_SCHEMA, record), None)
        CONNECTOR_HEARTBEAT.labels(name).set(ts_ms / 1000)
        CONNECTOR_SNAPSHOT_PROGRESS.labels(name).set(rows / total if progress and total > 0 else float(progress is None))
        if progress is not None:
            share = f" ({100 * rows / total:.0f}%)" if total > 0 else ""
            log.info("%s: snapshot %s/%s rows%s", name, f"{rows:,}", f"{total:,}" if total >= 0 else "?", share)

    def stop(self, *_args) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
