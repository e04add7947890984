"""Profiles over every department: facts per dataset, derived indicators, the scorecard and the
alert catalogue (pure logic; tests/unit/test_profile.py covers registration and replay safety)."""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.catalogue import catalogue
from streams.core.facts import DATASET_FACTS, KEEP_MONTHS
from streams.core.indicators import derive, series_indicators
from streams.core.profile import MERGERS, merge_event
from streams.core.scorecard import DEFAULT_CARD, DEFAULT_SCORECARD, Scorecard
from streams.errors import ConfigError

USCC = "91110000600037341L"
NOW = 1_767_225_600_000  # 2026-01-01
DOCS = Path(__file__).resolve().parents[2] / "docs" / "risk-scorecard.md"


class Feed:
    """Merges events into one enterprise's profile in order, like the merge agent."""

    def __init__(self) -> None:
        self.profile = None
        self.offset = 0
        self.seq = 0
        self.changes: list[dict] = []

    def send(self, dept: str, dataset: str, row: str, attributes: dict, op: str = "c", before: dict | None = None,
             ts_ms: int = NOW) -> list[dict]:
        self.offset += 1
        self.seq += 1
        event = {
            "event_id": f"{dept}.{dataset}@{self.seq}#{row}", "uscc": USCC, "dept": dept, "dataset": dataset, "op": op,
            "attributes": {k: None if v is None else str(v) for k, v in attributes.items()},
            "before": None if before is None else {k: None if v is None else str(v) for k, v in before.items()},
            "position": str(self.seq), "seq": self.seq, "event_ts_ms": ts_ms,
        }
        given = copy.deepcopy(self.profile)
        old, (self.profile, changes) = self.profile, merge_event(self.profile, event, self.offset, NOW)
        # The merge agent's decoded-profile cache and its incremental PII check rely on this:
        assert old == given, "merge_event changed the profile it was given"
        self.changes.extend(changes)
        return changes

    @property
    def ind(self) -> dict:
        return self.profile["indicators"]


def months(n: int, end: str = "2025-12") -> list[str]:
    y, m = int(end[:4]), int(end[5:])
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


# --- every dataset is merged ---------------------------------------------------------------------

def test_every_catalogue_dataset_has_a_merge():
    merged = set(DATASET_FACTS) | set(MERGERS)
    assert {ds.qualified for ds in catalogue().by_topic().values()} == merged


# --- monthly series and trends -------------------------------------------------------------------

def test_headcount_trends_and_year_over_year():
    feed = Feed()
    for i, period in enumerate(months(13)):  # 100 people for a year, then down to 60
        headcount = 100 if i < 9 else 60
        feed.send("hrss", "social_insurance", period, {"uscc": USCC, "period": period, "insured_headcount": headcount,
                                                      "arrears_amount": 0})
    ind = feed.ind
    assert ind["hrss.headcount.last"] == 60
    # months 10-12 (60, 60, 60) over months 7-9 (100, 100, 60); months 7-12 over months 1-6 (all 100)
    assert ind["hrss.headcount.trend_3m"] == pytest.approx(60 / ((100 + 100 + 60) / 3) - 1, abs=1e-6)
    assert ind["hrss.headcount.trend_6m"] == pytest.approx(((100 * 2 + 60 * 4) / 6) / 100 - 1, abs=1e-6)
    assert ind["hrss.headcount.yoy"] == pytest.approx(-0.4)
    assert ind["hrss.arrears.months"] == 0
    assert "HEADCOUNT_FALLING" in feed.profile["reason_codes"]


def test_sub_keys_are_summed_and_an_update_replaces_only_its_row():
    feed = Feed()
    row = {"uscc": USCC, "period": "2025-11", "tax_type": "vat", "taxable_revenue": 100_000, "tax_paid": 3000}
    feed.send("tax", "tax_filing", "1", row)
    feed.send("tax", "tax_filing", "2", {**row, "tax_type": "cit", "taxable_revenue": 300_000, "tax_paid": 5000})
    assert feed.ind["tax.paid.last"] == 8000
    assert feed.ind["tax.revenue.last"] == 100_000, "revenue from the VAT return only (income tax restates the quarter)"
    feed.send("tax", "tax_filing", "1", {**row, "tax_paid": 4000}, op="u", before=row)
    assert feed.ind["tax.paid.last"] == 9000
    feed.send("tax", "tax_filing", "2", {}, op="d", before={**row, "tax_type": "cit", "tax_paid": 5000})
    assert feed.ind["tax.paid.last"] == 4000


def test_a_late_return_counts_once_whatever_its_tax_types():
    feed = Feed()
    for i, tax_type in enumerate(("vat", "cit", "stamp")):
        feed.send("tax", "tax_filing", str(i), {"uscc": USCC, "period": "2025-09", "tax_type": tax_type,
                                                "filing_date": "2025-10-20", "late": "true"})
    assert feed.ind["tax.late_filing.total"] == 1
    assert "TAX_LATE_FILINGS" not in feed.profile["reason_codes"], "one late return is not 'two or more'"


def test_trends_compare_like_for_like_meters():
    """A second meter that starts reporting, or reports later than the first, is no change in use."""
    feed = Feed()
    for period in months(13):
        feed.send("power", "electricity_usage", f"A{period}", {"uscc": USCC, "period": period, "account_no": "A",
                                                                "usage_kwh": 1000, "arrears_amount": 0})
        if period >= "2025-06" and period != "2025-12":  # meter B: since June, this month not read yet
            feed.send("power", "electricity_usage", f"B{period}", {"uscc": USCC, "period": period, "account_no": "B",
                                                                    "usage_kwh": 1000, "arrears_amount": 0})
    ind = feed.ind
    assert ind["power.kwh.last"] == 1000
    assert ind["power.kwh.yoy"] == 0, "December against December, meter A alone (B has no December a year ago)"
    assert ind["power.kwh.trend_3m"] == 0 and ind["power.kwh.trend_6m"] == 0
    assert "POWER_USE_FALLING" not in feed.profile["reason_codes"]


def test_only_the_newest_months_are_kept():
    feed = Feed()
    for period in months(KEEP_MONTHS + 6):
        feed.send("power", "electricity_usage", period, {"uscc": USCC, "period": period, "account_no": "A1",
                                                          "usage_kwh": 1000, "arrears_amount": 0})
    kept = feed.profile["monthly"]["power.kwh"]
    assert len(kept) == KEEP_MONTHS and max(kept) == "2025-12|A1"


def test_arrears_months_count_the_unbroken_run_up_to_the_newest_month():
    series = {p: a for p, a in zip(months(6), [0, 500, 0, 800, 900, 1000], strict=True)}
    ind = series_indicators("hrss.arrears", series)
    assert ind["hrss.arrears.months"] == 3 and ind["hrss.arrears.last"] == 1000


@given(st.dictionaries(st.sampled_from(months(30)), st.floats(0, 1e9, allow_nan=False), min_size=1))
@settings(max_examples=200, deadline=None)
def test_trends_are_finite_and_need_two_windows(series):
    ind = series_indicators("power.kwh", series)
    for name, value in ind.items():
        assert value == value and abs(value) != float("inf"), name
    assert ind["power.kwh.last"] == series[max(series)]


# --- open items, dated facts, ratings ------------------------------------------------------------

def test_enforcement_opens_and_closes_with_alerts_both_ways():
    feed = Feed()
    feed.send("market", "enterprise_registration", USCC, {"uscc": USCC, "status": "active"}, op="r")
    case = {"id": 7, "uscc": USCC, "case_no": "(2025)渝01执123号", "amount": 300_000, "unperformed_amount": 250_000,
            "status": "open", "filed_date": "2025-12-01"}
    changes = feed.send("court", "enforcement", "7", case)
    assert feed.ind["court.enforcement.open"] == 1 and feed.ind["court.enforcement.amount"] == 250_000
    assert feed.profile["reason_codes"][0] == "ENFORCEMENT_OPEN"
    first = changes[0]
    assert (first["category"], first["severity"], first["reason_codes"][0]) == ("judicial", "high", "ENFORCEMENT_FILED")
    assert first["before"]["court.enforcement.open"] == "0" and first["after"]["court.enforcement.open"] == "1"
    assert first["source_dataset"] == "court.enforcement" and first["score_after"] < first["score_before"]
    changes = feed.send("court", "enforcement", "7", {**case, "status": "closed", "closed_date": "2025-12-20"}, op="u",
                        before=case)
    assert feed.ind["court.enforcement.open"] == 0
    assert changes[0]["category"] == "positive" and changes[0]["reason_codes"][0] == "ENFORCEMENT_CLOSED"


def test_penalties_count_in_the_last_twelve_months_of_the_profile():
    feed = Feed()
    for i, day in enumerate(["2024-06-01", "2025-03-01", "2025-11-01"]):
        feed.send("environment", "environmental_penalty", str(i), {"id": i, "uscc": USCC, "decision_date": day,
                                                                     "amount": 10_000, "status": "issued"})
    assert feed.ind["penalty.environment.total"] == 3
    assert feed.ind["penalty.environment.12m"] == 2 and feed.ind["penalty.environment.amount_12m"] == 20_000
    assert [c["category"] for c in feed.changes] == ["penalty"] * 3
    feed.send("environment", "environmental_penalty", "2", {"id": 2, "uscc": USCC, "decision_date": "2025-11-01",
                                                            "amount": 10_000, "status": "revoked"}, op="u")
    assert feed.ind["penalty.environment.12m"] == 1


def test_a_late_update_of_last_years_tax_rating_does_not_replace_this_years():
    feed = Feed()
    feed.send("tax", "tax_credit_rating", "2025", {"id": 2, "uscc": USCC, "rating_year": 2025, "rating": "B"})
    changes = feed.send("tax", "tax_credit_rating", "2024", {"id": 1, "uscc": USCC, "rating_year": 2024, "rating": "D"})
    assert feed.profile["ratings"]["tax.credit_rating"] == "B" and changes == []
    changes = feed.send("tax", "tax_credit_rating", "2025", {"id": 2, "uscc": USCC, "rating_year": 2025, "rating": "D"},
                        op="u")
    assert feed.profile["ratings"]["tax.credit_rating"] == "D"
    assert changes[0]["category"] == "tax" and changes[0]["severity"] == "critical"
    assert changes[0]["reason_codes"][:2] == ["TAX_RATING_DOWNGRADE", "TAX_RATING_D"]


@pytest.mark.parametrize(("dept", "dataset", "attributes", "category", "code"), [
    ("market", "equity_pledge", {"id": 1, "status": "valid", "pledged_amount": 100}, "collateral", "EQUITY_PLEDGED"),
    ("ip", "ip_pledge", {"pledge_no": "P1", "status": "active", "amount": 50}, "collateral", "IP_PLEDGED"),
    ("tax", "tax_arrears", {"id": 1, "status": "outstanding", "amount": 8000}, "tax", "TAX_ARREARS"),
    ("court", "dishonest_debtor", {"id": 1, "listed_date": "2025-12-01"}, "judicial", "DISHONEST_DEBTOR_LISTED"),
    ("court", "litigation_case", {"id": 1, "role": "defendant", "status": "filed", "amount": 1}, "judicial",
     "LITIGATION_AS_DEFENDANT"),
    ("emergency", "safety_penalty", {"id": 1, "decision_date": "2025-12-01", "status": "effective", "amount": 1},
     "penalty", "SAFETY_PENALTY"),
    ("customs", "customs_credit", {"credit_rating": "dishonest"}, "customs_ip", "CUSTOMS_RATING_DOWNGRADE"),
    ("hrss", "social_insurance", {"period": "2025-12", "insured_headcount": 10, "arrears_amount": 900},
     "social_insurance", "SOCIAL_INSURANCE_ARREARS"),
    ("housing_fund", "housing_fund_contribution", {"period": "2025-12", "depositor_count": 9, "arrears_amount": 90},
     "social_insurance", "HOUSING_FUND_ARREARS"),
    ("power", "electricity_usage", {"period": "2025-12", "account_no": "A", "usage_kwh": 10, "arrears_amount": 9},
     "utilities", "POWER_ARREARS"),
    ("gas", "gas_usage", {"billing_month": "2025-12-01", "account_no": "G", "volume_m3": 1, "arrears": 5},
     "utilities", "GAS_ARREARS"),
    ("water", "water_usage", {"billing_month": "2025-12-01", "account_no": "W", "volume_m3": 1, "arrears": 5},
     "utilities", "WATER_ARREARS"),
    ("procurement", "bid_award", {"id": 1, "award_date": "2025-12-01", "status": "awarded", "award_amount": 9},
     "positive", "BID_WON"),
    ("ip", "patent", {"application_no": "CN1", "legal_status": "granted", "grant_date": "2025-12-01"}, "positive",
     "PATENT_GRANTED"),
    ("ip", "trademark", {"registration_no": "T1", "status": "registered", "registration_date": "2025-12-01"},
     "positive", "TRADEMARK_REGISTERED"),
    ("science", "high_tech_certification", {"certificate_no": "GR1", "status": "valid", "issue_date": "2025-12-01"},
     "positive", "HIGH_TECH_CERTIFIED"),
])
def test_each_alert_category_fires_from_its_department(dept, dataset, attributes, category, code):
    feed = Feed()
    feed.send("market", "enterprise_registration", USCC, {"uscc": USCC, "status": "active"}, op="r")
    if dataset in ("gas_usage", "water_usage"):  # a bill is outstanding until paid: the one before is unpaid too
        assert feed.send(dept, dataset, "row-0", {"uscc": USCC, **attributes, "billing_month": "2025-11-01"}) == []
    changes = feed.send(dept, dataset, "row-1", {"uscc": USCC, **attributes})
    assert [(c["category"], c["reason_codes"][0]) for c in changes][:1] == [(category, code)]
    assert changes[0]["severity"] in ("info", "low", "medium", "high", "critical")
    if category != "positive":
        assert changes[0]["severity"] != "info"


def test_snapshot_reads_build_facts_without_alerts():
    feed = Feed()
    feed.send("court", "enforcement", "7", {"uscc": USCC, "status": "open", "unperformed_amount": 9}, op="r")
    assert feed.ind["court.enforcement.open"] == 1 and feed.changes == []


def test_the_score_is_explained_by_the_factors_that_applied():
    feed = Feed()
    feed.send("market", "enterprise_registration", USCC, {"uscc": USCC, "status": "active"}, op="r")
    feed.send("court", "enforcement", "1", {"uscc": USCC, "status": "open", "unperformed_amount": 1})
    feed.send("court", "enforcement", "2", {"uscc": USCC, "status": "open", "unperformed_amount": 1})
    feed.send("science", "high_tech_certification", "GR", {"uscc": USCC, "status": "valid", "issue_date": "2025-01-01"})
    p = feed.profile
    assert p["score_factors"] == [
        {"code": "ENFORCEMENT_OPEN", "points": -300, "value": "2"},
        {"code": "HIGH_TECH_CERTIFIED", "points": 30, "value": "valid"},
    ]
    assert p["risk_score"] == DEFAULT_SCORECARD.base - 300 + 30 and p["risk_level"] == "C"
    assert p["reason_codes"] == ["ENFORCEMENT_OPEN"]


# --- the scorecard as data -----------------------------------------------------------------------

def test_the_default_card_loads_and_every_factor_is_documented():
    card = Scorecard.load(DEFAULT_CARD)
    doc = DOCS.read_text(encoding="utf-8")
    for f in card.factors:
        row = rf"\| `{f.code}` \|[^\n]*\| {re.escape(format(f.points, '+d'))} \|"
        assert re.search(row, doc), f"{f.code} ({f.points:+d}) not in {DOCS.name}"
    indicators = {f.indicator for f in card.factors if f.indicator}
    produced = {re.sub(r"^(.*)\.[^.]+$", r"\1", name) for name in indicators}
    assert produced, "the card uses indicators"


@pytest.mark.parametrize(("card", "message"), [
    ({"base": 850, "levels": {"A": 800, "B": 650, "C": 500, "D": 300}}, "A..E"),
    ({"base": 850, "levels": {"A": 600, "B": 650, "C": 500, "D": 300, "E": 0}}, "fall from A to E"),
    ({"base": 1200, "levels": {"A": 800, "B": 650, "C": 500, "D": 300, "E": 0}}, "base"),
    ({"base": 850, "levels": {"A": 800, "B": 650, "C": 500, "D": 300, "E": 0},
      "factors": [{"code": "X", "points": -1, "indicator": "a.b"}]}, "exactly one of above, below"),
    ({"base": 850, "levels": {"A": 800, "B": 650, "C": 500, "D": 300, "E": 0},
      "factors": [{"code": "X", "points": -1, "rating": "a", "indicator": "b", "above": 0}]}, "exactly one of indicator"),
    ({"base": 850, "levels": {"A": 800, "B": 650, "C": 500, "D": 300, "E": 0},
      "factors": [{"code": "X", "points": -1, "field": "status", "equals": ["x"], "wieght": 3}]}, "unknown keys"),
    ({"base": 850, "levels": {"A": 800, "B": 650, "C": 500, "D": 300, "E": 0},
      "factors": [{"code": "X", "points": -1, "field": "status", "equals": ["x"]},
                  {"code": "X", "points": -2, "field": "status", "equals": ["y"]}]}, "twice"),
])
def test_a_broken_card_is_a_clear_config_error(card, message):
    with pytest.raises(ConfigError, match=message):
        Scorecard.from_dict(card, "test.toml")


@given(st.dictionaries(st.sampled_from(sorted({f.indicator for f in DEFAULT_SCORECARD.factors if f.indicator})),
                       st.floats(-1e6, 1e6, allow_nan=False), max_size=12),
       st.sampled_from(["active", "suspended", "revoked", "cancelled", "moved_out", None]))
@settings(max_examples=300, deadline=None)
def test_score_is_base_plus_the_explained_points_clipped(indicators, status):
    score, level, applied = DEFAULT_SCORECARD.explain({"indicators": indicators, "status": status, "ratings": {}})
    assert score == max(0, min(1000, DEFAULT_SCORECARD.base + sum(a["points"] for a in applied)))
    assert level == DEFAULT_SCORECARD.level_of(score)
    points = [a["points"] for a in applied]
    assert points == sorted(points, key=lambda p: (p >= 0, -abs(p))), "adverse first, largest first"


def test_indicators_use_the_day_of_the_newest_event_not_the_clock():
    p = {"last_event_ts_ms": int(dt.datetime(2025, 12, 31, tzinfo=dt.UTC).timestamp() * 1000),
         "dated": {"penalty.safety": {"a": {"date": "2025-01-15", "amount": 1.0}, "b": {"date": "2024-12-01", "amount": 2.0}}}}
    assert derive(p)["penalty.safety.12m"] == 1 and derive(p)["penalty.safety.total"] == 2


# --- incremental indicators and the decoded-profile cache ------------------------------------------

_SERIES_EVENTS = st.lists(st.tuples(
    st.sampled_from([("hrss", "social_insurance", "period", {"insured_headcount": 1, "arrears_amount": 1}),
                     ("power", "electricity_usage", "period", {"usage_kwh": 1, "arrears_amount": 1}),
                     ("tax", "tax_filing", "period", {"taxable_revenue": 1, "tax_paid": 1}),
                     ("gas", "gas_usage", "billing_month", {"volume_m3": 1, "arrears": 1})]),
    st.sampled_from(months(30)), st.sampled_from(["A", "B"]), st.integers(0, 10_000), st.sampled_from(["c", "u", "d"]),
), max_size=60)


@given(_SERIES_EVENTS)
@settings(max_examples=150, deadline=None)
def test_indicators_recomputed_per_touched_series_equal_a_full_recomputation(events):
    feed = Feed()
    feed.send("market", "enterprise_registration", USCC, {"uscc": USCC, "status": "active"}, op="r")
    for (dept, dataset, period_field, measures), period, sub, value, op in events:
        day = f"{period}-01" if period_field == "billing_month" else period
        attrs = {"uscc": USCC, period_field: day, "account_no": sub, "tax_type": "vat" if sub == "A" else "cit",
                 **{m: value for m in measures}}
        feed.send(dept, dataset, f"{period}{sub}", attrs, op=op, before=attrs if op != "c" else None)
    assert feed.profile["indicators"] == derive(feed.profile)


def test_decoded_profiles_are_reused_only_for_the_same_bytes():
    from streams.core.profile import DecodedProfiles

    decoded = []

    def decode(b: bytes) -> dict:
        decoded.append(b)
        return {"bytes": b}

    cache = DecodedProfiles(decode, size=2)
    assert cache.get("u1", None) is None
    first = cache.get("u1", b"v1")
    assert cache.get("u1", b"v1") is first and decoded == [b"v1"]
    assert cache.get("u1", b"v2") == {"bytes": b"v2"}, "the table moved on (restore, rebalance): decode again"
    cache.put("u2", b"x", {})
    cache.put("u3", b"y", {})
    cache.get("u1", b"v2")
    assert decoded == [b"v1", b"v2", b"v2"], "u1 was the least recently used of three and was dropped"


def test_only_profiles_the_merge_stored_count_as_scanned_for_pii():
    from streams.core.profile import DecodedProfiles

    cache = DecodedProfiles(lambda b: {"bytes": b})
    from_table = cache.get("u1", b"v1")
    assert cache.scanned("u1", from_table) is None, "decoded from the table: checked in full once"
    mine = {"bytes": b"v2"}
    cache.put("u1", b"v2", mine)
    assert cache.scanned("u1", mine) is mine
    assert cache.scanned("u1", {"bytes": b"v2"}) is None, "an equal but other object is not the stored copy"
    assert cache.scanned("u2", mine) is None
