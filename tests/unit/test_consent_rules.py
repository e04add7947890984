"""Who may receive an alert: active consent AND watchlist AND scope (pure rules of sinks.consent)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.consent import ConsentGrant, check_bank_id, check_uscc, recipients
from streams.errors import ConfigError

PROPERTY = settings(max_examples=200, deadline=None)
USCC = "91110000600037341L"
CATEGORIES = ("registration", "judicial", "penalty", "tax", "social_insurance", "utilities", "collateral", "customs_ip", "score_band", "positive")


def grant(bank="b0001", start=1_000, expiry=2_000, scope=(), revoked=0, cid=None) -> ConsentGrant:
    return ConsentGrant(
        consent_id=cid or f"c-{bank}-{start}", bank_id=bank, uscc=USCC, purpose="credit_monitoring",
        start_ms=start, expiry_ms=expiry, scope=tuple(scope), revoked_ms=revoked,
    )


@pytest.mark.parametrize(
    "now, revoked, active",
    [
        (999, 0, False),  # not started
        (1_000, 0, True),  # starts inclusive
        (1_999, 0, True),
        (2_000, 0, False),  # expiry exclusive
        (1_499, 1_500, True),  # revocation in the future
        (1_500, 1_500, False),  # revoked from that instant
        (1_800, 1_500, False),
    ],
)
def test_is_active_boundaries(now, revoked, active):
    assert grant(revoked=revoked).is_active(now) is active


@pytest.mark.parametrize(
    "scope, category, covered",
    [((), "judicial", True), (("judicial", "tax"), "tax", True), (("judicial",), "tax", False), (("judicial",), "judicial_x", False)],
)
def test_covers(scope, category, covered):
    assert grant(scope=scope).covers(category) is covered


def test_recipient_needs_consent_watchlist_and_scope():
    grants = [
        grant("b0001", cid="ok"),
        grant("b0002", cid="not-watching"),
        grant("b0003", scope=("tax",), cid="out-of-scope"),
        grant("b0004", revoked=1_200, cid="revoked"),
        grant("b0005", expiry=1_400, cid="expired"),
    ]
    watching = {"b0001", "b0003", "b0004", "b0005", "b0009"}  # b0009 watches without consent
    assert recipients("judicial", grants, watching, now_ms=1_500) == {"b0001": "ok"}


def test_each_bank_gets_one_consent_id_and_order_is_stable():
    grants = [grant("b0002", cid="z"), grant("b0001", cid="first"), grant("b0001", cid="second")]
    result = recipients("tax", grants, {"b0001", "b0002"}, now_ms=1_500)
    assert result == {"b0001": "first", "b0002": "z"}
    assert list(result) == ["b0001", "b0002"]


banks = st.sampled_from(["b0001", "b0002", "b0003", "b0004"])
grants_strategy = st.builds(
    lambda bank, start, length, scope, revoked, i: grant(bank, start, start + length, scope, revoked, cid=f"c{i}"),
    banks,
    st.integers(0, 100),
    st.integers(0, 100),
    st.lists(st.sampled_from(CATEGORIES), max_size=3, unique=True),
    st.one_of(st.just(0), st.integers(1, 200)),
    st.integers(0, 10**6),
)


@PROPERTY
@given(
    grants=st.lists(grants_strategy, max_size=8, unique_by=lambda g: g.consent_id),
    watching=st.sets(banks),
    category=st.sampled_from(CATEGORIES),
    now=st.integers(0, 250),
)
def test_no_bank_receives_an_alert_without_an_active_covering_consent(grants, watching, category, now):
    result = recipients(category, grants, watching, now)
    for bank, consent_id in result.items():
        assert bank in watching
        authorising = [g for g in grants if g.consent_id == consent_id and g.bank_id == bank]
        assert authorising and all(g.is_active(now) and g.covers(category) for g in authorising)
    # ...and every bank that is entitled does receive it.
    entitled = {g.bank_id for g in grants if g.bank_id in watching and g.is_active(now) and g.covers(category)}
    assert set(result) == entitled


@PROPERTY
@given(
    grants_strategy,
    st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s),
)
def test_grant_survives_redis_round_trip(g, purpose):
    g = ConsentGrant(**{**g.__dict__, "purpose": purpose})
    stored = g.to_redis()
    assert all(isinstance(v, str) for v in stored.values())
    assert ConsentGrant.from_redis(stored) == g


@pytest.mark.parametrize("bank_id", ["b0001", "b9999"])
def test_fixed_width_bank_ids_are_accepted(bank_id):
    assert check_bank_id(bank_id) == bank_id


@pytest.mark.parametrize(
    "bank_id",
    [
        "b1",
        "b00001",
        "B0001",
        "b000a",
        "",
        "alerts.b0001",
        "b0001\n",  # would make topic alerts.b0001\n and break the fixed-width ACL prefix rule
        "b٠٠٠١",  # Arabic-Indic digits match \d in a str pattern
        "b０００１",  # full-width digits
    ],
)
def test_other_bank_ids_are_rejected(bank_id):
    with pytest.raises(ConfigError, match="b0001"):
        check_bank_id(bank_id)


def test_check_uscc_explains_the_problem():
    assert check_uscc(USCC) == USCC
    with pytest.raises(ConfigError, match="check digit"):
        check_uscc(USCC[:17] + "A")
