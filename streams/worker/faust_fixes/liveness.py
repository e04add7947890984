"""The stall guard: re-read records a Faust stream dropped without handling them.

faust-streaming 0.15.3 can drop a fetched record without handing it to its agent or acknowledging
it. ``acks.py`` keeps every commit from passing it, but when the drop follows a restart's seek to
the committed offsets nothing fetches the record again until the next rebalance. The guard, every
``interval`` seconds while no agent has records queued: a partition of an acknowledging topic
fetched past its committed offset with none of its records being handled, unchanged over two checks,
is sought back to its committed offset (a warning; ``yurong_stream_rereads_total``). Re-reading is
safe because every agent is idempotent. tests/unit/test_liveness.py pins the decision and explains
it; without the guard tests/e2e/test_no_skip.py::test_a_worker_stopped_or_killed_while_redis_is_down_skips_nothing
times out in ``NoSkipRun.settle`` whenever a restart drops a waiting change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from faust.types import TP

from monitoring.metrics import STREAM_REREADS
from streams.worker.faust_fixes.acks import first_handled, log_starts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionState:
    """What the consumer knows about one partition at one check."""

    committed: int  # the next offset a restarted worker would read (the log start if nothing is committed)
    position: int | None  # the next offset the consumer will fetch (None: not known)
    busy: bool  # see busy()


def busy(in_flight: bool, committed: int, first_handled: int | None) -> bool:
    """A record of the partition is in an agent's hands, or handled and waiting for a commit that
    can happen (the committed offset's own record is among the handled: streams/worker/faust_fixes/acks.py 2)."""
    return in_flight or (first_handled is not None and first_handled <= committed)


def stalled(previous: Mapping[TP, PartitionState], current: Mapping[TP, PartitionState]) -> set[TP]:
    """Partitions fetched past their commit with nothing being handled, unchanged since the last check."""
    return {tp for tp, now in current.items()
            if not now.busy and now.position is not None and now.position > now.committed and previous.get(tp) == now}


class StallGuard:
    """Checks a Faust app's stream partitions (see the module docstring); ``check()`` from a timer."""

    def __init__(self, app) -> None:
        self.app = app
        self._previous: dict[TP, PartitionState] = {}

    def _quiet(self) -> bool:
        """No rebalance under way and no agent with records queued (the fetcher is not held up)."""
        app = self.app
        if app.rebalancing or not app.flow_control.is_active():
            return False
        return all(ch.queue.empty() for channels in list(app.topics._tp_index.values()) for ch in channels)

    async def _states(self) -> dict[TP, PartitionState]:
        consumer = self.app.consumer
        acking = self.app.topics.acking_topics
        in_flight = {m.tp for m in list(consumer._unacked_messages)}
        tps = [tp for tp in consumer.assignment() if tp.topic in acking]
        resume_from = {tp: consumer._committed_offset.get(tp) for tp in tps}
        never = [tp for tp, offset in resume_from.items() if offset is None]
        if never:  # nothing committed yet (Faust keeps a committed 0 as None too): a restart reads from the start
            resume_from.update(await log_starts(consumer, never, timeout=5.0))  # unanswered: next time
        handling = {tp: busy(tp in in_flight, offset, first_handled(consumer, tp))
                    for tp, offset in resume_from.items() if offset is not None}
        # The fetch position of every idle partition: a record can be dropped before the fetcher
        # hands it on (the read offset never moves) as well as after (streams/worker/faust_fixes/acks.py 1).
        idle = [tp for tp, b in handling.items() if not b]
        positions = dict(zip(idle, await asyncio.gather(*(self._position(tp) for tp in idle)), strict=True))
        return {tp: PartitionState(committed=resume_from[tp], position=positions.get(tp), busy=b)
                for tp, b in handling.items()}

    async def _position(self, tp: TP) -> int | None:
        try:
            return await asyncio.wait_for(self.app.consumer.position(tp), timeout=5.0)
        except (TimeoutError, KafkaError):
            return None  # e.g. revoked meanwhile: look again next time

    async def check(self) -> set[TP]:
        """Seek every stalled partition back to its committed offset; return them."""
        if not self._quiet():
            self._previous = {}
            return set()
        current = await self._states()
        for topic in {tp.topic for tp in current}:
            STREAM_REREADS.labels(topic)  # exported at 0 from the start: "no re-reads" rather than no data
        found = stalled(self._previous, current)
        for tp in sorted(found):
            state = current[tp]
            assert state.position is not None  # stalled() only finds partitions whose position is known
            log.warning("%s[%d]: fetched up to offset %d but offsets from %d on were never handled (Faust dropped "
                        "them around a rebalance); reading them again", tp.topic, tp.partition, state.position - 1,
                        state.committed)
            self.app.consumer._gap.pop(tp, None)  # holes seen in the dropped run are looked at again
            try:
                await self.app.consumer.seek(tp, state.committed)
            except KafkaError as exc:  # e.g. revoked meanwhile: the next assignment seeks anyway
                log.warning("%s[%d]: seek back failed (%s)", tp.topic, tp.partition, exc)
                continue
            STREAM_REREADS.labels(tp.topic).inc()
        self._previous = {tp: s for tp, s in current.items() if tp not in found}
        return found


def install(app, interval: float = 5.0) -> StallGuard:
    """Run a :class:`StallGuard` on ``app`` every ``interval`` seconds."""
    guard = StallGuard(app)

    @app.timer(interval=interval, on_leader=False)
    async def reread_dropped_records() -> None:
        await guard.check()

    return guard
