"""The agents' librdkafka producer (streams/kafka/producer.py) against the real broker: a flush returns
only when every earlier record is in Kafka, a refused record fails the flush (so the offset
commit does not happen), and records land on the partitions Faust's aiokafka producer would choose.
streams/worker/faust_fixes/output.py makes Faust's pre-commit flush wait for this flush, so a
committed input offset never passes an output that is not in Kafka."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaException, TopicPartition

from streams.kafka.admin import ensure_topics, watermark_offsets
from streams.kafka.producer import OutputProducer
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_flush_waits_for_every_record_and_partitions_like_faust(kafka_admin, unique, topic_reader):
    topic = f"test.output.{unique}"
    ensure_topics(kafka_admin, {topic: {}}, partitions=4)
    reader = topic_reader([topic])
    rng = random.Random(unique)
    keys = [f"91500{rng.randrange(10**12):013d}".encode() for _ in range(400)]

    async def run() -> None:
        out = OutputProducer(dict(kafka_admin))
        for i, key in enumerate(keys):
            out.produce(topic, key, str(i).encode(), [("n", str(i).encode())])
        await out.flush()
        in_kafka = sum(watermark_offsets(reader.consumer, TopicPartition(topic, p))[1] for p in range(4))
        assert in_kafka == len(keys), "flush returned before every record was in Kafka"

    asyncio.run(run())
    got = []
    wait_for(lambda: (got.extend(reader.poll(0.5)), len(got) >= len(keys))[1], 60, "the records")
    assert sorted(int(m.value()) for m in got) == list(range(len(keys))), "each record once"
    faust_partition = DefaultPartitioner()
    for m in got:
        assert m.partition() == faust_partition(m.key(), [0, 1, 2, 3], [0, 1, 2, 3]), "murmur2, as aiokafka"
        assert dict(m.headers()) == {"n": m.value()}


def test_a_record_kafka_refuses_fails_the_flush_unless_its_caller_awaits_it(kafka_admin, unique):
    async def run() -> None:
        out = OutputProducer({**kafka_admin, "message.max.bytes": 2_000_000})
        topic = f"test.output.big.{unique}"
        ensure_topics(kafka_admin, {topic: {"max.message.bytes": "1000"}})
        out.produce(topic, b"k", b"x" * 5000)  # the broker refuses it: larger than the topic allows
        with pytest.raises(KafkaException):
            await out.flush()
        # an awaited record's refusal goes to its caller (who retries it), not to the next flush
        with pytest.raises(KafkaException):
            await out.produce_acked(topic, b"k", b"x" * 5000)
        await out.flush()

    asyncio.run(run())


def test_produce_acked_waits_for_the_broker(kafka_admin, unique, topic_reader):
    topic = f"test.output.acked.{unique}"
    ensure_topics(kafka_admin, {topic: {}})
    reader = topic_reader([topic])

    async def run() -> None:
        out = OutputProducer(dict(kafka_admin))
        await out.produce_acked(topic, b"k", b"alert")

    asyncio.run(run())
    assert [m.value() for m in reader.poll(5)] == [b"alert"]
