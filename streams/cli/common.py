"""What the CLI's commands and the demo share: consoles, logging, the Redis registry, analyst SQL."""

from __future__ import annotations

import asyncio
import json
import logging
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


def gateway_call(path: str, body: dict, token: str | None = None, timeout: float = 300) -> dict:
    """POST ``body`` to the analysts' SQL gateway (served by the sink) as the principal whose token
    is ``token`` or the settings' (``YURONG_ANALYST_TOKEN`` / ``_TOKEN_FILE``). The CLI never
    opens the store itself: the sink owns it, and the gateway checks, limits and audits."""
    s = get_settings()
    token = token or s.analyst.read_token()
    if not token:
        raise YurongError("no analyst credential: set YURONG_ANALYST_TOKEN_FILE (or YURONG_ANALYST_TOKEN) to a token "
                          "from `yurong analyst add <name> --role analyst` (the local stack's: `yurong stack env`)")
    url = f"{s.analyst.url or f'http://127.0.0.1:{s.clickhouse.query_port}'}/{path}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        raise YurongError(message) from None
    except urllib.error.URLError:
        raise YurongError(f"no SQL gateway answers at {url}: the sink serves it; start it with `yurong sink`") from None


def run_sql(query: str, parameters: dict[str, str] | None = None, token: str | None = None) -> dict:
    """Run an analyst query through the gateway: ``{"columns": [...], "rows": [...]}``."""
    return gateway_call("query", {"sql": query, "parameters": parameters or {}}, token)


def erase_via_gateway(uscc: str, reason: str, token: str | None = None) -> dict[str, int]:
    """Ask the sink's gateway (operator role) to erase one enterprise's rows: ``{table: rows}``."""
    return gateway_call("erase", {"uscc": uscc, "reason": reason}, token)["erased"]

