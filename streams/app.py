"""The Faust app — built here and nothing else. Topics, tables and agents live in their own
modules (``streams.topics``, ``streams.agents``) and are discovered at start-up."""

from __future__ import annotations

import faust

from .settings import get_settings

_s = get_settings()

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
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    producer_linger_ms=5,
    table_cleanup_interval=60.0,
)
