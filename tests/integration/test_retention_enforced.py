"""Raw-PII topics get their retention applied and corrected at start-up, not only at creation.

``dept.*`` and their dead letters hold raw personal data: their ``retention.ms`` is
``YURONG_KAFKA_DEPT_RETENTION_MS``. Here someone (the super user) changed it on existing topics;
the owner's next start sets it back: a department's connector for its topics, the worker for every
dead-letter topic of the departments, including a Debezium-fed department's."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from connectors.fleet import build_runner
from streams.codecs.debezium import topic_datasets
from streams.codecs.serde import schema_store
from streams.core.access import WORKER
from streams.core.catalogue import catalogue
from streams.kafka.admin import ensure_topics, worker_topics
from streams.kafka.security import client_conf

pytestmark = pytest.mark.integration

DRIFTED = "86400000000"  # 1,000 days: far longer than raw PII may stay


def _set_retention(admin: AdminClient, topics: list[str], value: str) -> None:
    resources = [ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
        ConfigEntry("retention.ms", value, incremental_operation=AlterConfigOpType.SET)]) for t in topics]
    for fut in admin.incremental_alter_configs(resources).values():
        fut.result()


def _retention(admin: AdminClient, topics: list[str]) -> dict[str, str]:
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics])
    return {r.name: fut.result()["retention.ms"].value for r, fut in described.items()}


def test_a_departments_connector_corrects_the_retention_of_its_raw_topics(kafka_admin, settings):
    admin = AdminClient(dict(kafka_admin))
    dept = catalogue().department("market")  # postgres: its source connects only at start()
    raw = sorted(ds.topic for ds in dept.datasets.values())
    topics = raw + [f"dlq.{t}" for t in raw]
    _set_retention(admin, topics, DRIFTED)
    assert set(_retention(admin, topics).values()) == {DRIFTED}

    build_runner(dept, settings, schema_store())  # what `yurong connect market` does first

    assert _retention(admin, topics) == dict.fromkeys(topics, str(settings.kafka.dept_retention_ms))


def test_the_worker_corrects_the_retention_of_every_departments_dead_letters(kafka_admin, settings, unique):
    admin = AdminClient(dict(kafka_admin))
    prefix = f"dbz{unique}"  # a department that runs its own Debezium
    debezium_dlqs = [f"dlq.{t}" for t in topic_datasets(catalogue().department("market"), prefix)]
    ensure_topics(kafka_admin, dict.fromkeys(debezium_dlqs, {}))  # created earlier without a retention
    dept_dlqs = ["dlq.dept.tax.tax_filing", "dlq.dept.water.water_usage"]
    _set_retention(admin, dept_dlqs, DRIFTED)

    # what `yurong worker` declares at start-up, as the worker
    declared = worker_topics(sorted(catalogue().by_topic()), settings.kafka.dept_retention_ms, debezium_dlqs)
    ensure_topics(client_conf(WORKER, settings), declared, partitions=settings.kafka.topic_partitions)

    want = str(settings.kafka.dept_retention_ms)
    assert _retention(admin, dept_dlqs + debezium_dlqs) == dict.fromkeys(dept_dlqs + debezium_dlqs, want)
    assert not [t for t in declared if t.startswith("dept.") or t == "consent.grants"], "not the worker's to declare"
    for fut in admin.delete_topics(debezium_dlqs, operation_timeout=30).values():
        fut.result()
