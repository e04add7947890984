"""A department that runs its own Debezium: the worker ingests its JSON records from
``<prefix>.<schema>.<table>`` exactly like yurong's own dept.* envelopes."""

from __future__ import annotations

import json
import os

import pytest
from confluent_kafka import Producer

from streams.cli.demo import pipeline
from streams.codecs.serde import schema_store
from streams.core.access import WORKER, worker_rules
from streams.core.masking import find_pii
from streams.kafka.admin import ensure_topics
from tests.conftest import TEST_KEY, free_port, wait_for
from tests.harness import commit_at_end
from tests.unit.test_debezium_envelope import REG_SCHEMA, REG_UPDATE, record

pytestmark = pytest.mark.integration


def test_worker_ingests_a_departments_own_debezium_topic(kafka_admin, redis_url, unique, tmp_path, topic_reader,
                                                         principals):
    prefix = f"dbz{unique}"
    topic = f"{prefix}.public.enterprise_registration"
    app_id = f"yurong-worker-dbz-{unique}"
    # what `yurong security apply` grants for YURONG_WORKER_DEBEZIUM_PREFIXES, for this test's prefix
    principals.allow(WORKER, [r for r in worker_rules([prefix]) if r.name == f"{prefix}."])
    ensure_topics(kafka_admin, {topic: {}})  # the department's Debezium declares its topics
    commit_at_end(kafka_admin, app_id, ["enterprise.events", "risk.changes", "dept.market.enterprise_registration",
                                            "dept.market.abnormal_operation"])
    env = {**os.environ, "YURONG_HOME": str(tmp_path / "home"), "YURONG_KAFKA_BOOTSTRAP_SERVERS": kafka_admin["bootstrap.servers"],
           "YURONG_REDIS_URL": redis_url, "YURONG_MASKING_HMAC_KEY": TEST_KEY, "YURONG_WORKER_APP_ID": app_id,
           "YURONG_WORKER_WEB_PORT": str(free_port()), "YURONG_METRICS_WORKER_PORT": str(free_port()),
           "YURONG_WORKER_DEBEZIUM_PREFIXES": json.dumps({prefix: "market"})}
    events = topic_reader(["enterprise.events"])
    producer = Producer(dict(kafka_admin))
    producer.produce(topic, key=b'{"uscc":"91500108MAHUXQEEXM"}', value=record(REG_SCHEMA, REG_UPDATE))
    producer.produce(topic, key=b'{"uscc":"91500108MAHUXQEEXM"}', value=None)  # Debezium's tombstone
    assert producer.flush(10) == 0
    schemas = schema_store()

    with pipeline(env, tmp_path / "logs", ("worker",)) as procs:
        def ingested():
            assert procs[0][1].poll() is None, (tmp_path / "logs" / "worker.log").read_text()[-3000:]
            events.poll(0.3)
            return [schemas.decode(m.value(), "enterprise/event")[1] for m in events.messages
                    if m.key() == b"91500108MAHUXQEEXM"]
        [event] = wait_for(ingested, 90, lambda: (tmp_path / "logs" / "worker.log").read_text()[-3000:])
    assert (event["source_topic"], event["op"], event["dataset"]) == (topic, "u", "enterprise_registration")
    assert event["attributes"]["status"] == "revoked" and event["before"]["status"] == "active"
    assert event["attributes"]["legal_rep_id_number"] == "5001**********6289"
    assert event["attributes"]["legal_rep_phone"] == "189****7809"
    assert find_pii(event) is None
    assert event["position"] == "0/23EDD2C0" and event["seq"] == 602788544
