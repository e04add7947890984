"""streams/codecs/debezium.py: real Debezium records → yurong change envelopes.

The fixtures below are records captured from Debezium 3.6.1.Final (PostgresConnector,
pgoutput, Kafka Connect 4.3.0 standalone, JsonConverter schemas.enable=true,
decimal.handling.mode=double) run by scripts/debezium.sh against the market simulator schema
(database dbz_probe, topic.prefix dbzprobe). Schema and payload are stored separately (the
schema is the same for every record of a table) and recombined as ``{"schema", "payload"}``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json

import pytest

from streams.codecs.debezium import (
    DebeziumConverter,
    binlog_order,
    decode_value,
    parse_record,
    snapshot_flag,
    topic_datasets,
)
from streams.codecs.positions import change_seq
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import merge_event
from streams.errors import ValidationError

KEY = b"unit-test-key-for-debezium-envelopes-0123456789"
UTC = dt.UTC

REG_SCHEMA = '{"type":"struct","fields":[{"type":"struct","fields":[{"type":"string","optional":false,"field":"uscc"},{"type":"string","optional":false,"field":"name"},{"type":"string","optional":true,"field":"legal_rep_name"},{"type":"string","optional":true,"field":"legal_rep_id_number"},{"type":"string","optional":true,"field":"legal_rep_phone"},{"type":"string","optional":true,"field":"district_code"},{"type":"string","optional":true,"field":"industry_code"},{"type":"double","optional":true,"field":"registered_capital"},{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"established_date"},{"type":"string","optional":false,"default":"active","field":"status"},{"type":"string","optional":true,"field":"address"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"default":"1970-01-01T00:00:00.000000Z","field":"updated_at"}],"optional":true,"name":"dbzprobe.public.enterprise_registration.Value","field":"before"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"uscc"},{"type":"string","optional":false,"field":"name"},{"type":"string","optional":true,"field":"legal_rep_name"},{"type":"string","optional":true,"field":"legal_rep_id_number"},{"type":"string","optional":true,"field":"legal_rep_phone"},{"type":"string","optional":true,"field":"district_code"},{"type":"string","optional":true,"field":"industry_code"},{"type":"double","optional":true,"field":"registered_capital"},{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"established_date"},{"type":"string","optional":false,"default":"active","field":"status"},{"type":"string","optional":true,"field":"address"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"default":"1970-01-01T00:00:00.000000Z","field":"updated_at"}],"optional":true,"name":"dbzprobe.public.enterprise_registration.Value","field":"after"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"},{"type":"string","optional":true,"field":"origin"},{"type":"int64","optional":true,"field":"origin_lsn"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"},{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"}],"optional":false,"name":"dbzprobe.public.enterprise_registration.Envelope","version":2}'

ABN_SCHEMA = '{"type":"struct","fields":[{"type":"struct","fields":[{"type":"int64","optional":false,"default":0,"field":"id"},{"type":"string","optional":false,"field":"uscc"},{"type":"string","optional":false,"field":"reason_code"},{"type":"int32","optional":false,"name":"io.debezium.time.Date","version":1,"field":"listed_date"},{"type":"string","optional":true,"field":"authority"},{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"removed_date"},{"type":"string","optional":true,"field":"removal_reason"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"default":"1970-01-01T00:00:00.000000Z","field":"updated_at"}],"optional":true,"name":"dbzprobe.public.abnormal_operation.Value","field":"before"},{"type":"struct","fields":[{"type":"int64","optional":false,"default":0,"field":"id"},{"type":"string","optional":false,"field":"uscc"},{"type":"string","optional":false,"field":"reason_code"},{"type":"int32","optional":false,"name":"io.debezium.time.Date","version":1,"field":"listed_date"},{"type":"string","optional":true,"field":"authority"},{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"removed_date"},{"type":"string","optional":true,"field":"removal_reason"},{"type":"string","optional":false,"name":"io.debezium.time.ZonedTimestamp","version":1,"default":"1970-01-01T00:00:00.000000Z","field":"updated_at"}],"optional":true,"name":"dbzprobe.public.abnormal_operation.Value","field":"after"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"},{"type":"string","optional":true,"field":"origin"},{"type":"int64","optional":true,"field":"origin_lsn"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"},{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"}],"optional":false,"name":"dbzprobe.public.abnormal_operation.Envelope","version":2}'

REG_SNAPSHOT = '{"before":null,"after":{"uscc":"91500112MACELPKL33","name":"重庆趋势实业有限公司","legal_rep_name":"李莉","legal_rep_id_number":"50011219970615247X","legal_rep_phone":"18004037616","district_code":"500112","industry_code":"H6210","registered_capital":102.08,"established_date":20119,"status":"active","address":"重庆市渝北区西宁街101号","updated_at":"2026-11-27T11:23:06.593365Z"},"source":{"version":"3.6.1.Final","connector":"postgresql","name":"dbzprobe","ts_ms":1795778614624,"snapshot":"true","db":"dbz_probe","sequence":"[null,\\"602750976\\"]","ts_us":1795778614624099,"ts_ns":1795778614624099000,"schema":"public","table":"enterprise_registration","txId":5683,"lsn":602750976,"xmin":null,"origin":null,"origin_lsn":null},"transaction":null,"op":"r","ts_ms":1795778614761,"ts_us":1795778614761404,"ts_ns":1795778614761404807}'

REG_UPDATE = '{"before":{"uscc":"91500108MAHUXQEEXM","name":"重庆南康贸易有限公司","legal_rep_name":"孙坤","legal_rep_id_number":"500155198604036289","legal_rep_phone":"18924987809","district_code":"500108","industry_code":"C3670","registered_capital":156.79,"established_date":17253,"status":"active","address":"重庆市南岸区梧州路356号","updated_at":"2026-11-27T11:23:06.593365Z"},"after":{"uscc":"91500108MAHUXQEEXM","name":"重庆南康贸易有限公司","legal_rep_name":"孙坤","legal_rep_id_number":"500155198604036289","legal_rep_phone":"18924987809","district_code":"500108","industry_code":"C3670","registered_capital":156.79,"established_date":17253,"status":"revoked","address":"重庆市南岸区梧州路356号","updated_at":"2026-11-27T11:23:39.395166Z"},"source":{"version":"3.6.1.Final","connector":"postgresql","name":"dbzprobe","ts_ms":1795778619396,"snapshot":"false","db":"dbz_probe","sequence":"[null,\\"602788544\\"]","ts_us":1795778619396360,"ts_ns":1795778619396360000,"schema":"public","table":"enterprise_registration","txId":5684,"lsn":602788544,"xmin":null,"origin":null,"origin_lsn":null},"transaction":null,"op":"u","ts_ms":1795778619465,"ts_us":1795778619465010,"ts_ns":1795778619465010142}'

ABN_CREATE = '{"before":null,"after":{"id":1,"uscc":"91500108MAHUXQEEXM","reason_code":"unreachable_address","listed_date":20758,"authority":"x","removed_date":null,"removal_reason":null,"updated_at":"2026-11-27T11:23:39.397433Z"},"source":{"version":"3.6.1.Final","connector":"postgresql","name":"dbzprobe","ts_ms":1795778619397,"snapshot":"false","db":"dbz_probe","sequence":"[\\"602791224\\",\\"602791328\\"]","ts_us":1795778619397892,"ts_ns":1795778619397892000,"schema":"public","table":"abnormal_operation","txId":5685,"lsn":602791328,"xmin":null,"origin":null,"origin_lsn":null},"transaction":null,"op":"c","ts_ms":1795778619472,"ts_us":1795778619472166,"ts_ns":1795778619472166242}'

ABN_DELETE = '{"before":{"id":1,"uscc":"91500108MAHUXQEEXM","reason_code":"unreachable_address","listed_date":20758,"authority":"x","removed_date":null,"removal_reason":null,"updated_at":"2026-11-27T11:23:39.397433Z"},"after":null,"source":{"version":"3.6.1.Final","connector":"postgresql","name":"dbzprobe","ts_ms":1795778619398,"snapshot":"false","db":"dbz_probe","sequence":"[\\"602791832\\",\\"602791832\\"]","ts_us":1795778619398641,"ts_ns":1795778619398641000,"schema":"public","table":"abnormal_operation","txId":5686,"lsn":602791832,"xmin":null,"origin":null,"origin_lsn":null},"transaction":null,"op":"d","ts_ms":1795778619473,"ts_us":1795778619473511,"ts_ns":1795778619473511773}'


def record(schema: str, payload: str) -> bytes:
    """The Kafka record value as Debezium's JsonConverter wrote it."""
    return ('{"schema":' + schema + ',"payload":' + payload + "}").encode()


@pytest.fixture(scope="module")
def conv() -> DebeziumConverter:
    return DebeziumConverter(catalogue().department("market"))


def event(ds, env, offset=0):
    return to_enterprise_event(ds, env, Provenance("debezium.public." + ds.name, 0, offset), Pseudonymizer(KEY), 1)


def test_snapshot_record_becomes_a_yurong_envelope(conv):
    ds, env = conv.envelope(record(REG_SCHEMA, REG_SNAPSHOT))
    assert ds.qualified == "market.enterprise_registration"
    assert env["op"] == "r" and env["before"] is None
    assert env["source"] == {
        "connector": "postgresql", "dept": "market", "db": "dbz_probe", "schema": "public",
        "table": "enterprise_registration", "position": "0/23ED4000", "seq": 602750976,
        "ts_ms": 1795778614624, "snapshot": "true", "tx_id": 5683,
    }
    a = env["after"]
    assert a["established_date"] == dt.date(1970, 1, 1) + dt.timedelta(days=20119)  # io.debezium.time.Date
    assert a["updated_at"] == dt.datetime(2026, 11, 27, 11, 23, 6, 593000, tzinfo=UTC)  # ZonedTimestamp, ms
    assert a["registered_capital"] == 102.08 and a["status"] == "active"
    assert env["ts_ms"] == 1795778614761


def test_envelopes_survive_the_dept_avro_schema_unchanged(conv):
    schemas = schema_store()
    for schema, payload in [(REG_SCHEMA, REG_SNAPSHOT), (REG_SCHEMA, REG_UPDATE), (ABN_SCHEMA, ABN_CREATE), (ABN_SCHEMA, ABN_DELETE)]:
        ds, env = conv.envelope(record(schema, payload))
        _, back = schemas.decode(schemas.encode(ds.schema_name, env), ds.schema_name)
        assert back == env


def test_update_and_listing_go_through_ingest_and_merge(conv):
    ds, snap = conv.envelope(record(REG_SCHEMA, REG_SNAPSHOT))
    uscc = snap["after"]["uscc"]
    ds_u, upd = conv.envelope(record(REG_SCHEMA, REG_UPDATE))
    assert (upd["op"], upd["before"]["status"], upd["after"]["status"]) == ("u", "active", "revoked")
    assert upd["source"]["snapshot"] == "false" and upd["source"]["position"] == "0/23EDD2C0"
    target = upd["after"]["uscc"]

    ds_c, ins = conv.envelope(record(ABN_SCHEMA, ABN_CREATE))
    ds_d, dele = conv.envelope(record(ABN_SCHEMA, ABN_DELETE))
    assert ds_c.qualified == "market.abnormal_operation"
    assert (ins["op"], ins["before"], ins["after"]["listed_date"]) == ("c", None, dt.date(2026, 11, 1))
    assert (dele["op"], dele["after"], dele["before"]["id"]) == ("d", None, 1)
    assert upd["source"]["seq"] < ins["source"]["seq"] < dele["source"]["seq"]

    # the target's snapshot row (same before-image as the update) then the streamed changes
    snap_target = {**upd, "op": "r", "before": None, "after": upd["before"],
                   "source": {**snap["source"]}}
    profile, changes = None, []
    for offset, (d, e) in enumerate([(ds, snap_target), (ds_u, upd), (ds_c, ins), (ds_d, dele)]):
        ev = event(d, e, offset)
        assert "500155198604036289" not in json.dumps(ev, ensure_ascii=False)  # masked
        profile, ch = merge_event(profile, ev, offset, 1)
        changes.extend(ch)
    assert profile["uscc"] == target != uscc
    assert profile["status"] == "revoked" and profile["abnormal_open_ids"] == []
    assert profile["abnormal_listings_total"] == 1
    assert profile["registered_capital"] == 156.79 and profile["established_date"] == "2017-03-28"
    reasons = [c["reason_codes"][0] for c in changes]
    assert "STATUS_REVOKED" in reasons and "ABNORMAL_OPERATION_LISTED" in reasons


def test_tombstones_and_null_payloads_are_skipped(conv):
    assert conv.envelope(None) is None
    assert conv.envelope(b"null") is None
    assert conv.envelope(b'{"schema":null,"payload":null}') is None
    assert parse_record(None) == (None, None)


def test_payload_only_records_give_the_same_envelope(conv):
    for schema, payload in [(REG_SCHEMA, REG_SNAPSHOT), (REG_SCHEMA, REG_UPDATE), (ABN_SCHEMA, ABN_CREATE)]:
        with_schema = conv.envelope(record(schema, payload))[1]
        without = conv.envelope(payload.encode())[1]
        assert without == with_schema


def _precise(payload: str, schema: str, value: str) -> tuple[dict, dict]:
    """Rewrite a record as decimal.handling.mode=precise would: base64 unscaled bytes + scale."""
    p, s = json.loads(payload), json.loads(schema)
    p["after"]["registered_capital"] = value
    for part in s["fields"]:
        for f in part.get("fields") or ():
            if f["field"] == "registered_capital":
                f.update(type="bytes", name="org.apache.kafka.connect.data.Decimal", version=1,
                         parameters={"scale": "2", "connect.decimal.precision": "14"})
    return p, s


def test_precise_decimals_are_decoded_with_the_schema_scale(conv):
    b64 = base64.b64encode((10208).to_bytes(2, "big", signed=True)).decode()
    p, s = _precise(REG_SNAPSHOT, REG_SCHEMA, b64)
    _, env = conv.envelope({"schema": s, "payload": p})
    assert env["after"]["registered_capital"] == 102.08
    neg = base64.b64encode((-5).to_bytes(1, "big", signed=True)).decode()
    assert str(decode_value(neg, {"name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}})) == "-0.05"
    # without the schema the scale is unknown: rejected, not guessed
    with pytest.raises(ValidationError, match="decimal.handling.mode"):
        conv.envelope(json.dumps(p))
    # VariableScaleDecimal
    v = decode_value({"scale": 3, "value": base64.b64encode((12345).to_bytes(2, "big")).decode()},
                     {"name": "io.debezium.data.VariableScaleDecimal"})
    assert str(v) == "12.345"


def test_debezium_time_encodings():
    at = dt.datetime(2026, 11, 27, 11, 23, 6, 593365, tzinfo=UTC)
    micros = 1795778586593365
    assert decode_value(micros, {"name": "io.debezium.time.MicroTimestamp"}) == at
    assert decode_value(micros * 1000, {"name": "io.debezium.time.NanoTimestamp"}) == at
    assert decode_value(micros // 1000, {"name": "io.debezium.time.Timestamp"}) == at.replace(microsecond=593000)
    assert decode_value(micros // 1000, {"name": "org.apache.kafka.connect.data.Timestamp"}) == at.replace(microsecond=593000)
    assert decode_value("2026-11-27T19:23:06.593365+08:00", {"name": "io.debezium.time.ZonedTimestamp"}) == at
    assert decode_value("2026-11-27T11:23:06.5Z", {"name": "io.debezium.time.ZonedTimestamp"}) == at.replace(microsecond=500000)
    assert decode_value(-1, {"name": "io.debezium.time.Date"}) == dt.date(1969, 12, 31)
    assert decode_value(20119, {"name": "org.apache.kafka.connect.data.Date"}) == dt.date(2025, 1, 31)
    assert decode_value("x", {"type": "string"}) == "x"


def test_micro_timestamp_columns_are_truncated_to_millis(conv):
    p, s = json.loads(REG_SNAPSHOT), json.loads(REG_SCHEMA)
    p["after"]["updated_at"] = 1795778586593365
    for part in s["fields"]:
        for f in part.get("fields") or ():
            if f["field"] == "updated_at":
                f.update(type="int64", name="io.debezium.time.MicroTimestamp")
    _, env = conv.envelope({"schema": s, "payload": p})
    assert env["after"]["updated_at"] == dt.datetime(2026, 11, 27, 11, 23, 6, 593000, tzinfo=UTC)
    _, env2 = conv.envelope(p)  # schemaless: unit guessed from the magnitude
    assert env2["after"]["updated_at"] == env["after"]["updated_at"]


@pytest.mark.parametrize("value,flag", [
    ("true", "true"), ("first", "true"), ("first_in_data_collection", "true"), ("last_in_data_collection", "true"),
    ("last", "last"), ("false", "false"), ("incremental", "true"), (None, "false"), (True, "true"), (False, "false"),
])
def test_snapshot_values(value, flag):
    assert snapshot_flag(value) == flag


def test_unknown_snapshot_value_op_and_table(conv):
    with pytest.raises(ValidationError):
        snapshot_flag("sometimes")
    p = json.loads(REG_UPDATE)
    assert conv.envelope({**p, "op": "t"}) is None
    assert conv.envelope({**p, "op": "m"}) is None
    other = copy.deepcopy(p)
    other["source"]["table"] = "unrelated"
    with pytest.raises(ValidationError, match="not a dataset"):
        conv.envelope(other)
    with pytest.raises(ValidationError):
        conv.envelope(b"{not json")
    # an op the ingest does not know is left to to_enterprise_event, which rejects it
    ds, env = conv.envelope({**p, "op": "x"})
    with pytest.raises(ValidationError, match="op"):
        event(ds, env)


def test_invalid_rows_are_rejected_by_ingest_like_our_own(conv):
    p = copy.deepcopy(json.loads(REG_UPDATE))
    p["after"]["status"] = "bankrupt"
    ds, env = conv.envelope(p)
    with pytest.raises(ValidationError, match="status"):
        event(ds, env)


def test_mysql_source_positions(conv):
    """Synthetic (not captured): Debezium MySQL/MariaDB source blocks → position and seq."""
    p = copy.deepcopy(json.loads(REG_UPDATE))
    src = {"version": "3.6.1.Final", "connector": "mysql", "name": "dbz", "ts_ms": 1, "snapshot": "false",
           "db": "public", "table": "enterprise_registration", "server_id": 1, "file": "mysql-bin.000003",
           "pos": 4242, "row": 1, "gtid": None}
    _, env = conv.envelope({**p, "source": src})
    assert env["source"]["position"] == "mysql-bin.000003:4242:1"
    assert env["source"]["seq"] == (3 << 40) | (4242 << 8) | 1
    # a GTID names the transaction; file:pos:row orders the changes inside it (streams/codecs/debezium.py)
    _, env = conv.envelope({**p, "source": {**src, "connector": "mariadb", "gtid": "0-1-42"}})
    assert (env["source"]["position"], env["source"]["seq"]) == (
        "0-1-42#mysql-bin.000003:4242:1", change_seq(42, binlog_order(4242, 1)))
    _, env = conv.envelope({**p, "source": {**src, "gtid": "3E11FA47-71CA-11E1-9E33-C80AA9429562:23"}})
    assert env["source"]["seq"] >> 20 == 23


def test_topic_names():
    topics = topic_datasets(catalogue().department("market"))
    assert {t: ds.qualified for t, ds in topics.items()} == {
        "debezium.public.enterprise_registration": "market.enterprise_registration",
        "debezium.public.abnormal_operation": "market.abnormal_operation",
        "debezium.public.equity_pledge": "market.equity_pledge",
    }
