"""The connectors create their topics with the configured replication factor
(``YURONG_KAFKA_REPLICATION_FACTOR``), not a hard-wired 1.

The local broker is one node, so a replication factor above the broker count must make topic
creation fail with INVALID_REPLICATION_FACTOR, while the setting's 1 creates every topic with one
replica (read back through the AdminClient). Every topic here has a fresh name: the
department is a throwaway copy with a unique name (its own connector principal and ACLs), so its
``connect.<dept>.*``, dataset and dead-letter topics are new and no topic left by earlier runs
hides a refusal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from connectors.filedrop import FileDropSource
from connectors.fleet import build_runner
from connectors.offsets import OffsetStore, connect_topic
from connectors.runner import producer_config
from streams.codecs.serde import schema_store
from streams.core.access import connector_principal, connector_rules
from streams.core.catalogue import Dataset, Department, catalogue
from streams.kafka.admin import ensure_topics
from streams.kafka.dlq import dlq_topic
from streams.kafka.security import client_conf
from streams.settings import Settings
from tests.conftest import letters, wait_for

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class _RenamedDataset(Dataset):
    """A catalogue dataset published under another department's name (schema, table and key unchanged)."""

    topic_dept: str = ""

    @property
    def topic(self) -> str:
        return f"dept.{self.topic_dept}.{self.name}"


def _renamed(dept: Department, name: str) -> Department:
    """``dept`` as a throwaway department ``name``: its principal is ``connector-<name>`` and its
    topics are ``dept.<name>.…`` and ``connect.<name>.…``."""
    datasets: dict[str, Dataset] = {
        k: _RenamedDataset(**{f.name: getattr(ds, f.name) for f in dataclasses.fields(ds)}, topic_dept=name)
        for k, ds in dept.datasets.items()}
    return dataclasses.replace(dept, dept=name, datasets=datasets)


def _settings_with(monkeypatch: pytest.MonkeyPatch, replication_factor: int) -> Settings:
    """The settings a process reads with ``YURONG_KAFKA_REPLICATION_FACTOR`` set so."""
    monkeypatch.setenv("YURONG_KAFKA_REPLICATION_FACTOR", str(replication_factor))
    settings = Settings()
    assert settings.kafka.replication_factor == replication_factor
    return settings


@pytest.fixture
def admin(kafka_admin) -> AdminClient:
    return AdminClient(dict(kafka_admin))


@pytest.fixture
def beyond_brokers(admin) -> int:
    """A replication factor the cluster cannot satisfy (2 on the single-node test broker)."""
    return len(admin.list_topics(timeout=15).brokers) + 1


@pytest.fixture
def temp_dept(unique, admin, principals, monkeypatch) -> Iterator[str]:
    """A throwaway department name whose connector principal exists with the connector's ACLs
    (its password in YURONG_KAFKA_PASSWORD, as a deployment would set it); its topics are deleted
    afterwards."""
    name = f"t{letters(unique)}"
    conf = principals.add(connector_principal(name), connector_rules(name))
    monkeypatch.setenv("YURONG_KAFKA_PASSWORD", conf["sasl.password"])
    yield name
    mine = [t for t in admin.list_topics(timeout=15).topics if f".{name}." in t]
    if mine:
        for fut in admin.delete_topics(mine, operation_timeout=15).values():
            fut.result()


def _replication_factors(admin: AdminClient, topics: list[str]) -> dict[str, set[int] | None]:
    """Topic → the replica counts of its partitions; None for a topic that does not exist."""
    md = admin.list_topics(timeout=15).topics
    return {t: ({len(p.replicas) for p in md[t].partitions.values()} if t in md else None) for t in topics}


def _created(admin: AdminClient, topics: list[str]) -> dict[str, set[int] | None]:
    """``_replication_factors`` once every topic shows in the metadata (a topic created a moment ago may not yet)."""
    def all_there() -> dict[str, set[int] | None] | None:
        found = _replication_factors(admin, topics)
        return found if None not in found.values() else None

    return wait_for(all_there, 30, lambda: f"metadata of every topic: {_replication_factors(admin, topics)}")


def _assert_refused(exc: pytest.ExceptionInfo[KafkaException]) -> None:
    err = exc.value.args[0]
    assert isinstance(err, KafkaError) and err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err


def test_build_runner_creates_every_topic_with_the_configured_replication_factor(
        kafka_admin, monkeypatch, admin, beyond_brokers, temp_dept):
    dept = _renamed(catalogue().department("market"), temp_dept)  # postgres: its source connects only at start()
    dataset_topics = sorted(ds.topic for ds in dept.datasets.values())
    offsets_topic, heartbeats_topic = connect_topic(temp_dept, "offsets"), connect_topic(temp_dept, "heartbeats")
    topics = [offsets_topic, heartbeats_topic, *dataset_topics, *map(dlq_topic, dataset_topics)]
    schemas = schema_store()
    too_many = _settings_with(monkeypatch, beyond_brokers)

    # the offset store (connect.<dept>.offsets) asks for the configured factor: refused
    with pytest.raises(KafkaException) as refused:
        build_runner(dept, too_many, schemas)
    _assert_refused(refused)
    assert _replication_factors(admin, [offsets_topic]) == {offsets_topic: None}

    # the offsets topic there already: the runner's own topics (dataset, dead-letter, heartbeats) are refused
    ensure_topics(kafka_admin, {offsets_topic: {"cleanup.policy": "compact"}}, partitions=1)
    with pytest.raises(KafkaException) as refused:
        build_runner(dept, too_many, schemas)
    _assert_refused(refused)
    assert set(_replication_factors(admin, topics[1:]).values()) == {None}

    # the configured 1: every topic is created, with one replica
    runner = build_runner(dept, _settings_with(monkeypatch, 1), schemas)
    assert runner.heartbeat_interval_s, "heartbeats on, so connect.<dept>.heartbeats is created"
    assert _created(admin, topics) == dict.fromkeys(topics, {1})


def test_file_drop_source_creates_connect_files_with_the_offset_stores_replication_factor(
        kafka_admin, settings, admin, beyond_brokers, temp_dept, tmp_path: Path):
    dept = _renamed(catalogue().department("water"), temp_dept)
    assert dept.kind == "file"
    schemas = schema_store()
    kafka = client_conf(connector_principal(temp_dept), Settings())
    files_topic = connect_topic(temp_dept, "files")
    # the offsets topic exists, so only connect.<dept>.files is left to create
    ensure_topics(kafka_admin, {connect_topic(temp_dept, "offsets"): {"cleanup.policy": "compact"}}, partitions=1)

    offsets = OffsetStore(kafka, temp_dept, schemas, Producer(producer_config(kafka)), replication_factor=beyond_brokers)
    source = FileDropSource(dept, tmp_path / "refused", offsets, schemas, settings.source)
    with pytest.raises(KafkaException) as refused:
        source.start()
    _assert_refused(refused)
    assert _replication_factors(admin, [files_topic]) == {files_topic: None}

    offsets = OffsetStore(kafka, temp_dept, schemas, Producer(producer_config(kafka)), replication_factor=1)
    source = FileDropSource(dept, tmp_path / "created", offsets, schemas, settings.source)
    source.start()
    source.stop()
    assert _created(admin, [files_topic]) == {files_topic: {1}}
