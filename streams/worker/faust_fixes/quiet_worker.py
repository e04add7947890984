"""Faust's worker without its terminal spinner (a private attribute of mode's Worker).

Faust's worker, at ``-l warn`` or above, sets the root logger to DEBUG so that its spinner can spin
on every log call: every ``log.debug`` in aiokafka and Faust then builds a LogRecord per message.
The fix drops the spinner, so the root logger keeps the level asked for (observable: no spinner on
the terminal, no debug records built). No test fails without it: it is a performance fix, about
5 % of a busy worker's CPU, measured with py-spy in ``bench/risk_bench.py --profile``.
"""

from __future__ import annotations

import faust


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner, so the root logger is not set to DEBUG for it
    (see the module docstring)."""

    def on_setup_root_logger(self, logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
