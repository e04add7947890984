"""The trust boundary on Kafka (DESIGN §8), against the real secured broker of the stack.

- Every principal × topic family: each allowed read and write succeeds, every other one fails
  with an authorisation error. The expectation is written out here, independently of the rules
  in streams/core/access.py that the broker enforces.
- Wrong password, unknown user and a PLAINTEXT connection are refused.
- A bank onboarded with `yurong bank onboard` reads and decodes its alerts with nothing but its
  bundle and a Java consumer built from it (Apache Avro + kafka-clients from Maven Central); after
  `yurong bank offboard` the same bundle is refused.

Probe topics carry a unique suffix inside each family's prefix (``dept.market.probe<u>``, ...),
so the checks never write into the platform's real topics; ``consent.grants`` and
``financing.responses`` are literal names: a write there is a tombstone for a key nobody uses.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.cli import main
from streams.codecs.serde import schema_store
from streams.core.access import CONSENT, OPERATOR, SINK, WORKER, connector_principal
from streams.kafka.admin import ensure_topics
from tests.conftest import as_principal, letters
from tests.java_bundle import build_java_consumer, run_java_consumer

pytestmark = pytest.mark.integration

DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
          KafkaError.CLUSTER_AUTHORIZATION_FAILED}


def _families(u: str, bank: str, other: str) -> dict[str, str]:
    return {
        "dept.market": f"dept.market.probe{u}", "dept.tax": f"dept.tax.probe{u}",
        "dlq.dept.market": f"dlq.dept.market.probe{u}", "dlq.enterprise": f"dlq.enterprise.probe{u}",
        "enterprise": f"enterprise.probe{u}", "risk": f"risk.probe{u}",
        "consent.grants": "consent.grants", "financing.responses": "financing.responses",
        "alerts.own": f"alerts.{bank}", "alerts.other": f"alerts.{other}", "matches.own": f"matches.{bank}",
        "connect.market": f"connect.market.probe{u}", "connect.tax": f"connect.tax.probe{u}",
        "connect.heartbeats": "connect.market.heartbeats",
        "worker-internal": f"yurong-worker-probe{u}",
        "enterprise.profiles": "enterprise.profiles", "audit.erasures": "audit.erasures",
        "control.erasures": "control.erasures", "control.erasures.applied": "control.erasures.applied",
    }


# family → operations per principal ("R" read, "W" write); anything not listed must be refused
EXPECTED = {
    WORKER: {"dept.market": "R", "dept.tax": "R", "dlq.dept.market": "W", "dlq.enterprise": "W", "enterprise": "RW",
             "risk": "RW", "consent.grants": "R", "financing.responses": "R", "alerts.own": "W", "alerts.other": "W",
             "matches.own": "W", "worker-internal": "RW", "enterprise.profiles": "RW", "control.erasures": "R",
             "control.erasures.applied": "W"},
    SINK: {"dlq.dept.market": "R", "dlq.enterprise": "RW", "enterprise": "R", "risk": "R", "financing.responses": "R",
           "alerts.own": "R", "alerts.other": "R", "enterprise.profiles": "R", "connect.heartbeats": "R"},
    CONSENT: {"consent.grants": "RW"},
    # `yurong erase`: a request to the worker, its confirmation, the audit record; no read or write of
    # enterprise data (the worker drops the profile and writes the tombstones)
    OPERATOR: {"connect.market": "R", "connect.tax": "R", "audit.erasures": "W", "control.erasures": "W",
               "control.erasures.applied": "R", "connect.heartbeats": "R"},
    "connector-market": {"dept.market": "RW", "dlq.dept.market": "RW", "connect.market": "RW", "connect.heartbeats": "RW"},
    "bank": {"alerts.own": "R", "matches.own": "R", "financing.responses": "W"},
}
# real topics: probed with a tombstone of nobody's key (their consumers skip it)
REAL = ("consent.grants", "financing.responses", "enterprise.profiles", "audit.erasures", "control.erasures",
        "control.erasures.applied", "connect.market.heartbeats")
GROUPS = {WORKER: "yurong-worker-probe", SINK: "yurong-sink-probe", CONSENT: "yurong-consent.probe",
          OPERATOR: "yurong-operator.probe", "connector-market": "yurong-connector-market.probe"}


def _can_write(conf: dict, topic: str) -> bool | str:
    outcome: list = []
    p = Producer({**conf, "acks": "all", "message.timeout.ms": 15000, "retries": 0})
    p.produce(topic, key=b"acl-probe", value=None, on_delivery=lambda err, _m: outcome.append(err))
    p.flush(20)
    if not outcome:
        return "no delivery report"
    err = outcome[0]
    if err is None:
        return True
    return False if err.code() in DENIED else f"unexpected {err}"


def _can_read(conf: dict, group: str, topic: str) -> bool | str:
    c = Consumer({**conf, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        if md.error is not None and md.error.code() in DENIED:  # no Describe: the topic is not even shown
            return False
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        for _ in range(40):
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is None:
                return True
            if msg.error().code() in DENIED:
                return False
        return "neither a record nor a refusal within 20 s"
    finally:
        c.close()


@pytest.fixture(scope="module")
def matrix_setup(kafka_admin):
    """Two throwaway banks onboarded by the operator, the probe topics (each with a record)."""
    from streams.kafka.banks import offboard_bank, onboard_bank
    from streams.kafka.security import KafkaLogin, new_password

    u = letters(os.urandom(4).hex())
    n = int.from_bytes(os.urandom(2), "big") % 500
    bank, other = f"b9{n:03d}", f"b9{n + 500:03d}"
    operator = as_principal(OPERATOR)
    passwords = {b: new_password() for b in (bank, other)}
    for b, pw in passwords.items():
        onboard_bank(operator, b, pw)
    topics = _families(u, bank, other)
    ensure_topics(kafka_admin, {t: {} for t in topics.values()}, partitions=1)
    producer = Producer(dict(kafka_admin))
    for t in topics.values():
        if t not in REAL:
            producer.produce(t, key=b"probe", value=b"probe", partition=0)
    # real topics: a tombstone nobody's key, on the partition read
    for t in REAL:
        producer.produce(t, key=b"acl-probe", value=None, partition=0)
    assert producer.flush(30) == 0
    bank_conf = KafkaLogin(kafka_admin["bootstrap.servers"], bank, _secret(passwords[bank]),
                           Path(kafka_admin["ssl.ca.location"])).conf()
    yield topics, bank, bank_conf
    for b in (bank, other):
        offboard_bank(operator, b)
    admin = AdminClient(dict(kafka_admin))
    for fut in admin.delete_topics([t for t in topics.values() if f"probe{u}" in t] + [f"alerts.{bank}", f"alerts.{other}",
                                   f"matches.{bank}", f"matches.{other}"], operation_timeout=30).values():
        fut.result()


def _secret(text: str):
    from pydantic import SecretStr

    return SecretStr(text)


@pytest.mark.parametrize("principal", list(EXPECTED))
def test_each_principal_reaches_exactly_its_topics(principal, matrix_setup):
    topics, bank, bank_conf = matrix_setup
    conf = bank_conf if principal == "bank" else as_principal(principal)
    group = f"{bank}.probe" if principal == "bank" else GROUPS[principal]
    allowed = EXPECTED[principal]

    def check(family: str) -> list[str]:
        topic = topics[family]
        wrong = []
        for op, probe in (("R", lambda: _can_read(conf, group, topic)), ("W", lambda: _can_write(conf, topic))):
            got, want = probe(), op in allowed.get(family, "")
            if got is not want:
                wrong.append(f"{op} {topic}: {'allowed' if want else 'refused'} expected, got {got}")
        return wrong

    with ThreadPoolExecutor(8) as pool:
        wrong = [w for ws in pool.map(check, sorted(topics)) for w in ws]
    assert not wrong, f"{principal}:\n" + "\n".join(wrong)


def test_a_connector_principal_cannot_declare_another_departments_topics(kafka_admin):
    with pytest.raises(KafkaException) as refused:
        ensure_topics(as_principal(connector_principal("market")), {f"dept.tax.probe{os.urandom(3).hex()}": {}})
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def _login_error(conf: dict) -> str:
    """What the client's error callback reports when it cannot get metadata (empty: it could)."""
    errors: list[KafkaError] = []
    admin = AdminClient({**conf, "error_cb": errors.append})
    try:
        admin.list_topics(timeout=8)
        return ""
    except KafkaException:  # the refusal itself is what the test looks at
        for _ in range(20):  # error callbacks are served by poll()
            admin.poll(0.5)
            if errors:
                break
        return " ".join(f"{e.name()}:{e.str()}" for e in errors) or "refused"


def test_wrong_password_unknown_user_and_plaintext_are_refused(kafka_admin):
    assert _login_error(as_principal(WORKER)) == ""  # the right login works
    wrong = _login_error({**as_principal(WORKER), "sasl.password": "not-the-password"})
    assert "_AUTHENTICATION" in wrong and "invalid credentials" in wrong, wrong
    unknown = _login_error({**as_principal(WORKER), "sasl.username": "nobody"})
    assert "_AUTHENTICATION" in unknown, unknown
    plaintext = _login_error({"bootstrap.servers": kafka_admin["bootstrap.servers"]})
    assert plaintext, "a PLAINTEXT client got metadata"


def _alert(bank_id: str, n: int) -> dict:
    uscc = ["91500000MA5U7Q1X2K", "91500103MA60ABCD3E"][n]
    change_id = f"market.enterprise_registration:{n + 1}:{uscc}/STATUS_REVOKED"
    return {
        "alert_id": f"{bank_id}/{change_id}", "bank_id": bank_id, "consent_id": f"c-{bank_id}-{n}",
        "change_id": change_id, "uscc": uscc, "category": "registration", "severity": "critical",
        "reason_codes": ["STATUS_REVOKED"], "before": {"status": "存续", "legal_rep": "张*"},
        "after": {"status": "吊销", "legal_rep": "李*"}, "score_before": 812, "score_after": 95,
        "level_before": "A", "level_after": "E", "source_dataset": "market.enterprise_registration",
        "source_position": f"0/16B37{48 + n}", "source_seq": 23_803_720 + n, "event_ts_ms": 1_709_294_400_123 + n,
        "detected_ts_ms": 1_709_294_401_000 + n, "published_ts_ms": 1_709_294_401_250 + n,
    }


def test_an_onboarded_bank_reads_its_alerts_with_the_bundle_alone_until_offboarded(kafka_admin, tmp_path, settings):
    bank = f"b8{int.from_bytes(os.urandom(2), 'big') % 1000:03d}"
    runner = CliRunner()
    bundle = tmp_path / bank
    out = runner.invoke(main, ["bank", "onboard", bank, "--out", str(bundle)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    try:
        assert {"client.properties", "librdkafka.conf", "ca.crt", "alert.avsc", "AlertConsumer.java", "pom.xml",
                "consumer_example.py", "README.md"} <= {p.name for p in bundle.iterdir()}
        assert oct(bundle.stat().st_mode & 0o777) == "0o700" and oct((bundle / "client.properties").stat().st_mode & 0o777) == "0o600"
        again = runner.invoke(main, ["bank", "onboard", bank, "--out", str(bundle)], catch_exceptions=False)
        assert "0 ACLs added, 0 removed" in again.output  # idempotent, the password kept
        listed = runner.invoke(main, ["bank", "list"], catch_exceptions=False).output
        assert bank in listed and f"alerts.{bank}" in listed

        # what the worker would publish (here written by the super user)
        schemas = schema_store()
        alerts = [_alert(bank, n) for n in range(2)]
        producer = Producer(dict(kafka_admin))
        for a in alerts:
            producer.produce(f"alerts.{bank}", key=a["uscc"].encode(), value=schemas.encode("risk/alert", a))
        assert producer.flush(30) == 0

        classpath = build_java_consumer(bundle, settings.paths.home / "java-cache")
        got = run_java_consumer(classpath, bundle, f"alerts.{bank}", 2, 60)
        assert sorted(got, key=lambda a: a["alert_id"]) == alerts  # two partitions: in any order
    finally:
        out = runner.invoke(main, ["bank", "offboard", bank], catch_exceptions=False)
    assert out.exit_code == 0 and "login deleted" in out.output, out.output
    with pytest.raises(AssertionError):  # the same bundle is refused now (authentication fails: exit != 0)
        run_java_consumer(classpath, bundle, f"alerts.{bank}", 1, 20)
    AdminClient(dict(kafka_admin)).delete_topics([f"alerts.{bank}", f"matches.{bank}"], operation_timeout=30)
