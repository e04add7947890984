"""streams/acks.py with Faust's own objects (no broker): a record a stream skipped during a
rebalance is not acknowledged, so its offset cannot be committed; a handled one is."""

from __future__ import annotations

import faust
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams import acks


def _event(app: faust.App, offset: int, tracked: bool) -> Event:
    message = ConsumerMessage("t", 0, offset, 0.0, None, 0, None, None, b"k", b"v", None, tp=TP("t", 0), generation_id=1)
    message.tracked = tracked  # a stream sets it when it hands the record to the agent
    message.incref(1)
    return Event(app, b"k", b"v", None, message)


def test_only_records_a_stream_took_up_are_acknowledged():
    acks.install()
    app = faust.App("acks-test", broker="kafka://127.0.0.1:1")
    app.topics.acking_topics.add("t")
    consumer = app.consumer
    assert _event(app, 5, tracked=False).ack() is False  # skipped while the flow was suspended
    assert dict(consumer._acked) == {}
    assert _event(app, 6, tracked=True).ack() is True
    assert dict(consumer._acked) == {TP("t", 0): [6]}
