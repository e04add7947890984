"""The analysts' SQL gateway: verified principal → role → sandbox check → limited session → audit.

Every request goes through ``AnalystGateway``:

1. **who** — the bearer token is checked against the hashed credentials (``credentials``); a
   failure is audited with the name it claimed and refused.
2. **may they** — the per-analyst quota (queries, rows read, engine seconds per hour, and how many
   run at once) is checked.
3. **what** — the query is parsed by the engine's own parser and its tree checked against the
   role's tables and the function allowlist (``sandbox``); refused queries never run.
4. **run** — on a session of the caller's role, opened ``readonly=1`` after its limits were set
   (time, memory, rows and bytes read, rows and bytes returned, threads), so the query cannot lift
   them. Sessions come from a small pool per role: queries run side by side, not behind one lock,
   and the writer's own session (the sink's inserts) is never one of them.
5. **audit** — the outcome, with rows read and returned, is appended to the hash-chained audit
   before the answer leaves; if the audit cannot be written, the answer is withheld.

With a ClickHouse server, each role's sessions log in as a user that holds only that role
(``YURONG_CLICKHOUSE_ROLE_DSNS``), so the server's grants and settings profile apply as well.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

from sinks.analyst.audit import AuditEntry, AuditTrail
from sinks.analyst.credentials import AuthError, CredentialStore, Principal
from sinks.analyst.sandbox import FunctionCatalogue, QueryRefused, Scope, check
from streams.core.sql_roles import role
from streams.errors import YurongError

log = logging.getLogger(__name__)


class Forbidden(YurongError):
    """The verified principal's role does not allow this request."""


class Busy(YurongError):
    """A quota or the concurrency limit says: not now."""


class QueryFailed(YurongError):
    """The engine refused or stopped the query; the message is the engine's, or the limit's."""


class AuditUnavailable(YurongError):
    """The audit row could not be written, so the answer is withheld."""


@dataclass(frozen=True)
class Limits:
    max_execution_time_s: int = 60
    max_memory_usage: int = 2 * 1024**3
    max_rows_to_read: int = 500_000_000
    max_bytes_to_read: int = 50 * 1024**3
    max_result_rows: int = 100_000
    max_result_bytes: int = 200 * 1024**2
    max_threads: int = 1

    def session_settings(self) -> dict[str, int | str]:
        return {
            "max_execution_time": self.max_execution_time_s, "max_memory_usage": self.max_memory_usage,
            "max_rows_to_read": self.max_rows_to_read, "max_bytes_to_read": self.max_bytes_to_read,
            "max_result_rows": self.max_result_rows, "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "throw", "read_overflow_mode": "throw", "timeout_overflow_mode": "throw",
            "max_threads": self.max_threads, "allow_introspection_functions": 0, "allow_ddl": 0,
        }

    def explain(self, text: str) -> str | None:
        """A clear sentence for an engine error that means a limit stopped the query."""
        m = re.search(r"Code: (\d+)", text)
        code = int(m.group(1)) if m else 0
        return {
            159: f"the query was stopped at its time limit of {self.max_execution_time_s} s "
                 "(YURONG_ANALYST_MAX_EXECUTION_TIME_S)",
            241: f"the query was stopped at its memory limit of {self.max_memory_usage} bytes "
                 "(YURONG_ANALYST_MAX_MEMORY_USAGE)",
            158: f"the query would read more than {self.max_rows_to_read} rows (YURONG_ANALYST_MAX_ROWS_TO_READ)",
            307: f"the query would read more than {self.max_bytes_to_read} bytes (YURONG_ANALYST_MAX_BYTES_TO_READ)",
            396: f"the result is larger than {self.max_result_rows} rows or {self.max_result_bytes} bytes "
                 "(YURONG_ANALYST_MAX_RESULT_ROWS / _BYTES): aggregate or add a LIMIT",
        }.get(code)


@dataclass(frozen=True)
class QuotaLimits:
    queries_per_hour: int = 600
    rows_read_per_hour: int = 20_000_000_000
    seconds_per_hour: int = 1800
    concurrent: int = 1


class Quotas:
    """Per principal, over the last hour: queries, rows read, engine milliseconds; and how many run."""

    WINDOW_MS = 3_600_000

    def __init__(self, limits: QuotaLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._used: dict[str, deque[tuple[int, int, int]]] = defaultdict(deque)  # (ts_ms, rows, ms)
        self._running: dict[str, int] = defaultdict(int)

    def seed(self, usage: dict[str, tuple[int, int, int]], now_ms: int) -> None:
        """Carry the last hour's use (from the audit) over a restart, as if spent now."""
        with self._lock:
            for name, (queries, rows, ms) in usage.items():
                for i in range(queries):
                    self._used[name].append((now_ms, rows if i == 0 else 0, ms if i == 0 else 0))

    @contextmanager
    def slot(self, principal: str, now_ms: int) -> Iterator[Callable[[int, int], None]]:
        with self._lock:
            used = self._used[principal]
            while used and used[0][0] < now_ms - self.WINDOW_MS:
                used.popleft()
            q, rows, ms = len(used), sum(u[1] for u in used), sum(u[2] for u in used)
            lim = self.limits
            if q >= lim.queries_per_hour:
                raise Busy(f"quota: {principal} ran {q} queries in the last hour (limit {lim.queries_per_hour})")
            if rows >= lim.rows_read_per_hour:
                raise Busy(f"quota: {principal} read {rows} rows in the last hour (limit {lim.rows_read_per_hour})")
            if ms >= lim.seconds_per_hour * 1000:
                raise Busy(f"quota: {principal} used {ms // 1000} s of engine time in the last hour "
                           f"(limit {lim.seconds_per_hour})")
            if self._running[principal] >= lim.concurrent:
                raise Busy(f"{principal} already runs {self._running[principal]} query(ies); the limit is {lim.concurrent}")
            self._running[principal] += 1

        def record(rows_read: int, elapsed_ms: int) -> None:
            with self._lock:
                self._used[principal].append((now_ms, rows_read, elapsed_ms))

        try:
            yield record
        finally:
            with self._lock:
                self._running[principal] -= 1


class SessionPool:
    """A few read-only sessions of one role; a query borrows one for its run."""

    def __init__(self, role_name: str, factory: Callable[[], Client], size: int, wait_s: float) -> None:
        self.role = role_name
        self.wait_s = wait_s
        self._free: queue.Queue[Client] = queue.Queue()
        self._all = [factory() for _ in range(size)]
        for c in self._all:
            self._free.put(c)

    @contextmanager
    def session(self) -> Iterator[Client]:
        try:
            client = self._free.get(timeout=self.wait_s)
        except queue.Empty:
            raise Busy(f"all {len(self._all)} {self.role} sessions are busy; try again shortly") from None
        try:
            yield client
        finally:
            self._free.put(client)

    def close(self) -> None:
        for c in self._all:
            c.close()


def readonly_session(open_client: Callable[[], Client], database: str, limits: Limits, embedded: bool) -> Client:
    """A session whose limits are set and then frozen by ``readonly=1`` (a query cannot change a
    setting in readonly mode). On a server the user's settings profile does this, and a readonly
    user cannot SET anything, so only the database is chosen."""
    client = open_client()
    client.database = database
    if embedded:
        client.command("USE {db:Identifier}", parameters={"db": database})
        for name, value in limits.session_settings().items():
            client.command(f"SET {name} = {{v:{'String' if isinstance(value, str) else 'UInt64'}}}",
                           parameters={"v": value})
        client.command("SET readonly = 1")
    return client


class Parser:
    """The engine's own parser, as JSON (``parseQueryToJSON``, ClickHouse ≥ 26.8)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.lock = threading.Lock()

    def parse(self, sql: str) -> dict:
        import json

        try:
            with self.lock:
                text = self.client.query("SELECT parseQueryToJSON({q:String})", parameters={"q": sql}).result_rows[0][0]
        except Exception as exc:  # noqa: BLE001 — a syntax error is the analyst's, reported as such
            raise QueryRefused(f"the query does not parse: {_engine_message(str(exc))}") from None
        return json.loads(text)

    def functions(self) -> FunctionCatalogue:
        with self.lock:
            rows = self.client.query("SELECT name, case_insensitive, alias_to, categories, is_aggregate "
                                     "FROM system.functions").result_rows
        return FunctionCatalogue.from_engine((str(n), ci, str(a), str(c), agg) for n, ci, a, c, agg in rows)


def _engine_message(text: str) -> str:
    m = re.search(r"DB::Exception: (.*?)(?: \(version [^)]*\))?(?: \([A-Z_]+\))?\.?$", text.strip(), re.S)
    return (m.group(1) if m else text).strip()[:500]


class AnalystGateway:
    def __init__(self, *, pools: dict[str, SessionPool], parser: Parser, audit: AuditTrail, credentials: CredentialStore,
                 quotas: Quotas, limits: Limits, database: str, audit_database: str,
                 eraser: Callable[[str], dict[str, int]] | None = None,
                 assessor: Callable[[dt.date], list[dict[str, Any]]] | None = None) -> None:
        self.pools = pools
        self.parser = parser
        self.functions = parser.functions()
        self.audit = audit
        self.credentials = credentials
        self.quotas = quotas
        self.limits = limits
        self.database = database
        self.audit_database = audit_database
        self.eraser = eraser
        self.assessor = assessor

    # --- who -----------------------------------------------------------------------------------------
    def authenticate(self, token: str | None, client: str, action: str) -> Principal:
        if not token:
            self._audit(AuditEntry("", "", client, action, "", outcome="unauthenticated",
                                   error="no credential (Authorization: Bearer <token>)"))
            raise AuthError("no credential: send Authorization: Bearer <token> (yurong analyst add issues one)")
        try:
            return self.credentials.verify(token)
        except AuthError as exc:
            self._audit(AuditEntry(exc.claimed, "", client, action, "", outcome="unauthenticated", error=str(exc)))
            raise

    def reject(self, client: str, reason: str) -> None:
        """Audit a request refused before any credential was looked at (wrong Host, content type...)."""
        self._audit(AuditEntry("", "", client, "http", "", outcome="rejected", error=reason))

    # --- what ----------------------------------------------------------------------------------------
    def query(self, principal: Principal, sql: str, parameters: dict[str, Any] | None, client: str) -> dict[str, Any]:
        entry = AuditEntry(principal.name, principal.role, client, "query", sql, parameters or {})
        started = time.monotonic()
        try:
            r = role(principal.role)
            scope = Scope(r.readable(self.database, self.audit_database), self.database)
            with self.quotas.slot(principal.name, int(time.time() * 1000)) as record:
                check(self.parser.parse(sql), scope, self.functions)
                with self.pools[r.name].session() as session:
                    try:
                        result = session.query(sql, parameters=parameters or None)
                    except Exception as exc:  # noqa: BLE001 — the engine raises several types; its text is the message
                        elapsed = int((time.monotonic() - started) * 1000)
                        record(0, elapsed)
                        message = _engine_message(str(exc))
                        limit = self.limits.explain(str(exc))
                        raise QueryFailed(f"{limit}: {message}" if limit else message) from None
                summary = result.summary or {}
                rows_read = int(summary.get("read_rows", 0) or 0)
                record(rows_read, int((time.monotonic() - started) * 1000))
                rows = [list(r) for r in result.result_rows]
        except QueryRefused as exc:
            self._finish(entry, started, "refused", str(exc))
            raise
        except Busy as exc:
            self._finish(entry, started, "quota", str(exc))
            raise
        except QueryFailed as exc:
            self._finish(entry, started, "failed", str(exc))
            raise
        entry.rows_read, entry.bytes_read = rows_read, int(summary.get("read_bytes", 0) or 0)
        entry.rows_returned = len(rows)
        self._finish(entry, started, "ok", "")
        return {"columns": list(result.column_names), "rows": rows}

    def erase(self, principal: Principal, uscc: str, reason: str, client: str) -> dict[str, int]:
        entry = AuditEntry(principal.name, principal.role, client, "erase", f"erase {uscc}", {"reason": reason})
        started = time.monotonic()
        if not role(principal.role).operates:
            self._finish(entry, started, "forbidden", f"the {principal.role} role may not erase data")
            raise Forbidden(f"the {principal.role} role may not erase data")
        if self.eraser is None:
            raise Forbidden("this gateway cannot erase")
        try:
            erased = self.eraser(uscc)
        except Exception as exc:  # audited, then raised
            self._finish(entry, started, "failed", str(exc)[:500])
            raise
        entry.rows_returned = sum(erased.values())
        self._finish(entry, started, "ok", "")
        return erased

    def assess(self, principal: Principal, day: str, client: str) -> list[dict[str, Any]]:
        """Recompute the data-sharing assessment of ``day`` now (operators)."""
        entry = AuditEntry(principal.name, principal.role, client, "assess", f"assess {day[:10]}")
        started = time.monotonic()
        if not role(principal.role).operates or self.assessor is None:
            self._finish(entry, started, "forbidden", f"the {principal.role} role may not recompute the assessment")
            raise Forbidden(f"the {principal.role} role may not recompute the assessment")
        try:
            rows = self.assessor(dt.date.fromisoformat(day))
        except ValueError as exc:
            self._finish(entry, started, "failed", str(exc)[:500])
            raise QueryFailed(f"not a date (YYYY-MM-DD): {day[:20]!r}") from None
        entry.rows_returned = len(rows)
        self._finish(entry, started, "ok", "")
        return rows

    def _finish(self, entry: AuditEntry, started: float, outcome: str, error: str) -> None:
        entry.outcome, entry.error = outcome, error
        entry.elapsed_ms = int((time.monotonic() - started) * 1000)
        self._audit(entry)

    def _audit(self, entry: AuditEntry) -> None:
        try:
            self.audit.append(entry)
        except Exception as exc:  # noqa: BLE001 — any failure to write means: no answer
            log.error("the SQL audit could not be written (%s); the answer is withheld", exc)
            raise AuditUnavailable("the audit is unavailable, so no answer is given; try again shortly") from None

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.parser.client.close()
