"""Consent and watchlist registry against the real Redis (each test under its own key prefix):
grants and their versions from consent.grants, watchlists, bank rules, the throttle."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

import pytest
import redis
from confluent_kafka.admin import AdminClient, ConfigResource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.simulator.identities import distinct_usccs
from streams.core.consent import BankRules, merge_grant, new_grant, revocations, throttle_model
from streams.errors import ConfigError
from streams.kafka.consent_log import publish_grants, scan_grants
from streams.worker.consent_store import DEDUP_TTL_S, THROTTLE_RECORD_TTL_S, ConsentRegistry

RECORDED = {"recorded_by": "consent", "evidence_ref": "auth-letter:test/0001"}  # who recorded a grant, and its 授权书
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
    return distinct_usccs(random.Random(f"consent-{unique}"), n, "500103")


def banks_for(unique: str, n: int) -> list[str]:
    rng = random.Random(f"banks-{unique}")
    return sorted(f"b{k:04d}" for k in rng.sample(range(1, 10_000), n))


def now_ms() -> int:
    return int(time.time() * 1000)


def test_grant_list_and_revoke(with_registry, unique):
    (u1, u2), (b1, b2) = usccs_for(unique, 2), banks_for(unique, 2)

    async def body(reg: ConsentRegistry):
        now = now_ms()
        g1 = await reg.grant(b1, u1, "post-loan monitoring", now + 30 * DAY, scope=["judicial", "tax"], **RECORDED)
        g2 = await reg.grant(b2, u1, "credit approval", now + DAY, **RECORDED)
        g3 = await reg.grant(b1, u2, "post-loan monitoring", now + DAY, **RECORDED)
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
        assert await reg.revoke(b1, u1, now_ms=revoked_at, recorded_by=RECORDED["recorded_by"]) == [g1.consent_id]
        assert await reg.revoke(b1, u1, recorded_by=RECORDED["recorded_by"]) == []  # nothing active left to revoke
        after = {g.consent_id: g for g in await reg.grants_of(u1)}
        assert after[g1.consent_id].revoked_ms == revoked_at and not after[g1.consent_id].is_active(revoked_at)
        assert after[g2.consent_id].revoked_ms == 0  # another bank's consent is untouched
        assert (await reg.grants_of(u2))[0].revoked_ms == 0  # another enterprise's consent is untouched

    with_registry(body)


def test_recipients_need_consent_and_watchlist_and_scope_and_time(with_registry, unique):
    (u,), (b_all, b_scoped, b_unwatched, b_future, b_expired, b_none) = usccs_for(unique, 1), banks_for(unique, 6)

    async def body(reg: ConsentRegistry):
        now = now_ms()
        g_all = await reg.grant(b_all, u, "p", now + DAY, **RECORDED)
        g_scoped = await reg.grant(b_scoped, u, "p", now + DAY, scope=["judicial"], **RECORDED)
        await reg.grant(b_unwatched, u, "p", now + DAY, **RECORDED)
        g_future = await reg.grant(b_future, u, "p", now + 2 * DAY, start_ms=now + DAY, **RECORDED)
        await reg.grant(b_expired, u, "p", now - DAY, start_ms=now - 2 * DAY, **RECORDED)
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
        g1 = await reg.grant(b1, u, "p", now_ms() + DAY, **RECORDED)
        g2 = await reg.grant(b2, u, "p", now_ms() + DAY, **RECORDED)
        await reg.watch(b1, [u])
        await reg.watch(b2, [u])
        assert await reg.recipients(u, "penalty", now_ms()) == {b1: g1.consent_id, b2: g2.consent_id}
        assert await reg.revoke(b1, u, recorded_by=RECORDED["recorded_by"]) == [g1.consent_id]
        assert await reg.recipients(u, "penalty", now_ms()) == {b2: g2.consent_id}
        # a new consent after the revocation authorises again
        g3 = await reg.grant(b1, u, "p", now_ms() + DAY, **RECORDED)
        assert await reg.recipients(u, "penalty", now_ms()) == {b1: g3.consent_id, b2: g2.consent_id}

    with_registry(body)


def test_revoking_before_a_scheduled_consent_starts_withdraws_it_too(with_registry, unique):
    """An enterprise that revokes a bank's consent must not start sending it alerts a day later
    because the consent it revoked had a future start date."""
    (u,), (b,) = usccs_for(unique, 1), banks_for(unique, 1)

    async def body(reg: ConsentRegistry):
        now = now_ms()
        g = await reg.grant(b, u, "p", now + 30 * DAY, start_ms=now + DAY, **RECORDED)
        await reg.watch(b, [u])
        assert await reg.revoke(b, u, now_ms=now, recorded_by=RECORDED["recorded_by"]) == [g.consent_id]
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
        for attempt in (lambda: reg.grant(bank_id, u, "p", now_ms() + DAY, **RECORDED), lambda: reg.watch(bank_id, [u]),
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
            await reg.grant(b, bad, "p", now_ms() + DAY, **RECORDED)
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
                    g = await reg.grant(b, u, "post-loan monitoring", expiry, scope=scope, start_ms=start, **RECORDED)
                    grants.append([g.consent_id, scope, start, expiry, kind == "revoked"])
                if any(r for *_, r in grants):
                    revoked = await reg.revoke(b, u, now_ms=now - 1, recorded_by=RECORDED["recorded_by"])
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


# ---------------------------------------------------------------- consent.grants versions applied to Redis

def test_apply_keeps_the_newest_version_and_a_revocation_is_final(with_registry, unique):
    (u,), (b,) = usccs_for(unique, 1), banks_for(unique, 1)

    async def body(reg: ConsentRegistry):
        now = now_ms()
        g = new_grant(b, u, "post-loan monitoring", now + DAY, now_ms=now, recorded_by="consent",
                      evidence_ref="auth-letter:2026/00017")
        revoked = replace(g, revoked_ms=now + 5, ts_ms=now + 5)
        assert await reg.apply(g) is True
        assert await reg.recipients(u, "tax", now + 1) == {}  # not watched yet
        await reg.watch(b, [u])
        assert await reg.recipients(u, "tax", now + 1) == {b: g.consent_id}
        assert await reg.apply(revoked) is True
        assert await reg.apply(g) is False  # the replayed older grant changes nothing
        assert await reg.apply(revoked) is False  # idempotent
        assert await reg.grants_of(u) == [revoked]
        assert await reg.recipients(u, "tax", now + 6) == {}
        assert await reg.grant_by_id(g.consent_id) == revoked
        assert [x.consent_id for x in await reg.all_grants(b)] == [g.consent_id]
        with pytest.raises(ConfigError, match="cannot change"):
            await reg.apply(replace(g, bank_id=banks_for(unique + "o", 1)[0], ts_ms=now + 9))
        assert await reg.forget(g.consent_id) is True  # a tombstone
        assert await reg.grants_of(u) == [] and await reg.forget(g.consent_id) is False

    with_registry(body)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_concurrent_replays_in_any_order_end_in_the_same_state(with_registry, unique, data):
    """Versions applied concurrently (several workers, a rebalance replay) race on the same hash:
    the optimistic transaction makes the stored state the order-independent merge of them all."""
    (u,), (b,) = usccs_for(unique, 1), banks_for(unique, 1)
    base = new_grant(b, u, "p", 10_000, start_ms=0, now_ms=0, recorded_by="consent", evidence_ref="auth-letter:2026/00018")
    versions = data.draw(st.lists(st.builds(
        lambda ts, rev, exp: replace(base, ts_ms=ts, revoked_ms=rev, expiry_ms=exp),
        st.integers(0, 40), st.one_of(st.just(0), st.integers(1, 9_000)), st.integers(5_000, 20_000)), min_size=1, max_size=10))
    order = data.draw(st.permutations(versions))
    expected = None
    for v in versions:
        expected = merge_grant(expected, v)

    async def body(reg: ConsentRegistry):
        await reg.forget(base.consent_id)
        await asyncio.gather(*(reg.apply(v) for v in order))
        return await reg.grant_by_id(base.consent_id)

    assert with_registry(body) == expected


# ---------------------------------------------------------------- rules, watchlist replace

def test_bank_rules_are_stored_per_bank(with_registry, unique):
    b1, b2 = banks_for(unique, 2)

    async def body(reg: ConsentRegistry):
        assert await reg.rules(b1) is None and await reg.rules_of([]) == {}
        rules = BankRules(categories=("judicial", "score_band"), min_severity="high", score_band_drop=2)
        await reg.set_rules(b1, rules)
        assert await reg.rules(b1) == rules
        assert await reg.rules_of([b1, b2]) == {b1: rules, b2: None}
        await reg.set_rules(b1, BankRules(min_severity="low"))  # replaces, never merges stale fields
        assert await reg.rules(b1) == BankRules(min_severity="low")
        await reg.clear_rules(b1)
        assert await reg.rules(b1) is None
        with pytest.raises(ConfigError, match="b0001"):
            await reg.set_rules("b1", rules)

    with_registry(body)


def test_replace_watchlist_makes_it_exactly_the_file(with_registry, unique):
    (b,), codes = banks_for(unique, 1), usccs_for(unique, 5)

    async def body(reg: ConsentRegistry):
        assert await reg.watch(b, codes[:3]) == 3
        assert await reg.replace_watchlist(b, codes[2:]) == (2, 2)
        assert await reg.watchlist(b) == sorted(codes[2:])
        assert await reg.unwatch(b, codes[4:]) == 1
        assert await reg.replace_watchlist(b, []) == (0, 2)
        assert await reg.watchlist(b) == []

    with_registry(body)


# ---------------------------------------------------------------- throttle (Lua) against its model

def a_change(u: str, n: int, category: str = "judicial") -> dict:
    return {"change_id": f"e{n}/X", "uscc": u, "category": category, "severity": "high", "reason_codes": ["X", "Y"],
            "detected_ts_ms": 1_000 + n}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 700), st.booleans()), min_size=1, max_size=25),
       max_alerts=st.integers(1, 3))
def test_throttle_matches_its_model_and_decisions_are_sticky_on_replay(with_registry, unique, steps, max_alerts):
    """A sliding window of 1 s, alerts at random intervals, some of them replays of the previous
    alert: Redis decides as the model, replays get the same answer and use up nothing, and every
    held-back alert is recorded exactly once."""
    run = uuid.uuid4().hex[:8]  # hypothesis reuses the fixture: keys of its own per example
    (u,), (b,) = usccs_for(unique + run, 1), banks_for(unique, 1)

    async def body(reg: ConsentRegistry):
        t, admitted, held, decided = 10_000, [], [], {}
        n = 0
        for gap, replay in steps:
            t += gap
            if not (replay and decided):
                n += 1
            alert_id = f"{b}/{run}-{n}"
            verdict = await reg.admit(alert_id, b, a_change(u, n), t, max_alerts, 1_000)
            if alert_id in decided:
                assert verdict == (1 if decided[alert_id] else -1), "a replay gets the first decision"
                continue
            ok = throttle_model(admitted, t, max_alerts, 1_000)
            assert verdict == (1 if ok else 0)
            decided[alert_id] = ok
            (admitted if ok else held).append(t if ok else alert_id)
        recorded = [r["alert_id"] for r in await reg.throttled(b, 1000) if r["alert_id"].startswith(f"{b}/{run}-")]
        assert sorted(recorded) == sorted(held)

    with_registry(body)


def test_throttle_is_per_bank_enterprise_and_category_and_records_what_it_holds_back(with_registry, redis_url, prefix,
                                                                                      unique):
    (u1, u2), (b1, b2) = usccs_for(unique, 2), banks_for(unique, 2)

    async def body(reg: ConsentRegistry):
        t = now_ms()
        assert [await reg.admit(f"{b1}/e{i}", b1, a_change(u1, i), t + i, 2, 60_000) for i in range(3)] == [1, 1, 0]
        assert await reg.admit(f"{b2}/e0", b2, a_change(u1, 0), t, 2, 60_000) == 1  # another bank
        assert await reg.admit(f"{b1}/f0", b1, a_change(u2, 0), t, 2, 60_000) == 1  # another enterprise
        assert await reg.admit(f"{b1}/g0", b1, a_change(u1, 9, "tax"), t, 2, 60_000) == 1  # another category
        assert await reg.admit(f"{b1}/e3", b1, a_change(u1, 3), t + 59_999, 2, 60_000) == 0  # e0, e1 still in the window
        assert await reg.admit(f"{b1}/e4", b1, a_change(u1, 4), t + 60_000, 2, 60_000) == 1  # e0 left it (exclusive)
        assert await reg.admit(f"{b1}/e5", b1, a_change(u1, 5), t + 60_000, 2, 60_000) == 0  # e1 and e4 in it
        newest, _, oldest = await reg.throttled(b1)
        assert (oldest["alert_id"], newest["alert_id"]) == (f"{b1}/e2", f"{b1}/e5")
        assert oldest == {"alert_id": f"{b1}/e2", "change_id": "e2/X", "uscc": u1, "category": "judicial",
                          "severity": "high", "reason_codes": "X,Y", "detected_ts_ms": "1002", "throttled_ts_ms": str(t + 2)}
        assert await reg.throttled(b2) == []

    with_registry(body)
    r = redis.from_url(redis_url)
    assert 0 < r.pttl(f"{prefix}throttle:{b1}:{u1}:judicial") <= 60_000  # the window keys expire
    assert 0 < r.ttl(f"{prefix}throttled:{b1}") <= THROTTLE_RECORD_TTL_S


# ---------------------------------------------------------------- consent.grants on Kafka

def test_published_grants_are_read_back_from_the_topic(kafka_admin, unique):
    (u,), (b,) = usccs_for(unique, 1), banks_for(unique, 1)
    now = now_ms()
    g1 = new_grant(b, u, "post-loan monitoring", now + DAY, scope=["tax"], now_ms=now, recorded_by="consent",
                   evidence_ref="auth-letter:2026/00019")
    g2 = new_grant(b, u, "credit approval", now + DAY, now_ms=now, recorded_by="consent",
                   evidence_ref="sha256:9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5b7d9f0a2c4e6b8d0f")
    assert publish_grants(kafka_admin, [g1, g2]) == 2
    [r1] = revocations([g1], b, now + 10, recorded_by=RECORDED["recorded_by"])
    assert publish_grants(kafka_admin, [r1]) == 1
    found = scan_grants(kafka_admin, lambda g: g.uscc == u)
    assert found == {g1.consent_id: r1, g2.consent_id: g2}
    md = AdminClient(dict(kafka_admin))
    [cfg] = md.describe_configs([ConfigResource("topic", "consent.grants")]).values()
    assert cfg.result()["cleanup.policy"].value == "compact"


# ---------------------------------------------------------------- the CLI (real Redis and Kafka)

@pytest.fixture
def cli(monkeypatch, prefix):
    """Invoke ``yurong …`` in-process with the test's Redis prefix."""
    from click.testing import CliRunner

    from streams.cli import main
    from streams.settings import get_settings

    monkeypatch.setenv("YURONG_REDIS_KEY_PREFIX", prefix)
    get_settings.cache_clear()
    yield lambda *args: CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    get_settings.cache_clear()


def test_cli_watchlist_import_reports_each_invalid_line(cli, with_registry, unique, tmp_path):
    (b,), codes = banks_for(unique, 1), usccs_for(unique, 4)
    bad = codes[1][:17] + ("0" if codes[1][17] != "0" else "1")
    f = tmp_path / "portfolio.csv"
    f.write_text(f"企业名称,统一社会信用代码\n甲,{codes[0]}\n乙,{bad}\n丙,{codes[2].lower()}\n丁,{codes[0]}\n", encoding="utf-8")

    out = cli("watchlist", "import", "--bank", b, f)
    assert out.exit_code == 2
    assert f"portfolio.csv: line 3: '{bad}' fails the GB 32100 check digit" in out.output
    assert "nothing imported" in out.output
    assert with_registry(lambda reg: reg.watchlist(b)) == []

    out = cli("watchlist", "import", "--bank", b, "--skip-invalid", f)
    assert out.exit_code == 0 and "2 added" in out.output and "1 repeated" in out.output
    assert with_registry(lambda reg: reg.watchlist(b)) == sorted([codes[0], codes[2]])

    f.write_text(f"{codes[3]}\n{codes[2]}\n", encoding="utf-8")  # no header: the first column
    out = cli("watchlist", "import", "--bank", b, "--replace", f)
    assert out.exit_code == 0 and "1 added, 1 removed" in out.output
    assert cli("watchlist", "remove", "--bank", b, codes[3]).exit_code == 0
    assert cli("watchlist", "list", "--bank", b).output.split() == [codes[2]]


def test_cli_bank_rules(cli, with_registry, unique):
    (b,) = banks_for(unique, 1)
    assert "no rules" in cli("bank", "rules", b).output
    out = cli("bank", "rules", b, "--categories", "judicial,score_band", "--min-severity", "high")
    assert out.exit_code == 0
    assert with_registry(lambda reg: reg.rules(b)) == BankRules(("judicial", "score_band"), "high", 0)
    cli("bank", "rules", b, "--score-band-drop", "2")  # the other fields stay
    assert with_registry(lambda reg: reg.rules(b)) == BankRules(("judicial", "score_band"), "high", 2)
    assert "unknown alert categories" in cli("bank", "rules", b, "--categories", "judical").output
    cli("bank", "rules", b, "--reset")
    assert with_registry(lambda reg: reg.rules(b)) is None


def test_cli_grant_and_revoke_go_through_consent_grants(cli, kafka_admin, unique):
    """Nothing applies the records to Redis here (no worker): revoke finds the grant on the
    topic itself, the system of record."""
    (u,), (b,) = usccs_for(unique, 1), banks_for(unique, 1)
    assert "Missing option '--evidence'" in cli("consent", "grant", "--bank", b, "--uscc", u).output
    out = cli("consent", "grant", "--bank", b, "--uscc", u, "--scope", "judicial,tax", "--days", "30",
              "--evidence", f"auth-letter:test/{unique}")
    assert out.exit_code == 0, out.output
    [g] = scan_grants(kafka_admin, lambda g: g.uscc == u).values()
    assert (g.bank_id, g.scope, g.revoked_ms) == (b, ("judicial", "tax"), 0) and g.consent_id in out.output
    # recorded by the consent service's authenticated principal, with the enterprise's evidence
    assert (g.recorded_by, g.evidence_ref) == ("consent", f"auth-letter:test/{unique}")
    assert g.expiry_ms - g.start_ms == 30 * DAY

    out = cli("consent", "revoke", "--bank", b, "--uscc", u)
    assert out.exit_code == 0 and "revoked 1 consent(s)" in out.output, out.output
    [r] = scan_grants(kafka_admin, lambda g: g.uscc == u).values()
    assert r.consent_id == g.consent_id and r.revoked_ms >= g.ts_ms and r.ts_ms > g.ts_ms
    assert (r.recorded_by, r.evidence_ref) == ("consent", g.evidence_ref)
    again = cli("consent", "revoke", "--bank", b, "--uscc", u)
    assert again.exit_code == 2 and "nothing to revoke" in again.output
    assert "unknown alert categories" in cli("consent", "grant", "--bank", b, "--uscc", u, "--scope", "taxes",
                                            "--evidence", "auth-letter:x").output
