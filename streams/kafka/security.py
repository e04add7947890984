"""Logging in to Kafka, and applying the ACL matrix (streams/core/access.py) to the broker.

``client_conf(principal)`` is the librdkafka configuration every client of the platform starts
from: TLS to the broker (the local CA or the one in ``YURONG_KAFKA_CA_LOCATION``) and a SCRAM
login as ``principal`` — or as ``YURONG_KAFKA_USERNAME`` when that is set, which is how a
deployment gives each process its own credentials. ``KafkaLogin`` also builds the SSL context
aiokafka (Faust) needs.

``apply_matrix`` (as the super user or ``operator``) creates missing SCRAM users with fresh
passwords (written to ``<secrets_dir>/<user>.password``, mode 0600) and makes each principal's
ACLs exactly its rules: missing bindings are created, bindings no rule asks for are deleted.
Banks are onboarded and offboarded one by one (``onboard_bank``/``offboard_bank``).
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from streams.core.access import ADMIN, Pattern, Resource, Rule, is_bank
from streams.errors import ConfigError
from streams.settings import Settings, get_settings

SCRAM_ITERATIONS = 8192
ANY_NAME: Any = None  # "match any" in an AclBindingFilter (confluent-kafka's stubs type these as str)
_RESOURCE = {Resource.TOPIC: ResourceType.TOPIC, Resource.GROUP: ResourceType.GROUP, Resource.CLUSTER: ResourceType.BROKER}
_PATTERN = {Pattern.LITERAL: ResourcePatternType.LITERAL, Pattern.PREFIXED: ResourcePatternType.PREFIXED}


@dataclass(frozen=True)
class KafkaLogin:
    """One principal's way in: bootstrap servers, SCRAM user and password, the CA to trust."""

    bootstrap: str
    username: str
    password: SecretStr
    ca_location: Path

    def conf(self) -> dict[str, Any]:
        """librdkafka settings (confluent-kafka's Producer, Consumer, AdminClient)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": self.username,
            "sasl.password": self.password.get_secret_value(),
            "ssl.ca.location": str(self.ca_location),
        }

    def ssl_context(self) -> ssl.SSLContext:
        """What aiokafka (Faust) verifies the broker with: the CA, host name checked."""
        return ssl.create_default_context(cafile=str(self.ca_location))

    def java_properties(self, **extra: str) -> str:
        """The same login as Java Kafka client properties (a bank's ``client.properties``)."""
        pw = self.password.get_secret_value()
        lines = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
                                f'username="{self.username}" password="{pw}";',
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_location),
            **extra,
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())


def password_file(settings: Settings, username: str) -> Path:
    return settings.kafka_secrets_dir / f"{username}.password"


def kafka_login(principal: str, settings: Settings | None = None) -> KafkaLogin:
    """The login of this process's ``principal`` (``YURONG_KAFKA_USERNAME`` overrides it)."""
    s = settings or get_settings()
    username = s.kafka.username or principal
    if s.kafka.password is not None:
        password = s.kafka.password
    else:
        path = password_file(s, username)
        try:
            password = SecretStr(path.read_text().strip())
        except FileNotFoundError:
            raise ConfigError(f"no Kafka password for user {username!r}: set YURONG_KAFKA_PASSWORD, or run "
                              f"`yurong security apply` on the local stack (it writes {path})") from None
    ca = s.kafka.ca_location or s.kafka_secrets_dir / "ca.crt"
    return KafkaLogin(s.kafka.bootstrap_servers, username, password, ca)


def client_conf(principal: str, settings: Settings | None = None) -> dict[str, Any]:
    """librdkafka settings for a client of ``principal`` (see ``kafka_login``)."""
    return kafka_login(principal, settings).conf()


# --- the matrix on the broker ----------------------------------------------------------------------

def acl_bindings(principal: str, rules: Iterable[Rule]) -> set[AclBinding]:
    """The broker's ALLOW bindings that say ``rules`` for ``principal`` (one per operation)."""
    out = set()
    for rule in rules:
        for op in rule.ops:
            out.add(AclBinding(_RESOURCE[rule.resource], rule.name, _PATTERN[rule.pattern], f"User:{principal}", "*",
                               AclOperation[op.value], AclPermissionType.ALLOW))
    return out


def _result(futures: Any) -> None:
    """Wait for an Admin API call: a future, a list of futures or a dict of them."""
    if isinstance(futures, Mapping):
        futures = futures.values()
    for fut in (futures if isinstance(futures, Iterable) else [futures]):
        fut.result()


def acls_of(admin: AdminClient, principal: str) -> set[AclBinding]:
    flt = AclBindingFilter(ResourceType.ANY, ANY_NAME, ResourcePatternType.ANY, f"User:{principal}", ANY_NAME,
                           AclOperation.ANY, AclPermissionType.ANY)
    return set(admin.describe_acls(flt, request_timeout=15).result())


def sync_acls(admin: AdminClient, principal: str, rules: Iterable[Rule]) -> tuple[int, int]:
    """Make ``principal``'s ACLs exactly ``rules``; returns (created, deleted)."""
    want = acl_bindings(principal, rules)
    have = acls_of(admin, principal)
    create, delete = want - have, have - want
    if create:
        _result(admin.create_acls(list(create), request_timeout=15))
    if delete:
        _result(admin.delete_acls([AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                                    b.operation, b.permission_type) for b in delete], request_timeout=15))
    return len(create), len(delete)


def scram_users(admin: AdminClient) -> set[str]:
    """Every SCRAM user of the cluster."""
    every: Any = admin.describe_user_scram_credentials(request_timeout=15)  # no users named: one future, a dict
    return set(every.result())


def set_password(admin: AdminClient, username: str, password: str) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    _result(admin.alter_user_scram_credentials([UserScramCredentialUpsertion(username, info, password.encode())]))


def delete_user(admin: AdminClient, username: str) -> None:
    if username in scram_users(admin):
        _result(admin.alter_user_scram_credentials([UserScramCredentialDeletion(username, ScramMechanism.SCRAM_SHA_512)]))


def new_password() -> str:
    return secrets.token_urlsafe(24)


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (folder 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def apply_matrix(admin: AdminClient, matrix: Mapping[str, list[Rule]], settings: Settings | None = None) -> dict[str, tuple[int, int]]:
    """Create each platform principal's SCRAM user if it has none (password written to its file)
    and sync its ACLs. Returns principal → (ACLs created, deleted). Idempotent."""
    s = settings or get_settings()
    users = scram_users(admin)
    changes = {}
    for principal, rules in matrix.items():
        if principal == ADMIN or is_bank(principal):
            raise ConfigError(f"{principal} is not a platform principal")
        path = password_file(s, principal)
        if principal not in users or not path.exists():
            password = path.read_text().strip() if path.exists() else new_password()
            set_password(admin, principal, password)
            write_secret(path, password + "\n")
        changes[principal] = sync_acls(admin, principal, rules)
    return changes
