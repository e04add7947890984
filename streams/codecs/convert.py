"""Turn source column values (pgoutput sends text) into the Python values of the Avro schema."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from streams.core.ingest import shown
from streams.errors import ValidationError

Converter = Callable[[Any], Any]


_TRUE = frozenset({"t", "true", "1", "y", "yes", "是"})
_FALSE = frozenset({"f", "false", "0", "n", "no", "否"})


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{text[:20]!r} is not a boolean")


def _to_date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v)[:10])


def _to_timestamp(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        ts = v
    else:
        text = str(v).replace(" ", "T", 1)
        if len(text) > 3 and text[-3] in "+-" and text[-3:].lstrip("+-").isdigit():
            text += ":00"  # PostgreSQL's '+08' offset → '+08:00'
        ts = dt.datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def _unchanged(value: Any) -> Any:
    return value


_EXPECTED: dict[Converter, str] = {int: "an integer", float: "a number", _to_bool: "a boolean", _to_date: "a date",
                                   _to_timestamp: "a timestamp", str: "text"}


def _converter(avro_type: Any) -> Converter:
    t = avro_type
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    if isinstance(t, dict):
        logical = t.get("logicalType")
        if logical == "date":
            return _to_date
        if logical in ("timestamp-millis", "timestamp-micros"):
            return _to_timestamp
        t = t.get("type")
    by_type: dict[str, Converter] = {"int": int, "long": int, "float": float, "double": float, "boolean": _to_bool, "string": str}
    return by_type.get(t, _unchanged) if isinstance(t, str) else _unchanged


def row_converter(value_schema: Mapping[str, Any]) -> Callable[[Mapping[str, Any], str], dict[str, Any]]:
    """Build ``convert(raw_row, where) -> row`` for one dataset's row schema.

    Columns the schema does not know are ignored (a column added at the source before the
    schema is evolved); schema fields missing from the source row become ``None``.
    """
    convs = [(f["name"], _converter(f["type"])) for f in value_schema["fields"]]

    def convert(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conv in convs:
            v = raw.get(name)
            if v is None:
                out[name] = None
                continue
            try:
                out[name] = conv(v)
            except (ValueError, TypeError) as exc:  # the exception's text quotes the value: not repeated
                raise ValidationError(f"{where}.{name}: the source value {shown(v)} is not {_EXPECTED.get(conv, 'convertible')}",
                                      field=name) from exc
        return out

    return convert
