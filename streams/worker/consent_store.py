"""The router's view of consents, watchlists and bank rules, in Redis; alert de-duplication and
the throttle (per bank, enterprise and category). The rule itself is pure:
``streams/core/consent.py``.

Consents: the system of record is the compacted topic ``consent.grants`` (key = consent id,
``avro/consent/grant.avsc``, every record the whole state). ``yurong consent grant|revoke``
publish there; the worker's ``consent_sync`` agent applies each record here with
``ConsentRegistry.apply`` — newest ``ts_ms`` wins and a revocation is final, so a replayed
older version never undoes a newer revocation. The router reads Redis for every alert.
(``ConsentRegistry.grant``/``revoke`` write Redis directly: the embedded demo and tests.)

Redis layout (prefix from settings, default ``yurong:``)::

    consent:<consent_id>         hash   the grant
    consents:uscc:<uscc>         set    consent ids given by an enterprise
    watchlist:<bank_id>          set    USCCs the bank watches
    banks                        set    bank ids known to the registry
    rules:<bank_id>              hash   the bank's alert rules (categories, min_severity, score_band_drop)
    alert:sent:<alert_id>        string de-duplication marker (with TTL)
    throttle:<bank>:<uscc>:<cat> zset   alert ids admitted in the sliding window (score = time)
    alert:throttled:<alert_id>   string the alert was held back (sticky on replay, with TTL)
    throttled:<bank_id>          stream held-back alerts of a bank (capped, with TTL): the record
                                        behind ``yurong bank throttled``

Logins (DESIGN §8): each component is a Redis ACL user of its own, ``worker`` or ``cli``
(``ConsentRegistry.for_component``), allowed only the commands this module runs for it and only
keys under the prefix (scripts/stack.sh writes the rules, docker-compose.yml likewise). A command
added here must be added to those rules: tests/integration/test_redis_acl.py runs every method as
the user that calls it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.commands.core import AsyncScript
from redis.exceptions import WatchError

from streams.core.consent import (
    BankRules,
    ConsentGrant,
    check_bank_id,
    check_uscc,
    merge_grant,
    new_grant,
    recipients,
    revocations,
)
from streams.errors import ConfigError
from streams.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The Redis ACL users (DESIGN §8): their rules and passwords come from scripts/stack.sh (local
# stack) or docker-compose.yml. The admin is the stack's own and the tests'; no component is it.
REDIS_ADMIN = "admin"
REDIS_WORKER = "worker"
REDIS_CLI = "cli"

DEDUP_TTL_S = 7 * 24 * 3600
THROTTLE_RECORD_TTL_S = 30 * 24 * 3600
THROTTLE_RECORD_MAXLEN = 10_000  # per bank (approximate trim)


def without_credentials(url: str) -> str:
    """``url`` without a user or password (scheme, host, port, database and options kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@dataclass(frozen=True)
class RedisLogin:
    """One ACL user's way into Redis: where (a URL without credentials), who, and the password."""

    url: str
    username: str
    password: SecretStr

    def client(self) -> aioredis.Redis:
        return aioredis.from_url(self.url, username=self.username, password=self.password.get_secret_value(),
                                 decode_responses=True)

    def authenticated_url(self) -> str:
        """The URL with user and password in it (percent-encoded), for what takes only a URL: the
        tests' and benches' admin connections. A secret: never log it."""
        parts = urlsplit(self.url)
        user, password = quote(self.username, safe=""), quote(self.password.get_secret_value(), safe="")
        return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


def redis_login(user: str, settings: Settings | None = None) -> RedisLogin:
    """The login of Redis ACL user ``user`` (``YURONG_REDIS_USERNAME`` overrides it): the settings'
    URL without credentials, and ``YURONG_REDIS_PASSWORD`` or else ``<secrets_dir>/<user>.password``."""
    s = settings or get_settings()
    username = s.redis.username or user
    url = s.redis.url.get_secret_value()
    if urlsplit(url).netloc.rpartition("@")[0]:
        log.warning("YURONG_REDIS_URL carries credentials; they are not used: this process logs in to Redis as "
                    "ACL user %r (YURONG_REDIS_USERNAME / YURONG_REDIS_PASSWORD)", username)
        url = without_credentials(url)
    if s.redis.password is not None:
        password = s.redis.password
    else:
        path = s.redis_secrets_dir / f"{username}.password"
        try:
            password = SecretStr(path.read_text().strip())
        except FileNotFoundError:
            raise ConfigError(f"no Redis password for ACL user {username!r}: set YURONG_REDIS_PASSWORD, or run "
                              f"`scripts/stack.sh up` for the local stack (it writes {path})") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the Redis password of ACL user {username!r} from {path}: {exc.strerror}") from None
        if not password.get_secret_value():
            raise ConfigError(f"the Redis password file of ACL user {username!r} is empty: {path}")
    return RedisLogin(url, username, password)


class ConsentRegistry:
    """Async Redis store behind ``yurong consent`` / ``yurong watchlist`` and the alert router."""

    def __init__(self, client: aioredis.Redis, prefix: str = "yurong:") -> None:
        # decode_responses=True: every reply is str, which redis-py's annotations (bytes | str) cannot
        # express, so the client is untyped here rather than cast at each call
        self._r: Any = client
        self._p = prefix
        self._throttle: AsyncScript | None = None

    @classmethod
    def from_url(cls, url: str, prefix: str = "yurong:") -> ConsentRegistry:
        """A registry on ``url`` as it stands, credentials included (tests, benches)."""
        return cls(aioredis.from_url(url, decode_responses=True), prefix)

    @classmethod
    def for_component(cls, component: str, settings: Settings | None = None) -> ConsentRegistry:
        """The registry of the settings' Redis and key prefix, logged in as ``component``'s own ACL
        user (``REDIS_WORKER``, ``REDIS_CLI``; see ``redis_login``)."""
        s = settings or get_settings()
        login = redis_login(component, s)
        log.debug("consent registry: Redis ACL user %r, key prefix %r", login.username, s.redis.key_prefix)
        return cls(login.client(), s.redis.key_prefix)

    async def close(self) -> None:
        await self._r.aclose()

    # consents
    async def grant(
        self,
        bank_id: str,
        uscc: str,
        purpose: str,
        expiry_ms: int,
        scope: Iterable[str] = (),
        start_ms: int | None = None,
        *,
        recorded_by: str,
        evidence_ref: str,
    ) -> ConsentGrant:
        """Write a new consent straight to Redis (``new_grant``: who records it, the evidence of
        authorisation and the rest validated as for a ``consent.grants`` record)."""
        g = new_grant(bank_id, uscc, purpose, expiry_ms, scope, start_ms,
                      recorded_by=recorded_by, evidence_ref=evidence_ref)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self._p}consent:{g.consent_id}", mapping=g.to_redis())
            pipe.sadd(f"{self._p}consents:uscc:{uscc}", g.consent_id)
            pipe.sadd(f"{self._p}banks", bank_id)
            await pipe.execute()
        return g

    async def revoke(self, bank_id: str, uscc: str, now_ms: int | None = None, *, recorded_by: str) -> list[str]:
        """Revoke every consent of ``uscc`` for ``bank_id`` that is in force or scheduled to start
        (not yet revoked, not expired), as ``recorded_by`` (the revoker's principal); return their ids."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        revoked = []
        for g in revocations(await self.grants_of(uscc), bank_id, now_ms, recorded_by=recorded_by):
            await self.apply(g)
            revoked.append(g.consent_id)
        return revoked

    async def apply(self, incoming: ConsentGrant) -> bool:
        """Store one version of a consent (a ``consent.grants`` record) with ``merge_grant``:
        atomic (optimistic WATCH on the consent's hash), idempotent, order-independent.
        True if the stored state changed."""
        check_bank_id(incoming.bank_id)
        check_uscc(incoming.uscc)
        key = f"{self._p}consent:{incoming.consent_id}"
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    h = await pipe.hgetall(key)
                    stored = ConsentGrant.from_redis(h) if h else None
                    merged = merge_grant(stored, incoming)
                    if merged == stored:
                        await pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping=merged.to_redis())
                    pipe.sadd(f"{self._p}consents:uscc:{merged.uscc}", merged.consent_id)
                    pipe.sadd(f"{self._p}banks", merged.bank_id)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue  # changed under us: read again

    async def forget(self, consent_id: str) -> bool:
        """Drop a consent entirely (a tombstone on ``consent.grants``). True if it existed."""
        key = f"{self._p}consent:{consent_id}"
        h = await self._r.hgetall(key)
        if not h:
            return False
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(f"{self._p}consents:uscc:{h['uscc']}", consent_id)
            await pipe.execute()
        return True

    async def grant_by_id(self, consent_id: str) -> ConsentGrant | None:
        h = await self._r.hgetall(f"{self._p}consent:{consent_id}")
        return ConsentGrant.from_redis(h) if h else None

    async def grants_of(self, uscc: str) -> list[ConsentGrant]:
        ids = sorted(await self._r.smembers(f"{self._p}consents:uscc:{uscc}"))
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(f"{self._p}consent:{cid}")
            rows = await pipe.execute()
        return [ConsentGrant.from_redis(h) for h in rows if h]

    async def all_grants(self, bank_id: str | None = None) -> list[ConsentGrant]:
        out = []
        async for key in self._r.scan_iter(match=f"{self._p}consent:*", count=500):
            h = await self._r.hgetall(key)
            if h and (bank_id is None or h.get("bank_id") == bank_id):
                out.append(ConsentGrant.from_redis(h))
        return sorted(out, key=lambda g: (g.bank_id, g.uscc, g.start_ms))

    # watchlists
    async def watch(self, bank_id: str, usccs: Iterable[str]) -> int:
        codes = [check_uscc(u) for u in usccs]
        if not codes:
            return 0
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.sadd(f"{self._p}watchlist:{check_bank_id(bank_id)}", *codes)
            pipe.sadd(f"{self._p}banks", bank_id)
            added, _ = await pipe.execute()
        return int(added)

    async def unwatch(self, bank_id: str, usccs: Iterable[str]) -> int:
        codes = list(usccs)
        return int(await self._r.srem(f"{self._p}watchlist:{check_bank_id(bank_id)}", *codes)) if codes else 0

    async def replace_watchlist(self, bank_id: str, usccs: Iterable[str]) -> tuple[int, int]:
        """Make the bank's watchlist exactly ``usccs`` in one transaction; ``(added, removed)``."""
        codes = {check_uscc(u) for u in usccs}
        key = f"{self._p}watchlist:{check_bank_id(bank_id)}"
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    before = set(await pipe.smembers(key))
                    pipe.multi()
                    pipe.delete(key)
                    if codes:
                        pipe.sadd(key, *codes)
                    pipe.sadd(f"{self._p}banks", bank_id)
                    await pipe.execute()
                    return len(codes - before), len(before - codes)
                except WatchError:
                    continue

    async def watchlist(self, bank_id: str) -> list[str]:
        return sorted(await self._r.smembers(f"{self._p}watchlist:{check_bank_id(bank_id)}"))

    async def banks_watching(self, uscc: str, bank_ids: Iterable[str]) -> set[str]:
        bank_ids = list(bank_ids)
        if not bank_ids:
            return set()
        async with self._r.pipeline(transaction=False) as pipe:
            for b in bank_ids:
                pipe.sismember(f"{self._p}watchlist:{b}", uscc)
            flags = await pipe.execute()
        return {b for b, on in zip(bank_ids, flags, strict=True) if on}

    async def recipients(self, uscc: str, category: str, now_ms: int) -> dict[str, str]:
        """``{bank_id: consent_id}`` for an alert about ``uscc`` right now (reads Redis each time,
        so a revocation takes effect on the next alert)."""
        grants = await self.grants_of(uscc)
        watching = await self.banks_watching(uscc, {g.bank_id for g in grants})
        return recipients(category, grants, watching, now_ms)

    # per-bank rules
    async def set_rules(self, bank_id: str, rules: BankRules) -> None:
        key = f"{self._p}rules:{check_bank_id(bank_id)}"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=rules.to_redis())
            pipe.sadd(f"{self._p}banks", bank_id)
            await pipe.execute()

    async def clear_rules(self, bank_id: str) -> None:
        await self._r.delete(f"{self._p}rules:{check_bank_id(bank_id)}")

    async def rules(self, bank_id: str) -> BankRules | None:
        """The bank's rules, None if it set none (everything passes)."""
        return (await self.rules_of([check_bank_id(bank_id)]))[bank_id]

    async def rules_of(self, bank_ids: Iterable[str]) -> dict[str, BankRules | None]:
        bank_ids = list(bank_ids)
        if not bank_ids:
            return {}
        async with self._r.pipeline(transaction=False) as pipe:
            for b in bank_ids:
                pipe.hgetall(f"{self._p}rules:{b}")
            rows = await pipe.execute()
        return {b: BankRules.from_redis(h) if h else None for b, h in zip(bank_ids, rows, strict=True)}

    # throttling
    async def admit(self, alert_id: str, bank_id: str, change: Mapping[str, Any], now_ms: int,
                    max_alerts: int, window_ms: int) -> int:
        """Throttle: may ``alert_id`` go out? At most ``max_alerts`` per bank, enterprise and
        category in any sliding ``window_ms``, decided atomically in Redis (one Lua script).

        Returns 1 (admitted — also when this alert was admitted before: a replay), 0 (held back
        now: recorded on the bank's ``throttled`` stream) or -1 (held back before: a replay,
        recorded already). The decision is sticky, so replays neither use up the window nor
        record a held-back alert twice."""
        if self._throttle is None:
            self._throttle = self._r.register_script(_THROTTLE_LUA)
        keys = [f"{self._p}throttle:{bank_id}:{change['uscc']}:{change['category']}",
                f"{self._p}alert:throttled:{alert_id}", f"{self._p}throttled:{bank_id}"]
        record = {"alert_id": alert_id, "change_id": change["change_id"], "uscc": change["uscc"],
                  "category": change["category"], "severity": change["severity"],
                  "reason_codes": ",".join(change.get("reason_codes") or ()),
                  "detected_ts_ms": str(change.get("detected_ts_ms", "")), "throttled_ts_ms": str(now_ms)}
        args = [now_ms, window_ms, max_alerts, alert_id, THROTTLE_RECORD_TTL_S * 1000, THROTTLE_RECORD_MAXLEN,
                *(x for kv in record.items() for x in kv)]
        return int(await self._throttle(keys=keys, args=args))

    async def throttled(self, bank_id: str, count: int = 100) -> list[dict[str, str]]:
        """The bank's most recent held-back alerts, newest first."""
        rows = await self._r.xrevrange(f"{self._p}throttled:{check_bank_id(bank_id)}", count=count)
        return [dict(fields) for _, fields in rows]

    # alert de-duplication
    async def already_delivered(self, alert_id: str) -> bool:
        """True if ``alert_id`` was delivered before (a replay after a crash)."""
        return bool(await self._r.exists(f"{self._p}alert:sent:{alert_id}"))

    async def mark_delivered(self, alert_id: str) -> None:
        """Record a delivery; called only after Kafka acknowledged the alert, so a crash in
        between repeats the alert (at-least-once) rather than losing it."""
        await self._r.set(f"{self._p}alert:sent:{alert_id}", "1", ex=DEDUP_TTL_S)


# KEYS: window zset, sticky "held back" marker, the bank's held-back stream.
# ARGV: now_ms, window_ms, max, alert_id, record ttl ms, stream maxlen, field/value pairs of the record.
_THROTTLE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 1
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return 0
"""
