"""Validate → mask → EnterpriseEvent: what the ingest agent makes of one department change."""

from __future__ import annotations

import datetime as dt

import pytest

from streams.codecs.positions import parse_lsn
from streams.core.identifiers import uscc_check_digit
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import find_pii
from streams.errors import PIILeakError, ValidationError

UNIQUE_USCC = "91500103MA5U7XXX0"  # first 17 characters; completed with its check digit
RAW_ID = "34052419800101001X"
RAW_PHONE = "13812345678"
RAW_NAME = "张三丰"
WHERE = Provenance(topic="dept.market.enterprise_registration", partition=2, offset=41)
NOW_MS = 1_709_294_401_000


def _uscc() -> str:
    return UNIQUE_USCC + uscc_check_digit(UNIQUE_USCC)


def registration(**overrides):
    row = {
        "uscc": _uscc(), "name": "重庆某某科技有限公司", "legal_rep_name": RAW_NAME, "legal_rep_id_number": RAW_ID,
        "legal_rep_phone": RAW_PHONE, "district_code": "500103", "industry_code": "I6513", "registered_capital": 500.0,
        "established_date": dt.date(2015, 6, 1), "status": "active", "address": "重庆市渝中区解放碑88号",
        "updated_at": dt.datetime(2024, 3, 1, 4, 0, tzinfo=dt.UTC),
    }
    row.update(overrides)
    return row


def envelope(op="c", before=None, after=None, seq=0x16B3748, position="0/16B3748"):
    return {
        "before": before, "after": after, "op": op, "ts_ms": 1_709_294_400_500,
        "source": {
            "connector": "postgresql", "dept": "market", "db": "market", "schema": "public",
            "table": "enterprise_registration", "position": position, "seq": seq,
            "ts_ms": 1_709_294_400_123, "snapshot": "false", "tx_id": 7,
        },
    }


@pytest.fixture(scope="module")
def reg(catalogue):
    return catalogue.dataset("market.enterprise_registration")


def assert_no_raw_pii(event):
    assert find_pii(event) is None
    text = repr(event)
    for raw in (RAW_ID, RAW_ID.lower(), RAW_PHONE, RAW_NAME, "解放碑"):
        assert raw not in text


def test_registration_becomes_a_masked_event_keyed_by_uscc(reg, pseudonymizer, schemas):
    event = to_enterprise_event(reg, envelope(after=registration()), WHERE, pseudonymizer, NOW_MS)
    assert event["uscc"] == _uscc()
    row_pseudonym = pseudonymizer.pseudonym("row_key", f"market.enterprise_registration:{_uscc()}")
    assert event["event_id"] == f"market.enterprise_registration@0/16B3748#{row_pseudonym}"
    assert (event["dept"], event["dataset"], event["op"]) == ("market", "enterprise_registration", "c")
    a = event["attributes"]
    assert a["legal_rep_name"] == "张**"
    assert a["legal_rep_id_number"] == "3405**********001X"
    assert a["legal_rep_id_number_pseudonym"] == pseudonymizer.pseudonym("id_number", RAW_ID)
    assert a["legal_rep_phone"] == "138****5678"
    assert a["address"] == "重庆市渝中区"
    assert a["status"] == "active" and a["established_date"] == "2015-06-01" and a["registered_capital"] == "500.0"
    assert event["before"] is None
    assert (event["source_topic"], event["source_partition"], event["source_offset"]) == (WHERE.topic, 2, 41)
    assert (event["position"], event["seq"], event["snapshot"]) == ("0/16B3748", 0x16B3748, "false")
    assert (event["event_ts_ms"], event["ingest_ts_ms"]) == (1_709_294_400_123, NOW_MS)
    assert_no_raw_pii(event)
    # The event is a valid enterprise/event record.
    assert schemas.decode(schemas.encode("enterprise/event", event), expected="enterprise/event")[1] == event


def test_same_change_gives_the_same_event_on_replay(reg, pseudonymizer):
    env = envelope(after=registration())
    assert to_enterprise_event(reg, env, WHERE, pseudonymizer, NOW_MS) == to_enterprise_event(reg, env, WHERE, pseudonymizer, NOW_MS)


def test_update_masks_before_and_after(reg, pseudonymizer):
    env = envelope(op="u", before=registration(), after=registration(status="revoked", legal_rep_phone="13912345678"))
    event = to_enterprise_event(reg, env, WHERE, pseudonymizer, NOW_MS)
    assert event["attributes"]["status"] == "revoked"
    assert event["before"]["status"] == "active"
    assert event["before"]["legal_rep_phone"] == "138****5678"
    assert event["attributes"]["legal_rep_phone"] == "139****5678"
    assert_no_raw_pii(event)
    assert "13912345678" not in repr(event)


def test_delete_uses_the_before_image(reg, pseudonymizer):
    event = to_enterprise_event(reg, envelope(op="d", before=registration()), WHERE, pseudonymizer, NOW_MS)
    assert event["op"] == "d"
    assert event["uscc"] == _uscc()
    assert event["attributes"]["status"] == "active"
    assert event["before"]["legal_rep_id_number"] == "3405**********001X"
    assert_no_raw_pii(event)


@pytest.mark.parametrize(
    "env, field",
    [
        (envelope(op="c", after=None, before=registration()), "after"),
        (envelope(op="u", after=None, before=registration()), "after"),
        (envelope(op="d", after=registration(), before=None), "after"),
        (envelope(op="x", after=registration()), "op"),
        (envelope(op=None, after=registration()), "op"),
    ],
    ids=["create-without-after", "update-without-after", "delete-without-before", "unknown-op", "no-op"],
)
def test_malformed_envelope_is_a_validation_error(reg, pseudonymizer, env, field):
    with pytest.raises(ValidationError) as err:
        to_enterprise_event(reg, env, WHERE, pseudonymizer, NOW_MS)
    assert err.value.field == field


def test_bad_uscc_check_digit_is_rejected_without_echoing_the_code(reg, pseudonymizer):
    good = _uscc()
    bad = good[:17] + ("0" if good[17] != "0" else "1")
    with pytest.raises(ValidationError) as err:
        to_enterprise_event(reg, envelope(after=registration(uscc=bad)), WHERE, pseudonymizer, NOW_MS)
    assert err.value.field == "uscc"
    message = str(err.value)
    assert "check digit" in message and repr(good[17]) in message
    assert "enterprise_registration.uscc" in message
    assert bad not in message


@pytest.mark.parametrize(
    "overrides, field, fragment",
    [
        ({"status": "bankrupt"}, "status", "(text of 8 characters) is not one of"),
        ({"name": ""}, "name", "required"),
        ({"status": None}, "status", "required"),
        ({"uscc": None}, "uscc", "required"),
        ({"established_date": "2015-06-01"}, "established_date", "not a date"),
    ],
)
def test_rule_violations_name_the_field(reg, pseudonymizer, overrides, field, fragment):
    with pytest.raises(ValidationError) as err:
        to_enterprise_event(reg, envelope(after=registration(**overrides)), WHERE, pseudonymizer, NOW_MS)
    assert err.value.field == field
    assert fragment in str(err.value)


def test_raw_pii_in_an_undeclared_field_is_stopped(reg, pseudonymizer):
    # The enterprise name is not a PII field, but here it carries a phone number: the last-line
    # detector must stop the event, and the error must not repeat the number.
    env = envelope(after=registration(name=f"张三餐馆 订餐{RAW_PHONE}"))
    with pytest.raises(PIILeakError) as err:
        to_enterprise_event(reg, env, WHERE, pseudonymizer, NOW_MS)
    assert err.value.field == "attributes.name"
    assert RAW_PHONE not in str(err.value)


@pytest.mark.parametrize("position", ["3/374A9A4E", "4/0", "4/A817C7FF"])
def test_events_late_in_the_wal_are_not_mistaken_for_pii(reg, pseudonymizer, position):
    # The event_id carries the source seq (the LSN as an integer). Between LSN 3/0x06DC3C00 and
    # 4/0xA817C7FF (13 to 20 GB of WAL) that integer has 11 digits starting 13..19, and the
    # phone detector flags every event as a leaked mobile number: all of them would go to the DLQ.
    seq = parse_lsn(position)
    event = to_enterprise_event(reg, envelope(after=registration(), seq=seq, position=position), WHERE, pseudonymizer, NOW_MS)
    assert event["seq"] == seq
