"""Check digits of USCC (GB 32100) and 居民身份证号 (GB 11643), and the simulator's identities."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.simulator.identities import (
    CHONGQING_DISTRICTS,
    make_id_number,
    make_mobile,
    make_uscc,
    pick_district,
)
from streams.core.identifiers import (
    USCC_ALPHABET,
    id_check_digit,
    is_valid_id_number,
    is_valid_uscc,
    uscc_check_digit,
    uscc_problem,
)

PROPERTY = settings(max_examples=200, deadline=None)

# --- USCC -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "91110000600037341L",
        "91350100M000100Y43",
        "91310000717866186P",
        "91440300708461136T",
        "91500000202805720T",
    ],
)
def test_published_usccs_are_valid(code):
    assert uscc_problem(code) is None
    assert is_valid_uscc(code)


@pytest.mark.parametrize("prefix", ["Y1", "N2", "A1", "51", "93"])
def test_letters_allowed_for_authority_and_entity_type(prefix):
    # GB 32100: positions 1-2 may be letters (e.g. Y1 = 工会, N2 = 农民专业合作社); python-stdnum rejects these.
    first17 = prefix + "500103MA5U7XXX0"
    code = first17 + uscc_check_digit(first17)
    assert uscc_problem(code) is None


def test_wrong_uscc_check_digit_names_expected_digit():
    problem = uscc_problem("91110000600037341A")
    assert problem is not None
    assert "check digit" in problem
    assert "'L'" in problem


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("9111000060003734", "18 characters"),
        ("91110000600037341LL", "18 characters"),
        ("91110000600037341I", "alphabet"),  # I, O, S, V, Z are not in the alphabet
        ("9111000060003734ol", "alphabet"),  # lower case is not accepted
        ("91A10000600037341L", "administrative division"),
    ],
)
def test_malformed_uscc_is_explained(code, fragment):
    problem = uscc_problem(code)
    assert problem is not None and fragment in problem


def test_non_string_uscc_is_invalid_not_a_crash():
    assert not is_valid_uscc(None)  # type: ignore[arg-type]
    assert not is_valid_uscc(915001031234567890)  # type: ignore[arg-type]


uscc_prefixes = st.builds(
    lambda head, division, body: head + division + body,
    st.text(USCC_ALPHABET, min_size=2, max_size=2),
    st.text("0123456789", min_size=6, max_size=6),
    st.text(USCC_ALPHABET, min_size=9, max_size=9),
)


@PROPERTY
@given(uscc_prefixes)
def test_uscc_prefix_plus_check_digit_is_valid_and_every_other_last_char_is_not(first17):
    check = uscc_check_digit(first17)
    assert is_valid_uscc(first17 + check)
    for other in USCC_ALPHABET:
        if other != check:
            assert not is_valid_uscc(first17 + other)


# --- 居民身份证号 --------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["34052419800101001X", "34052419800101001x", "11010519491231002X", "440524188001010014"])
def test_valid_id_numbers(number):
    # 340524 is a real county code python-stdnum's birthplace table does not know.
    assert is_valid_id_number(number)


@pytest.mark.parametrize(
    "number",
    [
        "340524198001010010",  # wrong check digit
        "340524198013010017",  # month 13
        "340524198002300014",  # 30 February
        "34052419800101001",  # 17 characters
        "34052419800101001XX",  # 19 characters
        "3405241980010100AX",  # letters in the body
        "",
    ],
)
def test_invalid_id_numbers(number):
    assert not is_valid_id_number(number)


@pytest.mark.parametrize("number", ["340524198013010017", "340524198002300014"])
def test_bad_birth_date_invalid_even_with_correct_check_digit(number):
    first17 = number[:17]
    assert not is_valid_id_number(first17 + id_check_digit(first17))


id_prefixes = st.builds(
    lambda region, birth, seq: f"{region}{birth:%Y%m%d}{seq:03d}",
    st.text("0123456789", min_size=6, max_size=6),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31)),
    st.integers(0, 999),
)


@PROPERTY
@given(id_prefixes)
def test_id_prefix_plus_check_digit_is_valid_and_every_other_last_char_is_not(first17):
    check = id_check_digit(first17)
    assert is_valid_id_number(first17 + check)
    for other in "0123456789X":
        if other != check:
            assert not is_valid_id_number(first17 + other)


@PROPERTY
@given(st.text(min_size=18, max_size=18))
@example("²" * 17 + "0")  # str.isdigit() is True for superscripts, int() is not
@example("１２３４５６１９８００１０１００１Ｘ")  # full-width digits
def test_id_validation_answers_false_for_any_text_instead_of_crashing(text):
    # The last-line PII detector feeds arbitrary field text here; it must answer, not raise.
    assert is_valid_id_number(text) in (True, False)


# --- simulator identities ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_simulated_identities_pass_the_checks(seed):
    rng = random.Random(seed)
    for _ in range(50):
        district = pick_district(rng)
        assert district in CHONGQING_DISTRICTS
        assert district.startswith(("5001", "5002"))
        code = make_uscc(rng, district)
        assert uscc_problem(code) is None, code
        assert code[2:8] == district
        number = make_id_number(rng, district)
        assert is_valid_id_number(number), number
        assert number[:6] == district
        mobile = make_mobile(rng)
        assert len(mobile) == 11 and mobile.isdigit() and mobile[0] == "1" and mobile[1] in "3456789"


def test_every_chongqing_district_code_is_5001_or_5002():
    assert all(code.startswith(("5001", "5002")) and len(code) == 6 for code in CHONGQING_DISTRICTS)


def test_same_seed_gives_same_population():
    def population(seed):
        rng = random.Random(seed)
        out = []
        for _ in range(30):
            d = pick_district(rng)
            out.append((d, make_uscc(rng, d), make_id_number(rng, d), make_mobile(rng)))
        return out

    assert population(7) == population(7)
    assert population(7) != population(8)
