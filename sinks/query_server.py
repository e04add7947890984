"""Read-only, audited SQL for analysts — also while the sink owns the embedded chDB.

chDB allows one process per data path, and that process is the sink. So the sink serves
``POST /query`` on 127.0.0.1 (``YURONG_CLICKHOUSE_QUERY_PORT``): JSON ``{"sql": ...,
"parameters": {...}, "principal": ...}`` → ``{"columns": [...], "rows": [...]}``.

Queries run on a handle of their own that is switched to ``readonly=1`` once, for its whole
session. (A per-query ``readonly`` setting on the sink's own handle is not enough: chDB applies
a refused statement's SETTINGS to the session, which would leave the sink unable to insert.)
Every query, allowed or refused, is recorded in ``sql_audit`` through the writer's handle.
With a ClickHouse server DSN, ``yurong sql`` uses the same class against the server, whose
users and grants apply on top.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import clickhouse_connect

from sinks.clickhouse import ClickHouseWriter
from streams.errors import ConfigError

log = logging.getLogger(__name__)

MAX_ROWS = 100_000


class AnalystSQL:
    """Runs analysts' queries read-only and audits each one."""

    def __init__(self, dsn: str, database: str, writer: ClickHouseWriter) -> None:
        self.writer = writer
        self.lock = threading.Lock()
        try:
            if dsn.startswith("chdb:"):
                self.reader = clickhouse_connect.get_client(dsn=dsn)
                self.reader.command(f"USE {_identifier(database)}")
                self.reader.command(f"SET max_result_rows = {MAX_ROWS}")
                self.reader.command("SET readonly = 1")
            else:
                self.reader = clickhouse_connect.get_client(
                    dsn=dsn, database=database, settings={"readonly": 1, "max_result_rows": MAX_ROWS}
                )
        except Exception as exc:  # clickhouse-connect raises several types for a bad DSN
            raise ConfigError(f"cannot open a read-only ClickHouse session: {exc}") from exc

    def query(self, sql: str, parameters: dict | None, principal: str) -> dict[str, Any]:
        """Run one query; raises on SQL errors (after auditing them)."""
        with self.lock:
            try:
                result = self.reader.query(sql, parameters=parameters or None)
            except Exception as exc:
                self._audit(principal, sql, 0, False, str(exc)[:500])
                raise
            rows = [list(r) for r in result.result_rows]
        self._audit(principal, sql, len(rows), True, "")
        return {"columns": list(result.column_names), "rows": rows}

    def _audit(self, principal: str, sql: str, rows: int, ok: bool, error: str) -> None:
        with self.writer.lock:
            self.writer.client.insert("sql_audit", [[principal, sql, rows, ok, error]],
                                      column_names=["principal", "query", "rows", "ok", "error"])

    def close(self) -> None:
        self.reader.close()


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ConfigError(f"database name {name!r} must be letters, digits and underscores")
    return f"`{name}`"


class _Handler(BaseHTTPRequestHandler):
    sql: AnalystSQL

    def do_POST(self) -> None:
        if self.path != "/query":
            self.send_error(404)
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            out = self.sql.query(body["sql"], body.get("parameters"), str(body.get("principal", "anonymous")))
            payload, status = json.dumps(out, default=str, ensure_ascii=False).encode(), 200
        except Exception as exc:  # noqa: BLE001 — reported to the caller, not fatal to the sink
            payload, status = json.dumps({"error": str(exc)}, ensure_ascii=False).encode(), 400
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt: str, *args) -> None:
        log.debug(fmt, *args)


def serve_queries(sql: AnalystSQL, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (``shutdown()`` to stop)."""
    handler = type("QueryHandler", (_Handler,), {"sql": sql})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="sql-endpoint", daemon=True).start()
    log.info("read-only SQL endpoint on 127.0.0.1:%d/query", port)
    return server
