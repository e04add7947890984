"""Who may read what with SQL: the roles of the analytics store, as data.

A person who runs SQL (``yurong sql``) authenticates as a named principal that has exactly one
role. The role names the tables it may read; nothing else is readable — no system table, no file,
no URL, no other database. The gateway (``sinks/analyst``) checks every query's parsed tree
against its role; with a ClickHouse server, the shipped RBAC (``sinks/clickhouse/server/rbac.sql``)
grants the same tables to the same roles, so the server refuses what the gateway would.

- ``analyst``: the masked analyst tables (profiles and their history, events, risk changes,
  alert deliveries, dead-letter metadata — which holds sizes, never the bytes) and the
  departments' data-sharing assessment with the connectors' heartbeats. Not the audit.
- ``auditor``: the SQL audit and the alert deliveries (who was sent what under which consent).
- ``operator``: what an analyst reads; may erase an enterprise's data on request and recompute the
  data-sharing assessment. Not the audit: who runs the platform does not also check it
  (separation of duties, MLPS 三级 安全审计).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DATA_TABLES: frozenset[str] = frozenset({
    "enterprise_profile", "enterprise_profile_history", "enterprise_event", "risk_change", "alert_delivery",
    "dlq_event", "dept_assessment", "connector_heartbeat",
})
DATA_VIEWS: frozenset[str] = frozenset({"enterprise_profile_as_of", "related_party", "enterprise_related"})
AUDIT_TABLES: frozenset[str] = frozenset({"sql_audit"})

NAME = re.compile(r"^[a-z][a-z0-9-]{1,31}$")


@dataclass(frozen=True)
class SqlRole:
    name: str
    data_tables: frozenset[str]  # in the data database (``yurong``)
    audit_tables: frozenset[str]  # in the audit database (``yurong_audit``)
    operates: bool = False  # may erase an enterprise's data and recompute the assessment
    description: str = ""

    def readable(self, database: str, audit_database: str) -> frozenset[tuple[str, str]]:
        """The (database, table) pairs this role may name in a query."""
        return frozenset({(database, t) for t in self.data_tables} | {(audit_database, t) for t in self.audit_tables})


ANALYST = SqlRole("analyst", DATA_TABLES | DATA_VIEWS, frozenset(),
                  description="masked analyst tables; no audit, no dead-letter bytes")
AUDITOR = SqlRole("auditor", frozenset({"alert_delivery"}), AUDIT_TABLES,
                  description="the SQL audit and the alert deliveries")
OPERATOR = SqlRole("operator", DATA_TABLES | DATA_VIEWS, frozenset(), operates=True,
                   description="analyst tables; erases an enterprise's data on request, recomputes the assessment")

ROLES: dict[str, SqlRole] = {r.name: r for r in (ANALYST, AUDITOR, OPERATOR)}


def role(name: str) -> SqlRole:
    try:
        return ROLES[name]
    except KeyError:
        raise ValueError(f"unknown SQL role {name!r}; the roles are {', '.join(sorted(ROLES))}") from None


def check_principal_name(name: str) -> str:
    """A principal's name: lower-case letters, digits and '-', 2–32 characters, starting with a letter."""
    if not NAME.match(name):
        raise ValueError(f"principal name {name!r}: use 2-32 lower-case letters, digits or '-', starting with a letter")
    return name
