"""Identity numbers at ingest: every field of PII class ``id_number`` must be a plausible
居民身份证号 (18 characters, a GB/T 2260 region, a real birth date from 1900 to the ingest day,
the GB 11643 MOD 11-2 check digit). A bad one is a ``ValidationError`` naming the dataset.field
and the rule — never the value nor a part of it — and its dead letter names the field."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.simulator.identities import CHONGQING_DISTRICTS, make_id_number, pick_district
from sinks.rows import dlq_row
from streams.core.identifiers import id_check_digit, id_number_problem, uscc_check_digit
from streams.core.ingest import Provenance, to_enterprise_event, validate_row
from streams.errors import ValidationError
from streams.kafka.dlq import dlq_headers

PROPERTY = settings(max_examples=300, deadline=None)
TODAY = dt.date(2026, 3, 1)
NOW_MS = int(dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC).timestamp() * 1000)
USCC17 = "91500103MA5U7XXX0"
USCC = USCC17 + uscc_check_digit(USCC17)
VALID_ID = "50011219830715423" + id_check_digit("50011219830715423")
# numbers an error message may carry: the rule's standards, the length wanted and got, the earliest year
ALLOWED_NUMBERS = {"11643", "2260", "17", "18", "19", "1900"}


def _id(first17: str) -> str:
    return first17 + id_check_digit(first17)


def arrears(**overrides):
    row = {"id": 7, "uscc": USCC, "tax_type": "vat", "amount": 12_000.0, "late_fee": 60.0,
           "since_date": dt.date(2026, 1, 16), "cleared_date": None, "status": "outstanding",
           "legal_rep_name": "张三", "legal_rep_id_number": VALID_ID, "tax_authority": "国家税务总局重庆市渝北区税务局"}
    row.update(overrides)
    return row


def assert_names_no_part_of(message: str, value: str) -> None:
    assert value not in message and value.lower() not in message
    for i in range(len(value) - 5):  # not even six characters of it (a region, a birth date)
        assert value[i:i + 6] not in message, (message, value)
    assert set(re.findall(r"\d+", message)) <= ALLOWED_NUMBERS, message


@pytest.fixture(scope="module")
def ds(catalogue):
    return catalogue.dataset("tax.tax_arrears")


def test_every_id_number_field_of_the_catalogue_is_checked(catalogue):
    fields = {ds.qualified: ds.id_number_fields for ds in catalogue.by_topic().values() if ds.id_number_fields}
    assert fields == {
        "tax.tax_arrears": ("legal_rep_id_number",), "market.enterprise_registration": ("legal_rep_id_number",),
        "market.equity_pledge": ("pledgor_id_number",), "court.enforcement": ("executed_person_id_number",),
        "court.dishonest_debtor": ("legal_rep_id_number",),
    }


@pytest.mark.parametrize(
    "value, rule, says",
    [
        (VALID_ID[:17] + str((int(VALID_ID[17]) + 1) % 10) if VALID_ID[17] != "X" else VALID_ID[:17] + "0",
         "gb11643.check_digit", "fails the GB 11643 check digit"),
        (_id("50011220310230423"), "gb11643.birth_date", "birth date that is not a real date"),  # 30 February
        (_id("50011219831315423"), "gb11643.birth_date", "birth date that is not a real date"),  # month 13
        (_id("50011220270101423"), "gb11643.birth_date", "birth date in the future"),
        (_id("50011218991231423"), "gb11643.birth_date", "birth date before 1900"),
        (_id("99011219830715423"), "gb11643.region", "GB/T 2260 region code"),  # no province 99
        (_id("50000019830715423"), "gb11643.region", "GB/T 2260 region code"),  # a bare province code
        (VALID_ID[:17], "gb11643.length", "must be 18 characters, got 17"),
        (VALID_ID + "1", "gb11643.length", "must be 18 characters, got 19"),
        ("5001121983071542A" + "3", "gb11643.form", "17 digits and a digit or X"),
        ("５００１１２１９８３０７１５４２３", "gb11643.length", "must be 18 characters"),
    ],
)
def test_a_bad_id_number_is_refused_naming_field_and_rule_not_the_value(ds, value, rule, says):
    with pytest.raises(ValidationError) as err:
        validate_row(ds, arrears(legal_rep_id_number=value), TODAY)
    message = str(err.value)
    assert err.value.field == "legal_rep_id_number"
    assert message.startswith("tax_arrears.legal_rep_id_number: "), message
    assert says in message and f"(rule {rule})" in message, message
    assert_names_no_part_of(message, value)


def test_full_width_digits_of_the_right_length_are_refused_by_form(ds):
    value = "５００１１２１９８３０７１５４２" + "３"  # 15 full-width characters: length
    assert id_number_problem(value, TODAY)[0] == "gb11643.length"
    assert id_number_problem("５" * 18, TODAY)[0] == "gb11643.form"


@pytest.mark.parametrize("value", [None, ""])
def test_a_null_or_empty_optional_id_number_passes(ds, value):
    validate_row(ds, arrears(legal_rep_id_number=value), TODAY)


def test_a_required_id_number_must_be_there(ds):
    required = dataclasses.replace(ds, required=(*ds.required, "legal_rep_id_number"))
    with pytest.raises(ValidationError, match=r"tax_arrears.legal_rep_id_number is required but empty"):
        validate_row(required, arrears(legal_rep_id_number=None), TODAY)


def test_lower_case_x_and_the_edges_of_the_birth_range_pass(ds):
    x = next(_id(f"500112{d:%Y%m%d}{s:03d}") for d in (dt.date(1980, 1, 1),) for s in range(1000)
             if id_check_digit(f"500112{d:%Y%m%d}{s:03d}") == "X")
    for value in (x, x.lower(), _id("50011219000101001"), _id(f"500112{TODAY:%Y%m%d}001")):
        validate_row(ds, arrears(legal_rep_id_number=value), TODAY)


def test_the_equity_pledge_checks_a_natural_persons_number_only(catalogue):
    ds = catalogue.dataset("market.equity_pledge")
    row = {"id": 1, "uscc": USCC, "registration_no": "渝500103股质登字[2025]第00012号", "pledgor_type": "enterprise",
           "pledgor_name": "重庆某某投资有限公司", "pledgor_id_number": USCC, "pledgee": "重庆银行",
           "pledged_amount": 120.0, "registration_date": dt.date(2025, 6, 1), "status": "valid", "cancelled_date": None}
    validate_row(ds, row, TODAY)  # an enterprise pledgor: the field holds its USCC
    validate_row(ds, {**row, "pledgor_type": "natural_person", "pledgor_id_number": VALID_ID}, TODAY)
    with pytest.raises(ValidationError, match=r"equity_pledge.pledgor_id_number: .*\(rule gb11643.form\)"):
        validate_row(ds, {**row, "pledgor_type": "natural_person"}, TODAY)


# --- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), district=st.sampled_from(sorted(CHONGQING_DISTRICTS)) | st.none())
def test_the_simulators_id_numbers_always_pass(ds, seed, district):
    rng = random.Random(seed)
    value = make_id_number(rng, district or pick_district(rng))
    assert id_number_problem(value, dt.date.today()) is None
    validate_row(ds, arrears(legal_rep_id_number=value))  # against today's date


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), position=st.integers(0, 17), data=st.data())
def test_any_single_character_change_of_a_valid_id_number_is_refused(ds, seed, position, data):
    value = make_id_number(random.Random(seed), pick_district(random.Random(seed)))
    alphabet = "0123456789X" if position == 17 else "0123456789"
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != value[position].upper()]))
    changed = value[:position] + replacement + value[position + 1:]
    with pytest.raises(ValidationError) as err:
        validate_row(ds, arrears(legal_rep_id_number=changed), TODAY)
    message = str(err.value)
    assert err.value.field == "legal_rep_id_number" and "(rule gb11643." in message
    assert_names_no_part_of(message, changed)


# --- through ingest to the dead letter -----------------------------------------------------------


def test_ingest_refuses_it_and_the_dead_letter_names_the_field(ds, pseudonymizer):
    bad = VALID_ID[:17] + ("0" if VALID_ID[17] != "0" else "1")
    env = {"before": None, "after": arrears(legal_rep_id_number=bad), "op": "c", "ts_ms": NOW_MS,
           "source": {"connector": "postgresql", "dept": "tax", "db": "tax", "schema": "public", "table": "tax_arrears",
                      "position": "0/16B3748", "seq": 0x16B3748, "ts_ms": NOW_MS - 500, "snapshot": "false", "tx_id": 7}}
    where = Provenance("dept.tax.tax_arrears", 1, 99)
    with pytest.raises(ValidationError) as err:
        to_enterprise_event(ds, env, where, pseudonymizer, NOW_MS)
    headers = dlq_headers("worker", where.topic, where.partition, where.offset, err.value)
    row = dlq_row("dlq.dept.tax.tax_arrears", 0, 5, headers, b"original bytes")
    assert row[3] == "dept.tax.tax_arrears" and row[7] == "validation"
    assert row[9] == "legal_rep_id_number"
    assert row[10] == "tax_arrears.legal_rep_id_number: fails the GB 11643 check digit (rule gb11643.check_digit)"
    assert bad not in " ".join(map(str, row))


@pytest.mark.parametrize("spec", [{"pledgor_id_number": "natural_person"}, {"pledgor_id_number": {}},
                                  {"pledgor_id_number": {"pledgor_type": []}}, ["pledgor_id_number"]])
def test_a_malformed_id_number_when_is_a_config_error(spec):
    from streams.core.catalogue import _id_number_when
    from streams.errors import ConfigError

    with pytest.raises(ConfigError, match="id_number_when must be a table"):
        _id_number_when("market.toml [datasets.equity_pledge]", spec)
