"""The Faust app — built here and nothing else. Topics, tables and agents live in their own
modules (``streams.topics``, ``streams.agents``) and are discovered at start-up."""

from __future__ import annotations

import faust

from . import acks, fetching, liveness
from .settings import get_settings


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner. At ``-l warn`` or above the spinner sets the
    root logger to DEBUG so that it can spin on every log call — then every ``log.debug`` in
    aiokafka and Faust builds a LogRecord per message (about 5 % of a busy worker's CPU, seen
    with py-spy in bench/risk_bench.py --profile)."""

    def on_setup_root_logger(self, logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


_s = get_settings()
acks.install()  # Faust never commits past a record no agent handled (see streams/acks.py)
# larger fetches, and records handed to the agents without four tasks each (see streams/fetching.py)
fetching.install(_s.worker.fetch_min_bytes, _s.worker.fetch_max_wait_ms)

app = faust.App(
    _s.worker.app_id,
    broker=[f"kafka://{h.strip()}" for h in _s.kafka.bootstrap_servers.split(",")],
    store=_s.worker.store,
    autodiscover=["streams.agents"],
    datadir=str(_s.paths.home / "faust" / _s.worker.app_id),
    origin="streams",
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=_s.kafka.topic_partitions,
    topic_replication_factor=_s.kafka.replication_factor,
    consumer_auto_offset_reset="earliest",
    web_port=_s.worker.web_port,
    web_host="127.0.0.1" if _s.metrics.bind == "127.0.0.1" else "0.0.0.0",
    # Commits every second, from Faust's background task. A commit by count (every N records) runs
    # in the fetch loop itself, which then hands nothing on until the outputs are flushed and the
    # offsets committed (~20–50 ms under load): Faust's default of 10,000 keeps that rare.
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
    producer_linger_ms=5,
    table_cleanup_interval=60.0,
    Worker=Worker,  # without the terminal spinner (see Worker)
)
liveness.install(app, interval=_s.worker.reread_check_s)  # re-read records Faust dropped (streams/liveness.py)
