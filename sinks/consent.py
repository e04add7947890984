"""Consent and watchlist registry in Redis, and the pure rule that decides who may get an alert.

An alert about enterprise U reaches bank B only if B holds an active consent from U
(started, not expired, not revoked, its scope covers the alert's category) *and* U is on B's
watchlist. Bank ids are fixed-width (``b0001``) so Kafka prefix ACLs on ``alerts.<bank_id>``
cannot overlap.

Redis layout (prefix from settings, default ``yurong:``)::

    consent:<consent_id>      hash   the grant
    consents:uscc:<uscc>      set    consent ids given by an enterprise
    watchlist:<bank_id>       set    USCCs the bank watches
    banks                     set    bank ids known to the registry
    alert:sent:<alert_id>     string de-duplication marker (with TTL)
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from streams.errors import ConfigError
from streams.identifiers import uscc_problem

BANK_ID = re.compile(r"b[0-9]{4}")
DEDUP_TTL_S = 7 * 24 * 3600


def check_bank_id(bank_id: str) -> str:
    if not isinstance(bank_id, str) or not BANK_ID.fullmatch(bank_id):
        raise ConfigError(f"bank id {bank_id!r} must be 'b' + 4 digits, e.g. b0001 (fixed width keeps Kafka ACL prefixes apart)")
    return bank_id


def check_uscc(code: str) -> str:
    problem = uscc_problem(code)
    if problem:
        raise ConfigError(f"USCC {code!r} {problem}")
    return code


@dataclass(frozen=True)
class ConsentGrant:
    """An enterprise's authorisation for one bank to receive its risk alerts (授权)."""

    consent_id: str
    bank_id: str
    uscc: str
    purpose: str
    start_ms: int
    expiry_ms: int
    scope: tuple[str, ...] = field(default_factory=tuple)  # alert categories; empty = all
    revoked_ms: int = 0

    def is_active(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.expiry_ms and not (self.revoked_ms and self.revoked_ms <= now_ms)

    def covers(self, category: str) -> bool:
        return not self.scope or category in self.scope

    def to_redis(self) -> dict[str, str]:
        d = asdict(self)
        d["scope"] = ",".join(self.scope)
        return {k: str(v) for k, v in d.items()}

    @classmethod
    def from_redis(cls, h: dict[str, str]) -> ConsentGrant:
        return cls(
            consent_id=h["consent_id"],
            bank_id=h["bank_id"],
            uscc=h["uscc"],
            purpose=h["purpose"],
            start_ms=int(h["start_ms"]),
            expiry_ms=int(h["expiry_ms"]),
            scope=tuple(s for s in h.get("scope", "").split(",") if s),
            revoked_ms=int(h.get("revoked_ms") or 0),
        )


def recipients(
    category: str,
    grants: Iterable[ConsentGrant],
    watching: set[str],
    now_ms: int,
) -> dict[str, str]:
    """Banks that may receive an alert of ``category``: ``{bank_id: consent_id}``.

    ``grants`` are the enterprise's consents, ``watching`` the banks whose watchlist holds it.
    """
    out: dict[str, str] = {}
    for g in grants:
        if g.bank_id in watching and g.is_active(now_ms) and g.covers(category):
            out.setdefault(g.bank_id, g.consent_id)
    return dict(sorted(out.items()))


class ConsentRegistry:
    """Async Redis store behind ``yurong consent`` / ``yurong watchlist`` and the alert router."""

    def __init__(self, client: aioredis.Redis, prefix: str = "yurong:") -> None:
        self._r = client
        self._p = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "yurong:") -> ConsentRegistry:
        return cls(aioredis.from_url(url, decode_responses=True), prefix)

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
    ) -> ConsentGrant:
        g = ConsentGrant(
            consent_id=uuid.uuid4().hex,
            bank_id=check_bank_id(bank_id),
            uscc=check_uscc(uscc),
            purpose=purpose,
            start_ms=int(time.time() * 1000) if start_ms is None else start_ms,
            expiry_ms=expiry_ms,
            scope=tuple(scope),
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self._p}consent:{g.consent_id}", mapping=g.to_redis())
            pipe.sadd(f"{self._p}consents:uscc:{uscc}", g.consent_id)
            pipe.sadd(f"{self._p}banks", bank_id)
            await pipe.execute()
        return g

    async def revoke(self, bank_id: str, uscc: str, now_ms: int | None = None) -> list[str]:
        """Revoke every consent of ``uscc`` for ``bank_id`` that is in force or scheduled to start
        (not yet revoked, not expired); return their ids."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        revoked = []
        for g in await self.grants_of(uscc):
            if g.bank_id == bank_id and not g.revoked_ms and now_ms < g.expiry_ms:
                await self._r.hset(f"{self._p}consent:{g.consent_id}", "revoked_ms", str(now_ms))
                revoked.append(g.consent_id)
        return revoked

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
        return {b for b, on in zip(bank_ids, flags) if on}

    async def recipients(self, uscc: str, category: str, now_ms: int) -> dict[str, str]:
        """``{bank_id: consent_id}`` for an alert about ``uscc`` right now (reads Redis each time,
        so a revocation takes effect on the next alert)."""
        grants = await self.grants_of(uscc)
        watching = await self.banks_watching(uscc, {g.bank_id for g in grants})
        return recipients(category, grants, watching, now_ms)

    # alert de-duplication
    async def already_delivered(self, alert_id: str) -> bool:
        """True if ``alert_id`` was delivered before (a replay after a crash)."""
        return bool(await self._r.exists(f"{self._p}alert:sent:{alert_id}"))

    async def mark_delivered(self, alert_id: str) -> None:
        """Record a delivery; called only after Kafka acknowledged the alert, so a crash in
        between repeats the alert (at-least-once) rather than losing it."""
        await self._r.set(f"{self._p}alert:sent:{alert_id}", "1", ex=DEDUP_TTL_S)
