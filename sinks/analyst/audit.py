"""The SQL audit: every analyst request, allowed or refused, as a hash chain nobody can quietly edit.

Rows live in their own database (``yurong_audit.sql_audit``, ``YURONG_ANALYST_AUDIT_DATABASE``),
which the analyst and operator roles cannot name, and are kept ``YURONG_ANALYST_AUDIT_RETENTION_DAYS``
(at least 180: Cybersecurity Law art. 21) by TTL. Each row carries ``prev_hash`` and
``hash = sha256(prev_hash ‖ canonical row)``, numbered by ``seq`` within its ``chain`` (one chain
per gateway process group, so two gateways never interleave one chain). ``verify`` recomputes the
chain: an edited row breaks its own hash, a deleted row breaks its successor's ``prev_hash`` and the
numbering. Truncating the newest rows leaves a shorter valid chain; the gateway therefore logs its
head (``seq``, ``hash``) and exports it as a metric, and ``yurong audit verify --expect-head`` checks a
head noted earlier. A raw ID, phone or card number typed into a query is withheld from the row
(with the original's SHA-256, so an auditor holding a candidate text can match it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from monitoring.metrics import SQL_AUDIT_SEQ, SQL_REQUESTS
from sinks.clickhouse.writer import stored_ttl_days
from streams.core.masking import find_pii_in_text

log = logging.getLogger(__name__)

GENESIS = "0" * 64
MIN_RETENTION_DAYS = 180
COLUMNS = ("chain", "seq", "ts", "principal", "role", "client", "action", "query", "parameters", "outcome",
           "rows_read", "bytes_read", "rows_returned", "elapsed_ms", "error", "prev_hash", "hash")


@dataclass
class AuditEntry:
    """What one request did; ``seq``, ``ts_ms`` and the hashes are filled in by the trail."""

    principal: str
    role: str
    client: str
    action: str  # query | erase | auth
    query: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    outcome: str = "ok"  # ok | refused | failed | unauthenticated | forbidden | quota
    rows_read: int = 0
    bytes_read: int = 0
    rows_returned: int = 0
    elapsed_ms: int = 0
    error: str = ""


def _without_pii(text: str) -> str:
    hit = find_pii_in_text(text)
    if hit is None:
        return text
    return f"<withheld: the text carried a raw {hit}; sha256={hashlib.sha256(text.encode()).hexdigest()}>"


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers: every column but ``hash``, in a fixed order and spelling."""
    return json.dumps([row[c] for c in COLUMNS if c != "hash"], ensure_ascii=False, separators=(",", ":"),
                      default=str).encode()


def row_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


class AuditTrail:
    """Appends entries to one chain, in order; thread-safe."""

    def __init__(self, client: Client, client_lock: threading.Lock, database: str, chain: str,
                 retention_days: int) -> None:
        if retention_days < MIN_RETENTION_DAYS:
            raise ValueError(f"the SQL audit must be kept at least {MIN_RETENTION_DAYS} days (网络安全法 第二十一条); "
                             f"YURONG_ANALYST_AUDIT_RETENTION_DAYS is {retention_days}")
        self.client = client
        self.client_lock = client_lock
        self.database = database
        self.chain = chain
        self.retention_days = retention_days
        self._lock = threading.Lock()
        self.seq = 0
        self.head = GENESIS

    def open(self) -> None:
        """Create the audit database and table (with their retention) and read the chain's head."""
        p = {"db": self.database, "days": self.retention_days}
        with self.client_lock:
            self.client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters=p)
            self.client.command(
                "CREATE TABLE IF NOT EXISTS {db:Identifier}.sql_audit ("
                " chain LowCardinality(String), seq UInt64, ts DateTime64(3, 'UTC'), principal String,"
                " role LowCardinality(String), client String, action LowCardinality(String), query String,"
                " parameters String, outcome LowCardinality(String), rows_read UInt64, bytes_read UInt64,"
                " rows_returned UInt64, elapsed_ms UInt64, error String, prev_hash String, hash String"
                ") ENGINE = MergeTree ORDER BY (chain, seq) TTL toDateTime(ts) + toIntervalDay({days:UInt32})"
                " COMMENT 'every analyst request, hash-chained per chain (sinks/analyst/audit.py)'", parameters=p)
            if stored_ttl_days(self.client, "sql_audit", self.database) != self.retention_days:
                try:
                    self.client.command("ALTER TABLE {db:Identifier}.sql_audit MODIFY TTL toDateTime(ts) + "
                                        "toIntervalDay({days:UInt32})", parameters=p)
                except Exception as exc:  # noqa: BLE001 — on a server only an administrator may alter the audit
                    log.error("the SQL audit's retention is not %d days and cannot be changed by this user (%s): "
                              "an administrator must run ALTER TABLE %s.sql_audit MODIFY TTL", self.retention_days,
                              exc, self.database)
            head = self.client.query(
                "SELECT seq, hash FROM {db:Identifier}.sql_audit WHERE chain = {chain:String} ORDER BY seq DESC LIMIT 1",
                parameters={**p, "chain": self.chain}).result_rows
        if head:
            self.seq, self.head = int(head[0][0]), str(head[0][1])
        SQL_AUDIT_SEQ.labels(self.chain).set(self.seq)
        log.info("SQL audit chain %s in %s.sql_audit: head seq=%d hash=%s", self.chain, self.database, self.seq,
                 self.head)

    def append(self, entry: AuditEntry) -> dict[str, Any]:
        """Write ``entry`` as the chain's next row (raises if the store refuses: the caller must then
        withhold the result — nothing is answered that is not audited)."""
        with self._lock:
            row: dict[str, Any] = {
                **asdict(entry), "chain": self.chain, "seq": self.seq + 1, "ts": int(time.time() * 1000),
                "query": _without_pii(entry.query),
                "parameters": _without_pii(json.dumps(dict(entry.parameters), ensure_ascii=False, sort_keys=True,
                                                      default=str)),
                "error": _without_pii(entry.error[:2000]), "prev_hash": self.head,
            }
            row["hash"] = row_hash(row)
            values = [row[c] for c in COLUMNS]
            ms = row["ts"]
            values[COLUMNS.index("ts")] = dt.datetime.fromtimestamp(ms // 1000, dt.UTC).replace(microsecond=ms % 1000 * 1000)
            with self.client_lock:
                self.client.insert(f"{self.database}.sql_audit", [values], column_names=list(COLUMNS))
            self.seq, self.head = row["seq"], row["hash"]
        SQL_AUDIT_SEQ.labels(self.chain).set(row["seq"])
        SQL_REQUESTS.labels(entry.role or "-", entry.outcome).inc()
        if row["seq"] % 1000 == 0:
            log.info("SQL audit chain %s head seq=%d hash=%s", self.chain, row["seq"], row["hash"])
        return row

    def usage_since(self, since_ms: int) -> dict[str, tuple[int, int, int]]:
        """Per principal: (queries, rows read, milliseconds) since ``since_ms`` — seeds the quotas."""
        with self.client_lock:
            rows = self.client.query(
                "SELECT principal, count(), sum(rows_read), sum(elapsed_ms) FROM {db:Identifier}.sql_audit"
                " WHERE ts >= fromUnixTimestamp64Milli({since:Int64}) AND action = 'query' AND outcome IN ('ok', 'failed')"
                " GROUP BY principal", parameters={"db": self.database, "since": since_ms}).result_rows
        return {str(p): (int(q), int(r), int(ms)) for p, q, r, ms in rows}


READ_COLUMNS = ", ".join(c if c != "ts" else "toUnixTimestamp64Milli(ts) AS ts" for c in COLUMNS)


@dataclass
class ChainReport:
    chain: str
    rows: int = 0
    first_seq: int = 0
    last_seq: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(rows: Iterable[Mapping[str, Any]], now_ms: int, retention_days: int,
           expect_head: tuple[str, int, str] | None = None) -> dict[str, ChainReport]:
    """Check chains given their rows in (chain, seq) order. Rows before the first one present may
    have expired by the TTL, but only if that first row is itself close to expiry. ``expect_head``
    (chain, seq, hash), noted earlier from the gateway's log or metric, must still be there."""
    reports: dict[str, ChainReport] = {}
    prev: dict[str, Mapping[str, Any]] = {}
    head_seen = False
    for row in rows:
        chain = str(row["chain"])
        rep = reports.setdefault(chain, ChainReport(chain))
        last = prev.get(chain)
        seq = int(row["seq"])
        if last is None:
            rep.first_seq = seq
            expired_before = now_ms - (retention_days - 1) * 86_400_000
            if seq != 1 and int(row["ts"]) > expired_before:
                rep.problems.append(f"rows 1..{seq - 1} are missing and were not old enough to have expired")
        else:
            if seq != int(last["seq"]) + 1:
                rep.problems.append(f"rows {int(last['seq']) + 1}..{seq - 1} are missing (deleted)")
            if row["prev_hash"] != last["hash"]:
                rep.problems.append(f"row {seq} does not follow row {last['seq']}: the chain was cut or rewritten")
        if row_hash(row) != row["hash"]:
            rep.problems.append(f"row {seq} was altered after it was written (its hash does not match its content)")
        if expect_head is not None and (chain, seq) == expect_head[:2]:
            head_seen = True
            if row["hash"] != expect_head[2]:
                rep.problems.append(f"row {seq} is not the row noted as the head earlier (its hash differs)")
        rep.rows += 1
        rep.last_seq, rep.head = seq, str(row["hash"])
        prev[chain] = row
    if expect_head is not None and not head_seen:
        chain, seq, _ = expect_head
        rep = reports.setdefault(chain, ChainReport(chain))
        rep.problems.append(f"row {seq}, noted earlier as the head, is gone (the chain ends at {rep.last_seq}): "
                            "the newest rows were removed")
    return reports
