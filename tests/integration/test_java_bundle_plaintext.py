"""TEMPORARY: the bank bundle's consumers (streams/cli/bank_bundle/) decode alerts from the local
PLAINTEXT broker. A bank bundle is made here by hand: the template files, avro/risk/alert.avsc and
plaintext client settings. The Java consumer (built with tests/java_bundle.py) and the Python
example each print the 3 alerts produced, equal to what was encoded; the Java one commits what it
printed, and stops with an error, uncommitted, on a value that is not an alert. To be replaced by
the test of the real, SASL_SSL bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.codecs.serde import schema_store
from tests.java_bundle import build_java_consumer, run_java_consumer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "streams" / "cli" / "bank_bundle"


def _alert(bank_id: str, n: int) -> dict:
    uscc = ["91500000MA5U7Q1X2K", "91500103MA60ABCD3E", "915001057474816842"][n]
    change_id = f"market.enterprise_registration:{n + 1}:{uscc}/STATUS_REVOKED"
    return {
        "alert_id": f"{bank_id}/{change_id}", "bank_id": bank_id, "consent_id": f"c-{bank_id}-{n}",
        "change_id": change_id, "uscc": uscc, "category": "registration", "severity": ["critical", "high", "info"][n],
        "reason_codes": ["STATUS_REVOKED", "LEGAL_REP_CHANGED"][: n + 1],
        "before": {"status": "存续", "legal_rep": "张*", "note": None},
        "after": {"status": "吊销", "legal_rep": "李*\n\"代\"", "note": None},
        "score_before": 812 - n, "score_after": 95 + n, "level_before": "A", "level_after": "E",
        "source_dataset": "market.enterprise_registration", "source_position": f"0/16B37{48 + n}",
        "source_seq": 23_803_720 + n, "event_ts_ms": 1_709_294_400_123 + n,
        "detected_ts_ms": 1_709_294_401_000 + n, "published_ts_ms": 1_709_294_401_250 + n,
    }


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """A new topic. (Not streams.kafka.admin.ensure_topics: its first argument is changing from the
    bootstrap string to the client settings.)"""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def _produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in items:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0, "records not delivered"


def _bundle(root: Path, bootstrap: str, bank_id: str, topic: str) -> Path:
    """A bundle as a bank gets it, with plaintext settings (no TLS, no login) for this broker.
    The Python example gets its own consumer group, so that it reads the alerts the Java one committed."""
    root.mkdir()
    for name in ("AlertConsumer.java", "pom.xml", "consumer_example.py", "README.md"):
        shutil.copy(TEMPLATES / name, root / name)
    shutil.copy(REPO / "avro" / "risk" / "alert.avsc", root / "alert.avsc")
    (root / "topic.txt").write_text(topic + "\n")
    common = f"bootstrap.servers={bootstrap}\nauto.offset.reset=earliest\nenable.auto.commit=false\n"
    (root / "client.properties").write_text(common + f"group.id={bank_id}.alerts\n")
    (root / "librdkafka.conf").write_text(f"# plaintext, for the test\n{common}group.id={bank_id}.alerts.py\n")
    return root


@pytest.fixture(scope="module")
def java_classpath(request) -> str:
    return build_java_consumer(TEMPLATES, Path(request.config.cache.mkdir("java_bundle")))


def test_java_and_python_consumers_decode_the_alerts(kafka_bootstrap, unique, tmp_path, java_classpath):
    bank_id = f"t{unique}"
    topic = f"alerts.{bank_id}"
    _create_topic(kafka_bootstrap, topic, 4)
    sent = [_alert(bank_id, n) for n in range(3)]
    store = schema_store()
    _produce(kafka_bootstrap, topic, [(a["uscc"].encode(), store.encode("risk/alert", a)) for a in sent])
    bundle = _bundle(tmp_path / "bundle", kafka_bootstrap, bank_id, topic)

    got = run_java_consumer(java_classpath, bundle, topic, 3, 60)
    assert len(got) == 3
    by_id = {a["alert_id"]: a for a in got}
    for want in sent:
        alert = by_id[want["alert_id"]]
        for field in ("bank_id", "consent_id", "change_id", "uscc", "category", "severity", "reason_codes",
                      "before", "after", "score_before", "score_after", "source_seq", "event_ts_ms"):
            assert alert[field] == want[field], field
        assert alert == want

    # the Java consumer committed what it printed: a rerun in its group sees only what came after
    later = _alert(bank_id, 0) | {"alert_id": f"{bank_id}/later", "severity": "medium"}
    _produce(kafka_bootstrap, topic, [(later["uscc"].encode(), store.encode("risk/alert", later))])
    assert run_java_consumer(java_classpath, bundle, topic, 1, 60) == [later]

    py = subprocess.run([sys.executable, str(bundle / "consumer_example.py"), str(bundle / "librdkafka.conf"),
                         str(bundle / "alert.avsc"), topic, "4", "60"], capture_output=True, timeout=120)
    assert py.returncode == 0, py.stderr.decode()

    py_got = [json.loads(line) for line in py.stdout.decode("utf-8").splitlines()]
    assert sorted(py_got, key=lambda a: a["alert_id"]) == sorted([*sent, later], key=lambda a: a["alert_id"])


def test_java_consumer_stops_uncommitted_on_a_value_that_is_not_an_alert(kafka_bootstrap, unique, tmp_path,
                                                                         java_classpath):
    bank_id = f"t{unique}"
    topic = f"alerts.{bank_id}"
    _create_topic(kafka_bootstrap, topic, 1)
    _produce(kafka_bootstrap, topic, [(b"91500000MA5U7Q1X2K", b"\xc3\x01" + bytes(8) + b"\x00")])
    bundle = _bundle(tmp_path / "bundle", kafka_bootstrap, bank_id, topic)
    for _ in range(2):  # not committed: the second run meets it again
        with pytest.raises(AssertionError, match=r"exited 1[\s\S]*cannot decode .*@0"):
            run_java_consumer(java_classpath, bundle, topic, 1, 30)
    # nothing there: a timeout, exit code 2
    empty = f"alerts.{bank_id}e"
    _create_topic(kafka_bootstrap, empty, 1)
    with pytest.raises(AssertionError, match=r"exited 2[\s\S]*timed out: 0 of 1"):
        run_java_consumer(java_classpath, bundle, empty, 1, 5)
