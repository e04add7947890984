"""Who may do what on Kafka: the principals and the ACL matrix of DESIGN §8, as data.

Every party logs in with its own SCRAM user and gets the least its code needs. Topic families
are named so that a prefix ACL (KIP-290) covers exactly one owner:

- ``connector-<dept>`` owns ``dept.<dept>.``, ``dlq.dept.<dept>.`` and ``connect.<dept>.`` (its
  offsets, heartbeats and seen files): it cannot write another department's data or positions;
- ``worker`` reads ``dept.``, ``consent.grants``, ``bank.products`` and ``financing.``, and owns
  what it writes (``enterprise.``, ``risk.``, ``alerts.``, ``matches.``, ``dlq.``) and Faust's
  internal topics and groups (``yurong-worker…``);
- ``sink`` reads what it stores and dead-letters what it cannot;
- ``consent`` is the only writer of ``consent.grants``;
- ``operator`` administers (SCRAM users and ACLs need Alter on the cluster) and declares banks'
  topics, but holds no read on enterprise data and writes none: for ``yurong erase`` it declares
  and writes ``control.erasures`` (erase requests, keyed by USCC: never ``enterprise.events``,
  where it could forge events), reads ``control.erasures.applied`` (the worker's confirmations: a
  USCC and a request id, no enterprise data), and writes and declares ``audit.erasures``. The
  worker reads (and declares, as it does every input it must find at start) ``control.erasures``
  and writes ``control.erasures.applied``;
- a bank ``bNNNN`` reads its own ``alerts.<bank_id>`` and ``matches.<bank_id>``, writes
  ``financing.responses``, and uses consumer groups prefixed ``<bank_id>.``.

"Own" a topic family = create it, and check and correct its configs (partitions, retention) at
start-up: topics are declared by their owner, never auto-created. The super user ``admin``
exists only to bootstrap this matrix (``yurong security apply``).

Pure data: the Kafka layer turns rules into ACL bindings (streams/kafka/security.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from streams.errors import ConfigError


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


class Pattern(StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


class Op(StrEnum):
    """Kafka ACL operations (the names of ``AclOperation``)."""

    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    ALTER_CONFIGS = "ALTER_CONFIGS"
    ALTER = "ALTER"
    DELETE = "DELETE"


@dataclass(frozen=True, order=True)
class Rule:
    """Allow ``principal`` the operations ``ops`` on one resource pattern."""

    resource: Resource
    pattern: Pattern
    name: str
    ops: frozenset[Op]


ADMIN = "admin"
WORKER = "worker"
SINK = "sink"
CONSENT = "consent"
OPERATOR = "operator"

WORKER_GROUP_PREFIX = "yurong-worker"  # Faust's app id: its consumer group and its internal topics
SINK_GROUP_PREFIX = "yurong-sink"
CONSENT_GROUP_PREFIX = "yurong-consent"
OPERATOR_GROUP_PREFIX = "yurong-operator"

READ = frozenset({Op.READ, Op.DESCRIBE})
WRITE = frozenset({Op.WRITE, Op.DESCRIBE})
DECLARE = frozenset({Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS})
GROUP = frozenset({Op.READ, Op.DESCRIBE})

PROFILE_TABLE = "enterprise_profile"  # the worker's Faust table of latest profiles (streams/worker/topics.py)
ERASURE_AUDIT_TOPIC = "audit.erasures"  # one record per `yurong erase`, declared by the operator
# `yurong erase` → the worker: an erase request per run (operator writes, worker reads), and the
# worker's confirmation that its merge applied it (worker writes, operator reads); both keyed by USCC
ERASURE_REQUEST_TOPIC = "control.erasures"
ERASURE_APPLIED_TOPIC = "control.erasures.applied"


def profile_changelog(worker_app_id: str = WORKER_GROUP_PREFIX) -> str:
    """The changelog topic of the worker's profile table (Faust: ``<app id>-<table>-changelog``)."""
    return f"{worker_app_id}-{PROFILE_TABLE}-changelog"


_BANK = re.compile(r"b[0-9]{4}")
_DEPT = re.compile(r"[a-z][a-z_]{1,30}")


def connector_principal(dept: str) -> str:
    if not _DEPT.fullmatch(dept):
        raise ConfigError(f"not a department name: {dept!r}")
    return f"connector-{dept}"


def connector_group_prefix(dept: str) -> str:
    return f"yurong-connector-{dept}"


def is_bank(principal: str) -> bool:
    return bool(_BANK.fullmatch(principal))


def _topics(pattern: Pattern, names: Iterable[str], ops: frozenset[Op]) -> list[Rule]:
    return [Rule(Resource.TOPIC, pattern, name, ops) for name in names]


def _group(prefix: str) -> Rule:
    return Rule(Resource.GROUP, Pattern.PREFIXED, prefix, GROUP)


def connector_rules(dept: str) -> list[Rule]:
    own = [f"dept.{dept}.", f"dlq.dept.{dept}.", f"connect.{dept}."]
    return [
        # the snapshot reads back what it published; offsets and seen files are re-read at start
        *_topics(Pattern.PREFIXED, own, READ | WRITE | DECLARE),
        _group(connector_group_prefix(dept)),
    ]


def worker_rules(debezium_prefixes: Iterable[str] = ()) -> list[Rule]:
    return [
        *_topics(Pattern.PREFIXED, ["dept.", "financing."], READ | {Op.DESCRIBE_CONFIGS}),
        *_topics(Pattern.LITERAL, ["consent.grants", "bank.products"], READ),
        # departments' own Debezium topics, when configured (YURONG_WORKER_DEBEZIUM_PREFIXES)
        *_topics(Pattern.PREFIXED, [f"{p}." for p in sorted(debezium_prefixes)], READ),
        *_topics(Pattern.PREFIXED, ["enterprise.", "risk."], READ | WRITE | DECLARE),
        *_topics(Pattern.PREFIXED, ["alerts.", "matches.", "dlq."], WRITE | DECLARE),
        Rule(Resource.TOPIC, Pattern.PREFIXED, WORKER_GROUP_PREFIX, READ | WRITE | DECLARE),  # Faust changelogs
        # `yurong erase`: the requests (declared at start too: Faust must find its inputs), the confirmations
        Rule(Resource.TOPIC, Pattern.LITERAL, ERASURE_REQUEST_TOPIC, READ | DECLARE),
        Rule(Resource.TOPIC, Pattern.LITERAL, ERASURE_APPLIED_TOPIC, WRITE),
        _group(WORKER_GROUP_PREFIX),
    ]


def sink_rules(depts: Iterable[str] = ()) -> list[Rule]:
    stored = ["enterprise.", "risk.", "alerts.", "dlq.", "financing."]
    return [
        *_topics(Pattern.PREFIXED, stored, READ),
        # the connectors' heartbeats (the assessment's availability), not their positions or files
        *_topics(Pattern.LITERAL, [f"connect.{d}.heartbeats" for d in sorted(depts)], READ),
        # dead letters of what the sink reads (never of the departments' raw topics)
        *_topics(Pattern.PREFIXED, ["dlq.enterprise.", "dlq.risk.", "dlq.alerts.", "dlq.financing.", "dlq.dlq.",
                                    "dlq.connect."], WRITE),
        _group(SINK_GROUP_PREFIX),
    ]


def consent_rules() -> list[Rule]:
    return [
        Rule(Resource.TOPIC, Pattern.LITERAL, "consent.grants", READ | WRITE | DECLARE),
        _group(CONSENT_GROUP_PREFIX),
    ]


def operator_rules() -> list[Rule]:
    return [
        # SCRAM users and ACLs (Alter/Describe on the cluster): onboarding and offboarding banks
        Rule(Resource.CLUSTER, Pattern.LITERAL, "kafka-cluster", frozenset({Op.ALTER, Op.DESCRIBE, Op.DESCRIBE_CONFIGS})),
        *_topics(Pattern.PREFIXED, ["alerts.", "matches."], DECLARE),  # a bank's topics, declared at onboarding
        # `yurong erase`: an erase request to the worker, which merges it in order with the USCC's
        # events and confirms it (the operator still reads and writes no enterprise data), and the
        # erasure's audit record
        Rule(Resource.TOPIC, Pattern.LITERAL, ERASURE_REQUEST_TOPIC, WRITE | DECLARE),
        Rule(Resource.TOPIC, Pattern.LITERAL, ERASURE_APPLIED_TOPIC, READ | DECLARE),
        Rule(Resource.TOPIC, Pattern.LITERAL, ERASURE_AUDIT_TOPIC, WRITE | DECLARE),
        *_topics(Pattern.PREFIXED, ["connect."], READ),  # `yurong connect --status`: positions, no data
        *_topics(Pattern.PREFIXED, ["dept."], frozenset({Op.DESCRIBE})),  # ... and record counts (offsets), no data
        _group(OPERATOR_GROUP_PREFIX),
    ]


def bank_rules(bank_id: str) -> list[Rule]:
    check_bank(bank_id)
    return [
        *_topics(Pattern.LITERAL, [f"alerts.{bank_id}", f"matches.{bank_id}"], READ),
        Rule(Resource.TOPIC, Pattern.LITERAL, "financing.responses", WRITE),
        _group(f"{bank_id}."),
    ]


def check_bank(bank_id: str) -> str:
    if not is_bank(bank_id):
        raise ConfigError(f"not a bank id (bNNNN): {bank_id!r}")
    return bank_id


def platform_rules(depts: Iterable[str], debezium_prefixes: Iterable[str] = ()) -> dict[str, list[Rule]]:
    """Every platform principal (banks excluded: they are onboarded one by one) → its rules."""
    rules = {
        WORKER: worker_rules(debezium_prefixes),
        SINK: sink_rules(depts),
        CONSENT: consent_rules(),
        OPERATOR: operator_rules(),
    }
    rules.update({connector_principal(d): connector_rules(d) for d in sorted(depts)})
    return rules
