"""Check digits of the identifiers that key the platform.

- 统一社会信用代码 USCC (GB 32100-2015): python-stdnum computes the check digit, but its
  ``validate`` insists on digits in the first eight positions while the standard allows a
  letter for the registration authority and the entity type (positions 1-2, e.g. ``Y1``,
  ``N2``). ``validate_uscc`` applies the standard's own layout.
- 居民身份证号 (GB 11643-1999, MOD 11-2): python-stdnum's ``cn.ric`` for the check digit and the
  birth date. Its birth-place lookup is not used: it raises ``KeyError`` for some real county
  codes (e.g. 340524), and a number from an unknown region is still a person's ID number.
  ``is_valid_id_number`` is what the last-line PII detector asks (any plausible number is
  personal); ``id_number_problem`` is the stricter check at ingest: it also wants a plausible
  region (a GB/T 2260 province and not a bare province code) and a birth date from 1900 to today.
"""

from __future__ import annotations

import datetime as dt
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


# GB/T 2260 province-level codes (the first two digits of a 居民身份证号's region code).
ID_PROVINCES = frozenset({
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42", "43",
    "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82",
})
# The earliest birth date accepted at ingest: a legal representative or a person in a court or
# pledge record born before 1900 is a typing error, not a person.
ID_EARLIEST_BIRTH = dt.date(1900, 1, 1)


def id_number_problem(number: object, today: dt.date) -> tuple[str, str] | None:
    """``(rule, reason)`` if ``number`` is not a plausible 居民身份证号 on ``today``, else ``None``.

    Rules, in the order they are checked: ``gb11643.length`` (18 characters), ``gb11643.form``
    (17 ASCII digits and a digit or ``X``), ``gb11643.region`` (a GB/T 2260 province, not a bare
    province code ``xx0000``), ``gb11643.birth_date`` (a real date, not after ``today``, not before
    1900), ``gb11643.check_digit`` (MOD 11-2). The reason never quotes the number or a part of it
    (not even the birth date): it ends up in dead letters that analysts read.
    """
    if not isinstance(number, str):
        return "gb11643.form", f"is not text but {type(number).__name__}"
    if len(number) != 18:
        return "gb11643.length", f"must be 18 characters, got {len(number)}"
    body, last = number[:17], number[17]
    if not (body.isascii() and body.isdigit() and (last in "0123456789Xx")):
        return "gb11643.form", "must be 17 digits and a digit or X"
    if body[:2] not in ID_PROVINCES or body[2:6] == "0000":
        return "gb11643.region", "does not start with a plausible GB/T 2260 region code"
    try:
        born = dt.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return "gb11643.birth_date", "has a birth date that is not a real date"
    if born > today:
        return "gb11643.birth_date", "has a birth date in the future"
    if born < ID_EARLIEST_BIRTH:
        return "gb11643.birth_date", f"has a birth date before {ID_EARLIEST_BIRTH.year}"
    if last.upper() != id_check_digit(body):
        return "gb11643.check_digit", "fails the GB 11643 check digit"
    return None
