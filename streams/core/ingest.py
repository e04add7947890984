"""Validate → mask → canonical ``EnterpriseEvent``: the pure core of the ingest agent.

Input: a decoded ``dept.*`` change envelope and where it was read (topic, partition, offset).
Output: a masked ``EnterpriseEvent`` record keyed by the enterprise's USCC, or a
``ValidationError``/``PIILeakError`` that sends the original bytes to the dead-letter topic.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.core.catalogue import Dataset
from streams.core.identifiers import id_number_problem, uscc_problem
from streams.core.masking import Pseudonymizer, assert_no_pii
from streams.errors import ValidationError

OPS = ("c", "u", "d", "r")
# Plausible source commit times, epoch ms: 1990-01-01 .. 2200-01-01 (ClickHouse DateTime64 ends in 2299);
# 0 means unknown.
MIN_COMMIT_TS_MS = 631_152_000_000
MAX_COMMIT_TS_MS = 7_258_118_400_000


@dataclass(frozen=True)
class Provenance:
    """Where a record was read; carried into events and dead letters."""

    topic: str
    partition: int
    offset: int


_PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def shown(value: Any) -> str:
    """What an error message says of a source value: its kind and size, never its content. A dead
    letter's message reaches ``dlq_event`` in ClickHouse, where analysts read it, and a value in
    the wrong column may be anything (an ID number, a name, a passport number in a note). The
    value itself stays in the dead letter's bytes on ``dlq.dept.*``, with the raw topic's retention."""
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "(a boolean)"
    if isinstance(value, (int, float)):
        return "(a number)"
    if isinstance(value, str):
        return f"(text of {len(value)} characters)"
    return f"(a {type(value).__name__})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_row(ds: Dataset, row: Mapping[str, Any], today: dt.date | None = None) -> None:
    """Raise ``ValidationError`` naming the dataset and field if ``row`` breaks a rule of its
    mapping (``streams/core/catalogue.py`` lists them). Null optional fields pass every rule but
    ``required``; a number must be finite wherever a rule applies (NaN passes no comparison).

    Every field of PII class ``id_number`` must be a plausible 居民身份证号 on ``today`` (default:
    the UTC date now): ``streams.core.identifiers.id_number_problem`` names the rule
    (``gb11643.check_digit``, ``gb11643.birth_date``, …), which the message carries; the value is
    never quoted. A null or empty ID number passes unless the field is ``required``; a field with
    an ``id_number_when`` condition is checked only in the rows that meet it."""
    for name in ds.required:
        if row.get(name) in (None, ""):
            raise ValidationError(f"{ds.name}.{name} is required but empty", field=name)
    code = row.get(ds.uscc_column)
    problem = uscc_problem(code) if isinstance(code, str) else "is missing"
    if problem:
        short = f"{code[:4]}…" if isinstance(code, str) else repr(code)
        raise ValidationError(f"{ds.name}.{ds.uscc_column} {short!r} {problem}", field=ds.uscc_column)
    for id_field in ds.id_number_fields:
        value = row.get(id_field)
        if value is None or value == "":
            continue
        when = ds.id_number_when.get(id_field)
        if when and not all(row.get(other) in values for other, values in when.items()):
            continue  # this row's field holds something else (a pledgor enterprise's USCC)
        found = id_number_problem(value, today or dt.datetime.now(dt.UTC).date())
        if found:
            rule, reason = found
            raise ValidationError(f"{ds.name}.{id_field}: {reason} (rule {rule})", field=id_field)
    for name, allowed in ds.enums.items():
        value = row.get(name)
        if value is not None and value not in allowed:
            raise ValidationError(f"{ds.name}.{name} {shown(value)} is not one of {list(allowed)}", field=name)
    for name in ds.dates:
        value = row.get(name)
        if value is not None and not isinstance(value, dt.date):
            raise ValidationError(f"{ds.name}.{name} {shown(value)} is not a date", field=name)
    for name in ds.periods:
        value = row.get(name)
        if value is not None and not (isinstance(value, str) and _PERIOD.fullmatch(value)):
            raise ValidationError(f"{ds.name}.{name} {shown(value)} is not a month 'YYYY-MM' (month 01-12)", field=name)
    for name in ds.non_negative:
        value = row.get(name)
        if value is None:
            continue
        if not _is_number(value) or not math.isfinite(value):
            raise ValidationError(f"{ds.name}.{name} {shown(value)} is not a finite number", field=name)
        if value < 0:
            raise ValidationError(f"{ds.name}.{name} is negative; amounts and counts must be >= 0", field=name)
    for name, (low, high) in ds.bounds.items():
        value = row.get(name)
        if value is None:
            continue
        if not _is_number(value) or not math.isfinite(value):
            raise ValidationError(f"{ds.name}.{name} {shown(value)} is not a finite number", field=name)
        if not low <= value <= high:
            raise ValidationError(f"{ds.name}.{name} is outside its range [{low:g}, {high:g}]"
                                  " (a unit mix-up? the mapping's bounds are in the field's unit)", field=name)


def row_key(ds: Dataset, row: Mapping[str, Any]) -> str:
    """The row's primary key as text: ``91500103...`` or ``id=42`` style for composite keys."""
    return "|".join(str(row.get(k)) for k in ds.key)


def event_id(ds: Dataset, position: str, key: str, pseudonymizer: Pseudonymizer) -> str:
    """Deterministic id of one row change: ``<dept>.<dataset>@<position>#<keyed pseudonym of the row key>``.

    The row key is pseudonymised because some datasets are keyed by a person's ID number;
    the same row at the same position always gets the same id, so replays collapse.
    """
    return f"{ds.qualified}@{position}#{pseudonymizer.pseudonym('row_key', f'{ds.qualified}:{key}')}"


def to_enterprise_event(
    ds: Dataset,
    envelope: Mapping[str, Any],
    where: Provenance,
    pseudonymizer: Pseudonymizer,
    now_ms: int,
) -> dict[str, Any]:
    """Build the masked ``EnterpriseEvent`` for one change envelope of dataset ``ds``."""
    op = envelope.get("op")
    if op not in OPS:
        raise ValidationError(f"{ds.name}: op {op!r} is not one of {OPS}", field="op")
    before, after = envelope.get("before"), envelope.get("after")
    row = before if op == "d" else after
    if row is None:
        raise ValidationError(f"{ds.name}: op {op!r} without {'before' if op == 'd' else 'after'} image", field="after")
    # the ID numbers' birth dates are checked against the ingest day (a caller without a clock, now_ms
    # before 1990, gets today's)
    validate_row(ds, row, dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date() if now_ms >= MIN_COMMIT_TS_MS else None)
    source = envelope["source"]
    if source["ts_ms"] != 0 and not MIN_COMMIT_TS_MS <= source["ts_ms"] < MAX_COMMIT_TS_MS:
        # e.g. microseconds or nanoseconds where milliseconds belong: the merge derives dates from
        # it. 0 is a connector's "commit time unknown" (a change without its BEGIN) and passes.
        raise ValidationError(
            f"{ds.name}: source.ts_ms {source['ts_ms']} is not a commit time in epoch milliseconds"
            " between 1990 and 2200 (microseconds or nanoseconds?)", field="source.ts_ms")
    event = {
        "event_id": event_id(ds, source["position"], row_key(ds, row), pseudonymizer),
        "uscc": row[ds.uscc_column],
        "dept": ds.dept,
        "dataset": ds.name,
        "op": op,
        "attributes": ds.masking.apply(row, pseudonymizer),
        "before": ds.masking.apply(before, pseudonymizer) if before is not None else None,
        "source_topic": where.topic,
        "source_partition": where.partition,
        "source_offset": where.offset,
        "position": source["position"],
        "seq": source["seq"],
        "snapshot": source["snapshot"],
        "event_ts_ms": source["ts_ms"],
        "ingest_ts_ms": now_ms,
    }
    assert_no_pii(event, f"enterprise event from {ds.qualified}")
    return event
