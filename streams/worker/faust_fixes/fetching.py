"""How the worker fetches records and hands them to its agents: two changes to Faust's defaults
that cost a busy worker most of its time when records arrive as a steady stream (measured with
``bench/risk_bench.py --profile``; docs/benchmarks.md). Installed by :func:`install` before the
app is built (``streams/worker/app.py``).

**1. Fewer, larger fetches.** Faust creates its aiokafka consumer with ``fetch_min_bytes=1``, so
the broker answers a fetch as soon as any record is there. At a steady 2,000 records/s spread over
a hundred partitions every answer carries a handful of records, and aiokafka's fetch round trip
(request, response parsing, the hand-over between Faust's consumer thread and the agents' event
loop) is paid per handful: about as much CPU per record as the merge itself. Here the broker waits
until ``fetch_min_bytes`` are there or ``fetch_max_wait_ms`` have passed (settings
``YURONG_WORKER_FETCH_MIN_BYTES`` / ``_FETCH_MAX_WAIT_MS``; Kafka's own consumer calls them
``fetch.min.bytes`` / ``fetch.max.wait.ms``). The price is latency on a quiet topic: each hop
of the pipeline waits up to ``fetch_max_wait_ms`` for company.

**2. The hand-on of a record without four asyncio tasks.** faust-streaming 0.15.3's fetch loop
(``Consumer._drain_messages``) passes every record on with::

    await self.wait_first(callback(message), self.suspend_flow.wait())

so that a hand-on blocked by a full agent queue (or by flow control) is abandoned when a
rebalance suspends the flow. ``Service.wait_first`` wraps the callback, the suspend event and
the service's stopped and crashed events in four tasks and an ``asyncio.wait`` — about 29 µs per
record on this project's machine, against well under 1 µs for the callback itself when the queue
has room (measured). Every record goes through it once per stage, ingest and merge.

Here the callback runs eagerly: it is started right away and, if it finishes without waiting for
anything (the agent's queue had room — the usual case when the worker keeps up), that is the
whole hand-on. If it has to wait, what is left of it goes through Faust's ``wait_first`` exactly
as before (``_finish`` drives the started coroutine the way an asyncio task would), so a
suspended flow still abandons it. A hand-on when the flow is already suspended, and every other
use of ``wait_first``, take Faust's path unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode.services import WaitResults

_faust_wait_first = Consumer.wait_first
_faust_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer
_fetch = {"min_bytes": 1, "max_wait_ms": 500}


def _create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
    """Faust's aiokafka consumer, fetching ``fetch_min_bytes`` at a time (1)."""
    consumer = _faust_create_worker_consumer(self, transport)
    # read by AIOKafkaConsumer.start() when it builds its fetcher (Faust offers no setting for them)
    for attr, value in (("_fetch_min_bytes", _fetch["min_bytes"]), ("_fetch_max_wait_ms", _fetch["max_wait_ms"])):
        if not hasattr(consumer, attr):
            raise RuntimeError(f"this aiokafka's consumer has no {attr}: streams/worker/faust_fixes/fetching.py needs updating")
        setattr(consumer, attr, value)
    return consumer


async def _finish(coro: Coroutine, waiting_for: Any) -> Any:
    """Run ``coro``, started elsewhere and suspended on ``waiting_for`` (what its ``send``
    returned: an asyncio future, or None for a bare yield), to its end as a task would; if this
    is cancelled, the cancellation is delivered to ``coro`` where it waits."""
    while True:
        try:
            if waiting_for is None:
                await asyncio.sleep(0)
            else:
                waiting_for._asyncio_future_blocking = False  # the task protocol: the yield was taken
                await asyncio.wait((waiting_for,))  # its result or error is read by ``coro`` itself
        except asyncio.CancelledError:
            if waiting_for is not None:
                waiting_for.cancel()
            try:
                coro.throw(asyncio.CancelledError())
            except (asyncio.CancelledError, StopIteration):
                pass
            else:
                coro.close()  # it caught the cancellation and went on waiting: stop it
            raise
        try:
            waiting_for = coro.send(None)
        except StopIteration as done:
            return done.value


async def _wait_first_eager(self: Consumer, *coros: Any, timeout: Any = None) -> WaitResults:
    """``Consumer.wait_first`` that runs the fetch loop's hand-on eagerly (2)."""
    if timeout is not None or len(coros) != 2 or not asyncio.iscoroutine(coros[0]) or self.suspend_flow.is_set():
        return await _faust_wait_first(self, *coros, timeout=timeout)
    hand_on, suspended = coros
    try:
        waiting_for = hand_on.send(None)
    except StopIteration as done:
        _close(suspended)
        return WaitResults([hand_on], [done.value], False)
    except BaseException:
        _close(suspended)
        raise
    return await _faust_wait_first(self, _finish(hand_on, waiting_for), suspended)


def _close(awaitable: Any) -> None:
    if asyncio.iscoroutine(awaitable):
        awaitable.close()  # never awaited: closed, so Python does not warn about it


def install(fetch_min_bytes: int, fetch_max_wait_ms: int) -> None:
    """Patch Faust's consumer (idempotent; the last call's fetch sizes win)."""
    _fetch.update(min_bytes=fetch_min_bytes, max_wait_ms=fetch_max_wait_ms)
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    Consumer.wait_first = _wait_first_eager  # type: ignore[method-assign,assignment]  # a patch of mode's Service
