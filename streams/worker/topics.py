"""Topics and tables of the stream layer (names per DESIGN §4)."""

from __future__ import annotations

from streams.codecs.debezium import DebeziumConverter, topic_datasets
from streams.core.access import ERASURE_APPLIED_TOPIC, ERASURE_REQUEST_TOPIC
from streams.core.catalogue import catalogue
from streams.kafka.consent_log import CONSENT_TOPIC
from streams.settings import get_settings
from streams.worker.app import app
from streams.worker.faust_fixes.output import OutputTable

ENTERPRISE_EVENTS = "enterprise.events"
ENTERPRISE_PROFILES = "enterprise.profiles"
RISK_CHANGES = "risk.changes"
CONSENT_GRANTS = CONSENT_TOPIC  # consent.grants: system of record of consents (compacted, key = consent id)
ERASURE_REQUESTS = ERASURE_REQUEST_TOPIC  # control.erasures: `yurong erase` → the worker (key = USCC)
ERASURES_APPLIED = ERASURE_APPLIED_TOPIC  # control.erasures.applied: the merge's confirmations (key = USCC)


def alerts_topic_name(bank_id: str) -> str:
    return f"alerts.{bank_id}"


dept_topic_names = sorted(catalogue().by_topic())
dept_topics = app.topic(*dept_topic_names)

# Departments that run their own Debezium: topic → converter (empty unless configured).
debezium_converters = {
    topic: DebeziumConverter(catalogue().department(dept))
    for prefix, dept in get_settings().worker.debezium_prefixes.items()
    for topic in topic_datasets(catalogue().department(dept), prefix)
}
debezium_topics = app.topic(*sorted(debezium_converters)) if debezium_converters else None
enterprise_events = app.topic(ENTERPRISE_EVENTS)
risk_changes = app.topic(RISK_CHANGES)
consent_grants = app.topic(CONSENT_GRANTS, compacting=True)
erasure_requests = app.topic(ERASURE_REQUESTS)

# Latest profile per USCC, as Avro single-object bytes (avro/enterprise/profile.avsc), so the
# changelog topic is as readable as every other. Co-partitioned with enterprise.events
# (same key, same partition count).
# value_type=bytes makes Faust use the raw codec for the changelog values: by default tables use
# the JSON codec, which writes bytes unchanged but reads them back as UTF-8 text — every entry
# failed to recover after a restart and recovery never finished (tests/e2e/test_worker_restart.py).
# Keys stay JSON, so they come back as str.
profiles = OutputTable(app, name="enterprise_profile", default=None, beacon=app.tables.beacon,
                       partitions=app.conf.topic_partitions, value_type=bytes)
app.tables.add(profiles)
