"""How the worker fetches records and hands them to its agents: two performance fixes, installed by
:func:`install` before the app is built (``streams/worker/app.py``) and measured with
``bench/risk_bench.py --profile`` (docs/benchmarks.md); tests/unit/test_faust_fetching.py explains both.

1. Fetch sizes. Faust creates its aiokafka consumer with ``fetch_min_bytes=1``: a fetch round trip
   per handful of records. This sets ``fetch_min_bytes``/``fetch_max_wait_ms`` from the settings
   (``YURONG_WORKER_FETCH_MIN_BYTES``/``_FETCH_MAX_WAIT_MS``). Fails without it:
   ``test_the_worker_consumer_fetches_with_the_configured_sizes``.
2. Eager hand-on. Faust's fetch loop hands every record on through ``wait_first``: four asyncio
   tasks per record. This runs the hand-on at once and goes through ``wait_first`` only when it has
   to wait. Fails without it: ``test_a_hand_on_that_need_not_wait_finishes_without_a_turn_of_the_event_loop``
   (the other tests there check that it still behaves as ``wait_first``).
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
    """Fix 1. Faust builds its aiokafka consumer with ``fetch_min_bytes=1``; this returns it with the
    configured fetch sizes. Fails without it: ``test_the_worker_consumer_fetches_with_the_configured_sizes``."""
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
    """Fix 2. Faust's ``wait_first`` runs every hand-on of the fetch loop in four tasks; this runs it
    eagerly and hands only what is left of a waiting one to Faust's ``wait_first``. Fails without it:
    ``test_a_hand_on_that_need_not_wait_finishes_without_a_turn_of_the_event_loop``."""
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
