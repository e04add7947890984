"""The gateway over HTTP: ``POST /query`` and ``POST /erase``, served by the sink.

A request is answered only if it

- names this server in ``Host`` (127.0.0.1, localhost or [::1] with the port, or a name listed in
  ``YURONG_ANALYST_ALLOWED_HOSTS``): a page on another site that re-points its own name at
  127.0.0.1 (DNS rebinding) sends its own name and is refused;
- is ``Content-Type: application/json``: a browser cannot send that cross-site without a CORS
  preflight, which this server never grants;
- carries ``Authorization: Bearer <token>``: a browser never adds that on its own.

``/query`` takes ``{"sql": ..., "parameters": {...}}`` and answers ``{"columns": [...], "rows": [...]}``;
``/erase`` (operator role) takes ``{"uscc": ..., "reason": ...}``; ``/assess`` (operator role) takes
``{"day": "YYYY-MM-DD"}`` and recomputes that day's data-sharing assessment. Errors are ``{"error": ...}`` with
401 (no or bad credential), 403 (the role or sandbox refuses), 429 (quota or busy), 400 (the engine
refused the query), 503 (the audit could not be written). Every outcome is audited.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sinks.analyst.credentials import AuthError
from sinks.analyst.gateway import AnalystGateway, AuditUnavailable, Busy, Forbidden, QueryFailed
from sinks.analyst.sandbox import QueryRefused

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")


class _Handler(BaseHTTPRequestHandler):
    gateway: AnalystGateway
    hosts: frozenset[str]
    server_version = "yurong-sql"
    sys_version = ""

    def _client(self) -> str:
        return f"{self.client_address[0]}:{self.client_address[1]}"

    def _reply(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, default=str, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _refuse_early(self, status: int, reason: str) -> None:
        try:
            self.gateway.reject(self._client(), reason)
        except AuditUnavailable as exc:
            self._reply(503, {"error": str(exc)})
            return
        self._reply(status, {"error": reason})

    def do_GET(self) -> None:
        self._reply(405, {"error": "use POST"}, {"Allow": "POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET  # no CORS preflight is ever granted

    def do_POST(self) -> None:
        if self.path not in ("/query", "/erase", "/assess"):
            self._reply(404, {"error": "not found: POST /query, /erase or /assess"})
            return
        if (self.headers.get("Host") or "").lower() not in self.hosts:
            self._refuse_early(421, f"unexpected Host header {self.headers.get('Host', '')[:100]!r}")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            self._refuse_early(415, "the body must be Content-Type: application/json")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._refuse_early(413, f"the body is larger than {MAX_BODY} bytes")
            return
        raw = self.rfile.read(length)
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        action = self.path.lstrip("/")
        try:
            principal = self.gateway.authenticate(token, self._client(), action)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise QueryFailed("the body is not JSON") from None
            if not isinstance(body, dict):
                raise QueryFailed("the body must be a JSON object")
            if action == "query":
                params = body.get("parameters") or {}
                if not isinstance(body.get("sql"), str) or not isinstance(params, dict):
                    raise QueryFailed('send {"sql": "<one SELECT>", "parameters": {...}}')
                out: dict[str, Any] = self.gateway.query(principal, body["sql"], params, self._client())
            elif action == "assess":
                out = {"assessed": self.gateway.assess(principal, str(body.get("day", "")), self._client())}
            else:
                out = {"erased": self.gateway.erase(principal, str(body.get("uscc", "")), str(body.get("reason", "")),
                                                    self._client())}
            self._reply(200, out)
        except AuthError as exc:
            self._reply(401, {"error": str(exc)}, {"WWW-Authenticate": 'Bearer realm="yurong-sql"'})
        except (QueryRefused, Forbidden) as exc:
            self._reply(403, {"error": str(exc)})
        except Busy as exc:
            self._reply(429, {"error": str(exc)})
        except AuditUnavailable as exc:
            self._reply(503, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 — the engine's refusal or an erase failure: the caller's to read
            self._reply(400, {"error": str(exc)})

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug(fmt, *args)


def serve(gateway: AnalystGateway, bind: str, port: int, allowed_hosts: list[str] | tuple[str, ...] = ()
          ) -> ThreadingHTTPServer:
    """Start the gateway's HTTP server in a daemon thread; returns it (``shutdown()`` to stop)."""
    handler: type[_Handler] = type("GatewayHandler", (_Handler,), {"gateway": gateway, "hosts": frozenset()})
    server = ThreadingHTTPServer((bind, port), handler)
    port = server.server_address[1]  # the port bound (0 asks the system for one)
    handler.hosts = frozenset({f"{n}:{port}" for n in LOCAL_NAMES} | {h.lower() for h in allowed_hosts})
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sql-gateway", daemon=True).start()
    log.info("analysts' SQL gateway on %s:%d (POST /query, /erase)", bind, port)
    return server
