"""Amount, period and range rules of the mappings (``non_negative``, ``periods``, ``bounds``):
parsed and checked at start-up, applied to every row by ``streams.core.ingest.validate_row``, and
never rejecting what the department simulators produce."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.core.catalogue import _value_schema, load_catalogue
from streams.core.identifiers import id_check_digit, uscc_check_digit
from streams.core.ingest import validate_row
from streams.core.masking import find_pii_in_text
from streams.errors import ConfigError, ValidationError
from tests.unit.simulated_rows import simulated_rows

PROPERTY = settings(max_examples=200, deadline=None)
USCC17 = "91500103MA5U7XXX0"
USCC = USCC17 + uscc_check_digit(USCC17)

# --- every dataset's rules (from the real mappings) ---------------------------------------------

# A numeric field documented in one of these units is an amount or a quantity: never negative.
AMOUNT_UNITS = re.compile(r"CNY|USD|kWh|cubic metres|万元")


def _fields(schemas, ds) -> list[dict]:
    return _value_schema(schemas.get(ds.schema_name).parsed)["fields"]


def _base(avro_type) -> str:
    t = next(x for x in avro_type if x != "null") if isinstance(avro_type, list) else avro_type
    return t.get("type") if isinstance(t, dict) else t


def test_every_amount_and_count_field_is_non_negative(catalogue, schemas):
    """Derived from the schemas' docs, so a new dataset or field cannot be forgotten."""
    missing = []
    for ds in catalogue.by_topic().values():
        for f in _fields(schemas, ds):
            numeric = _base(f["type"]) in ("int", "long", "float", "double")
            is_amount = (AMOUNT_UNITS.search(f.get("doc", ""))
                         or re.search(r"人数|参保|count|declarations|months", f.get("doc", "") + f["name"]))
            if numeric and is_amount and f["name"] not in ds.non_negative and f["name"] not in ds.bounds \
                    and not f["name"].endswith(("_year", "id")):
                missing.append(f"{ds.qualified}.{f['name']}")
    assert missing == []


def test_every_month_field_is_a_period(catalogue, schemas):
    missing = [f"{ds.qualified}.{f['name']}" for ds in catalogue.by_topic().values() for f in _fields(schemas, ds)
               if "'YYYY-MM'" in f.get("doc", "") and f["name"] not in ds.periods]
    assert missing == []


def test_rates_and_ratios_have_bounds_in_their_unit(catalogue):
    # contribution_rate is a fraction (0.05-0.12), rd_expense_ratio a percent (3.0 = 3 %): the
    # bounds tell a percent sent as a rate from a real value.
    assert catalogue.dataset("housing_fund.housing_fund_contribution").bounds == {"contribution_rate": (0.0, 1.0)}
    assert catalogue.dataset("science.high_tech_certification").bounds == {"rd_expense_ratio": (0.0, 100.0)}
    assert catalogue.dataset("tax.tax_credit_rating").bounds["score"] == (0.0, 100.0)
    assert catalogue.dataset("ip.trademark").bounds == {"nice_class": (1.0, 45.0)}


def test_all_23_datasets_carry_the_new_rules_where_they_have_such_fields(catalogue):
    with_rules = {ds.qualified for ds in catalogue.by_topic().values() if ds.non_negative or ds.periods or ds.bounds}
    without = {ds.qualified for ds in catalogue.by_topic().values()} - with_rules
    # these four hold no amount, count, month or rate
    assert without == {"market.abnormal_operation", "court.dishonest_debtor", "customs.customs_credit", "ip.patent"}


# --- validate_row: each rule ---------------------------------------------------------------------


def _row(catalogue, qualified: str, **overrides):
    """A valid row of ``qualified`` with ``overrides``."""
    base = {
        "housing_fund.housing_fund_contribution": {
            "uscc": USCC, "period": "2026-02", "unit_account_no": "HF12345678", "depositor_count": 12,
            "deposit_base_total": 80_000.0, "contribution_rate": 0.08, "payable_amount": 12_800.0, "paid_amount": 12_800.0,
            "arrears_amount": 0.0, "status": "normal", "paid_date": dt.date(2026, 3, 10), "handler_name": "李四",
        },
        "hrss.social_insurance": {
            "uscc": USCC, "period": "2026-02", "insured_headcount": 15, "new_insured": 1, "terminated_insured": 0,
            "contribution_base": 90_000.0, "payable_amount": 32_850.0, "paid_amount": 32_850.0, "arrears_amount": 0.0,
            "arrears_months": 0, "payment_status": "paid",
        },
        "science.high_tech_certification": {
            "certificate_no": "GR202651001234", "uscc": USCC, "issue_date": dt.date(2025, 12, 1), "status": "valid",
            "rd_expense_ratio": 6.5,
        },
        "tax.tax_credit_rating": {"id": 1, "uscc": USCC, "rating_year": 2025, "rating": "B", "score": 82.5,
                                  "rated_date": dt.date(2026, 4, 20)},
        "ip.trademark": {"registration_no": "12345678", "uscc": USCC, "nice_class": 43},
        "tax.tax_filing": {"id": 1, "uscc": USCC, "period": "2026-02", "tax_type": "vat", "filing_date": dt.date(2026, 3, 10),
                           "taxable_revenue": 300_000.0, "tax_payable": 9_000.0, "tax_paid": 9_000.0},
        "power.electricity_usage": {"account_no": "5012345678", "period": "2026-02", "uscc": USCC, "usage_kwh": 1200.5,
                                    "payment_status": "paid", "arrears_amount": 0.0},
    }[qualified]
    ds = catalogue.dataset(qualified)
    return ds, {**{f: None for f in ds.non_negative}, **base, **overrides}


@pytest.mark.parametrize(
    "qualified, field, value",
    [
        ("hrss.social_insurance", "arrears_amount", 0.0),
        ("hrss.social_insurance", "arrears_amount", None),
        ("hrss.social_insurance", "arrears_amount", -0.0),
        ("hrss.social_insurance", "insured_headcount", 0),
        ("housing_fund.housing_fund_contribution", "contribution_rate", 0.0),
        ("housing_fund.housing_fund_contribution", "contribution_rate", 1.0),
        ("housing_fund.housing_fund_contribution", "contribution_rate", None),
        ("science.high_tech_certification", "rd_expense_ratio", 100.0),
        ("ip.trademark", "nice_class", 1),
        ("ip.trademark", "nice_class", 45),
        ("tax.tax_filing", "period", "1999-12"),
    ],
)
def test_values_on_the_edge_pass(catalogue, qualified, field, value):
    ds, row = _row(catalogue, qualified, **{field: value})
    validate_row(ds, row)


@pytest.mark.parametrize(
    "qualified, field, value, fragment",
    [
        # amounts and counts
        ("hrss.social_insurance", "arrears_amount", -0.01, "is negative"),
        ("hrss.social_insurance", "insured_headcount", -3, "is negative"),
        ("hrss.social_insurance", "paid_amount", math.nan, "not a finite number"),
        ("hrss.social_insurance", "contribution_base", math.inf, "not a finite number"),
        ("tax.tax_filing", "tax_paid", -math.inf, "not a finite number"),
        ("power.electricity_usage", "usage_kwh", "1200", "not a finite number"),
        ("power.electricity_usage", "arrears_amount", True, "not a finite number"),
        # months
        ("tax.tax_filing", "period", "2026-13", "not a month 'YYYY-MM'"),
        ("tax.tax_filing", "period", "2026-00", "not a month 'YYYY-MM'"),
        ("tax.tax_filing", "period", "2026-2", "not a month 'YYYY-MM'"),
        ("tax.tax_filing", "period", "202602", "not a month 'YYYY-MM'"),
        ("tax.tax_filing", "period", "2026-02-01", "not a month 'YYYY-MM'"),
        ("tax.tax_filing", "period", " 2026-02", "not a month 'YYYY-MM'"),
        ("power.electricity_usage", "period", "", "required but empty"),
        ("hrss.social_insurance", "period", "2026-Q1", "not a month 'YYYY-MM'"),
        # ranges and units
        ("housing_fund.housing_fund_contribution", "contribution_rate", 12.0, "outside its range [0, 1]"),
        ("housing_fund.housing_fund_contribution", "contribution_rate", -0.05, "outside its range [0, 1]"),
        ("housing_fund.housing_fund_contribution", "contribution_rate", math.nan, "not a finite number"),
        ("science.high_tech_certification", "rd_expense_ratio", 350.0, "outside its range [0, 100]"),
        ("tax.tax_credit_rating", "score", 100.5, "outside its range [0, 100]"),
        ("tax.tax_credit_rating", "rating_year", 25, "outside its range [2003, 2100]"),
        ("ip.trademark", "nice_class", 0, "outside its range [1, 45]"),
        ("ip.trademark", "nice_class", 46, "outside its range [1, 45]"),
    ],
)
def test_rule_violation_is_a_validation_error_naming_dataset_and_field(catalogue, qualified, field, value, fragment):
    ds, row = _row(catalogue, qualified, **{field: value})
    with pytest.raises(ValidationError) as err:
        validate_row(ds, row)
    assert err.value.field == field
    message = str(err.value)
    assert message.startswith(f"{ds.name}.{field} "), message
    assert fragment in message


id_numbers = st.builds(
    lambda region, birth, seq: (lambda f: f + id_check_digit(f))(f"{region}{birth:%Y%m%d}{seq:03d}"),
    st.sampled_from(["500103", "500112", "340524"]),
    st.dates(min_value=dt.date(1940, 1, 1), max_value=dt.date(2008, 12, 31)),
    st.integers(0, 999),
)
mobiles = st.builds(lambda p, rest: p + rest, st.sampled_from(["138", "139", "150", "186", "199"]),
                    st.text("0123456789", min_size=8, max_size=8))


@PROPERTY
@given(raw=st.one_of(id_numbers, mobiles), before=st.text(max_size=6), after=st.text(max_size=30),
       field=st.sampled_from(["period", "status"]))
def test_a_personal_number_in_the_wrong_column_is_not_echoed(catalogue, raw, before, after, field):
    # A dead letter's message is stored in ClickHouse (dlq_event): it must not carry the number.
    qualified = "tax.tax_filing" if field == "period" else "housing_fund.housing_fund_contribution"
    value = before + raw + after
    assume(find_pii_in_text(value))  # digits around it can make it another number: then it is none
    ds, row = _row(catalogue, qualified, **{field: value})
    with pytest.raises(ValidationError) as err:
        validate_row(ds, row)
    assert find_pii_in_text(str(err.value)) is None
    assert raw not in str(err.value)


# --- the mapping format: clear errors at start-up --------------------------------------------------

MAPPING = """
[department]
dept = "housing_fund"
name_zh = "公积金中心"
kind = "mysql"

[datasets.housing_fund_contribution]
table = "housing_fund_contribution"
key = ["uscc", "period"]
required = ["uscc", "period"]
non_negative = ["paid_amount", "depositor_count"]
periods = ["period"]
[datasets.housing_fund_contribution.bounds]
contribution_rate = [0, 1]
"""


def test_new_keys_load(tmp_path, schemas):
    (tmp_path / "housing_fund.toml").write_text(MAPPING, encoding="utf-8")
    ds = load_catalogue(tmp_path, schemas).dataset("housing_fund.housing_fund_contribution")
    assert ds.non_negative == ("paid_amount", "depositor_count")
    assert ds.periods == ("period",)
    assert ds.bounds == {"contribution_rate": (0.0, 1.0)}


@pytest.mark.parametrize(
    "old, new, fragments",
    [
        ('non_negative = ["paid_amount", "depositor_count"]', 'non_negatve = ["paid_amount"]',
         ["unknown keys ['non_negatve']", "known: "]),
        ('non_negative = ["paid_amount", "depositor_count"]', 'non_negative = ["paid_amuont"]', ["not in schema", "paid_amuont"]),
        ('non_negative = ["paid_amount", "depositor_count"]', 'non_negative = ["status"]',
         ["non_negative applies to", "status (string)"]),
        ('non_negative = ["paid_amount", "depositor_count"]', 'non_negative = "paid_amount"', ["must be a list of field names"]),
        ('periods = ["period"]', 'periods = ["paid_amount"]', ["periods applies to string", "paid_amount (double)"]),
        ('periods = ["period"]', 'periods = ["paid_date"]', ["periods applies to string", "paid_date (int:date)"]),
        ("contribution_rate = [0, 1]", "contribution_rate = [1, 0]", ["bounds.contribution_rate", "min <= max"]),
        ("contribution_rate = [0, 1]", "contribution_rate = [0]", ["bounds.contribution_rate", "[min, max]"]),
        ("contribution_rate = [0, 1]", 'contribution_rate = ["0", 1]', ["bounds.contribution_rate"]),
        ("contribution_rate = [0, 1]", "contribution_rate = [0, nan]", ["bounds.contribution_rate", "finite"]),
        ("contribution_rate = [0, 1]", "contribution_rate = [0, inf]", ["bounds.contribution_rate", "finite"]),
        ("contribution_rate = [0, 1]", "status = [0, 1]", ["bounds applies to", "status (string)"]),
        ("contribution_rate = [0, 1]", "contribution_ratio = [0, 1]", ["not in schema", "contribution_ratio"]),
    ],
    ids=["key-typo", "field-typo", "non-negative-on-text", "not-a-list", "period-on-number", "period-on-date",
         "min-above-max", "one-bound", "text-bound", "nan-bound", "inf-bound", "bounds-on-text", "bounds-field-typo"],
)
def test_broken_rule_is_a_config_error_naming_file_and_dataset(tmp_path, schemas, old, new, fragments):
    assert old in MAPPING
    (tmp_path / "housing_fund.toml").write_text(MAPPING.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_catalogue(tmp_path, schemas)
    message = str(err.value)
    assert "housing_fund.toml [datasets.housing_fund_contribution]" in message
    for fragment in fragments:
        assert fragment in message


def test_the_real_mappings_load_with_the_new_rules(schemas):
    load_catalogue(schemas=schemas)  # the shipped mappings satisfy every start-up check


# --- what the simulators produce passes ---------------------------------------------------------

ALL_DATASETS = [
    "court.dishonest_debtor", "court.enforcement", "court.litigation_case", "customs.customs_credit",
    "customs.customs_trade", "emergency.safety_penalty", "environment.environmental_penalty", "gas.gas_usage",
    "housing_fund.housing_fund_contribution", "hrss.social_insurance", "ip.ip_pledge", "ip.patent", "ip.trademark",
    "market.abnormal_operation", "market.enterprise_registration", "market.equity_pledge", "power.electricity_usage",
    "procurement.bid_award", "science.high_tech_certification", "tax.tax_arrears", "tax.tax_credit_rating",
    "tax.tax_filing", "water.water_usage",
]


@pytest.fixture(scope="module")
def simulated(catalogue, schemas):
    return simulated_rows(catalogue, schemas)


def test_the_sample_covers_every_dataset(simulated, catalogue):
    assert set(simulated) == {ds.qualified for ds in catalogue.by_topic().values()} == set(ALL_DATASETS)
    assert all(len(rows) >= 5 for rows in simulated.values()), {q: len(r) for q, r in simulated.items()}


@pytest.mark.parametrize("qualified", ALL_DATASETS)
def test_simulated_rows_pass_validation(simulated, catalogue, qualified):
    ds = catalogue.dataset(qualified)
    for row in simulated[qualified]:
        validate_row(ds, row)


# --- the envelope's commit time -------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts_ms, ok",
    [
        (1_709_294_400_123, True),  # milliseconds: 2024-03-01
        (631_152_000_000, True),  # 1990-01-01, the earliest accepted
        (1_709_294_400_123_456, False),  # microseconds: year 56 000
        (1_709_294_400_123_456_789, False),  # nanoseconds
        (1_709_294_400, False),  # seconds: 1970-01-20
        (0, True),  # a connector's "commit time unknown"
        (-1, False),
    ],
)
def test_source_commit_time_must_be_epoch_milliseconds(catalogue, pseudonymizer, ts_ms, ok):
    # The merge turns it into dates (profile as-of day) and ClickHouse into DateTime64: a commit
    # time in the wrong unit must stop at the edge, named, not deep in the merge (ValueError:
    # year 56908 is out of range) or in analysts' queries.
    from streams.core.ingest import Provenance, to_enterprise_event

    ds, row = _row(catalogue, "tax.tax_filing")
    env = {"before": None, "after": row, "op": "c", "ts_ms": 1_709_294_400_500,
           "source": {"connector": "postgresql", "dept": "tax", "db": "tax", "schema": "public", "table": "tax_filing",
                      "position": "0/1", "seq": 1, "ts_ms": ts_ms, "snapshot": "false", "tx_id": None}}
    if ok:
        assert to_enterprise_event(ds, env, Provenance("dept.tax.tax_filing", 0, 1), pseudonymizer, 1)["event_ts_ms"] == ts_ms
        return
    with pytest.raises(ValidationError) as err:
        to_enterprise_event(ds, env, Provenance("dept.tax.tax_filing", 0, 1), pseudonymizer, 1)
    assert err.value.field == "source.ts_ms"
    assert "epoch milliseconds" in str(err.value) and str(err.value).startswith("tax_filing: source.ts_ms")
