"""Source column values (pgoutput sends text) → Python values of the dataset's Avro schema."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.codecs.convert import row_converter
from streams.core.catalogue import _value_schema
from streams.errors import ValidationError

UTC = dt.UTC
CST = dt.timezone(dt.timedelta(hours=8))

SCHEMA = {
    "type": "record",
    "name": "Value",
    "fields": [
        {"name": "i", "type": "int"},
        {"name": "l", "type": ["null", "long"]},
        {"name": "d", "type": ["null", "double"]},
        {"name": "b", "type": ["null", "boolean"]},
        {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}]},
        {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "s", "type": ["null", "string"]},
    ],
}


@pytest.fixture(scope="module")
def convert():
    return row_converter(SCHEMA)


@pytest.mark.parametrize(
    "column, raw, value",
    [
        ("i", "42", 42),
        ("i", "-7", -7),
        ("l", "9007199254740993", 9007199254740993),  # beyond float precision: stays exact
        ("d", "3.5", 3.5),
        ("d", "1e3", 1000.0),
        ("b", "t", True),
        ("b", "f", False),
        ("b", "true", True),
        ("b", "1", True),
        ("b", "0", False),
        ("b", True, True),
        ("day", "2024-03-01", dt.date(2024, 3, 1)),
        ("day", dt.datetime(2024, 3, 1, 23, 0), dt.date(2024, 3, 1)),
        ("day", dt.date(2024, 3, 1), dt.date(2024, 3, 1)),
        ("ts", "2024-03-01 12:00:00.123+08", dt.datetime(2024, 3, 1, 4, 0, 0, 123000, tzinfo=UTC)),
        ("ts", "2024-03-01 12:00:00+08", dt.datetime(2024, 3, 1, 12, 0, tzinfo=CST)),
        ("ts", "2024-03-01 12:00:00.5-03", dt.datetime(2024, 3, 1, 15, 0, 0, 500000, tzinfo=UTC)),
        ("ts", "2024-03-01 12:00:00+05:30", dt.datetime(2024, 3, 1, 6, 30, tzinfo=UTC)),
        ("ts", "2024-03-01 12:00:00", dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)),  # timestamp without tz: UTC
        ("ts", dt.datetime(2024, 3, 1, 12, 0), dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)),
        ("s", "重庆", "重庆"),
        ("s", 123, "123"),
    ],
)
def test_values_are_converted(convert, column, raw, value):
    out = convert({"i": "0", column: raw}, "market.t")
    assert out[column] == value
    assert type(out[column]) is type(value)
    if isinstance(value, dt.datetime):
        assert out[column].tzinfo is not None  # Avro timestamp-millis needs an instant


def test_unknown_columns_are_ignored_and_missing_become_none(convert):
    out = convert({"i": "1", "added_at_source_later": "x"}, "market.t")
    assert out == {"i": 1, "l": None, "d": None, "b": None, "day": None, "ts": None, "s": None}


@pytest.mark.parametrize(
    "column, raw",
    [
        ("i", "4.2"),
        ("i", "forty"),
        ("l", ""),
        ("d", "abc"),
        ("day", "2024-02-30"),
        ("day", "yesterday"),
        ("ts", "not a time"),
        ("ts", "infinity"),  # PostgreSQL's special timestamp value
        ("b", "maybe"),  # a value that is neither true nor false must not silently become False
    ],
)
def test_bad_value_is_a_validation_error_naming_the_field(convert, column, raw):
    with pytest.raises(ValidationError) as err:
        convert({"i": "0", column: raw}, "market.t")
    assert err.value.field == column
    assert f"market.t.{column}" in str(err.value)


def test_converter_for_the_real_registration_schema(schemas):
    convert = row_converter(_value_schema(schemas.get("dept/market/enterprise_registration").parsed))
    out = convert(
        {
            "uscc": "91110000600037341L", "name": "n", "registered_capital": "500.00",
            "established_date": "2015-06-01", "updated_at": "2024-03-01 12:00:00.123+08", "status": "active",
        },
        "market.enterprise_registration",
    )
    assert out["registered_capital"] == 500.0
    assert out["established_date"] == dt.date(2015, 6, 1)
    assert out["updated_at"] == dt.datetime(2024, 3, 1, 4, 0, 0, 123000, tzinfo=UTC)
    assert out["legal_rep_phone"] is None
