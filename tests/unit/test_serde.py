"""Avro single-object encoding (C3 01 + CRC-64-AVRO fingerprint + body) over the repo's avro/ folder."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import ConfigError, DecodeError, SchemaMismatchError
from streams.serde import MAGIC, SchemaStore

AVRO_DIR = Path(__file__).resolve().parents[2] / "avro"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UTC = dt.timezone.utc

SOURCE = {
    "connector": "postgresql", "dept": "market", "db": "market", "schema": "public",
    "table": "enterprise_registration", "position": "0/16B3748", "seq": 0x16B3748,
    "ts_ms": 1_709_294_400_123, "snapshot": "false", "tx_id": 771,
}
REGISTRATION_ROW = {
    "uscc": "91110000600037341L", "name": "重庆某某科技有限公司", "legal_rep_name": "张三丰",
    "legal_rep_id_number": "34052419800101001X", "legal_rep_phone": "13812345678",
    "district_code": "500103", "industry_code": "I6513", "registered_capital": 500.0,
    "established_date": dt.date(2015, 6, 1), "status": "active", "address": "重庆市渝中区解放碑88号",
    "updated_at": dt.datetime(2024, 3, 1, 4, 0, 0, 123000, tzinfo=UTC),
}
ABNORMAL_ROW = {
    "id": 42, "uscc": "91110000600037341L", "reason_code": "unreachable_address",
    "listed_date": dt.date(2024, 2, 1), "authority": "渝中区市场监管局", "removed_date": None,
    "removal_reason": None, "updated_at": None,
}
CHANGE = {
    "change_id": "market.enterprise_registration:1:91110000600037341L/STATUS_REVOKED",
    "uscc": "91110000600037341L", "category": "registration", "severity": "critical",
    "reason_codes": ["STATUS_REVOKED"], "before": {"status": "active"}, "after": {"status": "revoked", "x": None},
    "score_before": 850, "score_after": 100, "level_before": "A", "level_after": "E",
    "source_dataset": "market.enterprise_registration", "source_position": "0/16B3748", "source_seq": 23_803_720,
    "event_ts_ms": 1_709_294_400_123, "detected_ts_ms": 1_709_294_401_000,
}
RECORDS = {
    "connect/source_offset": {
        "source": "market", "slot": "yurong_market", "snapshot_seq": 5, "snapshot_completed": True,
        "position": "0/5", "seq": 5, "ts_ms": 1_709_294_400_000,
    },
    "dept/market/enterprise_registration": {
        "before": None, "after": REGISTRATION_ROW, "source": SOURCE, "op": "c", "ts_ms": 1_709_294_400_500,
    },
    "dept/market/abnormal_operation": {
        "before": ABNORMAL_ROW, "after": {**ABNORMAL_ROW, "removed_date": dt.date(2024, 3, 1)},
        "source": {**SOURCE, "table": "abnormal_operation", "tx_id": None}, "op": "u", "ts_ms": 1_709_294_400_500,
    },
    "enterprise/event": {
        "event_id": "market.enterprise_registration:23803720:91110000600037341L", "uscc": "91110000600037341L",
        "dept": "market", "dataset": "enterprise_registration", "op": "c",
        "attributes": {"status": "active", "legal_rep_phone": "138****5678", "industry_code": None},
        "before": None, "source_topic": "dept.market.enterprise_registration", "source_partition": 3,
        "source_offset": 17, "position": "0/16B3748", "seq": 23_803_720, "snapshot": "false",
        "event_ts_ms": 1_709_294_400_123, "ingest_ts_ms": 1_709_294_400_900,
    },
    "enterprise/profile": {
        "uscc": "91110000600037341L", "name": "重庆某某科技有限公司", "status": "active", "district_code": "500103",
        "industry_code": "I6513", "registered_capital": 500.0, "established_date": "2015-06-01",
        "legal_rep_pseudonym": "p_" + "0" * 32, "legal_rep_id_masked": "3405**********001X",
        "legal_rep_name_masked": "张**", "legal_rep_phone_masked": "138****5678", "address_masked": "重庆市渝中区",
        "abnormal_open_ids": ["42"], "abnormal_listings_total": 1, "risk_score": 730, "risk_level": "B",
        "reason_codes": ["ABNORMAL_OPERATION_LISTED"], "source_seqs": {"market.abnormal_operation": 5}, "version": 17, "last_event_id": "e", "last_event_ts_ms": 1,
        "updated_ts_ms": 2,
    },
    "risk/change": CHANGE,
    "risk/alert": {
        **CHANGE, "alert_id": "b0001/" + CHANGE["change_id"], "bank_id": "b0001", "consent_id": "c1",
        "published_ts_ms": 1_709_294_402_000,
    },
}


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore(AVRO_DIR)


def crc64_avro(data: bytes) -> int:
    """Rabin fingerprint exactly as written in the Avro specification ("Schema Fingerprints")."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty if fp & 1 else 0)
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_every_schema_file_is_known(store):
    files = sorted(p.relative_to(AVRO_DIR).with_suffix("").as_posix() for p in AVRO_DIR.rglob("*.avsc") if p.parent.name != "history")
    assert store.names() == files
    assert set(RECORDS) == set(files), "add a sample record for every schema"


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_round_trip(store, name):
    data = store.encode(name, RECORDS[name])
    assert store.decode(data) == (name, RECORDS[name])
    assert store.decode(data, expected=name) == (name, RECORDS[name])


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_header_is_magic_and_spec_fingerprint(store, name):
    # A consumer in another language computes the fingerprint from the .avsc alone.
    raw = json.loads((AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    canonical = to_parsing_canonical_form(parse_schema(raw, _write_hint=False))
    data = store.encode(name, RECORDS[name])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")


def test_spec_fingerprint_of_a_primitive():
    # Cross-check of the reference implementation above: canonical form of "int" is '"int"'.
    assert crc64_avro(b'"int"').to_bytes(8, "little") == bytes.fromhex("8f5c393f1ad57572")


def _valid(store, name="enterprise/event") -> bytes:
    return store.encode(name, RECORDS[name])


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: b"", "header"),
        (lambda d: None, "header"),
        (lambda d: d[:9], "header"),
        (lambda d: b"\xc3\x02" + d[2:], "header"),
        (lambda d: b"\x00" + d, "header"),
        (lambda d: MAGIC + b"\x00" * 8 + d[10:], "unknown schema fingerprint"),
        (lambda d: d[:-1], "does not decode"),
        (lambda d: d[:10], "does not decode"),
        (lambda d: d + b"\x00", "trailing"),
    ],
    ids=["empty", "none", "short", "wrong-magic", "shifted", "unknown-fingerprint", "truncated", "header-only", "trailing"],
)
def test_malformed_bytes_raise_decode_error(store, make, fragment):
    with pytest.raises(DecodeError, match=fragment):
        store.decode(make(_valid(store)))


def test_expected_schema_mismatch(store):
    with pytest.raises(SchemaMismatchError, match="enterprise/profile"):
        store.decode(_valid(store, "enterprise/event"), expected="enterprise/profile")


@PROPERTY
@given(name=st.sampled_from(sorted(RECORDS)), body=st.binary(max_size=64))
def test_hostile_body_after_valid_header_raises_only_decode_error(store, name, body):
    data = store.get(name).header + body
    try:
        decoded_name, _ = store.decode(data)
    except DecodeError:
        return
    assert decoded_name == name  # some short bodies are valid records; that is fine


@PROPERTY
@given(name=st.sampled_from(sorted(RECORDS)), cut=st.integers(0, 200), garbage=st.binary(max_size=16))
def test_corrupted_valid_record_raises_only_decode_error(store, name, cut, garbage):
    data = _valid(store, name)
    cut = min(cut, len(data))
    try:
        store.decode(data[:cut] + garbage)
    except DecodeError:
        pass


@PROPERTY
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(store, data):
    try:
        store.decode(data)
    except DecodeError:
        pass


def test_unknown_schema_name_is_a_config_error(store):
    with pytest.raises(ConfigError, match="enterprise/event"):
        store.encode("enterprise/evnt", {})


def test_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        SchemaStore(tmp_path / "nope")


def test_broken_schema_file_is_a_config_error(tmp_path):
    (tmp_path / "x.avsc").write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(ConfigError, match="x.avsc"):
        SchemaStore(tmp_path)
