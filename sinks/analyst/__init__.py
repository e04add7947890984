"""The analysts' SQL gateway (issue-tracked as the "analyst path"): authentication, roles, the
query sandbox, limits and quotas, and the hash-chained audit. ``open_gateway`` builds it for the
sink, which owns the store; ``serve`` puts it on HTTP."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from sinks.analyst.audit import AuditTrail
from sinks.analyst.credentials import CredentialStore
from sinks.analyst.gateway import AnalystGateway, Limits, Parser, QuotaLimits, Quotas, SessionPool, readonly_session
from sinks.analyst.server import serve
from sinks.clickhouse.erase import erase_enterprise
from streams.core.sql_roles import ROLES
from streams.errors import ConfigError
from streams.settings import Settings

__all__ = ["AnalystGateway", "open_gateway", "serve"]


def limits_from(settings: Settings) -> Limits:
    a = settings.analyst
    return Limits(a.max_execution_time_s, a.max_memory_usage, a.max_rows_to_read, a.max_bytes_to_read,
                  a.max_result_rows, a.max_result_bytes, a.max_threads)


def open_gateway(settings: Settings, writer: Client, writer_lock: threading.Lock,
                 before_erase: Callable[[str], object] | None = None,
                 assessor: Callable[[dt.date], list[dict[str, Any]]] | None = None) -> AnalystGateway:
    """The gateway over the sink's store. ``writer`` is the sink's own session: it appends the
    audit and runs erasures; analysts' queries never run on it. ``before_erase(uscc)`` runs before
    an erasure deletes anything: the sink waits there until it has stored every record about the
    enterprise published so far (``sinks.runner.wait_caught_up``), else a row from before the
    erasure could arrive after the delete. ``assessor(day)`` recomputes a day's data-sharing
    assessment for an operator (``POST /assess``)."""
    a, ch = settings.analyst, settings.clickhouse
    embedded = ch.is_embedded
    limits = limits_from(settings)
    dsns: dict[str, str] = {}
    for name in ROLES:
        if embedded:
            dsns[name] = settings.clickhouse_dsn
        elif name in ch.role_dsns:
            dsns[name] = ch.role_dsns[name].get_secret_value()
        else:
            raise ConfigError(f"YURONG_CLICKHOUSE_ROLE_DSNS has no DSN for the {name} role: with a ClickHouse server "
                              "each role logs in as its own user (sinks/clickhouse/server/rbac.sql)")

    def opener(dsn: str) -> Client:
        try:
            return clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:  # clickhouse-connect raises several types for a bad DSN
            raise ConfigError(f"cannot open a ClickHouse session for the SQL gateway: {exc}") from exc

    pools = {name: SessionPool(name, partial(readonly_session, partial(opener, dsn), ch.database, limits, embedded),
                               a.sessions_per_role, a.queue_wait_s)
             for name, dsn in dsns.items()}
    parser = Parser(_parser_client(settings, dsns["analyst"], opener))
    audit = AuditTrail(writer, writer_lock, a.audit_database, a.audit_chain or socket.gethostname(),
                       a.audit_retention_days)
    audit.open()
    quotas = Quotas(QuotaLimits(a.quota_queries_per_hour, a.quota_rows_read_per_hour, a.quota_seconds_per_hour,
                                a.per_analyst_concurrency))
    now_ms = int(time.time() * 1000)
    quotas.seed(audit.usage_since(now_ms - Quotas.WINDOW_MS), now_ms)

    def eraser(uscc: str) -> dict[str, int]:
        if before_erase is not None:
            before_erase(uscc)
        with writer_lock:
            return erase_enterprise(writer, uscc)

    return AnalystGateway(pools=pools, parser=parser, audit=audit,
                          credentials=CredentialStore(a.credentials_path(settings.paths.home)), quotas=quotas,
                          limits=limits, database=ch.database, audit_database=a.audit_database, eraser=eraser,
                          assessor=assessor)


def _parser_client(settings: Settings, dsn: str, opener) -> Client:
    """A session that only parses. Embedded: one more session on the store. Server: the server's
    parser if it has ``parseQueryToJSON`` (≥ 26.8), else an in-memory chDB in this process."""
    client = opener(dsn)
    try:
        client.query("SELECT parseQueryToJSON('SELECT 1')")
        return client
    except Exception:  # noqa: BLE001 — an older server: parse locally with the same grammar
        client.close()
        return clickhouse_connect.get_client(dsn="chdb://:memory:")
