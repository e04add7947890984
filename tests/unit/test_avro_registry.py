"""streams/codecs/avro_registry.py: registry-Avro Debezium records → the JSON converter's payload.

The Avro schema below is the one Apicurio's AvroConverter 2.6.13.Final registered for Debezium
3.6.1.Final's ``enterprise_registration`` envelope (Connect 4.3.0, decimal.handling.mode=double,
time.precision.mode=adaptive), trimmed to the fields yurong reads plus the ``connect.*``
properties. Records are encoded here with fastavro, so no registry and no network is needed:
the registry is a dict behind ``SchemaRegistry(fetch=...)``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import io
import json
import socket
import struct
from decimal import Decimal

import fastavro
import pytest

from streams.codecs.avro_registry import (
    APICURIO_KEY_HEADER,
    APICURIO_VALUE_HEADER,
    AvroRegistryDecoder,
    RegistryUnavailable,
    SchemaRegistry,
    connect_schema,
    decode_debezium_record,
    schema_id_of,
    split,
    strip_logical_types,
    to_json_value,
)
from streams.codecs.debezium import DebeziumConverter, decode_value
from streams.core.catalogue import catalogue
from streams.errors import DecodeError
from tests.unit.test_debezium_envelope import REG_SCHEMA, REG_SNAPSHOT, REG_UPDATE, record

ROW = {
    "type": "record", "name": "Value", "connect.name": "dbzprobe.public.enterprise_registration.Value",
    "fields": [
        {"name": "uscc", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "legal_rep_name", "type": ["null", "string"], "default": None},
        {"name": "legal_rep_id_number", "type": ["null", "string"], "default": None},
        {"name": "legal_rep_phone", "type": ["null", "string"], "default": None},
        {"name": "district_code", "type": ["null", "string"], "default": None},
        {"name": "industry_code", "type": ["null", "string"], "default": None},
        {"name": "registered_capital", "type": ["null", "double"], "default": None},
        {"name": "established_date", "type": ["null", {"type": "int", "connect.version": 1,
                                                       "connect.name": "io.debezium.time.Date"}], "default": None},
        {"name": "status", "type": {"type": "string", "connect.default": "active"}, "default": "active"},
        {"name": "address", "type": ["null", "string"], "default": None},
        {"name": "updated_at", "type": {"type": "string", "connect.version": 1,
                                        "connect.default": "1970-01-01T00:00:00.000000Z",
                                        "connect.name": "io.debezium.time.ZonedTimestamp"},
         "default": "1970-01-01T00:00:00.000000Z"},
    ],
}
ENVELOPE = {
    "type": "record", "name": "Envelope", "namespace": "dbzprobe.public.enterprise_registration",
    "connect.name": "dbzprobe.public.enterprise_registration.Envelope", "connect.version": 2,
    "fields": [
        {"name": "before", "type": ["null", ROW], "default": None},
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "source", "type": {
            "type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql",
            "connect.name": "io.debezium.connector.postgresql.Source", "connect.version": 1,
            "fields": [
                {"name": "version", "type": "string"},
                {"name": "connector", "type": "string"},
                {"name": "name", "type": "string"},
                {"name": "ts_ms", "type": "long"},
                {"name": "snapshot", "type": [{"type": "string", "connect.version": 1, "connect.default": "false",
                                               "connect.parameters": {"allowed": "true,first,first_in_data_collection,"
                                                                      "last_in_data_collection,last,false,incremental"},
                                               "connect.name": "io.debezium.data.Enum"}, "null"], "default": "false"},
                {"name": "db", "type": "string"},
                {"name": "sequence", "type": ["null", "string"], "default": None},
                {"name": "ts_us", "type": ["null", "long"], "default": None},
                {"name": "ts_ns", "type": ["null", "long"], "default": None},
                {"name": "schema", "type": "string"},
                {"name": "table", "type": "string"},
                {"name": "txId", "type": ["null", "long"], "default": None},
                {"name": "lsn", "type": ["null", "long"], "default": None},
                {"name": "xmin", "type": ["null", "long"], "default": None},
                {"name": "origin", "type": ["null", "string"], "default": None},
                {"name": "origin_lsn", "type": ["null", "long"], "default": None},
            ]}},
        {"name": "transaction", "type": ["null", {
            "type": "record", "name": "block", "namespace": "event", "connect.name": "event.block", "connect.version": 1,
            "fields": [{"name": "id", "type": "string"}, {"name": "total_order", "type": "long"},
                       {"name": "data_collection_order", "type": "long"}]}], "default": None},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
        {"name": "ts_us", "type": ["null", "long"], "default": None},
        {"name": "ts_ns", "type": ["null", "long"], "default": None},
    ],
}

# A table with the other encodings Debezium can choose: precise decimals, variable-scale
# numerics, Connect Date/Timestamp logical types, micro-timestamps, bytea.
TYPES = {
    "type": "record", "name": "Row", "namespace": "t",
    "fields": [
        {"name": "amount", "type": {"type": "bytes", "scale": 2, "precision": 12, "connect.version": 1,
                                    "connect.parameters": {"scale": "2", "connect.decimal.precision": "12"},
                                    "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"}},
        {"name": "ratio", "type": ["null", {"type": "record", "name": "VariableScaleDecimal", "namespace": "io.debezium.data",
                                            "connect.name": "io.debezium.data.VariableScaleDecimal", "connect.version": 1,
                                            "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}]}],
         "default": None},
        {"name": "day", "type": {"type": "int", "connect.version": 1, "connect.name": "org.apache.kafka.connect.data.Date",
                                 "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "connect.version": 1, "connect.name": "org.apache.kafka.connect.data.Timestamp",
                                "logicalType": "timestamp-millis"}},
        {"name": "at_us", "type": {"type": "long", "connect.version": 1, "connect.name": "io.debezium.time.MicroTimestamp"}},
        {"name": "small", "type": {"type": "int", "connect.type": "int16"}},
        {"name": "blob", "type": ["null", "bytes"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}


def avro_body(schema: dict, value: dict) -> bytes:
    """Raw Avro binary of ``value`` given in the JSON converter's encoding (ints for dates, ...)."""
    raw = copy.deepcopy(value)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(strip_logical_types(copy.deepcopy(schema))), raw)
    return buf.getvalue()


def apicurio(global_id: int, body: bytes) -> bytes:
    return b"\x00" + struct.pack(">q", global_id) + body


def confluent(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + struct.pack(">i", schema_id) + body


class FakeRegistry:
    def __init__(self, by_url: dict[str, bytes]) -> None:
        self.by_url = by_url
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes | None:
        self.calls.append(url)
        return self.by_url.get(url)


BASE = "http://registry.test/apis/registry/v2"


@pytest.fixture()
def fake() -> FakeRegistry:
    return FakeRegistry({f"{BASE}/ids/globalIds/7": json.dumps(ENVELOPE).encode(),
                         f"{BASE}/ids/globalIds/9": json.dumps(TYPES).encode()})


@pytest.fixture()
def decoder(fake) -> AvroRegistryDecoder:
    return AvroRegistryDecoder(SchemaRegistry(BASE, fetch=fake))


@pytest.fixture(scope="module")
def conv() -> DebeziumConverter:
    return DebeziumConverter(catalogue().department("market"))


# --- framing ------------------------------------------------------------------------------------


def test_split_reads_the_three_framings():
    body = b"\x02\x04avro"
    assert split(apicurio(2**40 + 5, body)) == (2**40 + 5, body)
    assert split(confluent(77, body), id_size=4) == (77, body)
    headers = [("__debezium.context.taskId", b"0"), (APICURIO_VALUE_HEADER, struct.pack(">q", 12))]
    assert split(body, headers) == (12, body)  # header wins; the value is plain Avro
    assert split(body, {APICURIO_KEY_HEADER: struct.pack(">q", 3)}, header=APICURIO_KEY_HEADER) == (3, body)


@pytest.mark.parametrize("value", [b"", b"\x00\x00\x00", b"\x01" + b"\x00" * 8 + b"x", b'{"schema":1}'])
def test_split_rejects_what_is_not_registry_avro(value):
    with pytest.raises(DecodeError, match="magic byte 0"):
        split(value)


def test_split_rejects_a_bad_id_header():
    with pytest.raises(DecodeError, match="8-byte id"):
        split(b"\x00", [(APICURIO_VALUE_HEADER, b"\x01\x02")])
    with pytest.raises(ValueError):
        split(b"\x00" * 9, id_size=2)


# --- registry -----------------------------------------------------------------------------------


def test_registry_urls_and_cache(fake):
    reg = SchemaRegistry(BASE + "/", fetch=fake)
    assert reg.get(7)["name"] == "Envelope"
    assert reg.get(7)["name"] == "Envelope"
    assert fake.calls == [f"{BASE}/ids/globalIds/7"]  # fetched once
    assert SchemaRegistry(BASE, id_kind="contentId").schema_url(4) == f"{BASE}/ids/contentIds/4"
    assert SchemaRegistry("http://r:8081", api="confluent").schema_url(4) == "http://r:8081/schemas/ids/4"


def test_confluent_api_unwraps_the_schema_string():
    url = "http://karapace.test"
    fake = FakeRegistry({f"{url}/schemas/ids/3": json.dumps({"schema": json.dumps(TYPES)}).encode(),
                         f"{url}/schemas/ids/4": json.dumps({"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}).encode()})
    reg = SchemaRegistry(url, api="confluent", fetch=fake)
    assert reg.get(3) == TYPES
    with pytest.raises(DecodeError, match="PROTOBUF"):
        reg.get(4)


def test_unknown_id_and_garbage_schemas_are_record_errors(fake):
    fake.by_url[f"{BASE}/ids/globalIds/8"] = b"<html>"
    reg = SchemaRegistry(BASE, fetch=fake)
    with pytest.raises(DecodeError, match="not in the registry"):
        reg.get(1)
    with pytest.raises(DecodeError, match="not an Avro schema"):
        reg.get(8)
    with pytest.raises(ValueError):
        SchemaRegistry(BASE, api="glue")


def test_unreachable_registry_is_an_outage_not_a_bad_record():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = SchemaRegistry(f"http://127.0.0.1:{port}/apis/registry/v2", timeout=2)
    with pytest.raises(RegistryUnavailable):
        reg.get(1)
    assert not issubclass(RegistryUnavailable, DecodeError)


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [REG_SNAPSHOT, REG_UPDATE])
def test_decoded_payload_is_the_json_converters(decoder, payload):
    expected = json.loads(payload)
    got, schema = decoder.decode(apicurio(7, avro_body(ENVELOPE, expected)))
    assert got == expected
    assert [f["field"] for f in schema["fields"]] == ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]


@pytest.mark.parametrize("payload", [REG_SNAPSHOT, REG_UPDATE])
def test_avro_and_json_records_give_the_same_yurong_envelope(decoder, conv, payload):
    value = apicurio(7, avro_body(ENVELOPE, json.loads(payload)))
    assert decoder.envelope(conv, value) == conv.envelope(record(REG_SCHEMA, payload))


def test_connect_schema_matches_the_json_converters_where_yurong_looks(decoder):
    _, schema = decoder.decode(apicurio(7, avro_body(ENVELOPE, json.loads(REG_UPDATE))))
    ours = {f["field"]: f for f in schema["fields"]}
    theirs = {f["field"]: f for f in json.loads(REG_SCHEMA)["fields"]}
    for block in ("before", "after", "source"):
        assert ours[block]["optional"] == theirs[block]["optional"]
        mine = {c["field"]: (c["type"], c["optional"], c.get("name"), c.get("parameters")) for c in ours[block]["fields"]}
        json_conv = {c["field"]: (c["type"], c["optional"], c.get("name"), c.get("parameters")) for c in theirs[block]["fields"]}
        assert mine == json_conv, block
    assert ours["after"]["name"] == "dbzprobe.public.enterprise_registration.Value"  # resolved named reference


def test_headers_framing_and_tombstones(decoder, conv):
    body = avro_body(ENVELOPE, json.loads(REG_UPDATE))
    ds, env = decoder.envelope(conv, body, [(APICURIO_VALUE_HEADER, struct.pack(">q", 7))])
    assert ds.name == "enterprise_registration" and env["op"] == "u"
    assert decoder.decode(None) == (None, None)
    assert decoder.envelope(conv, None) is None


def test_other_debezium_encodings_come_back_as_the_json_converter_writes_them(decoder):
    unscaled = (123456789).to_bytes(4, "big", signed=True)
    row = {"amount": unscaled, "ratio": {"scale": 3, "value": b"\x30\x39"}, "day": 20419, "at": 1795778619396,
           "at_us": 1795778619396360, "small": -3, "blob": b"\xff\x00", "tags": ["a", "b"]}
    got, schema = decoder.decode(apicurio(9, avro_body(TYPES, row)))
    assert got == {"amount": base64.b64encode(unscaled).decode(), "ratio": {"scale": 3, "value": "MDk="},
                   "day": 20419, "at": 1795778619396, "at_us": 1795778619396360, "small": -3,
                   "blob": "/wA=", "tags": ["a", "b"]}
    fields = {f["field"]: f for f in schema["fields"]}
    assert fields["amount"]["parameters"]["scale"] == "2" and fields["small"]["type"] == "int16"
    assert fields["tags"] == {"type": "array", "items": {"type": "string", "optional": False}, "optional": False, "field": "tags"}
    # ... which streams.codecs.debezium.decode_value turns into Python values exactly as for JSON
    assert decode_value(got["amount"], fields["amount"]) == Decimal("1234567.89")
    assert decode_value(got["ratio"], fields["ratio"]) == Decimal("12.345")
    assert decode_value(got["day"], fields["day"]) == dt.date(2025, 11, 27)
    assert decode_value(got["at_us"], fields["at_us"]) == dt.datetime(2026, 11, 27, 11, 23, 39, 396360, tzinfo=dt.UTC)


def test_hostile_bodies_are_decode_errors(decoder):
    good = avro_body(ENVELOPE, json.loads(REG_UPDATE))
    for bad in (good[:40], good + b"\x00\x01", b"\x02" + b"\xff" * 30):
        with pytest.raises(DecodeError):
            decoder.decode(apicurio(7, bad))
    with pytest.raises(DecodeError, match="not in the registry"):
        decoder.decode(apicurio(1234, good))


def test_helpers_are_pure():
    schema = {"type": "record", "name": "R", "fields": [{"name": "d", "type": {"type": "int", "logicalType": "date"}}]}
    stripped = strip_logical_types(schema)
    assert "logicalType" not in json.dumps(stripped) and "logicalType" in json.dumps(schema)
    assert to_json_value({"a": [b"\x01", {"b": bytearray(b"\x02")}], "c": 1}) == {"a": ["AQ==", {"b": "Ag=="}], "c": 1}
    assert connect_schema(["null", "long"]) == {"type": "int64", "optional": True}


def test_a_debezium_topic_may_carry_either_converter(decoder, conv):
    """What the worker's ingest_debezium does per record: JSON by its '{', registry Avro otherwise."""
    json_value = record(REG_SCHEMA, REG_UPDATE)
    avro_value = apicurio(7, avro_body(ENVELOPE, json.loads(REG_UPDATE)))
    assert decode_debezium_record(conv, avro_value, None, decoder) == decode_debezium_record(conv, json_value, None, decoder)
    assert decode_debezium_record(conv, json_value) == conv.envelope(json_value), "JSON needs no registry"
    with pytest.raises(DecodeError, match="YURONG_WORKER_DEBEZIUM_REGISTRY_URL"):
        decode_debezium_record(conv, avro_value)
    assert schema_id_of(avro_value, None, decoder) == 7
    assert schema_id_of(json_value, None, decoder) is None and schema_id_of(None, None, decoder) is None
    assert schema_id_of(b"\x05garbage", None, decoder) is None, "not registry-framed: decoding dead-letters it"
