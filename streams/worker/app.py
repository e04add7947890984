"""The Faust app — built here and nothing else. Topics and the table live in
``streams.worker.topics``, agents in ``streams.worker.agents`` (discovered at start-up); the
corrections of Faust's internals are installed from ``streams.worker.faust_fixes`` first."""

from __future__ import annotations

import faust

from streams.core.access import WORKER
from streams.kafka.security import kafka_login
from streams.settings import get_settings
from streams.worker.faust_fixes import acks, check_version, fetching, liveness
from streams.worker.faust_fixes.quiet_worker import Worker

_s = get_settings()
check_version()  # the fixes below are written for one Faust version
acks.install()  # Faust never commits past a record no agent handled (faust_fixes/acks.py)
# larger fetches, and records handed to the agents without four tasks each (faust_fixes/fetching.py)
fetching.install(_s.worker.fetch_min_bytes, _s.worker.fetch_max_wait_ms)

_login = kafka_login(WORKER, _s)
app = faust.App(
    _s.worker.app_id,
    broker=[f"kafka://{h.strip()}" for h in _s.kafka.bootstrap_servers.split(",")],
    # SASL_SSL with SCRAM-SHA-512 as the worker principal (DESIGN §8), verifying the broker's certificate
    broker_credentials=faust.SASLCredentials(username=_login.username, password=_login.password.get_secret_value(),
                                             mechanism="SCRAM-SHA-512", ssl_context=_login.ssl_context()),
    # a topic created after the worker subscribed (a department's first connector run) is in its
    # metadata within seconds, not after aiokafka's default of five minutes
    consumer_metadata_max_age_ms=_s.worker.metadata_max_age_ms,
    store=_s.worker.store,
    autodiscover=["streams.worker.agents"],
    datadir=str(_s.paths.home / "faust" / _s.worker.app_id),
    origin="streams.worker",
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
liveness.install(app, interval=_s.worker.reread_check_s)  # re-read records Faust dropped (faust_fixes/liveness.py)
