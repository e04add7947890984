"""``faust_fixes.output.attach``: Faust's pre-commit flush also waits for the librdkafka output
producer, so an offset is never committed past an output Kafka has not acknowledged."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from confluent_kafka import KafkaException
from faust.transport.consumer import Consumer

from streams.kafka.producer import OutputProducer
from streams.worker.faust_fixes.output import attach


class FaustProducer:
    """Stands in for Faust's aiokafka producer: only its flush is used here."""

    def __init__(self) -> None:
        self.flushed = 0

    async def flush(self) -> None:
        self.flushed += 1


class App:
    def __init__(self) -> None:
        self.producer = FaustProducer()


def test_faust_flushes_its_producer_before_committing_offsets():
    """The hook the fix relies on: Faust's commit path awaits ``app.producer.flush()`` first."""
    assert "await self.app.producer.flush()" in inspect.getsource(Consumer._commit_offsets)


def _unreachable_output() -> OutputProducer:
    # nothing listens on port 1: the record is never acknowledged and fails after the timeout
    return OutputProducer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 300,
                           "enable.idempotence": False, "socket.connection.setup.timeout.ms": 1000})


def test_the_pre_commit_flush_fails_while_an_output_is_not_acknowledged():
    async def run() -> None:
        app, out = App(), _unreachable_output()
        attach(app, out)
        out.produce("enterprise.events", b"k", b"v")
        with pytest.raises(KafkaException):
            await app.producer.flush()  # so the commit that follows it does not happen
        assert app.producer.flushed == 1  # Faust's own flush ran too

    asyncio.run(run())


def test_without_attach_faust_would_commit_past_the_unacknowledged_output():
    async def run() -> None:
        app, out = App(), _unreachable_output()
        out.produce("enterprise.events", b"k", b"v")
        await app.producer.flush()  # returns: nothing ties the commit to the output
        with pytest.raises(KafkaException):
            await out.flush()

    asyncio.run(run())
