"""The consent rule (DESIGN §7): who may receive an alert about an enterprise — pure, no I/O.

An alert about enterprise U reaches bank B only if B holds an active consent from U
(started, not expired, not revoked, its scope covers the alert's category) *and* U is on B's
watchlist (:func:`recipients`); then B's own rules (:class:`BankRules`, :func:`filtered_by`:
categories, minimum severity, score-band drop) filter it. Consent versions merge
order-independently (:func:`merge_grant`: newest wins, a revocation is final). Bank ids are
fixed-width (``b0001``) so Kafka prefix ACLs on ``alerts.<bank_id>`` cannot overlap.

Integrity (MLPS level 3): every version records who recorded it (``recorded_by``, the Kafka
principal of the publishing service; for a revocation, the revoker's) and the enterprise's
evidence of authorisation (``evidence_ref``, a reference to the signed 授权书, never personal
data). :meth:`ConsentGrant.from_record` refuses a version without them (ConfigError), so the
worker dead-letters it and applies nothing; :func:`new_grant` and :func:`revocations` only make
versions it accepts.

Where the rule runs: the worker's route agent (``streams/worker/agents.py``) reads the state
from Redis (``streams/worker/consent_store.py``) and applies these functions to every alert.
The system of record of consents is the topic ``consent.grants``
(``streams/kafka/consent_log.py``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from streams.core.identifiers import uscc_problem
from streams.core.masking import find_pii_in_text
from streams.core.scorecard import LEVEL_NAMES, SEVERITY_RANK
from streams.errors import ConfigError

BANK_ID = re.compile(r"b[0-9]{4}")
ALERT_CATEGORIES = ("registration", "judicial", "penalty", "tax", "social_insurance", "utilities", "collateral",
                    "customs_ip", "score_band", "positive")


def check_bank_id(bank_id: str) -> str:
    if not isinstance(bank_id, str) or not BANK_ID.fullmatch(bank_id):
        raise ConfigError(f"bank id {bank_id!r} must be 'b' + 4 digits, e.g. b0001 (fixed width keeps Kafka ACL prefixes apart)")
    return bank_id


def check_uscc(code: str) -> str:
    problem = uscc_problem(code)
    if problem:
        raise ConfigError(f"USCC {code!r} {problem}")
    return code


RECORDED_BY = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a SCRAM user name, as core.access names principals
EVIDENCE_REF_MAX = 256


# The checks below never echo the value: it may be exactly what must not be repeated (personal
# data), and their message ends up in a dead-letter header.

def check_recorded_by(principal: Any) -> str:
    """``principal`` if it is a plausible Kafka user name (who recorded a consent version), else ConfigError."""
    if not isinstance(principal, str) or not principal.strip():
        raise ConfigError("recorded_by is missing: every consent version names the Kafka principal "
                          "(SCRAM user) that recorded it")
    if not RECORDED_BY.fullmatch(principal):
        raise ConfigError("recorded_by is not a Kafka user name (1-64 characters of A-Z a-z 0-9 . _ -)")
    hit = find_pii_in_text(principal)
    if hit:
        raise ConfigError(f"recorded_by carries a raw {hit}: it names a service principal, never a person")
    return principal


def check_evidence_ref(ref: Any) -> str:
    """``ref`` if it is a usable reference to the enterprise's signed authorisation letter (授权书):
    non-blank, at most 256 printable characters without surrounding blanks, no raw ID, phone or
    bank-card number (the last-line PII detector of ``core.masking``); else ConfigError."""
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError("evidence_ref is missing: every consent version references the enterprise's "
                          "signed authorisation letter (授权书), e.g. auth-letter:2026/00017 or sha256:<hex>")
    if len(ref) > EVIDENCE_REF_MAX:
        raise ConfigError(f"evidence_ref is {len(ref)} characters long; a reference has at most {EVIDENCE_REF_MAX}")
    if not ref.isprintable() or ref != ref.strip():
        raise ConfigError("evidence_ref must be printable text without control characters or surrounding blanks")
    hit = find_pii_in_text(ref)
    if hit:
        raise ConfigError(f"evidence_ref carries a raw {hit} (personal data): reference the authorisation "
                          "letter by document id or digest")
    return ref


@dataclass(frozen=True)
class ConsentGrant:
    """An enterprise's authorisation for one bank to receive its risk alerts (授权)."""

    consent_id: str
    bank_id: str
    uscc: str
    purpose: str
    start_ms: int
    expiry_ms: int
    scope: tuple[str, ...] = field(default_factory=tuple)  # alert categories; empty = all
    revoked_ms: int = 0
    ts_ms: int = 0  # when this version was written (consent.grants ordering); 0 = unknown
    # who recorded this version (Kafka principal) and the evidence of authorisation (授权书 reference):
    # required by from_record / new_grant / revocations; "" only in state written before they existed
    recorded_by: str = field(kw_only=True)
    evidence_ref: str = field(kw_only=True)

    def is_active(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.expiry_ms and not (self.revoked_ms and self.revoked_ms <= now_ms)

    def covers(self, category: str) -> bool:
        return not self.scope or category in self.scope

    def to_redis(self) -> dict[str, str]:
        d = asdict(self)
        d["scope"] = ",".join(self.scope)
        return {k: str(v) for k, v in d.items()}

    @classmethod
    def from_redis(cls, h: dict[str, str]) -> ConsentGrant:
        return cls(
            consent_id=h["consent_id"],
            bank_id=h["bank_id"],
            uscc=h["uscc"],
            purpose=h["purpose"],
            start_ms=int(h["start_ms"]),
            expiry_ms=int(h["expiry_ms"]),
            scope=tuple(s for s in h.get("scope", "").split(",") if s),
            revoked_ms=int(h.get("revoked_ms") or 0),
            ts_ms=int(h.get("ts_ms") or 0),
            recorded_by=h.get("recorded_by", ""),  # a hash written before the field: "" (not refused here)
            evidence_ref=h.get("evidence_ref", ""),
        )

    def to_record(self) -> dict[str, Any]:
        """The ``consent/grant`` Avro record (topic ``consent.grants``)."""
        return {**asdict(self), "scope": list(self.scope)}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> ConsentGrant:
        """From a ``consent/grant`` record, validating bank id, USCC, ``recorded_by`` and
        ``evidence_ref`` (ConfigError naming the field). A record without who recorded it, or a
        version that grants (not revoked) without the evidence of authorisation — missing, empty
        as in records written before the fields existed, or invalid — is refused: the worker
        dead-letters it and applies nothing. A revocation needs no evidence (it only takes access
        away, and must stay possible for a consent recorded before evidence was required), but
        any evidence it carries must be valid."""
        revoked = bool(r.get("revoked_ms"))
        try:
            recorded_by = check_recorded_by(r.get("recorded_by"))
            evidence_ref = r.get("evidence_ref") or ""
            if not revoked or evidence_ref:
                evidence_ref = check_evidence_ref(evidence_ref)
        except ConfigError as exc:
            raise ConfigError(f"consent {r.get('consent_id')!r}: {exc}") from None
        return cls(
            consent_id=r["consent_id"], bank_id=check_bank_id(r["bank_id"]), uscc=check_uscc(r["uscc"]),
            purpose=r["purpose"], start_ms=int(r["start_ms"]), expiry_ms=int(r["expiry_ms"]),
            scope=tuple(r.get("scope") or ()), revoked_ms=int(r.get("revoked_ms") or 0), ts_ms=int(r["ts_ms"]),
            recorded_by=recorded_by, evidence_ref=evidence_ref,
        )


def new_grant(bank_id: str, uscc: str, purpose: str, expiry_ms: int, scope: Iterable[str] = (),
              start_ms: int | None = None, now_ms: int | None = None, *,
              recorded_by: str, evidence_ref: str) -> ConsentGrant:
    """A new consent with a fresh id, validated (bank id, USCC, scope categories, dates, who
    records it — the publishing service's Kafka principal — and the reference to the
    enterprise's signed authorisation letter, as :meth:`ConsentGrant.from_record` checks them)."""
    check_recorded_by(recorded_by)
    check_evidence_ref(evidence_ref)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    scope = tuple(scope)
    unknown = sorted(set(scope) - set(ALERT_CATEGORIES))
    if unknown:
        raise ConfigError(f"unknown alert categories {unknown}; choose from {', '.join(ALERT_CATEGORIES)}")
    start = now_ms if start_ms is None else start_ms
    if expiry_ms <= start:
        raise ConfigError("a consent must expire after it starts")
    return ConsentGrant(consent_id=uuid.uuid4().hex, bank_id=check_bank_id(bank_id), uscc=check_uscc(uscc),
                        purpose=purpose, start_ms=start, expiry_ms=expiry_ms, scope=scope, ts_ms=now_ms,
                        recorded_by=recorded_by, evidence_ref=evidence_ref)


def revocations(grants: Iterable[ConsentGrant], bank_id: str, now_ms: int, *, recorded_by: str) -> list[ConsentGrant]:
    """New versions of every consent of ``grants`` for ``bank_id`` that is in force or scheduled
    to start (not revoked, not expired), revoked from ``now_ms``.

    A revocation is a new version of the same consent: it keeps the grant's ``evidence_ref`` (empty
    for a consent recorded before evidence was required: a revocation needs none, see
    ``ConsentGrant.from_record``) and is recorded by the revoker (``recorded_by``, its Kafka principal)."""
    check_recorded_by(recorded_by)
    out = []
    for g in grants:
        if g.bank_id == bank_id and not g.revoked_ms and now_ms < g.expiry_ms:
            out.append(replace(g, revoked_ms=now_ms, ts_ms=max(now_ms, g.ts_ms + 1), recorded_by=recorded_by))
    return out


def _version_key(g: ConsentGrant) -> tuple:
    """Newest first; ties broken by content *without* the revocation, which ``merge_grant``
    combines separately — otherwise a merged state would order differently from the versions
    it came from, and the result would depend on arrival order."""
    return g.ts_ms, json.dumps({**g.to_record(), "revoked_ms": 0}, sort_keys=True)


def merge_grant(stored: ConsentGrant | None, incoming: ConsentGrant) -> ConsentGrant:
    """The state to keep when ``incoming`` arrives for a consent already ``stored``.

    The newer version (by ``ts_ms``; a total order breaks ties) wins, and a revocation is final:
    the earliest revocation either version carries is kept. So the result does not depend on
    the order records arrive in (commutative, associative, idempotent): a replayed older
    record never undoes a newer revocation. A version that changes the consent's bank or
    enterprise is refused (ConfigError).

    ``recorded_by`` and ``evidence_ref`` are part of each version's content, like ``purpose``:
    the newest version's values win (and take part in the tie-break). So when a revocation
    carried by an older version is kept under a newer version, the state's ``recorded_by`` is the
    newer version's recorder, not the revoker's: who revoked is on that version in
    ``consent.grants`` (until compaction keeps only the newest version of the key).
    """
    if stored is None:
        return incoming
    if (stored.consent_id, stored.bank_id, stored.uscc) != (incoming.consent_id, incoming.bank_id, incoming.uscc):
        raise ConfigError(f"consent {incoming.consent_id} cannot change its bank or enterprise")
    newer = max(stored, incoming, key=_version_key)
    revoked = [r for r in (stored.revoked_ms, incoming.revoked_ms) if r]
    return replace(newer, revoked_ms=min(revoked) if revoked else 0)


def recipients(
    category: str,
    grants: Iterable[ConsentGrant],
    watching: set[str],
    now_ms: int,
) -> dict[str, str]:
    """Banks that may receive an alert of ``category``: ``{bank_id: consent_id}``.

    ``grants`` are the enterprise's consents, ``watching`` the banks whose watchlist holds it.
    """
    out: dict[str, str] = {}
    for g in grants:
        if g.bank_id in watching and g.is_active(now_ms) and g.covers(category):
            out.setdefault(g.bank_id, g.consent_id)
    return dict(sorted(out.items()))



@dataclass(frozen=True)
class BankRules:
    """What a bank wants to hear about (``yurong bank rules``); the defaults let everything through."""

    categories: tuple[str, ...] = ()  # empty = all
    min_severity: str = "info"
    score_band_drop: int = 0  # score_band alerts need the level to fall at least this many bands (0 = any)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.categories) - set(ALERT_CATEGORIES))
        if unknown:
            raise ConfigError(f"unknown alert categories {unknown}; choose from {', '.join(ALERT_CATEGORIES)}")
        if self.min_severity not in SEVERITY_RANK:
            raise ConfigError(f"severity {self.min_severity!r} is not one of {', '.join(SEVERITY_RANK)}")
        if not 0 <= self.score_band_drop < len(LEVEL_NAMES):
            raise ConfigError(f"score-band drop must be 0..{len(LEVEL_NAMES) - 1} levels")

    def to_redis(self) -> dict[str, str]:
        return {"categories": ",".join(self.categories), "min_severity": self.min_severity,
                "score_band_drop": str(self.score_band_drop)}

    @classmethod
    def from_redis(cls, h: Mapping[str, str]) -> BankRules:
        return cls(categories=tuple(c for c in h.get("categories", "").split(",") if c),
                   min_severity=h.get("min_severity") or "info", score_band_drop=int(h.get("score_band_drop") or 0))


def levels_dropped(level_before: str, level_after: str) -> int:
    """Bands a level fell from ``level_before`` to ``level_after`` (A best … E worst; negative
    if it rose; 0 if either is unknown)."""
    if level_before not in LEVEL_NAMES or level_after not in LEVEL_NAMES:
        return 0
    return LEVEL_NAMES.index(level_after) - LEVEL_NAMES.index(level_before)


def filtered_by(rules: BankRules | None, change: Mapping[str, Any]) -> str | None:
    """Why the bank's ``rules`` hold back ``change`` (``category``, ``severity``,
    ``score_band_drop``), or None if it may go out. No rules: everything goes out."""
    if rules is None:
        return None
    if rules.categories and change["category"] not in rules.categories:
        return "category"
    if SEVERITY_RANK.get(change["severity"], -1) < SEVERITY_RANK[rules.min_severity]:
        return "severity"
    if change["category"] == "score_band" and rules.score_band_drop and \
            levels_dropped(change["level_before"], change["level_after"]) < rules.score_band_drop:
        return "score_band_drop"
    return None


@dataclass(frozen=True)
class WatchlistProblem:
    line: int  # 1-based line of the file
    value: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.value!r} {self.problem}"


@dataclass
class WatchlistFile:
    """A bank's watchlist file, parsed: valid codes (file order, no repeats), problems per line."""

    codes: list[str] = field(default_factory=list)
    problems: list[WatchlistProblem] = field(default_factory=list)
    duplicates: int = 0


HEADER_NAMES = {"uscc", "统一社会信用代码", "credit_code", "social_credit_code"}


def parse_watchlist(text: str) -> WatchlistFile:
    """Parse a CSV of USCCs: the column headed ``uscc`` (or 统一社会信用代码) if the first row is a
    header, else the first column. Codes are trimmed and upper-cased; each invalid one is
    reported with its line and the reason (length, alphabet, GB 32100 check digit)."""
    out, seen = WatchlistFile(), set()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    col, first = 0, True
    for row in reader:
        line = reader.line_num
        if first:
            first = False
            header = [c.strip().lower() for c in row]
            hit = next((i for i, c in enumerate(header) if c in HEADER_NAMES), None)
            if hit is not None:
                col = hit
                continue
        if not row or not any(c.strip() for c in row):
            continue
        value = row[col].strip().upper() if col < len(row) else ""
        if not value:
            out.problems.append(WatchlistProblem(line, value, "has no USCC in its column"))
            continue
        problem = uscc_problem(value)
        if problem:
            out.problems.append(WatchlistProblem(line, value, problem))
        elif value in seen:
            out.duplicates += 1
        else:
            seen.add(value)
            out.codes.append(value)
    return out


def throttle_model(admitted: list[int], now_ms: int, max_alerts: int, window_ms: int) -> bool:
    """The throttle's rule in plain Python (what the Lua script decides, for tests): may one
    more alert go out at ``now_ms`` given the times ``admitted`` before?"""
    return sum(1 for t in admitted if t > now_ms - window_ms) < max_alerts
