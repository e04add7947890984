"""The sink: Kafka → ClickHouse in batches, offsets committed only after the insert succeeded.

Subscribes to ``enterprise.events``, ``enterprise.profiles``, ``risk.changes``, every
``alerts.<bank_id>`` (each record there is a delivery: the ``alert_delivery`` audit) and every
``dlq.*`` topic (metadata only: the original bytes stay on the restricted topic), and every
``connect.<dept>.heartbeats`` (``connector_heartbeat``: the assessment's availability).

A batch is written table by table with a deterministic de-duplication token, then the
consumer offsets are committed synchronously. A crash in between replays the batch; the
ReplacingMergeTree tables collapse the duplicates. A record the sink cannot decode is
dead-lettered (``dlq.<topic>``) and the batch goes on.

Erasure (``yurong erase``, streams/core/erasure.py): an erase marker on ``enterprise.events``
(``op`` = ``erase``) is no event of the enterprise and is not stored; tombstones are skipped. The
gateway's erase first waits until this sink's group has stored everything on the enterprise's
partitions up to that moment (``wait_caught_up``), so no row from before the erasure arrives after
its rows are deleted.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from monitoring.metrics import DLQ, E2E_LATENCY, EVENTS_IN, SINK_BATCH_SECONDS, SINK_ROWS
from sinks.clickhouse import ClickHouseWriter
from sinks.rows import alert_row, change_row, dlq_row, event_row, heartbeat_row, profile_row
from streams.codecs.serde import SchemaStore
from streams.core.erasure import is_erase_marker
from streams.errors import SinkError
from streams.kafka.admin import KafkaConf, commit_sync, watermark_offsets
from streams.kafka.dlq import dlq_headers, dlq_topic
from streams.kafka.partitioner import murmur2_partition

log = logging.getLogger(__name__)

SUBSCRIPTION = ["enterprise.events", "enterprise.profiles", "risk.changes", r"^alerts\.b[0-9]{4}$", r"^dlq\..*",
                r"^connect\.[a-z_]+\.heartbeats$"]  # the connectors' heartbeats: the assessment's availability


# the USCC-keyed topics the sink stores (the worker publishes them all with the murmur2 partitioner)
KEYED_TOPICS = ("enterprise.events", "enterprise.profiles", "risk.changes")
ALERT_TOPIC = re.compile(r"alerts\.b[0-9]{4}")


def wait_caught_up(kafka: KafkaConf, group: str, uscc: str, timeout_s: float = 120.0) -> dict[str, int]:
    """Wait until consumer group ``group`` has committed, on the partition holding ``uscc`` of each
    USCC-keyed topic it stores (``KEYED_TOPICS`` and every ``alerts.<bank>``), the end offset that
    partition has now: every record about the enterprise published so far is then in ClickHouse
    (the sink commits only after its inserts). Returns ``{"topic[partition]": end offset}``; raises
    ``SinkError`` after ``timeout_s``. Committed offsets are the group's, so this holds however many
    sinks share the group."""
    c = Consumer({**kafka, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=15).topics
        targets: dict[tuple[str, int], tuple[int, int]] = {}
        for topic in sorted(md):
            if topic not in KEYED_TOPICS and not ALERT_TOPIC.fullmatch(topic):
                continue
            partitions = md[topic].partitions
            if md[topic].error is not None or not partitions:
                continue
            p = murmur2_partition(uscc.encode(), len(partitions))
            targets[(topic, p)] = watermark_offsets(c, TopicPartition(topic, p))
        deadline = time.monotonic() + timeout_s
        while True:
            committed = c.committed([TopicPartition(t, p) for t, p in targets], timeout=10)
            behind = {f"{tp.topic}[{tp.partition}]": (tp.offset, targets[(tp.topic, tp.partition)][1])
                      for tp in committed if not _reached(tp.offset, *targets[(tp.topic, tp.partition)])}
            if not behind:
                return {f"{t}[{p}]": high for (t, p), (_, high) in targets.items()}
            if time.monotonic() > deadline:
                raise SinkError(f"the sink (group {group}) has not stored the records about {uscc} published before "
                                f"the erasure within {timeout_s:g} s (committed/end: {behind}); erase again later")
            time.sleep(0.2)
    finally:
        c.close()


def _reached(committed: int, low: int, high: int) -> bool:
    """The group committed up to ``high``, or has nothing to read there (no commit, and nothing
    left on the partition since retention)."""
    return committed >= high or (committed < 0 and low >= high)


def consumer_config(kafka: KafkaConf, group: str) -> dict:
    return {
        **kafka,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "topic.metadata.refresh.interval.ms": 5000,  # pick up new alerts.<bank> topics quickly
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": 300000,
    }


def _coordinates(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record (typed optional by confluent-kafka: only
    a message built to be produced lacks them)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise KafkaException(f"consumed a record without topic, partition or offset ({topic}[{partition}]@{offset})")
    return topic, partition, offset


class ClickHouseSink:
    def __init__(self, consumer: Consumer, producer: Producer, writer: ClickHouseWriter, schemas: SchemaStore,
                 batch_size: int = 10_000, batch_seconds: float = 1.0) -> None:
        self.consumer = consumer
        self.producer = producer
        self.writer = writer
        self.schemas = schemas
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.stopping = threading.Event()
        self.rows_written = 0

    def _route(self, msg: Message, tables: dict[str, list], latencies: list[float], now_ms: int) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()  # per record: no helper call
        if topic is None or partition is None or offset is None:
            raise KafkaException(f"consumed a record without topic, partition or offset ({topic}[{partition}]@{offset})")
        if topic.startswith("dlq."):
            tables["dlq_event"].append(dlq_row(topic, partition, offset, msg.headers(), msg.value()))
            return
        if msg.value() is None:
            return  # tombstone
        if topic == "enterprise.profiles":
            _, p = self.schemas.decode(msg.value(), "enterprise/profile")
            row = profile_row(p)
            tables["enterprise_profile"].append(row)
            tables["enterprise_profile_history"].append(row)
            latencies.append(max(0, now_ms - p["last_event_ts_ms"]) / 1000)
        elif topic == "enterprise.events":
            _, e = self.schemas.decode(msg.value(), "enterprise/event")
            if not is_erase_marker(e):  # a marker is the worker's, not an event of the enterprise
                tables["enterprise_event"].append(event_row(e))
        elif topic == "risk.changes":
            _, c = self.schemas.decode(msg.value(), "risk/change")
            tables["risk_change"].append(change_row(c))
        elif topic.startswith("alerts."):
            _, a = self.schemas.decode(msg.value(), "risk/alert")
            tables["alert_delivery"].append(alert_row(a, topic, partition, offset))
        elif topic.startswith("connect."):
            _, h = self.schemas.decode(msg.value(), "connect/heartbeat")
            tables["connector_heartbeat"].append(heartbeat_row(h))

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        topic, partition, offset = _coordinates(msg)
        log.warning("sink dead letter %s[%d]@%d: %s", topic, partition, offset, exc)
        self.producer.produce(dlq_topic(topic), key=msg.key(), value=msg.value(),
                              headers=dlq_headers("sink", topic, partition, offset, exc))
        DLQ.labels("sink", topic, getattr(exc, "kind", "unexpected")).inc()

    def write_batch(self, batch: list[Message]) -> int:
        """Write one batch and commit its offsets; return rows written."""
        started = time.monotonic()
        tables: dict[str, list] = defaultdict(list)
        latencies: list[float] = []
        now_ms = int(time.time() * 1000)
        for msg in batch:
            EVENTS_IN.labels("sink", msg.topic()).inc()
            try:
                self._route(msg, tables, latencies, now_ms)
            except Exception as exc:  # one bad record must not stop the sink
                if (msg.topic() or "").startswith("dlq."):
                    raise  # never dead-letter a dead letter: stop loudly instead
                self._dead_letter(msg, exc)
        first, last = batch[0], batch[-1]
        token = f"{first.topic()}:{first.partition()}:{first.offset()}-{last.topic()}:{last.partition()}:{last.offset()}:{len(batch)}"
        written = 0
        for table, rows in tables.items():
            self.writer.write(table, rows, f"{table}/{token}")
            SINK_ROWS.labels(table).inc(len(rows))
            written += len(rows)
        if self.producer.flush(30):
            raise KafkaException("sink dead letters not acknowledged by Kafka")
        for s in latencies:
            E2E_LATENCY.labels("profile_written").observe(s)
        commit_sync(self.consumer)  # retried while the group coordinator loads or moves
        SINK_BATCH_SECONDS.observe(time.monotonic() - started)
        self.rows_written += written
        return written

    def _write_with_retry(self, batch: list[Message]) -> None:
        """ClickHouse down or refusing: retry the same batch (same token) with backoff; the
        offsets stay uncommitted meanwhile, so nothing is skipped."""
        delay = 0.5
        while True:
            try:
                self.write_batch(batch)
                return
            except SinkError as exc:
                if self.stopping.is_set():
                    raise
                log.error("%s; retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def run(self, max_seconds: float | None = None) -> None:
        self.consumer.subscribe(SUBSCRIPTION)
        started = time.monotonic()
        try:
            while not self.stopping.is_set():
                batch: list[Message] = []
                deadline = time.monotonic() + self.batch_seconds
                while len(batch) < self.batch_size and time.monotonic() < deadline and not self.stopping.is_set():
                    msgs = self.consumer.consume(num_messages=self.batch_size - len(batch),
                                                 timeout=max(0.05, deadline - time.monotonic()))
                    for m in msgs:
                        err = m.error()
                        if err is None:
                            batch.append(m)
                        elif err.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                            raise KafkaException(err)
                if batch:
                    self._write_with_retry(batch)
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
        finally:
            self.consumer.close()

    def stop(self, *_args) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
