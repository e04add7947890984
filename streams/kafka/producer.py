"""The agents' output records go through librdkafka (confluent-kafka), not Faust's producer.

Why: with Faust's aiokafka producer every record is packed, batched and written to the socket
by Python on the worker's one event-loop thread; py-spy put that at about a third of a busy
worker's CPU (``bench/risk_bench.py --profile``). librdkafka does the same in its own C threads,
outside the GIL — on a second core when there is one.

At-least-once stays as Faust has it: Faust flushes its producer before every offset commit
(``Consumer._commit_offsets``), and ``streams.worker.faust_fixes.output.attach`` makes that flush
also wait until Kafka acknowledged every record this producer took before it — so a committed input offset never
passes an output that is not in Kafka. A record Kafka refuses for good (librdkafka retried it
until ``message.timeout.ms``) fails the flush, the commit does not happen and the worker stops
(crash-only): the restarted worker reprocesses from the last commit.

Partitioning is Java's (``murmur2_random``), as Faust's producer had it: a USCC keeps its
partition of ``enterprise.events`` and with it its share of the profile table.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException, Producer

Headers = list[tuple[str, str | bytes | None]]


class OutputProducer:
    """Produce from the event loop; ``flush()`` before a commit; ``produce_acked()`` to wait for
    one record's acknowledgement (an alert is recorded as delivered only after it)."""

    def __init__(self, config: Mapping[str, object]) -> None:
        self._p = Producer({"enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random",
                            "linger.ms": 5, **config})
        self._next = 0  # sequence number of the next record
        self._pending: collections.deque[int] = collections.deque()  # produced, in order
        self._done: set[int] = set()  # acknowledged out of order, not yet popped off _pending
        self._failed: list[KafkaError] = []
        self._poller: asyncio.Task | None = None

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None,
                on_ack: asyncio.Future | None = None, partition: int | None = None) -> None:
        """Queue one record; ``partition`` None: by key, as Faust's producer would. A full local
        queue (librdkafka's ``queue.buffering.max.messages``) holds the loop until it drains.
        With ``on_ack`` the caller awaits the outcome and handles a refusal; otherwise a refusal
        fails the next :meth:`flush`."""
        seq = self._next
        self._next += 1

        def delivered(err: KafkaError | None, _msg) -> None:
            self._done.add(seq)
            while self._pending and self._pending[0] in self._done:
                self._done.discard(self._pending.popleft())
            if on_ack is None:
                if err is not None:
                    self._failed.append(err)
            elif not on_ack.done():
                if err is None:
                    on_ack.set_result(None)
                else:
                    on_ack.set_exception(KafkaException(err))

        while True:
            try:
                if partition is None:
                    self._p.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
                else:
                    self._p.produce(topic, value=value, key=key, headers=headers, partition=partition,
                                    on_delivery=delivered)
                break
            except BufferError:  # queue.buffering.max.messages reached: let librdkafka drain
                self._p.poll(0.05)
        self._pending.append(seq)
        self._p.poll(0)
        self._ensure_poller()

    async def produce_acked(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        """Produce and wait until Kafka acknowledged this record (raises KafkaException if refused)."""
        ack = asyncio.get_running_loop().create_future()
        self.produce(topic, key, value, headers, on_ack=ack)
        await ack

    async def settled(self) -> bool:
        """Wait until every record produced before this call has its delivery report; True if
        none of them (nor any earlier one) was refused. A refusal stays for the next :meth:`flush`,
        which must still fail on it (the merge confirms an erasure only after this)."""
        last = self._next - 1
        while self._pending and self._pending[0] <= last:
            self._p.poll(0)
            await asyncio.sleep(0.002)
        return not self._failed

    async def flush(self) -> None:
        """Wait until every record produced before this call is acknowledged; raise if any of
        them (or any earlier one) was refused."""
        if not await self.settled():
            err, self._failed = self._failed[0], []
            raise KafkaException(err)

    def _ensure_poller(self) -> None:
        """Serve delivery reports on the loop while records are in flight."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_while_pending())

    async def _poll_while_pending(self) -> None:
        while self._pending:
            self._p.poll(0)
            await asyncio.sleep(0.002)
