"""Consent and watchlist registry against the real Redis (each test under its own key prefix)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis

from connectors.simulator.identities import make_uscc
from sinks.consent import DEDUP_TTL_S, ConsentRegistry
from streams.errors import ConfigError

pytestmark = pytest.mark.integration

CATEGORIES = ("registration", "judicial", "penalty", "tax", "social_insurance", "utilities", "collateral",
              "customs_ip", "score_band", "positive")
DAY = 86_400_000


@pytest.fixture
def prefix(redis_url, unique) -> Iterator[str]:
    p = f"yurong-test:{unique}:"
    yield p
    r = redis.from_url(redis_url)
    keys = list(r.scan_iter(match=f"{p}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture
def with_registry(redis_url, prefix) -> Callable[[Callable[[ConsentRegistry], Awaitable]], object]:
    """Run ``body(registry)`` in a fresh event loop with a registry under the test's prefix."""

    def run(body):
        async def go():
            reg = ConsentRegistry.from_url(redis_url, prefix)
            try:
                return await body(reg)
            finally:
                await reg.close()

        return asyncio.run(go())

    return run


def usccs_for(unique: str, n: int) -> list[str]:
    rng = random.Random(f"consent-{unique}")
    out: list[str] = []
    while len(out) < n:
        code = make_uscc(rng, "500103")
        if code not in out:
            out.append(code)
    return out


def banks_for(unique: str, n: int) -> list[str]:
    rng = random.Random(f"banks-{unique}")
    return sorted(f"b{k:04d}" for k in rng.sample(range(1, 10_000), n))


def now_ms() -> int:
    return int(time.time() * 1000)


def test_grant_list_and_revoke(with_registry, unique):
    (u1, u2), (b1, b2) = usccs_for(unique, 2), banks_for(unique, 2)

    async def body(reg: ConsentRegistry):
        now = now_ms()
        g1 = await reg.grant(b1, u1, "post-loan monitoring", now + 30 * DAY, scope=["judicial", "tax"])
        g2 = await reg.grant(b2, u1, "credit approval", now + DAY)
        g3 = await reg.grant(b1, u2, "post-loan monitoring", now + DAY)
        assert (g1.bank_id, g1.uscc, g1.scope, g1.revoked_ms) == (b1, u1, ("judicial", "tax"), 0)
        assert g1.start_ms <= now_ms() and g1.is_active(now_ms())

        assert {g.consent_id for g in await reg.grants_of(u1)} == {g1.consent_id, g2.consent_id}
        assert await reg.grants_of(u2) == [g3]
        assert await reg.grants_of(usccs_for(unique + "x", 1)[0]) == []
        assert {g.consent_id for g in await reg.all_grants()} == {g1.consent_id, g2.consent_id, g3.consent_id}
        assert {g.consent_id for g in await reg.all_grants(b1)} == {g1.consent_id, g3.consent_id}
        stored = next(g for g in await reg.all_grants(b1) if g.consent_id == g1.consent_id)
        assert stored == g1  # every field survives the round trip through Redis

        revoked_at = now_ms()
        assert await reg.revoke(b1, u1, now_ms=revoked_at) == [g1.consent_id]
        assert await reg.revoke(b1, u1) == []  # nothing active left to revoke
        after = {g.consent_id: g for g in await reg.grants_of(u1)}
        assert after[g1.consent_id].revoked_ms == revoked_at and not after[g1.consent_id].is_active(revoked_at)
        assert after[g2.consent_id].revoked_ms == 0  # another bank's consent is untouched
        assert (await reg.grants_of(u2))[0].revoked_ms == 0  # another enterprise's consent is untouched

    with_registry(body)


def test_recipients_need_consent_and_watchlist_and_scope_and_time(with_registry, unique):
    (u,), (b_all, b_scoped, b_unwatched, b_future, b_expired, b_none) = usccs_for(unique, 1), banks_for(unique, 6)

    async def body(reg: ConsentRegistry):
        now = now_ms()
        g_all = await reg.grant(b_all, u, "p", now + DAY)
        g_scoped = await reg.grant(b_scoped, u, "p", now + DAY, scope=["judicial"])
        await reg.grant(b_unwatched, u, "p", now + DAY)
        g_future = await reg.grant(b_future, u, "p", now + 2 * DAY, start_ms=now + DAY)
        await reg.grant(b_expired, u, "p", now - DAY, start_ms=now - 2 * DAY)
        for b in (b_all, b_scoped, b_future, b_expired, b_none):
            assert await reg.watch(b, [u]) == 1
        assert await reg.watch(b_all, [u]) == 0  # already on the list
        assert await reg.watchlist(b_all) == [u]

        t0, now = now, now_ms()  # the grants without start_ms started when they were made
        assert await reg.recipients(u, "judicial", now) == {b_all: g_all.consent_id, b_scoped: g_scoped.consent_id}
        assert await reg.recipients(u, "tax", now) == {b_all: g_all.consent_id}  # outside b_scoped's scope
        # the future consent starts (inclusive); the first one has expired by then (exclusive)
        assert await reg.recipients(u, "tax", t0 + DAY) == {b_future: g_future.consent_id}
        assert await reg.recipients(u, "tax", t0 + 2 * DAY) == {}

        assert await reg.unwatch(b_all, [u]) == 1
        assert await reg.recipients(u, "judicial", now) == {b_scoped: g_scoped.consent_id}

    with_registry(body)


def test_a_revocation_takes_effect_on_the_very_next_alert(with_registry, unique):
    (u,), (b1, b2) = usccs_for(unique, 1), banks_for(unique, 2)

    async def body(reg: ConsentRegistry):
        g1 = await reg.grant(b1, u, "p", now_ms() + DAY)
        g2 = await reg.grant(b2, u, "p", now_ms() + DAY)
        await reg.watch(b1, [u])
        await reg.watch(b2, [u])
        assert await reg.recipients(u, "penalty", now_ms()) == {b1: g1.consent_id, b2: g2.consent_id}
        assert await reg.revoke(b1, u) == [g1.consent_id]
        assert await reg.recipients(u, "penalty", now_ms()) == {b2: g2.consent_id}
        # a new consent after the revocation authorises again
        g3 = await reg.grant(b1, u, "p", now_ms() + DAY)
        assert await reg.recipients(u, "penalty", now_ms()) == {b1: g3.consent_id, b2: g2.consent_id}

    with_registry(body)


def test_revoking_before_a_scheduled_consent_starts_withdraws_it_too(with_registry, unique):
    """An enterprise that revokes a bank's consent must not start sending it alerts a day later
    because the consent it revoked had a future start date."""
    (u,), (b,) = usccs_for(unique, 1), banks_for(unique, 1)

    async def body(reg: ConsentRegistry):
        now = now_ms()
        g = await reg.grant(b, u, "p", now + 30 * DAY, start_ms=now + DAY)
        await reg.watch(b, [u])
        assert await reg.revoke(b, u, now_ms=now) == [g.consent_id]
        assert await reg.recipients(u, "judicial", now + 2 * DAY) == {}

    with_registry(body)


def test_delivery_markers_deduplicate_replayed_alerts(with_registry, redis_url, prefix, unique):
    (u,), (b,) = usccs_for(unique, 1), banks_for(unique, 1)
    alert_id = f"{b}/market.enterprise_registration@42#{u}/STATUS_SUSPENDED"

    async def body(reg: ConsentRegistry):
        assert not await reg.already_delivered(alert_id)
        await reg.mark_delivered(alert_id)
        assert await reg.already_delivered(alert_id)
        await reg.mark_delivered(alert_id)  # a replay marks again without error
        assert await reg.already_delivered(alert_id)
        assert not await reg.already_delivered(alert_id + "x")

    with_registry(body)
    ttl = redis.from_url(redis_url).ttl(f"{prefix}alert:sent:{alert_id}")
    assert 0 < ttl <= DEDUP_TTL_S  # markers expire: Redis does not grow without bound


@pytest.mark.parametrize("bank_id", ["b001", "b00001", "B0001", "bank1", "b000a", ""])
def test_a_bad_bank_id_is_refused_with_a_clear_message(with_registry, unique, bank_id):
    (u,) = usccs_for(unique, 1)

    async def body(reg: ConsentRegistry):
        for attempt in (lambda: reg.grant(bank_id, u, "p", now_ms() + DAY), lambda: reg.watch(bank_id, [u]),
                        lambda: reg.watchlist(bank_id)):
            with pytest.raises(ConfigError, match=r"must be 'b' \+ 4 digits"):
                await attempt()
        assert await reg.all_grants() == []  # nothing was stored

    with_registry(body)


@pytest.mark.parametrize("mutate, message", [
    (lambda u: u[:17] + ("0" if u[17] != "0" else "1"), "check digit"),
    (lambda u: u[:16], "must be 18 characters"),
    (lambda u: u[:10] + "I" + u[11:], "outside the GB 32100 alphabet"),
])
def test_a_bad_uscc_is_refused_with_a_clear_message(with_registry, unique, mutate, message):
    good, = usccs_for(unique, 1)
    (b,) = banks_for(unique, 1)
    bad = mutate(good)

    async def body(reg: ConsentRegistry):
        with pytest.raises(ConfigError, match=message) as err:
            await reg.grant(b, bad, "p", now_ms() + DAY)
        assert bad in str(err.value)
        with pytest.raises(ConfigError, match=message):
            await reg.watch(b, [good, bad])  # one bad code refuses the whole import
        assert await reg.watchlist(b) == []
        assert await reg.all_grants() == []

    with_registry(body)


def test_recipients_match_an_independent_model_over_a_bank_by_enterprise_matrix(with_registry, unique):
    banks, usccs = banks_for(unique, 6), usccs_for(unique, 20)
    rng = random.Random(f"matrix-{unique}")
    now = now_ms()

    async def body(reg: ConsentRegistry):
        # model: (bank, uscc) -> list of (consent_id, scope, start, expiry, revoked) and the watch flag
        model: dict[tuple[str, str], list[tuple[str, tuple[str, ...], int, int, bool]]] = {}
        watched: set[tuple[str, str]] = set()
        for b in banks:
            for u in usccs:
                grants = []
                for _ in range(rng.choice([0, 0, 1, 1, 1, 2])):
                    kind = rng.choice(["active", "active", "expired", "future", "revoked"])
                    start, expiry = {"active": (now - DAY, now + DAY), "expired": (now - 2 * DAY, now - DAY),
                                     "future": (now + DAY, now + 2 * DAY), "revoked": (now - DAY, now + DAY)}[kind]
                    scope = tuple(rng.sample(CATEGORIES, rng.randint(1, 3))) if rng.random() < 0.4 else ()
                    g = await reg.grant(b, u, "post-loan monitoring", expiry, scope=scope, start_ms=start)
                    grants.append([g.consent_id, scope, start, expiry, kind == "revoked"])
                if any(r for *_, r in grants):
                    revoked = await reg.revoke(b, u, now_ms=now - 1)
                    # revoke withdraws every consent that is active at that moment for the pair
                    for g in grants:
                        if g[2] <= now - 1 < g[3]:
                            assert g[0] in revoked
                            g[4] = True
                model[(b, u)] = [tuple(g) for g in grants]
                if rng.random() < 0.6:
                    watched.add((b, u))
        for b in banks:
            await reg.watch(b, [u for u in usccs if (b, u) in watched])

        checked, delivered = 0, 0
        for u in usccs:
            for category in CATEGORIES:
                allowed = {
                    b: {cid for cid, scope, start, expiry, revoked in model[(b, u)]
                        if start <= now < expiry and not revoked and (not scope or category in scope)}
                    for b in banks if (b, u) in watched
                }
                allowed = {b: ids for b, ids in allowed.items() if ids}
                got = await reg.recipients(u, category, now)
                assert set(got) == set(allowed), (u, category)
                assert all(got[b] in allowed[b] for b in got), (u, category)
                checked += 1
                delivered += bool(got)
        assert checked == 200 and 0 < delivered < checked  # the matrix exercises both outcomes

    with_registry(body)
