"""streams/worker/faust_fixes/fetching.py with Faust's own consumer (no broker): the worker's aiokafka consumer
fetches with the configured sizes; the fetch loop's hand-on of a record runs eagerly when nothing
makes it wait, and otherwise behaves as Faust's ``wait_first``: it finishes when what it waits
for is there, and is abandoned when a rebalance suspends the flow.

Both fixes are about the cost of a busy worker when records arrive as a steady stream (measured
with ``bench/risk_bench.py --profile``; docs/benchmarks.md).

1. Fetch sizes. Faust creates its aiokafka consumer with ``fetch_min_bytes=1``, so the broker
   answers a fetch as soon as any record is there. At a steady 2,000 records/s spread over a
   hundred partitions every answer carries a handful of records, and aiokafka's fetch round trip
   (request, response parsing, the hand-over between Faust's consumer thread and the agents'
   event loop) is paid per handful: about as much CPU per record as the merge itself. With the fix
   the broker waits until ``fetch_min_bytes`` are there or ``fetch_max_wait_ms`` have passed
   (settings ``YURONG_WORKER_FETCH_MIN_BYTES`` / ``_FETCH_MAX_WAIT_MS``; Kafka's own consumer calls
   them ``fetch.min.bytes`` / ``fetch.max.wait.ms``). The price is latency on a quiet topic: each
   hop of the pipeline waits up to ``fetch_max_wait_ms`` for company. Faust offers no setting for
   these, so the fix sets aiokafka's private attributes and refuses an aiokafka without them.
2. The hand-on of a record without four asyncio tasks. Faust's fetch loop
   (``Consumer._drain_messages``) passes every record on with::

       await self.wait_first(callback(message), self.suspend_flow.wait())

   so that a hand-on blocked by a full agent queue (or by flow control) is abandoned when a
   rebalance suspends the flow. ``Service.wait_first`` wraps the callback, the suspend event and
   the service's stopped and crashed events in four tasks and an ``asyncio.wait``: about 29 µs per
   record on this project's machine, against well under 1 µs for the callback itself when the
   queue has room. Every record goes through it once per stage, ingest and merge.

   With the fix the callback runs eagerly: it is started right away and, if it finishes without
   waiting for anything (the agent's queue had room, the usual case when the worker keeps up),
   that is the whole hand-on. If it has to wait, what is left of it goes through Faust's
   ``wait_first`` unchanged (``_finish`` drives the started coroutine the way an asyncio task
   would), so a suspended flow still abandons it. A hand-on when the flow is already suspended,
   and every other use of ``wait_first``, take Faust's path unchanged.
"""

from __future__ import annotations

import asyncio
import warnings

import faust
import pytest

from streams.worker.faust_fixes import fetching


def _consumer(name: str):
    """Faust's consumer on the running event loop (mode services keep the loop they were made on)."""
    fetching.install(fetch_min_bytes=1, fetch_max_wait_ms=500)
    consumer = faust.App(f"fetching-{name}", broker="kafka://127.0.0.1:1").consumer
    consumer.loop = asyncio.get_running_loop()
    return consumer


def test_the_worker_consumer_fetches_with_the_configured_sizes():
    async def main() -> None:
        fetching.install(fetch_min_bytes=65536, fetch_max_wait_ms=50)
        try:
            app = faust.App("fetching-sizes", broker="kafka://127.0.0.1:1")
            consumer = app.consumer._thread._create_worker_consumer(app.transport)
            assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (65536, 50)
        finally:
            fetching.install(fetch_min_bytes=1, fetch_max_wait_ms=500)

    asyncio.run(main())


def test_a_hand_on_that_need_not_wait_finishes_without_a_turn_of_the_event_loop():
    queue: list[int] = []

    async def hand_on(record: int) -> None:
        queue.append(record)

    async def main() -> None:
        consumer = _consumer("eager")
        turns = []
        asyncio.get_running_loop().call_soon(turns.append, "loop turned")
        for record in range(100):
            await consumer.wait_first(hand_on(record), consumer.suspend_flow.wait())
        assert queue == list(range(100))
        assert turns == [], "Faust's wait_first runs every hand-on in tasks: at least one loop turn each"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unused suspend wait is closed, never left un-awaited
        asyncio.run(main())


def test_a_hand_on_that_waits_finishes_when_what_it_waits_for_is_there():
    room: asyncio.Future

    async def hand_on() -> str:
        got = await room  # a full agent queue: wait for room
        await asyncio.sleep(0)  # a bare yield on the way
        return got

    async def main() -> None:
        consumer = _consumer("waits")
        nonlocal room
        room = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(consumer.wait_first(hand_on(), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        room.set_result("room")
        result = await asyncio.wait_for(waiting, 1)
        assert result.results == ["room"] and not result.stopped

    asyncio.run(main())


def test_an_error_while_waiting_reaches_the_hand_on_and_the_fetcher():

    async def hand_on(gate: asyncio.Future) -> None:
        await gate

    async def main() -> None:
        consumer = _consumer("error")
        gate = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(consumer.wait_first(hand_on(gate), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        gate.set_exception(RuntimeError("decode failed"))
        with pytest.raises(RuntimeError, match="decode failed"):
            await asyncio.wait_for(waiting, 1)

    asyncio.run(main())


def test_an_error_in_the_eager_part_reaches_the_fetcher():

    async def hand_on() -> None:
        raise ValueError("bad record")

    async def main() -> None:
        consumer = _consumer("eager-error")
        await consumer.wait_first(hand_on(), consumer.suspend_flow.wait())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="bad record"):
            asyncio.run(main())


def test_a_waiting_hand_on_is_abandoned_when_a_rebalance_suspends_the_flow():
    cancelled = []

    async def hand_on(room: asyncio.Future) -> None:
        try:
            await room
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        consumer = _consumer("suspend")
        room = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(consumer.wait_first(hand_on(room), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()
        result = await asyncio.wait_for(waiting, 1)
        assert result.results == [True]  # the suspend event won, as with Faust's wait_first
        await asyncio.sleep(0)  # the cancelled hand-on's last step
        assert cancelled == [True] and room.cancelled()

    asyncio.run(main())


def test_a_hand_on_while_the_flow_is_suspended_takes_fausts_path():
    async def hand_on() -> None:
        pass

    async def main() -> None:
        consumer = _consumer("suspended")
        consumer.suspend_flow.set()
        turns = []
        asyncio.get_running_loop().call_soon(turns.append, "loop turned")
        await asyncio.wait_for(consumer.wait_first(hand_on(), consumer.suspend_flow.wait()), 1)
        assert turns == ["loop turned"], "not run eagerly: Faust's tasks decide between hand-on and suspension"

    asyncio.run(main())
