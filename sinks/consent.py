"""Consent and watchlist registry in Redis, and the pure rules that decide who gets an alert.

An alert about enterprise U reaches bank B only if B holds an active consent from U
(started, not expired, not revoked, its scope covers the alert's category) *and* U is on B's
watchlist; then B's own rules (categories, minimum severity, score-band drop) filter it,
replays are de-duplicated and a throttle caps alerts per bank, enterprise and category.
Bank ids are fixed-width (``b0001``) so Kafka prefix ACLs on ``alerts.<bank_id>`` cannot overlap.

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
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from streams.errors import ConfigError
from streams.identifiers import uscc_problem
from streams.risk import LEVEL_NAMES, SEVERITY_RANK

BANK_ID = re.compile(r"b[0-9]{4}")
DEDUP_TTL_S = 7 * 24 * 3600
CONSENT_TOPIC = "consent.grants"
# DESIGN §7 alert categories (streams/alerts.py raises them)
ALERT_CATEGORIES = ("registration", "judicial", "penalty", "tax", "social_insurance", "utilities", "collateral",
                    "customs_ip", "score_band", "positive")
THROTTLE_RECORD_TTL_S = 30 * 24 * 3600
THROTTLE_RECORD_MAXLEN = 10_000  # per bank (approximate trim)


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
    ts_ms: int = 0  # when this version was written (consent.grants ordering); 0 = unknown

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
            ts_ms=int(h.get("ts_ms") or 0),
        )

    def to_record(self) -> dict[str, Any]:
        """The ``consent/grant`` Avro record (topic ``consent.grants``)."""
        return {**asdict(self), "scope": list(self.scope)}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> ConsentGrant:
        """From a ``consent/grant`` record, validating bank id and USCC (ConfigError)."""
        return cls(
            consent_id=r["consent_id"], bank_id=check_bank_id(r["bank_id"]), uscc=check_uscc(r["uscc"]),
            purpose=r["purpose"], start_ms=int(r["start_ms"]), expiry_ms=int(r["expiry_ms"]),
            scope=tuple(r.get("scope") or ()), revoked_ms=int(r.get("revoked_ms") or 0), ts_ms=int(r["ts_ms"]),
        )


def new_grant(bank_id: str, uscc: str, purpose: str, expiry_ms: int, scope: Iterable[str] = (),
              start_ms: int | None = None, now_ms: int | None = None) -> ConsentGrant:
    """A new consent with a fresh id, validated (bank id, USCC, scope categories, dates)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    scope = tuple(scope)
    unknown = sorted(set(scope) - set(ALERT_CATEGORIES))
    if unknown:
        raise ConfigError(f"unknown alert categories {unknown}; choose from {', '.join(ALERT_CATEGORIES)}")
    start = now_ms if start_ms is None else start_ms
    if expiry_ms <= start:
        raise ConfigError("a consent must expire after it starts")
    return ConsentGrant(consent_id=uuid.uuid4().hex, bank_id=check_bank_id(bank_id), uscc=check_uscc(uscc),
                        purpose=purpose, start_ms=start, expiry_ms=expiry_ms, scope=scope, ts_ms=now_ms)


def revocations(grants: Iterable[ConsentGrant], bank_id: str, now_ms: int) -> list[ConsentGrant]:
    """New versions of every consent of ``grants`` for ``bank_id`` that is in force or scheduled
    to start (not revoked, not expired), revoked from ``now_ms``."""
    return [replace(g, revoked_ms=now_ms, ts_ms=max(now_ms, g.ts_ms + 1)) for g in grants
            if g.bank_id == bank_id and not g.revoked_ms and now_ms < g.expiry_ms]


def _version_key(g: ConsentGrant) -> tuple:
    """Newest first; ties broken by content *without* the revocation, which ``merge_grant``
    combines separately — otherwise a merged state would order differently from the versions
    it came from, and the result would depend on arrival order."""
    return g.ts_ms, json.dumps({**g.to_record(), "revoked_ms": 0}, sort_keys=True)


def merge_grant(stored: ConsentGrant | None, incoming: ConsentGrant) -> ConsentGrant:
    """The state to keep when ``incoming`` arrives for a consent already ``stored``.

    The newer version (by ``ts_ms``; a total order breaks ties) wins, and a revocation is final:
    the earliest revocation either version carries is kept. So the result does not depend on
    the order records arrive in (commutative, associative, idempotent): a replayed older
    record never undoes a newer revocation. A version that changes the consent's bank or
    enterprise is refused (ConfigError).
    """
    if stored is None:
        return incoming
    if (stored.consent_id, stored.bank_id, stored.uscc) != (incoming.consent_id, incoming.bank_id, incoming.uscc):
        raise ConfigError(f"consent {incoming.consent_id} cannot change its bank or enterprise")
    newer = max(stored, incoming, key=_version_key)
    revoked = [r for r in (stored.revoked_ms, incoming.revoked_ms) if r]
    return replace(newer, revoked_ms=min(revoked) if revoked else 0)


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


CONSENT_TOPIC_CONFIG = {"cleanup.policy": "compact"}


class ConsentPublisher:
    """Publishes consent versions to ``consent.grants`` (key = consent id), creating the compacted
    topic if needed. Connects on construction, so a caller can take the time of a revocation
    right before ``publish`` and the record reaches the worker milliseconds later."""

    def __init__(self, bootstrap: str, partitions: int = 4, replication_factor: int = 1) -> None:
        from confluent_kafka import Producer

        from streams.kafka_admin import ensure_topics
        from streams.serde import schema_store

        self._schemas = schema_store()
        ensure_topics(bootstrap, {CONSENT_TOPIC: CONSENT_TOPIC_CONFIG}, partitions=partitions,
                      replication_factor=replication_factor)
        # acks=all; no idempotent producer: its set-up costs ~0.5 s per CLI call, and a duplicate
        # from a retry is harmless here (versions merge idempotently, in any order: merge_grant)
        self._producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        self._producer.list_topics(CONSENT_TOPIC, timeout=15)  # connected, metadata known

    def publish(self, grants: Iterable[ConsentGrant], timeout_s: float = 30.0) -> int:
        """Publish and wait until Kafka acknowledged every record; ``YurongError`` otherwise."""
        from streams.errors import YurongError
        from streams.masking import assert_no_pii

        records = [g.to_record() for g in grants]
        for r in records:
            assert_no_pii(r, "consent grant")  # the purpose is free text
        values = [(r["consent_id"].encode(), self._schemas.encode("consent/grant", r)) for r in records]
        errors: list[str] = []

        def on_delivery(err, _msg) -> None:
            if err is not None:
                errors.append(str(err))

        for key, value in values:
            self._producer.produce(CONSENT_TOPIC, key=key, value=value, on_delivery=on_delivery)
        if self._producer.flush(timeout_s) or errors:
            raise YurongError(f"Kafka did not acknowledge the consent records on {CONSENT_TOPIC}: {errors or 'timed out'}")
        return len(values)


def publish_grants(bootstrap: str, grants: Iterable[ConsentGrant], partitions: int = 4, replication_factor: int = 1,
                   timeout_s: float = 30.0) -> int:
    """Publish consent versions to ``consent.grants`` and wait for Kafka's acks (acks=all);
    ``YurongError`` if any is not acknowledged. Returns the number published."""
    grants = list(grants)
    if not grants:
        return 0
    return ConsentPublisher(bootstrap, partitions, replication_factor).publish(grants, timeout_s)


def scan_grants(bootstrap: str, keep, timeout_s: float = 120.0) -> dict[str, ConsentGrant]:
    """Read ``consent.grants`` (the system of record) to its current end and return the merged
    state (``merge_grant``) of every consent for which ``keep(grant)`` is true — what a
    revocation must cover even if the worker has not applied everything to Redis yet."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.errors import YurongError
    from streams.kafka_admin import watermark_offsets
    from streams.serde import schema_store

    schemas = schema_store()
    out: dict[str, ConsentGrant] = {}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"yurong-consent-scan-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        md = consumer.list_topics(timeout=15).topics.get(CONSENT_TOPIC)
        if md is None:
            return out
        ends: dict[int, int] = {}
        starts = []
        for part in md.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(CONSENT_TOPIC, part))
            if high > low:
                ends[part] = high
                starts.append(TopicPartition(CONSENT_TOPIC, part, low))
        if not starts:
            return out
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise YurongError(f"could not read {CONSENT_TOPIC} to its end within {timeout_s:.0f} s")
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                if msg.error() is not None or msg.partition() not in ends:
                    continue
                if msg.value() is None:
                    out.pop((msg.key() or b"").decode(), None)
                else:
                    try:
                        g = ConsentGrant.from_record(schemas.decode(msg.value(), "consent/grant")[1])
                    except Exception:  # noqa: BLE001 — a bad record is the worker's dead letter, not ours
                        g = None
                    if g is not None and keep(g):
                        try:
                            out[g.consent_id] = merge_grant(out.get(g.consent_id), g)
                        except ConfigError:
                            pass  # a refused version, as the worker refuses it
                if msg.offset() >= ends[msg.partition()] - 1:
                    del ends[msg.partition()]
    finally:
        consumer.close()
    return out


@dataclass(frozen=True)
class BankRules:
    """What a bank wants to hear about (``yurong bank rules``); the defaults let everything through."""

    categories: tuple[str, ...] = ()  # empty = all
    min_severity: str = "info"
    score_band_drop: int = 0  # score_band alerts need the level to fall at least this many bands (0 = any)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.categories) - set(ALERT_CATEGORIES))
        if unknown:
            raise ConfigError(f"unknown alert categories {unknown}; choose from {', '.join(ALERT_CATEGORIES)}")
        if self.min_severity not in SEVERITY_RANK:
            raise ConfigError(f"severity {self.min_severity!r} is not one of {', '.join(SEVERITY_RANK)}")
        if not 0 <= self.score_band_drop < len(LEVEL_NAMES):
            raise ConfigError(f"score-band drop must be 0..{len(LEVEL_NAMES) - 1} levels")

    def to_redis(self) -> dict[str, str]:
        return {"categories": ",".join(self.categories), "min_severity": self.min_severity,
                "score_band_drop": str(self.score_band_drop)}

    @classmethod
    def from_redis(cls, h: Mapping[str, str]) -> BankRules:
        return cls(categories=tuple(c for c in h.get("categories", "").split(",") if c),
                   min_severity=h.get("min_severity") or "info", score_band_drop=int(h.get("score_band_drop") or 0))


def levels_dropped(level_before: str, level_after: str) -> int:
    """Bands a level fell from ``level_before`` to ``level_after`` (A best … E worst; negative
    if it rose; 0 if either is unknown)."""
    if level_before not in LEVEL_NAMES or level_after not in LEVEL_NAMES:
        return 0
    return LEVEL_NAMES.index(level_after) - LEVEL_NAMES.index(level_before)


def filtered_by(rules: BankRules | None, change: Mapping[str, Any]) -> str | None:
    """Why the bank's ``rules`` hold back ``change`` (``category``, ``severity``,
    ``score_band_drop``), or None if it may go out. No rules: everything goes out."""
    if rules is None:
        return None
    if rules.categories and change["category"] not in rules.categories:
        return "category"
    if SEVERITY_RANK.get(change["severity"], -1) < SEVERITY_RANK[rules.min_severity]:
        return "severity"
    if change["category"] == "score_band" and rules.score_band_drop and \
            levels_dropped(change["level_before"], change["level_after"]) < rules.score_band_drop:
        return "score_band_drop"
    return None


@dataclass(frozen=True)
class WatchlistProblem:
    line: int  # 1-based line of the file
    value: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.value!r} {self.problem}"


@dataclass
class WatchlistFile:
    """A bank's watchlist file, parsed: valid codes (file order, no repeats), problems per line."""

    codes: list[str] = field(default_factory=list)
    problems: list[WatchlistProblem] = field(default_factory=list)
    duplicates: int = 0


HEADER_NAMES = {"uscc", "统一社会信用代码", "credit_code", "social_credit_code"}


def parse_watchlist(text: str) -> WatchlistFile:
    """Parse a CSV of USCCs: the column headed ``uscc`` (or 统一社会信用代码) if the first row is a
    header, else the first column. Codes are trimmed and upper-cased; each invalid one is
    reported with its line and the reason (length, alphabet, GB 32100 check digit)."""
    out, seen = WatchlistFile(), set()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    col, first = 0, True
    for row in reader:
        line = reader.line_num
        if first:
            first = False
            header = [c.strip().lower() for c in row]
            hit = next((i for i, c in enumerate(header) if c in HEADER_NAMES), None)
            if hit is not None:
                col = hit
                continue
        if not row or not any(c.strip() for c in row):
            continue
        value = row[col].strip().upper() if col < len(row) else ""
        if not value:
            out.problems.append(WatchlistProblem(line, value, "has no USCC in its column"))
            continue
        problem = uscc_problem(value)
        if problem:
            out.problems.append(WatchlistProblem(line, value, problem))
        elif value in seen:
            out.duplicates += 1
        else:
            seen.add(value)
            out.codes.append(value)
    return out


class ConsentRegistry:
    """Async Redis store behind ``yurong consent`` / ``yurong watchlist`` and the alert router."""

    def __init__(self, client: aioredis.Redis, prefix: str = "yurong:") -> None:
        self._r = client
        self._p = prefix
        self._throttle = None

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
        g = new_grant(bank_id, uscc, purpose, expiry_ms, scope, start_ms)
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
        for g in revocations(await self.grants_of(uscc), bank_id, now_ms):
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
        return {b for b, on in zip(bank_ids, flags) if on}

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
        return {b: BankRules.from_redis(h) if h else None for b, h in zip(bank_ids, rows)}

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


def throttle_model(admitted: list[int], now_ms: int, max_alerts: int, window_ms: int) -> bool:
    """The throttle's rule in plain Python (what the Lua script decides, for tests): may one
    more alert go out at ``now_ms`` given the times ``admitted`` before?"""
    return sum(1 for t in admitted if t > now_ms - window_ms) < max_alerts
