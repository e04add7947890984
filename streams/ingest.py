"""Validate → mask → canonical ``EnterpriseEvent``: the pure core of the ingest agent.

Input: a decoded ``dept.*`` change envelope and where it was read (topic, partition, offset).
Output: a masked ``EnterpriseEvent`` record keyed by the enterprise's USCC, or a
``ValidationError``/``PIILeakError`` that sends the original bytes to the dead-letter topic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.catalogue import Dataset

from .errors import ValidationError
from .identifiers import uscc_problem
from .masking import Pseudonymizer, assert_no_pii

OPS = ("c", "u", "d", "r")


@dataclass(frozen=True)
class Provenance:
    """Where a record was read; carried into events and dead letters."""

    topic: str
    partition: int
    offset: int


def validate_row(ds: Dataset, row: Mapping[str, Any]) -> None:
    """Raise ``ValidationError`` naming the dataset and field if ``row`` breaks a rule."""
    for name in ds.required:
        if row.get(name) in (None, ""):
            raise ValidationError(f"{ds.name}.{name} is required but empty", field=name)
    code = row.get(ds.uscc_column)
    problem = uscc_problem(code) if isinstance(code, str) else "is missing"
    if problem:
        shown = f"{code[:4]}…" if isinstance(code, str) else repr(code)
        raise ValidationError(f"{ds.name}.{ds.uscc_column} {shown!r} {problem}", field=ds.uscc_column)
    for name, allowed in ds.enums.items():
        value = row.get(name)
        if value is not None and value not in allowed:
            raise ValidationError(f"{ds.name}.{name} {value!r} is not one of {list(allowed)}", field=name)
    for name in ds.dates:
        value = row.get(name)
        if value is not None and not isinstance(value, dt.date):
            raise ValidationError(f"{ds.name}.{name} {value!r} is not a date", field=name)


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
    validate_row(ds, row)
    source = envelope["source"]
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
