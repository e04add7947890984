"""Faust acknowledges records it never handled; here it does not.

A Faust stream *acknowledges* the records it skips during a rebalance — taken off an agent's
queue while flow control is suspended, or fetched in an older consumer generation — without
handing them to the agent (``Stream._py_aiter``: ``value = skipped_value`` … ``event.ack()``).
An acknowledged offset can be committed before the consumer seeks back to the committed offsets,
and then the record is never read again: an at-least-once hole next to the one FIELD-NOTES names
(faust-streaming#315). Only records a stream actually took up (``message.tracked``, set when the
stream hands the record on) are acknowledged now; a skipped one stays unacknowledged and is read
again after the seek.
"""

from __future__ import annotations

from faust.events import Event

_faust_event_ack = Event.ack


def _ack_only_tracked(self: Event) -> bool:
    """``Event.ack`` that refuses records no stream took up (see the module docstring)."""
    message = self.message
    if not message.tracked and message.topic in self.app.topics.acking_topics:
        return False
    return _faust_event_ack(self)


def install() -> None:
    """Make Faust's events acknowledge only records a stream took up (idempotent)."""
    Event.ack = _ack_only_tracked  # type: ignore[method-assign]
