"""Banks on the broker: onboard (SCRAM user, ACLs, topics), offboard, list — run as ``operator``.

A bank's rules are in streams/core/access.py (``bank_rules``): it reads its own
``alerts.<bank_id>`` and ``matches.<bank_id>`` and nothing else. Onboarding is idempotent: the
same call again re-applies the rules and re-declares the topics (a new password only when asked).
Offboarding deletes the SCRAM user and every ACL naming the bank; its topics stay until their
retention ends, readable by nobody but the platform.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType

from streams.core.access import bank_rules, check_bank, is_bank
from streams.kafka.admin import KafkaConf, ensure_topics
from streams.kafka.security import ANY_NAME, delete_user, scram_users, set_password, sync_acls


def bank_topics(bank_id: str) -> list[str]:
    return [f"alerts.{bank_id}", f"matches.{bank_id}"]


def onboard_bank(operator: KafkaConf, bank_id: str, password: str | None, partitions: int = 4,
                 replication_factor: int = 1) -> tuple[int, int]:
    """Give ``bank_id`` its login (``password``; None keeps the current one — the bank must have
    one), its ACLs and its topics. Returns (ACLs created, deleted)."""
    check_bank(bank_id)
    admin = AdminClient(dict(operator))
    if password is not None:
        set_password(admin, bank_id, password)
    elif bank_id not in scram_users(admin):
        raise ValueError(f"{bank_id} has no credentials yet: onboarding needs a password")
    ensure_topics(operator, {t: {} for t in bank_topics(bank_id)}, partitions=partitions,
                  replication_factor=replication_factor)
    return sync_acls(admin, bank_id, bank_rules(bank_id))


def offboard_bank(operator: KafkaConf, bank_id: str) -> tuple[bool, int]:
    """Remove the bank's login and every ACL naming it. Returns (had a login, ACLs deleted)."""
    check_bank(bank_id)
    admin = AdminClient(dict(operator))
    had = bank_id in scram_users(admin)
    _, deleted = sync_acls(admin, bank_id, [])
    delete_user(admin, bank_id)
    return had, deleted


@dataclass
class BankAccess:
    bank_id: str
    has_login: bool
    grants: list[str] = field(default_factory=list)  # "READ topic alerts.b0001", ...


def list_banks(operator: KafkaConf) -> list[BankAccess]:
    """Every bank with a login or an ACL, and what its ACLs allow."""
    admin = AdminClient(dict(operator))
    users = {u for u in scram_users(admin) if is_bank(u)}
    flt = AclBindingFilter(ResourceType.ANY, ANY_NAME, ResourcePatternType.ANY, ANY_NAME, ANY_NAME, AclOperation.ANY,
                           AclPermissionType.ANY)
    grants: dict[str, list[str]] = defaultdict(list)
    for b in admin.describe_acls(flt, request_timeout=15).result():
        who = b.principal.removeprefix("User:")
        if is_bank(who):
            pattern = "*" if b.resource_pattern_type == ResourcePatternType.PREFIXED else ""
            grants[who].append(f"{b.operation.name} {b.restype.name.lower()} {b.name}{pattern}")
    return [BankAccess(bank, bank in users, sorted(grants.get(bank, []))) for bank in sorted(users | set(grants))]
