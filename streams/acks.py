"""Faust's pure-Python stream path acknowledges records it never handled; here it does not.

A Faust stream skips the records it takes off an agent's queue during a rebalance (flow control
suspended, or a record fetched in an older consumer generation) without handing them to the
agent. faust-streaming 0.15.3 has two implementations of that loop: the Cython one
(``faust/_cython/streams.pyx``, used when the extension is built, as on this project's machines)
leaves a skipped record unacknowledged, but the pure-Python one (``Stream._py_aiter``, used where
the extension is missing, e.g. PyPy or a source install without a compiler) *acknowledges* it
(``value = skipped_value`` … ``event.ack()``). An acknowledged offset can be committed before the
consumer seeks back to the committed offsets, and then the record is never read again: an
at-least-once hole next to the one FIELD-NOTES names (faust-streaming#315). With this guard both
paths behave the same: only records a stream actually took up (``message.tracked``, set when the
stream hands the record on) are acknowledged.
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
