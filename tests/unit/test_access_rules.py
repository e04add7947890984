"""Invariants of the ACL matrix (streams/core/access.py) that DESIGN §8 states, checked on the
rules as data; tests/integration/test_trust_boundary.py checks what the broker then enforces."""

from __future__ import annotations

import pytest

from streams.core.access import (
    CONSENT,
    OPERATOR,
    WORKER,
    Op,
    Pattern,
    Resource,
    bank_rules,
    connector_principal,
    platform_rules,
)
from streams.errors import ConfigError

DEPTS = ["market", "tax", "housing_fund"]


def _grants(rules, op: Op) -> set[tuple[Pattern, str]]:
    return {(r.pattern, r.name) for r in rules if r.resource == Resource.TOPIC and op in r.ops}


def _covers(grants: set[tuple[Pattern, str]], topic: str) -> bool:
    return any(name == topic if pattern == Pattern.LITERAL else topic.startswith(name) for pattern, name in grants)


@pytest.fixture(scope="module")
def matrix():
    return {**platform_rules(DEPTS, ["dbzmarket"]), "b0001": bank_rules("b0001")}


def test_raw_personal_data_is_read_only_by_the_worker_and_the_departments_own_connector(matrix):
    for topic in ("dept.market.enterprise_registration", "dept.tax.tax_filing", "dlq.dept.tax.tax_filing"):
        readers = {p for p, rules in matrix.items() if _covers(_grants(rules, Op.READ), topic)}
        dept = topic.split(".")[-2]
        own = {connector_principal(dept)}
        allowed = {WORKER, *own} if topic.startswith("dept.") else {"sink", *own}  # dead letters: DESIGN's sink row
        assert readers == allowed, (topic, readers)


def test_only_the_consent_service_writes_consents_and_only_the_department_writes_its_topics(matrix):
    writers = {p for p, rules in matrix.items() if _covers(_grants(rules, Op.WRITE), "consent.grants")}
    assert writers == {CONSENT}
    for dept in DEPTS:
        topic = f"dept.{dept}.x"
        assert {p for p, rules in matrix.items() if _covers(_grants(rules, Op.WRITE), topic)} == {connector_principal(dept)}
        offsets = f"connect.{dept}.offsets"
        assert {p for p, rules in matrix.items() if _covers(_grants(rules, Op.WRITE), offsets)} == {connector_principal(dept)}


def test_a_bank_reads_its_own_topics_and_nothing_else(matrix):
    reads = _grants(matrix["b0001"], Op.READ)
    assert reads == {(Pattern.LITERAL, "alerts.b0001"), (Pattern.LITERAL, "matches.b0001")}
    assert not _covers(reads, "alerts.b0002")
    assert {r.name for r in matrix["b0001"] if r.resource == Resource.GROUP} == {"b0001."}


def test_only_the_operator_administers_the_cluster_and_every_principal_has_its_own_groups(matrix):
    assert {p for p, rules in matrix.items() if any(r.resource == Resource.CLUSTER for r in rules)} == {OPERATOR}
    prefixes = [r.name for rules in matrix.values() for r in rules if r.resource == Resource.GROUP]
    assert len(prefixes) == len(set(prefixes)) == len(matrix)
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)], "group prefixes overlap"


def test_names_are_checked():
    for bad in ("b001", "bank1", "B0001", "b0001;"):
        with pytest.raises(ConfigError):
            bank_rules(bad)
    for bad in ("Market", "m", "market.tax", "market*"):
        with pytest.raises(ConfigError):
            connector_principal(bad)


def test_erasure_is_a_request_to_the_worker_and_the_operator_still_touches_no_enterprise_data(matrix):
    from streams.core.access import ERASURE_APPLIED_TOPIC, ERASURE_AUDIT_TOPIC, ERASURE_REQUEST_TOPIC, profile_changelog

    assert (ERASURE_REQUEST_TOPIC, ERASURE_APPLIED_TOPIC) == ("control.erasures", "control.erasures.applied")
    changelog = profile_changelog()
    assert changelog == "yurong-worker-enterprise_profile-changelog"  # Faust's <app id>-<table>-changelog
    writes, reads = _grants(matrix[OPERATOR], Op.WRITE), _grants(matrix[OPERATOR], Op.READ)
    assert writes == {(Pattern.LITERAL, ERASURE_REQUEST_TOPIC), (Pattern.LITERAL, ERASURE_AUDIT_TOPIC)}
    for topic in ("enterprise.events", "enterprise.profiles", changelog, "risk.changes", "yurong-worker-other-changelog"):
        assert not _covers(reads, topic) and not _covers(writes, topic), topic  # no forged event, no data read
    assert _covers(reads, ERASURE_APPLIED_TOPIC) and not _covers(reads, ERASURE_REQUEST_TOPIC)
    # requests: written by the operator only, read by the worker only; confirmations the other way round
    def who(op: Op, topic: str) -> set[str]:
        return {p for p, rules in matrix.items() if _covers(_grants(rules, op), topic)}

    assert who(Op.WRITE, ERASURE_REQUEST_TOPIC) == {OPERATOR} and who(Op.READ, ERASURE_REQUEST_TOPIC) == {WORKER}
    assert who(Op.WRITE, ERASURE_APPLIED_TOPIC) == {WORKER} and who(Op.READ, ERASURE_APPLIED_TOPIC) == {OPERATOR}
    assert who(Op.WRITE, ERASURE_AUDIT_TOPIC) == {OPERATOR}
    for topic in ("enterprise.profiles", changelog):
        assert who(Op.WRITE, topic) == {WORKER}
    # exactly these topics, as literals: not a prefix that would reach control.<anything else>
    worker = {(r.pattern, r.name, r.ops) for r in matrix[WORKER] if r.name.startswith("control.")}
    assert worker == {(Pattern.LITERAL, ERASURE_REQUEST_TOPIC, frozenset({Op.READ, Op.DESCRIBE, Op.CREATE,
                                                                          Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS})),
                      (Pattern.LITERAL, ERASURE_APPLIED_TOPIC, frozenset({Op.WRITE, Op.DESCRIBE}))}
