"""De-identification (脱敏): per-field policy by PII class, and the last-line PII detector.

Actions (DESIGN §6):
- ``pseudonymize``: keyed HMAC-SHA256 of the normalised value, written beside the field as
  ``<field>_pseudonym``. The same person links across enterprises without being revealed;
  unkeyed hashes are forbidden (the ID and phone spaces are small enough to brute-force). A
  pseudonym names the key that made it: ``p1_<32 hex>`` (key id ``p1``), so a rotated key's
  pseudonyms (``p2_…``) are told apart from the old ones (docs/security.md, "Pseudonyms and keys").
- ``mask``: display form in place (``5001**********123X``, ``138****5678``, ``张*``).
- ``generalize``: coarser value in place (ID → birth year, address → district).
- ``drop``: the field is removed.

Every policy is pure: ``MaskingPolicy.apply`` maps a raw row to a masked attribute dict.
``find_pii`` is the last line of defence, run on every record that leaves the stream layer.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.identifiers import is_valid_id_number
from streams.errors import ConfigError, PIILeakError

PII_CLASSES = ("id_number", "phone", "person_name", "bank_account", "address", "email")
ACTIONS = ("pseudonymize", "mask", "generalize", "drop")

DEFAULT_ACTIONS: dict[str, tuple[str, ...]] = {
    "id_number": ("pseudonymize", "mask"),
    "phone": ("mask",),
    "person_name": ("mask",),
    "bank_account": ("pseudonymize", "mask"),
    "address": ("generalize",),
    "email": ("drop",),
}

MIN_KEY_BYTES = 32

# A key id: ``p`` and the key's number (``p1``, ``p2`` after a rotation). Pseudonyms are
# ``<key id>_<32 hex>``; those made before key ids were written are ``p_<32 hex>``, made by the
# deployment's first key (the hex is what ``p1`` gives with that key).
KEY_ID = re.compile(r"p[0-9]+")
DEFAULT_KEY_ID = "p1"
PSEUDONYM = re.compile(r"(p[0-9]*)_([0-9a-f]{32})")


# --- display masks -----------------------------------------------------------------------------

def mask_id_number(value: str) -> str:
    """``500103198001011234`` → ``5001**********1234``: region prefix and last four only."""
    v = value.strip()
    return v[:4] + "*" * max(len(v) - 8, 0) + v[-4:] if len(v) > 8 else "*" * len(v)


def mask_phone(value: str) -> str:
    """``13812345678`` → ``138****5678``."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_person_name(value: str) -> str:
    """``张三丰`` → ``张**``: the surname stays, the given name goes."""
    v = value.strip()
    return v[:1] + "*" * (len(v) - 1) if v else v


def mask_bank_account(value: str) -> str:
    """Only the last four digits stay visible."""
    digits = re.sub(r"\D", "", value)
    return "*" * max(len(digits) - 4, 0) + digits[-4:]


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


_DISTRICT = re.compile(r"^(.*?(?:市|省|自治区))?(.*?(?:区|县|自治县))")


def generalize_address(value: str) -> str:
    """Keep the address down to the district (区/县): ``重庆市渝中区解放碑88号`` → ``重庆市渝中区``."""
    m = _DISTRICT.match(value.strip())
    return m.group(0) if m else ""


def generalize_id_number(value: str) -> str:
    """Birth year only."""
    v = value.strip()
    return v[6:10] if len(v) == 18 else ""


_MASKERS = {
    "id_number": mask_id_number,
    "phone": mask_phone,
    "person_name": mask_person_name,
    "bank_account": mask_bank_account,
    "address": lambda v: generalize_address(v) + "***",
    "email": mask_email,
}
_GENERALIZERS = {
    "id_number": generalize_id_number,
    "address": generalize_address,
}


def _normalise(pii_class: str, value: str) -> str:
    v = value.strip().upper()
    if pii_class in ("phone", "bank_account"):
        v = re.sub(r"\D", "", v)
    return v


# --- keyed pseudonyms ---------------------------------------------------------------------------

class Pseudonymizer:
    """Keyed HMAC-SHA256 pseudonyms. The key never leaves this object and is never printed;
    ``key_id`` (``p1``, ``p2``, …) is public and prefixes every pseudonym."""

    def __init__(self, key: bytes, key_id: str = DEFAULT_KEY_ID) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        if not KEY_ID.fullmatch(key_id):
            raise ConfigError(f"the pseudonymisation key id must be p<number> (p1, p2, ...), got {key_id!r}")
        self._key = key
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r}, <key hidden>)"

    def pseudonym(self, pii_class: str, value: str) -> str:
        """Platform pseudonym: stable for one key, ``<key id>_`` + 32 hex chars (128 bits)."""
        msg = f"{pii_class}:{_normalise(pii_class, value)}".encode()
        return f"{self.key_id}_" + hmac.digest(self._key, msg, "sha256").hex()[:32]


def row_token(pseudonym: str) -> str:
    """A row's pseudonym as a profile keys its facts and source positions: without the key id
    (``p_<hex>``), the form those keys had before pseudonyms carried one, so profiles merged
    before and after agree. Another key changes the hex anyway. Anything else is returned as is."""
    m = PSEUDONYM.fullmatch(pseudonym)
    return f"p_{m.group(2)}" if m else pseudonym


# --- per-dataset policy -------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldRule:
    """How one PII field is de-identified."""

    field: str
    pii_class: str
    actions: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.pii_class not in PII_CLASSES:
            raise ConfigError(f"field {self.field!r}: unknown PII class {self.pii_class!r} (known: {', '.join(PII_CLASSES)})")
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown or not self.actions:
            raise ConfigError(f"field {self.field!r}: actions {list(self.actions)} must be a non-empty subset of {ACTIONS}")
        if "generalize" in self.actions and self.pii_class not in _GENERALIZERS:
            raise ConfigError(f"field {self.field!r}: no generalisation defined for {self.pii_class!r}")
        if "generalize" in self.actions and "mask" in self.actions:
            raise ConfigError(f"field {self.field!r}: 'mask' and 'generalize' both rewrite the field; choose one")


@dataclass(frozen=True)
class MaskingPolicy:
    """The de-identification rules of one dataset. Fields without a rule pass through as they are."""

    dataset: str
    rules: tuple[FieldRule, ...] = field(default_factory=tuple)

    @classmethod
    def from_mapping(cls, dataset: str, pii: Mapping[str, Any]) -> MaskingPolicy:
        """Build from a mapping's ``pii`` table: ``field = "class"`` or ``field = {class=..., actions=[...]}``."""
        rules = []
        for name, spec in pii.items():
            if isinstance(spec, str):
                pii_class, actions = spec, DEFAULT_ACTIONS.get(spec, ())
            else:
                pii_class = spec.get("class", "")
                actions = tuple(spec.get("actions") or DEFAULT_ACTIONS.get(pii_class, ()))
            rules.append(FieldRule(name, pii_class, tuple(actions)))
        return cls(dataset, tuple(rules))

    def apply(self, row: Mapping[str, Any], pseudonymizer: Pseudonymizer) -> dict[str, str | None]:
        """Masked copy of ``row`` with every value as text (``None`` stays ``None``)."""
        out: dict[str, str | None] = {k: _as_text(v) for k, v in row.items()}
        for rule in self.rules:
            raw = out.get(rule.field)
            if rule.field not in out:
                continue
            if raw is None or raw == "":
                if "pseudonymize" in rule.actions:
                    out[f"{rule.field}_pseudonym"] = None
                if "drop" in rule.actions:
                    del out[rule.field]
                continue
            if "pseudonymize" in rule.actions:
                out[f"{rule.field}_pseudonym"] = pseudonymizer.pseudonym(rule.pii_class, raw)
            if "drop" in rule.actions:
                del out[rule.field]
            elif "mask" in rule.actions:
                out[rule.field] = _MASKERS[rule.pii_class](raw)
            elif "generalize" in rule.actions:
                out[rule.field] = _GENERALIZERS[rule.pii_class](raw)
            else:  # pseudonymize alone: the raw value must still go
                del out[rule.field]
        return out


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# --- last-line detector -------------------------------------------------------------------------

# What counts as a raw identifier in text (DESIGN §6; tests/unit/test_pii_properties.py holds the
# independent oracle): a run of digits that is not part of a longer digit run nor of a decimal
# number (``13812345678.5``, ``0.1234567890123456``), plain or in the usual written groupings
# (``138 1234 5678``, ``6222-0212-3456-7890``, ``500103 19800101 123X``); a mobile also after
# 86/+86. An ID or card number glued to Latin letters is part of an alphanumeric code (a USCC
# such as ``91500000202805720T``, a certificate or patent number), not a person's number; a
# mobile glued to letters (``Tel13812345678``) is still a mobile.
_NOT_IN_NUMBER = r"(?<![0-9])(?<![0-9]\.)"
_NUMBER_ENDS = r"(?![0-9])(?!\.[0-9])"
_ID_CANDIDATE = re.compile(
    r"(?<![A-Za-z])" + _NOT_IN_NUMBER
    + r"([0-9]{17}[0-9Xx]|[0-9]{6}[- ][0-9]{8}[- ][0-9]{3}[0-9Xx])"
    + _NUMBER_ENDS + r"(?![A-Za-z])"
)
_PHONE_CANDIDATE = re.compile(_NOT_IN_NUMBER + r"(?:\+?86[- ]?)?(1[3-9][0-9](?:[- ]?[0-9]{4}){2})" + _NUMBER_ENDS)
_CARD_CANDIDATE = re.compile(
    r"(?<![A-Za-z])" + _NOT_IN_NUMBER
    + r"([0-9]{16,19}|[0-9]{4}(?:[- ][0-9]{4}){3}(?:[- ][0-9]{1,3})?)"
    + _NUMBER_ENDS + r"(?![A-Za-z])"
)
_SEPARATORS = re.compile(r"[- ]")

# Chinese input often has full-width digits (``１３８１２３４５６７８``); any script's decimal
# digits, the full-width X, plus, minus and the ideographic space are read as their ASCII forms.
_FULL_WIDTH = {"\uff38": "X", "\uff58": "x", "\uff0b": "+", "\uff0d": "-", "\u3000": " "}
_FOLDABLE = re.compile(r"(?![0-9])\d|[\uff38\uff58\uff0b\uff0d\u3000]")


def _fold(m: re.Match) -> str:
    c = m.group()
    return _FULL_WIDTH.get(c) or str(unicodedata.decimal(c))


# Fields that hold an enterprise identifier or provenance the platform builds itself from
# source positions and keyed pseudonyms (never from raw values): skipped by the detector.
NON_PERSONAL_FIELDS = frozenset({
    "uscc", "event_id", "last_event_id", "change_id", "alert_id", "consent_id", "position", "source_position",
})


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Our own keyed pseudonyms (``p1_``, ``p2_``, … or the older ``p_`` + 32 hex; the profile's short
# row keys ``<dataset>#p_<14 hex>``, streams.core.profile.source_row) can contain digit runs that
# look like a phone or card number; they are removed before scanning. A raw identifier never has
# this form.
_PSEUDONYM_TOKEN = re.compile(r"(?<![0-9A-Za-z])p[0-9]*_[0-9a-f]{14}(?:[0-9a-f]{18})?(?![0-9A-Za-z])")


# Short texts already scanned and found clean (dates, amounts, enum values and masked values
# repeat across records): scanned once. A text with a hit is never remembered.
_CLEAN_TEXTS: dict[str, None] = {}
_CLEAN_TEXTS_MAX = 200_000


_CLEAN_TEXT_MAX_LEN = 64


def find_pii_in_text(text: str) -> str | None:
    """The PII class of the first raw ID, mobile phone or bank-card number in ``text``, or None."""
    if text in _CLEAN_TEXTS:
        return None
    hit = _scan_text(text)
    if hit is None and len(text) <= _CLEAN_TEXT_MAX_LEN:
        if len(_CLEAN_TEXTS) >= _CLEAN_TEXTS_MAX:
            _CLEAN_TEXTS.clear()
        _CLEAN_TEXTS[text] = None
    return hit


def _scan_text(text: str) -> str | None:
    if "_" in text:
        text = _PSEUDONYM_TOKEN.sub(" ", text)
    if not text.isascii():
        text = _FOLDABLE.sub(_fold, text)
    for m in _ID_CANDIDATE.finditer(text):
        if is_valid_id_number(_SEPARATORS.sub("", m.group(1)).upper()):
            return "id_number"
    if _PHONE_CANDIDATE.search(text):
        return "phone"
    for m in _CARD_CANDIDATE.finditer(text):
        if _luhn_ok(_SEPARATORS.sub("", m.group(1))):
            return "bank_account"
    return None


def _walk(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if k in NON_PERSONAL_FIELDS:
                continue
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def find_pii(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(field path, PII class)`` of the first raw personal identifier in ``record``, or None."""
    if not _has_pii(record):  # the common case, without building a path per value
        return None
    for path, text in _walk(record, ""):
        hit = find_pii_in_text(text)
        if hit:
            return path, hit
    return None


_NOT_TEXT = (int, float, bool, type(None))  # exact classes: nothing to scan, nothing inside


def _has_pii(value: Any) -> bool:
    if value.__class__ in _NOT_TEXT:
        return False
    if isinstance(value, str):
        return find_pii_in_text(value) is not None
    if isinstance(value, Mapping):
        for k, v in value.items():  # a loop, not any(genexpr): records are mostly flat maps of text
            cls = v.__class__
            if cls in _NOT_TEXT or k in NON_PERSONAL_FIELDS:
                continue
            if cls is str:
                if v not in _CLEAN_TEXTS and find_pii_in_text(v) is not None:
                    return True
            elif _has_pii(v):
                return True
        return False
    if isinstance(value, (list, tuple)):
        return any(_has_pii(v) for v in value)
    return False


def _has_new_pii(value: Any, scanned: Any) -> bool:
    """``_has_pii`` for the parts of ``value`` that are not the very objects of ``scanned``."""
    if value is scanned:
        return False
    if not (isinstance(value, Mapping) and isinstance(scanned, Mapping)):
        return _has_pii(value)
    for k, v in value.items():
        if k in NON_PERSONAL_FIELDS or v.__class__ in _NOT_TEXT:
            continue
        was = scanned.get(k)
        if v is not was and _has_new_pii(v, was):
            return True
    return False


def assert_no_pii(record: Mapping[str, Any], what: str, scanned: Mapping[str, Any] | None = None) -> None:
    """Raise ``PIILeakError`` if ``record`` still carries raw PII. The value itself is never echoed.

    ``scanned``: a record this check already passed, which ``record`` was built from without
    changing it in place (a profile before an event was merged into it). Values ``record`` shares
    with it — the same objects, compared with ``is`` — are not scanned again: for a profile, only
    what the event changed. Equal but distinct objects are scanned."""
    if scanned is not None and not _has_new_pii(record, scanned):
        return
    hit = find_pii(record)
    if hit:
        raise PIILeakError(f"{what}: field {hit[0]!r} carries a raw {hit[1]} after masking", field=hit[0])
