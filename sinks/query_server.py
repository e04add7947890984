"""Read-only SQL for analysts while the sink owns the embedded chDB.

chDB allows one process per data path, and that process is the sink. So the sink serves
``POST /query`` on 127.0.0.1 (``YURONG_CLICKHOUSE_QUERY_PORT``): JSON ``{"sql": ...,
"parameters": {...}, "principal": ...}`` → ``{"columns": [...], "rows": [...]}``. Every query
runs with ``readonly=1`` and is recorded in ``sql_audit``. With a ClickHouse server DSN none
of this is needed: ``yurong sql`` talks to the server, whose users and grants apply.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .clickhouse import ClickHouseWriter

log = logging.getLogger(__name__)

READONLY = {"readonly": 1}
MAX_ROWS = 100_000


def run_readonly(writer: ClickHouseWriter, sql: str, parameters: dict | None, principal: str) -> dict[str, Any]:
    """Run one analyst query read-only and audit it; raises on SQL errors (after auditing)."""
    with writer.lock:
        try:
            result = writer.client.query(sql, parameters=parameters or None, settings={**READONLY, "max_result_rows": MAX_ROWS})
        except Exception as exc:
            _audit(writer, principal, sql, 0, False, str(exc)[:500])
            raise
        rows = [list(r) for r in result.result_rows]
        _audit(writer, principal, sql, len(rows), True, "")
    return {"columns": list(result.column_names), "rows": rows}


def _audit(writer: ClickHouseWriter, principal: str, sql: str, rows: int, ok: bool, error: str) -> None:
    writer.client.insert("sql_audit", [[principal, sql, rows, ok, error]], column_names=["principal", "query", "rows", "ok", "error"])


class _Handler(BaseHTTPRequestHandler):
    writer: ClickHouseWriter

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        if self.path != "/query":
            self.send_error(404)
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            out = run_readonly(self.writer, body["sql"], body.get("parameters"), str(body.get("principal", "anonymous")))
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


def serve_queries(writer: ClickHouseWriter, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (``shutdown()`` to stop)."""
    handler = type("QueryHandler", (_Handler,), {"writer": writer})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="sql-endpoint", daemon=True).start()
    log.info("read-only SQL endpoint on 127.0.0.1:%d/query", port)
    return server
