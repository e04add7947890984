"""Error texts never carry source values (issue 14: raw PII reached ``dlq_event.error_message``).

A dead letter's message is written to ClickHouse, where analysts read it; the value itself stays
in the dead letter's bytes on ``dlq.dept.*`` (raw-PII retention). So a conversion or validation
error names the dataset, the field and the rule, and says of the value only its kind and size."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codecs.convert import row_converter
from streams.core.catalogue import _value_schema
from streams.core.ingest import validate_row
from streams.errors import ValidationError

ID_NUMBER = "500112198307154238"
HOSTILE = [f"户主身份证{ID_NUMBER}", "张三丰", "护照E12345678", f"tel:{ID_NUMBER[:11]}", f"{ID_NUMBER}X"]


@pytest.fixture(scope="module")
def water(catalogue, schemas):
    ds = catalogue.department("water").datasets["water_usage"]
    return ds, row_converter(_value_schema(schemas.get(ds.schema_name).parsed))


@pytest.mark.parametrize("value", HOSTILE)
def test_a_conversion_error_names_the_field_but_not_the_value(water, value):
    ds, convert = water
    with pytest.raises(ValidationError) as err:
        convert({"account_no": "SWF000000001", "uscc": "91500000MA5U7Q1X2K", "billing_month": "2026-03-01",
                 "volume_m3": value}, ds.name)
    message = str(err.value)
    assert err.value.field == "volume_m3" and "volume_m3" in message and "not a number" in message
    assert value not in message and ID_NUMBER not in message and "张三" not in message, message


@given(st.text(min_size=6, max_size=40).filter(lambda t: t.strip() == t and not t.isdigit()))
@settings(max_examples=200, deadline=None)
def test_no_rule_violation_repeats_the_value(catalogue, text):
    reg = catalogue.department("market").datasets["enterprise_registration"]
    row = {"uscc": "91500000MA5U7Q1X2K", "name": "x", "status": text, "established_date": text}
    for field in ("status", "established_date"):
        try:
            validate_row(reg, {**row, **{f: None for f in ("status", "established_date") if f != field}})
        except ValidationError as exc:
            assert text not in str(exc), str(exc)
