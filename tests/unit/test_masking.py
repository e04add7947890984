"""De-identification (脱敏): display masks, keyed pseudonyms, per-field policy, last-line detector."""

from __future__ import annotations

import datetime as dt
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.simulator.identities import make_id_number, make_mobile, pick_district
from streams.core.identifiers import id_check_digit
from streams.core.masking import (
    FieldRule,
    MaskingPolicy,
    Pseudonymizer,
    assert_no_pii,
    find_pii,
    find_pii_in_text,
    generalize_address,
    mask_bank_account,
    mask_id_number,
    mask_person_name,
    mask_phone,
)
from streams.errors import ConfigError, PIILeakError

PROPERTY = settings(max_examples=200, deadline=None)
KEY = b"k" * 32
OTHER_KEY = b"q" * 32

# --- strategies -------------------------------------------------------------------------------

id_numbers = st.builds(
    lambda region, birth, seq: (lambda first17: first17 + id_check_digit(first17))(f"{region}{birth:%Y%m%d}{seq:03d}"),
    st.text("0123456789", min_size=6, max_size=6),
    st.dates(min_value=dt.date(1920, 1, 1), max_value=dt.date(2015, 12, 31)),
    st.integers(0, 999),
)
mobiles = st.builds(lambda second, rest: "1" + second + rest, st.sampled_from("3456789"), st.text("0123456789", min_size=9, max_size=9))


def _luhn_complete(body: str) -> str:
    """``body`` + the digit that makes it pass the Luhn check."""
    for d in "0123456789":
        digits = body + d
        total = 0
        for i, ch in enumerate(reversed(digits)):
            n = int(ch)
            if i % 2 == 1:
                n = n * 2 - 9 if n > 4 else n * 2
            total += n
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


card_numbers = st.text("0123456789", min_size=15, max_size=18).map(_luhn_complete)
# Surrounding text that a clerk might type around a number: no digits, no Latin letters.
surroundings = st.text(st.sampled_from("身份证号码电话手机联系人：:，, ;()（）-/\n"), max_size=8)
any_text = st.text(max_size=8)
person_names = st.text(st.sampled_from("张王李赵刘陈杨黄周吴三丰小明华伟芳"), min_size=1, max_size=4)

# --- display masks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "masker, raw, shown",
    [
        (mask_id_number, "500103198001011234", "5001**********1234"),
        (mask_id_number, "34052419800101001X", "3405**********001X"),
        (mask_id_number, " 500103198001011234 ", "5001**********1234"),
        (mask_id_number, "1234", "****"),
        (mask_phone, "13812345678", "138****5678"),
        (mask_phone, "138-1234-5678", "138****5678"),
        (mask_phone, "12345", "*****"),
        (mask_person_name, "张三丰", "张**"),
        (mask_person_name, "张三", "张*"),
        (mask_person_name, "", ""),
        (mask_bank_account, "6222021234567890128", "*" * 15 + "0128"),
        (mask_bank_account, "6222 0212 3456 7890 128", "*" * 15 + "0128"),
        (generalize_address, "重庆市渝中区解放碑88号", "重庆市渝中区"),
        (generalize_address, "重庆市石柱土家族自治县南宾镇1号", "重庆市石柱土家族自治县"),
        (generalize_address, "渝北区龙溪街道5号", "渝北区"),
        (generalize_address, "解放碑88号", ""),
    ],
)
def test_display_masks(masker, raw, shown):
    assert masker(raw) == shown


# --- keyed pseudonyms -------------------------------------------------------------------------


def test_pseudonym_is_stable_for_one_key_and_hides_the_value():
    p = Pseudonymizer(KEY)
    a = p.pseudonym("id_number", "34052419800101001X")
    assert a == Pseudonymizer(KEY).pseudonym("id_number", "34052419800101001X")
    assert re.fullmatch(r"p1_[0-9a-f]{32}", a)
    assert "34052419800101001X" not in a


@pytest.mark.parametrize(
    "pii_class, a, b",
    [
        ("id_number", "34052419800101001X", "34052419800101001x"),
        ("id_number", "34052419800101001X", " 34052419800101001X "),
        ("phone", "13812345678", "138-1234-5678"),
        ("bank_account", "6222021234567890128", "6222 0212 3456 7890 128"),
    ],
)
def test_pseudonym_links_the_same_person_across_spellings(pii_class, a, b):
    p = Pseudonymizer(KEY)
    assert p.pseudonym(pii_class, a) == p.pseudonym(pii_class, b)


def test_pseudonym_differs_across_keys_and_values():
    value = "34052419800101001X"
    assert Pseudonymizer(KEY).pseudonym("id_number", value) != Pseudonymizer(OTHER_KEY).pseudonym("id_number", value)
    p = Pseudonymizer(KEY)
    assert p.pseudonym("id_number", value) != p.pseudonym("id_number", "11010519491231002X")


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 31])
def test_short_key_is_refused(key):
    with pytest.raises(ConfigError, match="32 bytes"):
        Pseudonymizer(key)


def test_repr_hides_the_key():
    secret = b"super-secret-key-material-0123456789"
    p = Pseudonymizer(secret)
    for shown in (repr(p), str(p), f"{p}", repr([p])):
        assert secret.decode() not in shown
        assert "super-secret" not in shown


# --- policy -----------------------------------------------------------------------------------

REGISTRATION_PII = {
    "legal_rep_name": "person_name",
    "legal_rep_id_number": "id_number",
    "legal_rep_phone": "phone",
    "address": "address",
    "contact_email": "email",
    "settlement_account": "bank_account",
    "shareholder_id": {"class": "id_number", "actions": ["pseudonymize"]},
    "birth": {"class": "id_number", "actions": ["generalize"]},
}


def test_policy_masks_a_registration_row():
    p = Pseudonymizer(KEY)
    policy = MaskingPolicy.from_mapping("market.enterprise_registration", REGISTRATION_PII)
    row = {
        "uscc": "91110000600037341L",
        "name": "重庆某某科技有限公司",
        "legal_rep_name": "张三丰",
        "legal_rep_id_number": "34052419800101001X",
        "legal_rep_phone": "13812345678",
        "address": "重庆市渝中区解放碑88号",
        "contact_email": "zhang@example.com",
        "settlement_account": "6222021234567890128",
        "shareholder_id": "11010519491231002X",
        "birth": "440524188001010014",
        "registered_capital": 500.0,
        "established_date": dt.date(2015, 6, 1),
        "active": True,
        "industry_code": None,
    }
    out = policy.apply(row, p)
    assert out == {
        "uscc": "91110000600037341L",
        "name": "重庆某某科技有限公司",
        "legal_rep_name": "张**",
        "legal_rep_id_number": "3405**********001X",
        "legal_rep_id_number_pseudonym": p.pseudonym("id_number", "34052419800101001X"),
        "legal_rep_phone": "138****5678",
        "address": "重庆市渝中区",
        "settlement_account": "*" * 15 + "0128",
        "settlement_account_pseudonym": p.pseudonym("bank_account", "6222021234567890128"),
        "shareholder_id_pseudonym": p.pseudonym("id_number", "11010519491231002X"),
        "birth": "1880",
        "registered_capital": "500.0",
        "established_date": "2015-06-01",
        "active": "true",
        "industry_code": None,
    }
    assert find_pii(out) is None


@pytest.mark.parametrize("empty", [None, ""])
def test_policy_keeps_empty_pii_empty(empty):
    policy = MaskingPolicy.from_mapping("x", {"legal_rep_id_number": "id_number", "contact_email": "email"})
    out = policy.apply({"legal_rep_id_number": empty, "contact_email": empty}, Pseudonymizer(KEY))
    assert out == {"legal_rep_id_number": empty, "legal_rep_id_number_pseudonym": None}


def test_policy_ignores_rules_for_absent_fields():
    policy = MaskingPolicy.from_mapping("x", {"legal_rep_phone": "phone"})
    assert policy.apply({"name": "a"}, Pseudonymizer(KEY)) == {"name": "a"}


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"f": "passport"}, "unknown PII class"),
        ({"f": {"class": "passport"}}, "unknown PII class"),
        ({"f": {"class": "phone", "actions": ["encrypt"]}}, "actions"),
        ({"f": {"class": "phone", "actions": ["generalize"]}}, "no generalisation"),
        ({"f": {"class": "address", "actions": ["mask", "generalize"]}}, "choose one"),
    ],
)
def test_policy_config_errors(spec, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        MaskingPolicy.from_mapping("x", spec)
    assert "'f'" in str(err.value)


def test_field_rule_requires_actions():
    with pytest.raises(ConfigError):
        FieldRule("f", "phone", ())


# --- masking never lets a valid ID or phone through (property) ---------------------------------

MASK_ONLY = MaskingPolicy.from_mapping(
    "t",
    {
        "legal_rep_id_number": {"class": "id_number", "actions": ["mask"]},
        "legal_rep_phone": {"class": "phone", "actions": ["mask"]},
        "legal_rep_name": {"class": "person_name", "actions": ["mask"]},
    },
)
DEFAULT_REGISTRATION = MaskingPolicy.from_mapping(
    "t", {"legal_rep_id_number": "id_number", "legal_rep_phone": "phone", "legal_rep_name": "person_name"}
)


@PROPERTY
@given(
    id_number=id_numbers,
    mobile=mobiles,
    name=person_names,
    around=st.tuples(any_text, any_text, any_text, any_text),
    field_for=st.permutations(["legal_rep_id_number", "legal_rep_phone", "legal_rep_name"]),
)
def test_masked_output_never_carries_a_valid_id_or_mobile(id_number, mobile, name, around, field_for):
    # Any PII value, with any text around it, in any of the three PII fields.
    values = [around[0] + id_number + around[1], around[2] + mobile + around[3], name + id_number]
    row = dict(zip(field_for, values, strict=True))
    out = MASK_ONLY.apply(row, Pseudonymizer(KEY))
    assert find_pii(out) is None, out
    assert id_number not in str(out) and mobile not in str(out)


@PROPERTY
@given(id_number=id_numbers, mobile=mobiles, name=person_names)
def test_default_policy_output_never_carries_the_raw_values(id_number, mobile, name):
    row = {"legal_rep_id_number": id_number, "legal_rep_phone": mobile, "legal_rep_name": name}
    out = DEFAULT_REGISTRATION.apply(row, Pseudonymizer(KEY))
    text = str(out)
    assert id_number not in text and id_number.lower() not in text
    assert mobile not in text
    assert out["legal_rep_name"] == name[0] + "*" * (len(name) - 1)


def test_pseudonyms_are_not_mistaken_for_raw_pii():
    # A pseudonym is 32 hex characters; some contain a run of decimal digits between two hex
    # letters that the detector takes for a mobile ("...c18794005308d...") or a Luhn-valid card
    # number ("...c3816609887828586"). Such records would be dead-lettered as PII leaks although
    # they carry none (about 1 registration in 700).
    p = Pseudonymizer(KEY)
    rng = random.Random(0)
    flagged = []
    for _ in range(3000):
        district = pick_district(rng)
        row = {"legal_rep_id_number": make_id_number(rng, district), "legal_rep_phone": make_mobile(rng), "legal_rep_name": "张三"}
        out = DEFAULT_REGISTRATION.apply(row, p)
        if find_pii(out) is not None:
            flagged.append((find_pii(out), out["legal_rep_id_number_pseudonym"]))
    assert flagged == []


# --- the detector finds raw PII ----------------------------------------------------------------


@PROPERTY
@given(id_number=id_numbers, before=surroundings, after=surroundings)
def test_detector_finds_a_valid_id_number_in_text(id_number, before, after):
    assert find_pii_in_text(before + id_number + after) == "id_number"
    assert find_pii_in_text(before + id_number.lower() + after) == "id_number"


@PROPERTY
@given(mobile=mobiles, before=surroundings, after=surroundings, country=st.sampled_from(["", "+86", "86-", "+86 "]))
def test_detector_finds_a_mobile_number_in_text(mobile, before, after, country):
    assert find_pii_in_text(before + country + mobile + after) == "phone"


@PROPERTY
@given(card=card_numbers, before=surroundings, after=surroundings)
def test_detector_finds_a_luhn_valid_card_number_in_text(card, before, after):
    # An 18-digit card number may also be a valid ID number; either way it is caught.
    assert find_pii_in_text(before + card + after) in ("bank_account", "id_number")


@pytest.mark.parametrize(
    "record, path, pii_class",
    [
        ({"a": {"b": ["x", {"c": "电话 13812345678"}]}}, "a.b[1].c", "phone"),
        ({"rows": [{"note": "身份证34052419800101001X"}]}, "rows[0].note", "id_number"),
        ({"x": "ok", "y": ("n/a", "卡号6222021234567890128")}, "y[1]", "bank_account"),
    ],
)
def test_detector_walks_nested_records(record, path, pii_class):
    assert find_pii(record) == (path, pii_class)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "138****5678",
        "3405**********001X",
        "340524198001010010",  # wrong check digit
        "6222021234567890123",  # fails Luhn
        "12812345678",  # not a mobile prefix
        "registered capital 13812345678.5",
    ],
)
def test_detector_leaves_non_pii_alone(text):
    assert find_pii_in_text(text) is None


def test_detector_skips_the_uscc_field():
    # An enterprise code is not a person's identifier, even where it looks like one.
    assert find_pii({"uscc": "34052419800101001X"}) is None
    assert find_pii({"attributes": {"uscc": "13812345678"}}) is None
    assert find_pii({"other": "34052419800101001X"}) == ("other", "id_number")


@PROPERTY
@given(raw=st.one_of(id_numbers, mobiles), before=surroundings)
def test_leak_error_never_echoes_the_raw_value(raw, before):
    record = {"attributes": {"legal_rep_note": before + raw}}
    with pytest.raises(PIILeakError) as err:
        assert_no_pii(record, "enterprise event")
    assert raw not in str(err.value)
    assert raw not in repr(err.value)
    assert err.value.field == "attributes.legal_rep_note"
    assert "attributes.legal_rep_note" in str(err.value)


def test_assert_no_pii_passes_clean_records():
    assert_no_pii({"attributes": {"legal_rep_phone": "138****5678"}}, "x")


@PROPERTY
@given(raw=st.one_of(id_numbers, mobiles), where=st.sampled_from(["new_inner_map", "replaced_text", "new_list", "equal_copy"]))
def test_a_check_against_a_scanned_record_still_finds_whatever_is_new(raw, where):
    """``assert_no_pii(record, scanned=…)`` skips only the very objects the scanned record holds; a
    new inner map, a replaced text, a new list and an equal-but-distinct copy are all scanned."""
    scanned = {"monthly": {"tax.paid": {"2025-01": 1.0}}, "name": "重庆某某有限公司", "ids": ["a"],
               "dated": {"court.case": {"k": {"note": "clean"}}}}
    assert_no_pii(scanned, "profile")
    record = {**scanned, "monthly": dict(scanned["monthly"])}
    if where == "new_inner_map":
        record["monthly"]["hrss.note"] = {"x": f"联系 {raw}"}
    elif where == "replaced_text":
        record["name"] = f"重庆某某有限公司 {raw}"
    elif where == "new_list":
        record["ids"] = ["a", raw]
    else:  # equal to the scanned inner map, but a new object that carries the raw value
        record["dated"] = {"court.case": {"k": {"note": raw}}}
    with pytest.raises(PIILeakError):
        assert_no_pii(record, "profile", scanned=scanned)


def test_a_check_against_a_scanned_record_skips_the_objects_it_shares():
    # Shared objects passed the check that ``scanned`` passed; a leak planted in one of them after
    # the fact is not looked at again — which is why merge_event never changes a profile in place
    # (tests/unit/test_risk_profile.py checks that on every merge).
    scanned = {"monthly": {"tax.paid": {"2025-01": 1.0}}, "notes": {"a": "clean"}}
    record = {**scanned, "monthly": {**scanned["monthly"], "tax.due": {"2025-01": 2.0}}}
    scanned["notes"]["a"] = "13812345678"
    assert_no_pii(record, "profile", scanned=scanned)
    with pytest.raises(PIILeakError):
        assert_no_pii(record, "profile")
