"""Faust's worker without its terminal spinner (a private attribute of mode's Worker).

At ``-l warn`` or above the spinner sets the root logger to DEBUG so that it can spin on every
log call — then every ``log.debug`` in aiokafka and Faust builds a LogRecord per message (about
5 % of a busy worker's CPU, seen with py-spy in ``bench/risk_bench.py --profile``).
"""

from __future__ import annotations

import faust


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner. At ``-l warn`` or above the spinner sets the
    root logger to DEBUG so that it can spin on every log call — then every ``log.debug`` in
    aiokafka and Faust builds a LogRecord per message (about 5 % of a busy worker's CPU, seen
    with py-spy in bench/risk_bench.py --profile)."""

    def on_setup_root_logger(self, logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
