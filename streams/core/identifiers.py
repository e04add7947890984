"""Check digits of the identifiers that key the platform.

- 统一社会信用代码 USCC (GB 32100-2015): python-stdnum computes the check digit, but its
  ``validate`` insists on digits in the first eight positions while the standard allows a
  letter for the registration authority and the entity type (positions 1-2, e.g. ``Y1``,
  ``N2``). ``validate_uscc`` applies the standard's own layout.
- 居民身份证号 (GB 11643-1999, MOD 11-2): python-stdnum's ``cn.ric`` for the check digit and the
  birth date. Its birth-place lookup is not used: it raises ``KeyError`` for some real county
  codes (e.g. 340524), and a number from an unknown region is still a person's ID number.
"""

from __future__ import annotations

from functools import lru_cache

from stdnum.cn import ric, uscc
from stdnum.exceptions import ValidationError as StdnumValidationError

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def uscc_check_digit(first17: str) -> str:
    """Check digit for the first 17 characters of a USCC."""
    return uscc.calc_check_digit(first17)


@lru_cache(maxsize=65_536)  # an enterprise's code comes back with every event; it is not personal data
def uscc_problem(code: str) -> str | None:
    """Why ``code`` is not a valid USCC, or ``None`` if it is."""
    if not isinstance(code, str) or len(code) != 18:
        return f"must be 18 characters, got {len(code) if isinstance(code, str) else type(code).__name__}"
    if any(c not in USCC_ALPHABET for c in code):
        bad = next(c for c in code if c not in USCC_ALPHABET)
        return f"character {bad!r} is outside the GB 32100 alphabet"
    if not code[2:8].isdigit():
        return f"positions 3-8 must be the administrative division code, got {code[2:8]!r}"
    expected = uscc_check_digit(code[:17])
    if code[17] != expected:
        return f"fails the GB 32100 check digit (expected {expected!r})"
    return None


def is_valid_uscc(code: str) -> bool:
    return uscc_problem(code) is None


def id_check_digit(first17: str) -> str:
    """MOD 11-2 check digit of a 居民身份证号."""
    # stdnum expects the whole number and ignores its last character.
    return ric.calc_check_digit(first17 + "0")


def is_valid_id_number(number: str) -> bool:
    """True for an 18-character 居民身份证号 with a valid birth date and check digit."""
    if len(number) != 18 or not (number[:17].isascii() and number[:17].isdigit()):
        return False
    if number[17].upper() != id_check_digit(number[:17]):
        return False
    try:
        ric.get_birth_date(number)
    except (StdnumValidationError, ValueError):
        return False
    return True
