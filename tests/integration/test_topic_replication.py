"""The connectors create their topics with the configured replication factor
(``YURONG_KAFKA_REPLICATION_FACTOR``), not a hard-wired 1.

The local broker is one node, so a replication factor above the broker count must make topic
creation fail with INVALID_REPLICATION_FACTOR, while the setting's 1 creates every topic with one
replica (read back through the AdminClient). Every topic here has a fresh name: the shared
``connect.offsets``, ``connect.heartbeats`` and ``connect.files`` are renamed for the test, and the
department's dataset topics get a unique prefix, so no topic left by earlier runs hides a refusal.
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
from connectors.offsets import OffsetStore
from connectors.runner import producer_config
from streams.codecs.serde import schema_store
from streams.core.catalogue import Dataset, Department, catalogue
from streams.kafka.admin import ensure_topics
from streams.kafka.dlq import dlq_topic
from streams.settings import Settings
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class _PrefixedDataset(Dataset):
    """A catalogue dataset whose topic carries a test prefix (schema, table and key unchanged)."""

    prefix: str = ""

    @property
    def topic(self) -> str:
        return f"{self.prefix}.{super().topic}"


def _prefixed(dept: Department, prefix: str) -> Department:
    datasets: dict[str, Dataset] = {name: _PrefixedDataset(**{f.name: getattr(ds, f.name) for f in dataclasses.fields(ds)}, prefix=prefix)
                for name, ds in dept.datasets.items()}
    return dataclasses.replace(dept, datasets=datasets)


def _settings_with(monkeypatch: pytest.MonkeyPatch, replication_factor: int) -> Settings:
    """The settings a process reads with ``YURONG_KAFKA_REPLICATION_FACTOR`` set so."""
    monkeypatch.setenv("YURONG_KAFKA_REPLICATION_FACTOR", str(replication_factor))
    settings = Settings()
    assert settings.kafka.replication_factor == replication_factor
    return settings


@pytest.fixture
def admin(kafka_bootstrap) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def beyond_brokers(admin) -> int:
    """A replication factor the cluster cannot satisfy (2 on the single-node test broker)."""
    return len(admin.list_topics(timeout=15).brokers) + 1


@pytest.fixture
def fixed_topics(monkeypatch, unique, admin) -> Iterator[dict[str, str]]:
    """Fresh names for the connectors' fixed topics; every topic named with ``t<unique>.`` is deleted afterwards."""
    names = {"offsets": f"t{unique}.connect.offsets", "heartbeats": f"t{unique}.connect.heartbeats",
             "files": f"t{unique}.connect.files"}
    monkeypatch.setattr("connectors.offsets.OFFSETS_TOPIC", names["offsets"])
    monkeypatch.setattr("connectors.runner.HEARTBEATS_TOPIC", names["heartbeats"])
    monkeypatch.setattr("connectors.filedrop.FILES_TOPIC", names["files"])
    yield names
    mine = [t for t in admin.list_topics(timeout=15).topics if f"t{unique}." in t]  # dlq.t<unique>.… too
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
        kafka_bootstrap, monkeypatch, admin, beyond_brokers, fixed_topics, unique):
    dept = _prefixed(catalogue().department("market"), f"t{unique}")  # postgres: its source connects only at start()
    dataset_topics = sorted(ds.topic for ds in dept.datasets.values())
    topics = [fixed_topics["offsets"], fixed_topics["heartbeats"], *dataset_topics, *map(dlq_topic, dataset_topics)]
    schemas = schema_store()
    too_many = _settings_with(monkeypatch, beyond_brokers)

    # the offset store (connect.offsets) asks for the configured factor: refused
    with pytest.raises(KafkaException) as refused:
        build_runner(dept, too_many, schemas)
    _assert_refused(refused)
    assert _replication_factors(admin, [fixed_topics["offsets"]]) == {fixed_topics["offsets"]: None}

    # connect.offsets there already: the runner's own topics (dataset, dead-letter, heartbeats) are refused
    ensure_topics(kafka_bootstrap, {fixed_topics["offsets"]: {"cleanup.policy": "compact"}}, partitions=1)
    with pytest.raises(KafkaException) as refused:
        build_runner(dept, too_many, schemas)
    _assert_refused(refused)
    assert set(_replication_factors(admin, topics[1:]).values()) == {None}

    # the configured 1: every topic is created, with one replica
    runner = build_runner(dept, _settings_with(monkeypatch, 1), schemas)
    assert runner.heartbeat_interval_s, "heartbeats on, so connect.heartbeats is created"
    assert _created(admin, topics) == dict.fromkeys(topics, {1})


def test_file_drop_source_creates_connect_files_with_the_offset_stores_replication_factor(
        kafka_bootstrap, settings, admin, beyond_brokers, fixed_topics, tmp_path: Path):
    dept = catalogue().department("water")
    assert dept.kind == "file"
    schemas = schema_store()
    # connect.offsets exists, so only connect.files is left to create
    ensure_topics(kafka_bootstrap, {fixed_topics["offsets"]: {"cleanup.policy": "compact"}}, partitions=1)

    offsets = OffsetStore(kafka_bootstrap, schemas, Producer(producer_config(kafka_bootstrap)), replication_factor=beyond_brokers)
    source = FileDropSource(dept, tmp_path / "refused", offsets, schemas, settings.source)
    with pytest.raises(KafkaException) as refused:
        source.start()
    _assert_refused(refused)
    assert _replication_factors(admin, [fixed_topics["files"]]) == {fixed_topics["files"]: None}

    offsets = OffsetStore(kafka_bootstrap, schemas, Producer(producer_config(kafka_bootstrap)), replication_factor=1)
    source = FileDropSource(dept, tmp_path / "created", offsets, schemas, settings.source)
    source.start()
    source.stop()
    assert _created(admin, [fixed_topics["files"]]) == {fixed_topics["files"]: {1}}
