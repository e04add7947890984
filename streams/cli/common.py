"""What the CLI's commands and the demo share: consoles, logging, the Redis registry, analyst SQL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request

from rich.console import Console

from streams.errors import YurongError
from streams.settings import get_settings
from streams.worker.consent_store import REDIS_CLI, ConsentRegistry

console = Console()
err_console = Console(stderr=True)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def registry() -> ConsentRegistry:
    """The consent/watchlist registry of the settings' Redis, logged in as the CLI's own ACL user."""
    return ConsentRegistry.for_component(REDIS_CLI, get_settings())


def with_registry(coro_fn):
    """Run ``coro_fn(registry)`` to completion on a fresh event loop, closing the registry after."""
    async def go():
        reg = registry()
        try:
            return await coro_fn(reg)
        finally:
            await reg.close()

    return asyncio.run(go())


def run_sql(query: str, parameters: dict[str, str] | None = None) -> dict:
    """Run a read-only analyst query: with the embedded chDB, through the endpoint of the sink,
    which owns the store (the analyst path never opens it: opening it would take its lock from a
    sink that is starting); with a ClickHouse server DSN, directly."""
    from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client  # the engine loads only when used
    from sinks.query_server import AnalystSQL

    s = get_settings()
    principal = os.environ.get("USER") or os.environ.get("LOGNAME") or "analyst"
    if s.clickhouse.is_embedded:
        body = json.dumps({"sql": query, "parameters": parameters or {}, "principal": principal}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{s.clickhouse.query_port}/query", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise YurongError(json.loads(exc.read()).get("error", str(exc))) from None
        except urllib.error.URLError:
            raise YurongError(f"no sink answers on 127.0.0.1:{s.clickhouse.query_port}: the embedded store belongs to "
                              "the sink, which serves analysts' queries; start it with `yurong sink`") from None
    client = open_client(s.clickhouse_dsn, s.clickhouse.database)
    apply_schema(client)
    analyst = AnalystSQL(s.clickhouse_dsn, s.clickhouse.database, ClickHouseWriter(client))
    try:
        return analyst.query(query, parameters, principal)
    except YurongError:
        raise
    except Exception as exc:  # noqa: BLE001 — an analyst's SQL error is a message, not a traceback
        raise YurongError(str(exc)) from None
    finally:
        analyst.close()
        client.close()
