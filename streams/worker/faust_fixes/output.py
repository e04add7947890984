"""The worker's outputs and the profile table's changelog go through librdkafka
(:class:`streams.kafka.producer.OutputProducer`) instead of Faust's aiokafka producer, a
performance fix measured with ``bench/risk_bench.py --profile`` (docs/benchmarks.md).

- :func:`attach`: Faust flushes only its own producer before an offset commit; the fix makes that
  flush also wait for the OutputProducer, so a committed offset never passes an output Kafka has
  not acknowledged. Without it tests/unit/test_faust_output.py
  (``test_the_pre_commit_flush_fails_while_an_output_is_not_acknowledged``) fails;
  tests/integration/test_output_producer.py checks the flush it waits for against the broker.
- :class:`OutputTable`: Faust's changelog path buffers at most 100 records and sends them one by
  one through aiokafka ("producer buffer full" under load); the table sends its changelog
  records through the OutputProducer to the partition Faust would use.
  tests/e2e/test_worker_restart.py recovers the table from that changelog.
"""

from __future__ import annotations

import faust

from streams.core.access import WORKER
from streams.kafka.producer import OutputProducer
from streams.kafka.security import client_conf
from streams.settings import get_settings


def attach(app, out: OutputProducer) -> None:
    """Make Faust's pre-commit flush also flush ``out`` (see the module docstring)."""
    producer = app.producer
    faust_flush = producer.flush

    async def flush() -> None:
        await faust_flush()
        await out.flush()

    producer.flush = flush


class OutputTable(faust.Table):
    """A Faust table whose changelog records go through the :class:`OutputProducer` too, to the
    same partition Faust would use (the source event's). Faust's changelog path buffers at most
    100 records and sends them one by one through aiokafka, which holds the merge back under load
    ("producer buffer full"). Without Faust's send callback a RocksDB store keeps no persisted
    changelog offset, so it re-reads the changelog at start (the default memory store always does)."""

    def _event_partition(self, key) -> int:
        partition = self.partition_for_key(key)  # the partition of the event being processed
        if partition is None:
            raise TypeError(f"table {self.name}: OutputTable writes its changelog to the source event's partition "
                            "(use_partitioner is not supported)")
        return partition

    def on_key_set(self, key, value) -> None:
        partition = self._event_partition(key)
        self._produce_changelog(partition, key, value, self.value_serializer)
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key) -> None:
        partition = self._event_partition(key)
        self._produce_changelog(partition, key, None, "raw")  # a tombstone
        self._maybe_del_key_ttl(key, partition)
        self._sensor_on_del(self, key)

    def _produce_changelog(self, partition: int, key, value, value_serializer) -> None:
        topic = self.changelog_topic
        k, _ = topic.prepare_key(key, self.key_serializer)
        v, _ = topic.prepare_value(value, value_serializer) if value is not None else (None, None)
        output(self.app).produce(topic.get_topic_name(), k, v, partition=partition)


_output: OutputProducer | None = None


def output(app) -> OutputProducer:
    """The worker's one :class:`OutputProducer`, made on first use and attached to ``app``'s commits."""
    global _output
    if _output is None:
        _output = OutputProducer(client_conf(WORKER, get_settings()))
        attach(app, _output)
    return _output
