"""Who may receive an alert: active consent AND watchlist AND scope, then the bank's rules; how
consent versions from consent.grants merge; watchlist files; the throttle's rule (pure rules of
streams.core.consent)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.consent import (
    BankRules,
    ConsentGrant,
    check_bank_id,
    check_uscc,
    filtered_by,
    levels_dropped,
    merge_grant,
    new_grant,
    parse_watchlist,
    recipients,
    revocations,
    throttle_model,
)
from streams.core.scorecard import LEVEL_NAMES, SEVERITY_RANK
from streams.errors import ConfigError

PROPERTY = settings(max_examples=200, deadline=None)
USCC = "91110000600037341L"
CATEGORIES = ("registration", "judicial", "penalty", "tax", "social_insurance", "utilities", "collateral", "customs_ip",
              "score_band", "positive")


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


# ---------------------------------------------------------------- consent.grants versions

def version(ts, revoked=0, expiry=2_000, purpose="p", scope=()) -> ConsentGrant:
    return ConsentGrant(consent_id="c1", bank_id="b0001", uscc=USCC, purpose=purpose, start_ms=1_000,
                        expiry_ms=expiry, scope=tuple(scope), revoked_ms=revoked, ts_ms=ts)


def fold(versions) -> ConsentGrant | None:
    state = None
    for v in versions:
        state = merge_grant(state, v)
    return state


def test_a_replayed_older_grant_does_not_undo_a_newer_revocation():
    granted, revoked = version(ts=10), version(ts=20, revoked=1_500)
    assert merge_grant(None, granted) == granted
    assert merge_grant(granted, revoked) == revoked
    assert merge_grant(revoked, granted) == revoked  # the replay of the grant changes nothing
    assert merge_grant(revoked, revoked) == revoked  # idempotent


def test_a_revocation_is_final_even_against_a_newer_version():
    """A later version that forgets the revocation (a buggy producer, an extension of the expiry)
    keeps it: withdrawing consent needs a new consent, never an un-revoke."""
    revoked, later = version(ts=20, revoked=1_500), version(ts=30, expiry=9_000)
    merged = merge_grant(revoked, later)
    assert merged.revoked_ms == 1_500 and merged.expiry_ms == 9_000 and merged.ts_ms == 30
    assert not merged.is_active(1_600)


def test_a_version_may_not_move_a_consent_to_another_bank_or_enterprise():
    with pytest.raises(ConfigError, match="cannot change"):
        merge_grant(version(ts=1), ConsentGrant(**{**version(ts=2).__dict__, "bank_id": "b0002"}))
    with pytest.raises(ConfigError, match="cannot change"):
        merge_grant(version(ts=1), ConsentGrant(**{**version(ts=2).__dict__, "uscc": "91500103MA5U7AB12X"}))


versions_strategy = st.lists(
    st.builds(version, st.integers(0, 50), st.one_of(st.just(0), st.integers(1_000, 3_000)), st.integers(1_001, 5_000),
              st.sampled_from(["p", "q"]), st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True)),
    min_size=1, max_size=8,
)


@PROPERTY
@given(versions=versions_strategy, data=st.data())
def test_the_stored_state_does_not_depend_on_the_order_records_arrive_in(versions, data):
    """Replays, reorders and duplicates on consent.grants all end in the same state: the newest
    version, with the earliest revocation any version carried."""
    shuffled = data.draw(st.permutations(versions + data.draw(st.lists(st.sampled_from(versions), max_size=4))))
    state = fold(shuffled)
    assert state == fold(versions)
    assert state.ts_ms == max(v.ts_ms for v in versions)
    revocations_seen = [v.revoked_ms for v in versions if v.revoked_ms]
    assert state.revoked_ms == (min(revocations_seen) if revocations_seen else 0)


def test_revocations_cover_active_and_scheduled_consents_of_the_bank_only():
    grants = [
        grant("b0001", start=1_000, expiry=2_000, cid="active"),
        grant("b0001", start=3_000, expiry=4_000, cid="scheduled"),
        grant("b0001", start=0, expiry=1_200, cid="expired"),
        grant("b0001", revoked=1_300, cid="revoked-before"),
        grant("b0002", cid="other-bank"),
    ]
    out = revocations(grants, "b0001", now_ms=1_500)
    assert [g.consent_id for g in out] == ["active", "scheduled"]
    assert all(g.revoked_ms == 1_500 and not g.is_active(1_500) and not g.is_active(3_500) for g in out)
    # the revocation is a newer version even when the clock that granted it ran ahead
    ahead = [ConsentGrant(**{**grants[0].__dict__, "ts_ms": 9_999})]
    assert revocations(ahead, "b0001", now_ms=1_500)[0].ts_ms == 10_000


def test_grant_record_round_trip_through_avro(schemas):
    g = ConsentGrant(consent_id="c9", bank_id="b0007", uscc=USCC, purpose="贷后监测", start_ms=1, expiry_ms=2,
                     scope=("judicial", "tax"), revoked_ms=0, ts_ms=3)
    _, record = schemas.decode(schemas.encode("consent/grant", g.to_record()), "consent/grant")
    assert ConsentGrant.from_record(record) == g
    with pytest.raises(ConfigError, match="b0001"):
        ConsentGrant.from_record({**record, "bank_id": "b7"})
    with pytest.raises(ConfigError, match="check digit"):
        ConsentGrant.from_record({**record, "uscc": USCC[:17] + "A"})


def test_new_grant_validates_scope_and_dates():
    g = new_grant("b0001", USCC, "p", expiry_ms=5_000, scope=["tax"], now_ms=1_000)
    assert (g.start_ms, g.ts_ms, g.scope, g.revoked_ms) == (1_000, 1_000, ("tax",), 0) and len(g.consent_id) == 32
    with pytest.raises(ConfigError, match="unknown alert categories"):
        new_grant("b0001", USCC, "p", expiry_ms=5_000, scope=["taxes"], now_ms=1_000)
    with pytest.raises(ConfigError, match="expire after it starts"):
        new_grant("b0001", USCC, "p", expiry_ms=1_000, now_ms=1_000)


# ---------------------------------------------------------------- per-bank rules

def change(category="judicial", severity="high", before="B", after="B") -> dict:
    return {"change_id": "e1/X", "uscc": USCC, "category": category, "severity": severity, "reason_codes": ["X"],
            "level_before": before, "level_after": after}


@pytest.mark.parametrize("rules, ch, why", [
    (None, change(severity="info"), None),  # no rules: everything
    (BankRules(), change(severity="info"), None),  # default rules: everything
    (BankRules(categories=("judicial", "tax")), change("tax"), None),
    (BankRules(categories=("judicial", "tax")), change("penalty"), "category"),
    (BankRules(min_severity="high"), change(severity="high"), None),  # inclusive
    (BankRules(min_severity="high"), change(severity="medium"), "severity"),
    (BankRules(min_severity="critical"), change(severity="bogus"), "severity"),
    (BankRules(score_band_drop=2), change("score_band", "medium", "A", "C"), None),  # two bands: enough
    (BankRules(score_band_drop=2), change("score_band", "medium", "B", "C"), "score_band_drop"),
    (BankRules(score_band_drop=2), change("judicial", "high", "B", "C"), None),  # only score_band changes
    (BankRules(score_band_drop=1), change("score_band", "medium", "X", "C"), "score_band_drop"),  # unknown level
    (BankRules(categories=("score_band",), min_severity="medium", score_band_drop=1),
     change("score_band", "medium", "D", "E"), None),
])
def test_bank_rules(rules, ch, why):
    assert filtered_by(rules, ch) == why


@pytest.mark.parametrize("before, after, dropped", [("A", "B", 1), ("A", "E", 4), ("C", "B", -1), ("C", "C", 0), ("?", "E", 0)])
def test_levels_dropped(before, after, dropped):
    assert levels_dropped(before, after) == dropped


@pytest.mark.parametrize("kwargs, message", [
    ({"categories": ("judical",)}, "unknown alert categories"),
    ({"min_severity": "severe"}, "not one of"),
    ({"score_band_drop": 5}, "0..4"),
    ({"score_band_drop": -1}, "0..4"),
])
def test_invalid_rules_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BankRules(**kwargs)


severities = st.sampled_from(list(SEVERITY_RANK))
levels = st.sampled_from(list(LEVEL_NAMES))
rules_strategy = st.builds(BankRules, st.lists(st.sampled_from(CATEGORIES), max_size=4, unique=True).map(tuple),
                           severities, st.integers(0, 4))


@PROPERTY
@given(rules=rules_strategy, category=st.sampled_from(CATEGORIES), severity=severities, before=levels, after=levels)
def test_rules_pass_exactly_what_the_bank_asked_for(rules, category, severity, before, after):
    ch = change(category, severity, before, after)
    wanted = ((not rules.categories or category in rules.categories)
              and SEVERITY_RANK[severity] >= SEVERITY_RANK[rules.min_severity]
              and (category != "score_band" or not rules.score_band_drop  # 0: no band requirement
                   or "ABCDE".index(after) - "ABCDE".index(before) >= rules.score_band_drop))
    assert (filtered_by(rules, ch) is None) is wanted
    assert BankRules.from_redis(rules.to_redis()) == rules


# ---------------------------------------------------------------- throttle rule (the Lua script's model)

@pytest.mark.parametrize("admitted, now, ok", [
    ([], 1_000, True),
    ([900, 950], 1_000, False),  # two in the window, max 2
    ([0, 950], 1_000, True),  # 0 left the window (now - window = 0, exclusive)
    ([1, 950], 1_000, False),
])
def test_throttle_model_sliding_window(admitted, now, ok):
    assert throttle_model(admitted, now, max_alerts=2, window_ms=1_000) is ok


# ---------------------------------------------------------------- watchlist files

OTHER = "91500103MA5U7AB10X"


def good_codes(n: int, seed: int = 1) -> list[str]:
    import random

    from connectors.simulator.identities import make_uscc

    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        code = make_uscc(rng, "500103")
        if code not in out:
            out.append(code)
    return out


def test_watchlist_file_with_header_reports_each_bad_line():
    a, b = good_codes(2)
    wrong_check_digit = a[:17] + ("0" if a[17] != "0" else "1")
    text = (f"\ufeff名称,统一社会信用代码\n甲公司,{a}\n乙公司,{wrong_check_digit}\n丙公司,{a.lower()}\n"
            f"丁公司,\n\n戊公司,12345\n己公司, {b} \n")
    parsed = parse_watchlist(text)
    assert parsed.codes == [a, b]  # trimmed, upper-cased, file order
    assert parsed.duplicates == 1  # the lower-case repeat of A
    assert [(p.line, p.value) for p in parsed.problems] == [(3, a[:17] + ("0" if a[17] != "0" else "1")), (5, ""), (7, "12345")]
    assert "check digit" in parsed.problems[0].problem and str(parsed.problems[0]).startswith("line 3: ")
    assert "18 characters" in parsed.problems[2].problem


def test_watchlist_file_without_header_uses_the_first_column():
    a, b = good_codes(2)
    parsed = parse_watchlist(f"{a},x\n{b}\n")
    assert parsed.codes == [a, b] and not parsed.problems
    parsed = parse_watchlist("code\n" + a + "\n")  # an unknown header is a bad line, said so
    assert parsed.codes == [a] and [p.line for p in parsed.problems] == [1]


@PROPERTY
@given(data=st.data(), n=st.integers(0, 30))
def test_watchlist_file_reports_exactly_the_corrupted_lines(data, n):
    codes = good_codes(n, seed=n)
    bad_lines = set()
    lines = ["uscc"]
    for i, code in enumerate(codes):
        if data.draw(st.booleans()):
            pos = data.draw(st.integers(0, 17))
            repl = data.draw(st.sampled_from("0123456789ABCDEFGHJKLMNPQRTUWXY".replace(code[pos], "")))
            code = code[:pos] + repl + code[pos + 1:]
            bad_lines.add(i + 2)
        lines.append(code)
    parsed = parse_watchlist("\n".join(lines) + "\n")
    # one substituted character always breaks the GB 32100 check (or the layout): never a false accept
    assert {p.line for p in parsed.problems} == bad_lines
    assert len(parsed.codes) == n - len(bad_lines)
