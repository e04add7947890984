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
    check_evidence_ref,
    check_recorded_by,
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
EVIDENCE = "auth-letter:2026/00017"  # the signed authorisation letter (授权书) in the document store
CATEGORIES = ("registration", "judicial", "penalty", "tax", "social_insurance", "utilities", "collateral", "customs_ip",
              "score_band", "positive")


def grant(bank="b0001", start=1_000, expiry=2_000, scope=(), revoked=0, cid=None) -> ConsentGrant:
    return ConsentGrant(
        consent_id=cid or f"c-{bank}-{start}", bank_id=bank, uscc=USCC, purpose="credit_monitoring",
        start_ms=start, expiry_ms=expiry, scope=tuple(scope), revoked_ms=revoked,
        recorded_by="consent", evidence_ref=EVIDENCE,
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
    st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    st.text(min_size=1, max_size=256).filter(lambda s: "\x00" not in s),
)
def test_grant_survives_redis_round_trip(g, purpose, recorded_by, evidence_ref):
    g = ConsentGrant(**{**g.__dict__, "purpose": purpose, "recorded_by": recorded_by, "evidence_ref": evidence_ref})
    stored = g.to_redis()
    assert all(isinstance(v, str) for v in stored.values())
    assert ConsentGrant.from_redis(stored) == g


def test_a_redis_hash_written_before_the_fields_existed_still_reads():
    """from_redis is not where a version is refused (from_record is): old hashes read with ""."""
    g = grant()
    old = {k: v for k, v in g.to_redis().items() if k not in ("recorded_by", "evidence_ref")}
    assert ConsentGrant.from_redis(old) == ConsentGrant(**{**g.__dict__, "recorded_by": "", "evidence_ref": ""})


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

def version(ts, revoked=0, expiry=2_000, purpose="p", scope=(), recorded_by="consent", evidence_ref=EVIDENCE) -> ConsentGrant:
    return ConsentGrant(consent_id="c1", bank_id="b0001", uscc=USCC, purpose=purpose, start_ms=1_000,
                        expiry_ms=expiry, scope=tuple(scope), revoked_ms=revoked, ts_ms=ts,
                        recorded_by=recorded_by, evidence_ref=evidence_ref)


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


principals = st.sampled_from(["consent", "ops.alice", "consent-2"])
evidence_refs = st.sampled_from([EVIDENCE, "auth-letter:2026/00018", "sha256:" + "ab" * 32])
versions_strategy = st.lists(
    st.builds(version, st.integers(0, 50), st.one_of(st.just(0), st.integers(1_000, 3_000)), st.integers(1_001, 5_000),
              st.sampled_from(["p", "q"]), st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True),
              principals, evidence_refs),
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
    # who recorded it and the evidence are the newest version's, like the rest of its content
    newest = [v for v in versions if v.ts_ms == state.ts_ms]
    assert (state.recorded_by, state.evidence_ref) in {(v.recorded_by, v.evidence_ref) for v in newest}


@PROPERTY
@given(a=versions_strategy.map(lambda vs: vs[0]), b=versions_strategy.map(lambda vs: vs[0]),
       c=versions_strategy.map(lambda vs: vs[0]))
def test_merge_grant_is_commutative_associative_and_idempotent(a, b, c):
    assert merge_grant(a, b) == merge_grant(b, a)
    assert merge_grant(merge_grant(a, b), c) == merge_grant(a, merge_grant(b, c))
    assert merge_grant(a, a) == a
    merged = merge_grant(a, b)
    assert merge_grant(merged, a) == merged == merge_grant(merged, b)  # a replay changes nothing


def test_the_newest_version_brings_its_recorder_and_evidence():
    granted = version(ts=10, recorded_by="consent", evidence_ref=EVIDENCE)
    renewed = version(ts=20, expiry=9_000, recorded_by="consent-2", evidence_ref="auth-letter:2027/00003")
    assert merge_grant(granted, renewed) == renewed == merge_grant(renewed, granted)
    # same instant, different evidence: a total order decides, whatever the arrival order
    twin = version(ts=20, expiry=9_000, recorded_by="consent-2", evidence_ref="auth-letter:2027/00004")
    assert merge_grant(renewed, twin) == merge_grant(twin, renewed) in (renewed, twin)


def test_revocations_cover_active_and_scheduled_consents_of_the_bank_only():
    grants = [
        grant("b0001", start=1_000, expiry=2_000, cid="active"),
        grant("b0001", start=3_000, expiry=4_000, cid="scheduled"),
        grant("b0001", start=0, expiry=1_200, cid="expired"),
        grant("b0001", revoked=1_300, cid="revoked-before"),
        grant("b0002", cid="other-bank"),
    ]
    out = revocations(grants, "b0001", now_ms=1_500, recorded_by="consent")
    assert [g.consent_id for g in out] == ["active", "scheduled"]
    assert all(g.revoked_ms == 1_500 and not g.is_active(1_500) and not g.is_active(3_500) for g in out)
    # the revocation is a newer version even when the clock that granted it ran ahead
    ahead = [ConsentGrant(**{**grants[0].__dict__, "ts_ms": 9_999})]
    assert revocations(ahead, "b0001", now_ms=1_500, recorded_by="consent")[0].ts_ms == 10_000


def test_a_revocation_keeps_the_evidence_and_is_recorded_by_the_revoker(schemas):
    g = new_grant("b0001", USCC, "p", expiry_ms=5_000, now_ms=1_000, recorded_by="consent", evidence_ref=EVIDENCE)
    [r] = revocations([g], "b0001", now_ms=1_500, recorded_by="ops.alice")
    assert (r.evidence_ref, r.recorded_by, r.revoked_ms) == (EVIDENCE, "ops.alice", 1_500)
    assert r == ConsentGrant(**{**g.__dict__, "revoked_ms": 1_500, "ts_ms": 1_500, "recorded_by": "ops.alice"})
    # what the worker receives: accepted by from_record, as it was made
    _, record = schemas.decode(schemas.encode("consent/grant", r.to_record()), "consent/grant")
    assert ConsentGrant.from_record(record) == r
    assert merge_grant(g, r) == r == merge_grant(r, g)


@pytest.mark.parametrize("revoker", ["", "ops alice", "ops@bank", "x" * 65, "13812345678"])
def test_a_revocation_needs_a_valid_revoker(revoker):
    g = grant()
    with pytest.raises(ConfigError, match="recorded_by"):
        revocations([g], "b0001", now_ms=1_500, recorded_by=revoker)
    with pytest.raises(ConfigError, match="recorded_by"):
        revocations([], "b0001", now_ms=1_500, recorded_by=revoker)  # refused even with nothing to revoke


def test_a_consent_recorded_before_evidence_was_required_can_still_be_revoked():
    """State written before evidence_ref existed (Redis hashes: from_redis reads ""). Taking access
    away must stay possible: its revocation carries no evidence, names the revoker, and the worker
    accepts it (from_record), while a *granting* version without evidence is refused."""
    legacy = ConsentGrant.from_redis({k: v for k, v in grant(cid="old").to_redis().items()
                                      if k not in ("recorded_by", "evidence_ref")})
    assert (legacy.recorded_by, legacy.evidence_ref) == ("", "")
    [r] = revocations([legacy], "b0001", now_ms=1_500, recorded_by="consent")
    assert (r.revoked_ms, r.recorded_by, r.evidence_ref) == (1_500, "consent", "")
    assert ConsentGrant.from_record(r.to_record()) == r
    assert revocations([legacy], "b0002", now_ms=1_500, recorded_by="consent") == []  # not this bank's
    with pytest.raises(ConfigError, match="evidence_ref is missing"):
        ConsentGrant.from_record({**legacy.to_record(), "recorded_by": "consent"})  # granting, no evidence
    with pytest.raises(ConfigError, match="recorded_by"):
        ConsentGrant.from_record(r.to_record() | {"recorded_by": ""})  # a revocation still names its recorder
    with pytest.raises(ConfigError, match="evidence_ref"):  # evidence a revocation carries is still checked
        ConsentGrant.from_record(r.to_record() | {"evidence_ref": " padded "})


def test_grant_record_round_trip_through_avro(schemas):
    g = ConsentGrant(consent_id="c9", bank_id="b0007", uscc=USCC, purpose="贷后监测", start_ms=1, expiry_ms=2,
                     scope=("judicial", "tax"), revoked_ms=0, ts_ms=3, recorded_by="consent", evidence_ref=EVIDENCE)
    _, record = schemas.decode(schemas.encode("consent/grant", g.to_record()), "consent/grant")
    assert ConsentGrant.from_record(record) == g
    with pytest.raises(ConfigError, match="b0001"):
        ConsentGrant.from_record({**record, "bank_id": "b7"})
    with pytest.raises(ConfigError, match="check digit"):
        ConsentGrant.from_record({**record, "uscc": USCC[:17] + "A"})


def _record(**changes) -> dict:
    g = ConsentGrant(consent_id="c9", bank_id="b0007", uscc=USCC, purpose="贷后监测", start_ms=1, expiry_ms=2,
                     scope=(), revoked_ms=0, ts_ms=3, recorded_by="consent", evidence_ref=EVIDENCE)
    return {**g.to_record(), **changes}


def test_a_record_written_before_the_fields_existed_decodes_and_is_refused(schemas):
    """Old producers (grant.v1, in history/) still decode — with "" for both fields — and the
    worker dead-letters them: from_record refuses a version without who recorded it."""
    import io

    import fastavro

    from streams.codecs.serde import MAGIC

    [old] = schemas.history("consent/grant")
    v1 = {k: v for k, v in _record().items() if k not in ("recorded_by", "evidence_ref")}
    buf = io.BytesIO(MAGIC + old.fingerprint)
    buf.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(buf, old.parsed, v1)
    _, record = schemas.decode(buf.getvalue(), "consent/grant")
    assert (record["recorded_by"], record["evidence_ref"]) == ("", "")
    with pytest.raises(ConfigError, match="'c9': recorded_by is missing"):
        ConsentGrant.from_record(record)
    with pytest.raises(ConfigError, match="evidence_ref is missing"):
        ConsentGrant.from_record({**record, "recorded_by": "consent"})


@pytest.mark.parametrize("field", ["recorded_by", "evidence_ref"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_from_record_refuses_a_version_without_recorder_or_evidence(field, value):
    record = _record() if value is None else _record(**{field: value})
    if value is None:
        del record[field]
    with pytest.raises(ConfigError, match=f"{field} is missing") as exc:
        ConsentGrant.from_record(record)
    assert "'c9'" in str(exc.value)  # names the consent


@pytest.mark.parametrize("recorded_by", [
    "ops alice",  # blank
    "ops@bank",  # not a SCRAM user name of ours
    "User:consent",  # the ACL principal form, not the user name
    "consent\n",  # a trailing newline would pass a $-anchored check
    "x" * 65,
    "张三",
    "ｃｏｎｓｅｎｔ",  # full-width letters
    "cons\u200bent",  # zero-width space
])
def test_from_record_refuses_an_invalid_recorded_by(recorded_by):
    with pytest.raises(ConfigError, match="'c9': recorded_by is not a Kafka user name"):
        ConsentGrant.from_record(_record(recorded_by=recorded_by))
    with pytest.raises(ConfigError, match="recorded_by is not a Kafka user name"):
        check_recorded_by(recorded_by)


def test_from_record_refuses_a_recorded_by_that_is_no_text():
    with pytest.raises(ConfigError, match="recorded_by is missing"):
        ConsentGrant.from_record(_record(recorded_by=7))


def test_from_record_refuses_a_recorded_by_that_is_a_phone_number():
    with pytest.raises(ConfigError, match="recorded_by carries a raw phone") as exc:
        ConsentGrant.from_record(_record(recorded_by="13812345678"))
    assert "13812345678" not in str(exc.value)


@pytest.mark.parametrize("recorded_by", ["consent", "ops.alice", "svc_consent-2", "x" * 64])
def test_plausible_user_names_are_accepted(recorded_by):
    assert ConsentGrant.from_record(_record(recorded_by=recorded_by)).recorded_by == recorded_by


@pytest.mark.parametrize("ref, pii", [
    ("auth-letter:110101199003071233", "id_number"),  # the legal representative's ID card number
    ("授权书-110101 19900307 1233", "id_number"),  # written in groups
    ("auth-letter:2026/00017 signed by 13812345678", "phone"),
    ("auth-letter:+86 138-1234-5678", "phone"),
    ("授权书/１３８１２３４５６７８", "phone"),  # full-width digits
    ("auth-letter:6222021234567894", "bank_account"),  # a Luhn-valid card number
])
def test_from_record_refuses_an_evidence_ref_carrying_personal_data(ref, pii):
    with pytest.raises(ConfigError, match=f"evidence_ref carries a raw {pii}") as exc:
        ConsentGrant.from_record(_record(evidence_ref=ref))
    assert ref not in str(exc.value) and "1234" not in str(exc.value)  # the value is never echoed (DLQ headers)


@pytest.mark.parametrize("ref, message", [
    ("x" * 257, "at most 256"),
    ("auth-letter:1\n", "printable"),
    ("auth-letter:\x001", "printable"),
    ("auth-letter:\u200b1", "printable"),  # zero-width space
    (" auth-letter:1", "surrounding blanks"),
    (17, "missing"),
])
def test_from_record_refuses_a_malformed_evidence_ref(ref, message):
    with pytest.raises(ConfigError, match=message):
        ConsentGrant.from_record(_record(evidence_ref=ref))


@pytest.mark.parametrize("ref", [
    EVIDENCE, "sha256:" + "0f" * 32, "https://docs.example.cn/授权书/2026/00017.pdf", "授权书 渝融-2026-00017", "x" * 256,
    "auth-letter:91500000202805720T/2026",  # the enterprise's USCC is no personal data
])
def test_document_references_are_accepted(ref):
    assert check_evidence_ref(ref) == ref
    assert ConsentGrant.from_record(_record(evidence_ref=ref)).evidence_ref == ref


def test_new_grant_validates_scope_and_dates():
    g = new_grant("b0001", USCC, "p", expiry_ms=5_000, scope=["tax"], now_ms=1_000, recorded_by="consent",
                  evidence_ref=EVIDENCE)
    assert (g.start_ms, g.ts_ms, g.scope, g.revoked_ms) == (1_000, 1_000, ("tax",), 0) and len(g.consent_id) == 32
    assert (g.recorded_by, g.evidence_ref) == ("consent", EVIDENCE)
    with pytest.raises(ConfigError, match="unknown alert categories"):
        new_grant("b0001", USCC, "p", expiry_ms=5_000, scope=["taxes"], now_ms=1_000, recorded_by="consent",
                  evidence_ref=EVIDENCE)
    with pytest.raises(ConfigError, match="expire after it starts"):
        new_grant("b0001", USCC, "p", expiry_ms=1_000, now_ms=1_000, recorded_by="consent", evidence_ref=EVIDENCE)


def test_new_grant_requires_who_records_it_and_the_evidence():
    with pytest.raises(TypeError, match="recorded_by"):
        new_grant("b0001", USCC, "p", expiry_ms=5_000, now_ms=1_000, evidence_ref=EVIDENCE)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="evidence_ref"):
        new_grant("b0001", USCC, "p", expiry_ms=5_000, now_ms=1_000, recorded_by="consent")  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # keyword-only: never taken by position
        new_grant("b0001", USCC, "p", 5_000, (), None, 1_000, "consent", EVIDENCE)  # type: ignore[misc]
    for recorded_by, evidence_ref, message in [
        ("", EVIDENCE, "recorded_by is missing"),
        ("ops@bank", EVIDENCE, "recorded_by is not a Kafka user name"),
        ("consent", "", "evidence_ref is missing"),
        ("consent", "auth-letter:110101199003071233", "evidence_ref carries a raw id_number"),
        ("consent", "授权书 13812345678", "evidence_ref carries a raw phone"),
    ]:
        with pytest.raises(ConfigError, match=message):
            new_grant("b0001", USCC, "p", expiry_ms=5_000, now_ms=1_000, recorded_by=recorded_by,
                      evidence_ref=evidence_ref)


def test_what_new_grant_makes_the_worker_accepts(schemas):
    g = new_grant("b0001", USCC, "post-loan monitoring (贷后监测)", expiry_ms=5_000, now_ms=1_000,
                  recorded_by="consent", evidence_ref="sha256:" + "0f" * 32)
    _, record = schemas.decode(schemas.encode("consent/grant", g.to_record()), "consent/grant")
    assert ConsentGrant.from_record(record) == g


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

    from connectors.simulator.identities import distinct_usccs

    return distinct_usccs(random.Random(seed), n, "500103")


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
