"""Debezium change records → yurong's ``dept.*`` change envelope (pure functions).

Lets the stream layer accept what a *real* Debezium connector (PostgreSQL or MySQL/MariaDB,
Kafka Connect ``JsonConverter``) writes, so ``streams.core.ingest.to_enterprise_event`` can treat
it exactly like an envelope of yurong's own connector (``avro/dept/<dept>/<dataset>.avsc``).

Input: the record value as bytes/str/dict, either ``{"schema": ..., "payload": {...}}``
(``value.converter.schemas.enable=true``, preferred) or the bare payload
(``schemas.enable=false``). A ``None`` value is a tombstone (after a delete) → ``None``.

Mapping (Debezium → yurong):

- ``before``/``after`` rows: Debezium's semantic types are decoded with the Connect schema
  when present — ``io.debezium.time.Date``/``org.apache.kafka.connect.data.Date`` (days since
  epoch) → ``date``; ``io.debezium.time.Timestamp``/``MicroTimestamp``/``NanoTimestamp`` and
  ``org.apache.kafka.connect.data.Timestamp`` (epoch ms/µs/ns, no zone = UTC) and
  ``io.debezium.time.ZonedTimestamp`` (ISO-8601 text) → aware ``datetime``;
  ``org.apache.kafka.connect.data.Decimal`` (``decimal.handling.mode=precise``: base64
  big-endian two's complement, scale in the schema) and ``io.debezium.data.VariableScaleDecimal``
  → ``Decimal``. Then every value is coerced to the dataset's Avro row type (the same converter
  yurong's connectors use), and timestamps are truncated to milliseconds as the Avro
  ``timestamp-millis`` round trip does, so the result equals what the ingest agent decodes from
  yurong's own connector. ``scripts/debezium.sh`` sets ``decimal.handling.mode=double`` (numeric →
  JSON number): then no schema is needed for ``registered_capital``. Without a schema, dates
  given as day numbers and epoch timestamps are recognised from the target Avro type (epoch
  unit guessed from the magnitude); a base64 decimal without schema is rejected.
- ``source``: ``connector``, ``db``, ``schema``, ``table``, ``ts_ms`` and ``txId`` → ``tx_id``
  are copied; ``dept`` comes from the dataset. PostgreSQL: ``position`` = ``lsn`` as ``X/Y``,
  ``seq`` = ``lsn``. MySQL/MariaDB (``io.debezium.connector.{mysql,mariadb}.Source``: ``file``,
  ``pos``, ``row``, ``gtid``, ``server_id``, ``db``, ``table``; no ``schema`` and no
  transaction id, so ``schema``/``tx_id`` stay null as with yurong's MariaDB connector):

  - a streamed change with a ``gtid``: ``seq`` = ``connectors.mysql.change_seq(<GTID sequence
    number>, <order within the transaction>)`` = ``(42 << 20) | order``, so ``seq >> 20`` is the
    transaction's GTID sequence number as with yurong's MariaDB connector (MySQL ``<uuid>:42`` →
    42). One transaction may change a row twice, and the merge keeps a row's change only if its
    seq is above the last one merged, so the changes of a transaction need distinct, increasing
    seqs. The order within the transaction:

    - with ``provide.transaction.metadata=true`` the record's ``transaction.total_order``
      (1-based over the transaction's captured changes) − 1 → ``position`` ``0-1-42#3``: the
      same position and seq as yurong's connector gives the change when Debezium captures every
      table of the database (yurong counts every row change of the schema);
    - without it only the binlog coordinates tell the changes apart (``pos`` = the row event's
      own offset in the binlog file, ``row`` = the row's index in that event; checked against
      Debezium 3.5.0's MariaDB records; one multi-row ``INSERT … ON DUPLICATE KEY UPDATE`` can
      put two changes of one row into one event) → ``position`` ``0-1-42#<file>:<pos>:<row>``
      and order ``binlog_order(pos, row)`` = ``((pos >> 4) mod 2¹⁷) << 3 | min(row, 7)``. The
      transaction's start offset is not in the record, so the order is taken from ``pos``
      modulo ``BINLOG_ORDER_WINDOW`` (2 MiB; row events are more than 16 bytes apart, so two
      row events keep distinct orders). Two known gaps, both silent (the merge keeps the
      earlier change of the row): two changes of one row that lie on either side of a 2 MiB
      boundary of the binlog file (odds about their distance / 2 MiB), and a row changed again
      after the 8th row of one row event. Set ``provide.transaction.metadata=true`` for an
      exact order;
  - a snapshot record (``source.snapshot`` not ``false``) without ``gtid`` — Debezium's binlog
    connectors never put a GTID on snapshot rows, only the binlog coordinates of the snapshot —
    → ``position`` = ``<file>:<pos>:<row>``, ``seq`` = 0. Its seq must sort before every change
    streamed after the snapshot, because the merge skips a change whose seq is not above the
    last one merged for its row (``streams.core.profile.is_duplicate``), and the GTID sequence of the
    snapshot point is not in the record. The price: a *second* snapshot of rows already merged
    (Debezium's offsets lost) is skipped for those rows, like any replay;
  - a streamed change without ``gtid`` (MySQL with ``gtid_mode=OFF``) → ``<file>:<pos>:<row>``
    and ``(file number << 40) | (pos << 8) | row`` (``pos`` is the row event's own position,
    so the order of changes is kept).
- ``source.snapshot``: ``true``/``first``/``first_in_data_collection``/``last_in_data_collection``/
  ``incremental`` → ``'true'``, ``last`` → ``'last'``, ``false``/missing → ``'false'``.
- ``op``: ``c``/``u``/``d``/``r`` kept; ``t`` (truncate) and ``m`` (logical message) carry no
  row change → ``None`` (skip). ``ts_ms`` (envelope) falls back to ``source.ts_ms``.

Debezium's Avro converter (Confluent/Apicurio wire format: magic byte + registry schema id)
needs a schema registry to decode; it is not supported here.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from streams.codecs.convert import row_converter
from streams.codecs.positions import change_seq, format_lsn
from streams.codecs.serde import schema_store
from streams.core.catalogue import Dataset, Department, _value_schema
from streams.errors import SourceError, ValidationError

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EPOCH_DATE = dt.date(1970, 1, 1)

SNAPSHOT_VALUES = {
    "true": "true",
    "first": "true",
    "first_in_data_collection": "true",
    "last_in_data_collection": "true",
    "incremental": "true",
    "last": "last",
    "false": "false",
}

_DATE_TYPES = frozenset({"io.debezium.time.Date", "org.apache.kafka.connect.data.Date"})
_EPOCH_TYPES = {
    "io.debezium.time.Timestamp": 1_000,
    "org.apache.kafka.connect.data.Timestamp": 1_000,
    "io.debezium.time.MicroTimestamp": 1_000_000,
    "io.debezium.time.NanoTimestamp": 1_000_000_000,
}
_ZONED_TYPES = frozenset({"io.debezium.time.ZonedTimestamp"})
_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


# --- record parsing ---------------------------------------------------------------------------


def parse_record(value: bytes | str | Mapping[str, Any] | None) -> tuple[dict | None, dict | None]:
    """``(payload, schema)`` of a JsonConverter record value; ``(None, None)`` for a tombstone.

    ``schema`` is ``None`` for a payload-only record (``schemas.enable=false``).
    """
    if value is None:
        return None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Debezium record is not JSON ({exc})", field="value") from exc
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise ValidationError("Debezium record is not a JSON object", field="value")
    if "payload" in value and "schema" in value:
        payload, schema = value["payload"], value["schema"]
        if payload is None:
            return None, None
        return dict(payload), dict(schema) if schema else None
    return dict(value), None


def _field_schemas(envelope_schema: Mapping[str, Any] | None, field: str) -> dict[str, dict]:
    """Connect field schemas of the row struct in envelope field ``before``/``after``/``source``."""
    if not envelope_schema:
        return {}
    for f in envelope_schema.get("fields") or ():
        if f.get("field") == field:
            return {c["field"]: c for c in f.get("fields") or ()}
    return {}


# --- value decoding ---------------------------------------------------------------------------


def _unscaled(b64: str) -> int:
    return int.from_bytes(base64.b64decode(b64), "big", signed=True)


def _epoch(value: int, per_second: int) -> dt.datetime:
    seconds, frac = divmod(int(value), per_second)
    return EPOCH + dt.timedelta(seconds=seconds, microseconds=frac * 1_000_000 // per_second)


def _parse_zoned(text: str) -> dt.datetime:
    t = text.strip().replace(" ", "T", 1)
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", t)  # fromisoformat wants 3 or 6 digits (py<3.11)
    if m:
        t = f"{m.group(1)}.{m.group(2)[:6].ljust(6, '0')}{m.group(3)}"
    ts = dt.datetime.fromisoformat(t)
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def decode_value(value: Any, connect_schema: Mapping[str, Any] | None) -> Any:
    """One column value with its Connect field schema (semantic ``name``) → a Python value."""
    if value is None or not connect_schema:
        return value
    name = connect_schema.get("name")
    if name in _DATE_TYPES and isinstance(value, int):
        return EPOCH_DATE + dt.timedelta(days=value)
    if name in _EPOCH_TYPES and isinstance(value, int):
        return _epoch(value, _EPOCH_TYPES[name])
    if name in _ZONED_TYPES and isinstance(value, str):
        return _parse_zoned(value)
    if name == _DECIMAL and isinstance(value, str):
        scale = int((connect_schema.get("parameters") or {}).get("scale", 0))
        return Decimal(_unscaled(value)).scaleb(-scale)
    if name == _VARIABLE_DECIMAL and isinstance(value, Mapping):
        return Decimal(_unscaled(value["value"])).scaleb(-int(value["scale"]))
    return value


def _schemaless(value: Any, avro_type: Any) -> Any:
    """Best effort for payload-only records: use the target Avro type to read Debezium's encodings."""
    if value is None:
        return None
    t = avro_type
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    logical = t.get("logicalType") if isinstance(t, dict) else None
    if logical == "date" and isinstance(value, int):
        return EPOCH_DATE + dt.timedelta(days=value)
    if logical in ("timestamp-millis", "timestamp-micros"):
        if isinstance(value, int):
            magnitude = abs(value)
            unit = 1_000_000_000 if magnitude >= 10**17 else 1_000_000 if magnitude >= 10**14 else 1_000
            return _epoch(value, unit)
        if isinstance(value, str):
            return _parse_zoned(value)
    if isinstance(value, Mapping) and "scale" in value and "value" in value:
        return Decimal(_unscaled(value["value"])).scaleb(-int(value["scale"]))
    base = t.get("type") if isinstance(t, dict) else t
    if base in ("double", "float", "int", "long") and isinstance(value, str) and not _is_number(value):
        raise ValidationError(
            f"{value[:16]!r} looks like a base64 decimal; without the Connect schema its scale is unknown "
            "(use decimal.handling.mode=double or string, or value.converter.schemas.enable=true)",
            field="value",
        )
    return value


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


def _truncate_ms(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    return v


class RowDecoder:
    """Rows of one dataset: Debezium values → the Python values of yurong's Avro row schema."""

    def __init__(self, ds: Dataset, schemas=None) -> None:
        store = schemas or schema_store()
        self.value_schema = _value_schema(store.get(ds.schema_name).parsed)
        self.avro_types = {f["name"]: f["type"] for f in self.value_schema["fields"]}
        self.millis = {
            f["name"] for f in self.value_schema["fields"]
            if any(isinstance(t, dict) and t.get("logicalType") == "timestamp-millis"
                   for t in (f["type"] if isinstance(f["type"], list) else [f["type"]]))
        }
        self.convert = row_converter(self.value_schema)
        self.ds = ds

    def __call__(self, row: Mapping[str, Any] | None, field_schemas: Mapping[str, dict], where: str) -> dict | None:
        if row is None:
            return None
        decoded = {}
        for name, value in row.items():
            if name not in self.avro_types:
                continue  # a column the schema does not know yet
            if field_schemas:
                decoded[name] = decode_value(value, field_schemas.get(name))
            else:
                decoded[name] = _schemaless(value, self.avro_types[name])
        out = self.convert(decoded, where)
        for name in self.millis:
            out[name] = _truncate_ms(out.get(name))
        return out


# --- source position ------------------------------------------------------------------------


BINLOG_ORDER_WINDOW = 1 << 21  # bytes of binlog over which binlog_order increases


def binlog_order(pos: int, row: int) -> int:
    """Order of a change within its transaction from its binlog coordinates alone (Debezium
    without transaction metadata): 20 bits, ``((pos >> 4) mod 2¹⁷) << 3 | min(row, 7)``.
    Increasing along the binlog within each ``BINLOG_ORDER_WINDOW`` of the file (see the
    module docstring)."""
    return (((pos % BINLOG_ORDER_WINDOW) >> 4) << 3) | min(row, 7)


def _position(source: Mapping[str, Any], transaction: Mapping[str, Any] | None = None) -> tuple[str, int]:
    """``(position, seq)`` of a Debezium source block and the record's ``transaction`` block
    (``None`` unless ``provide.transaction.metadata=true``; see the module docstring)."""
    connector = source.get("connector")
    if source.get("lsn") is not None:  # PostgreSQL: every change has its own LSN
        lsn = int(source["lsn"])
        return format_lsn(lsn), lsn
    if connector in ("mysql", "mariadb"):
        file, pos, row = str(source.get("file") or ""), int(source.get("pos") or 0), int(source.get("row") or 0)
        gtid = source.get("gtid")
        if gtid:  # MariaDB 0-1-42, MySQL 3E11FA47-71CA-11E1-9E33-C80AA9429562:42
            last = str(gtid).split(",")[-1].strip()
            gtid_seq = int(re.split(r"[-:]", last)[-1])
            total_order = transaction.get("total_order") if isinstance(transaction, Mapping) else None
            if total_order is not None:
                index = int(total_order) - 1
                position, order = f"{gtid}#{index}", index
            else:
                position, order = f"{gtid}#{file}:{pos}:{row}", binlog_order(pos, row)
            try:
                return position, change_seq(gtid_seq, order)
            except SourceError as exc:
                raise ValidationError(str(exc), field="source.gtid") from exc
        if snapshot_flag(source.get("snapshot")) != "false":
            # Snapshot rows carry only the snapshot's binlog coordinates; seq 0 keeps them before
            # every streamed change, whose seq holds a GTID sequence number (see the module docstring).
            return f"{file}:{pos}:{row}", 0
        m = re.search(r"(\d+)$", file)
        fileno = int(m.group(1)) if m else 0
        return f"{file}:{pos}:{row}", (fileno << 40) | (pos << 8) | min(row, 255)
    raise ValidationError(f"Debezium source of connector {connector!r} has no position (lsn/gtid/file)", field="source")


def snapshot_flag(value: Any) -> str:
    """Debezium's ``source.snapshot`` (str, bool or missing) → yurong's 'true'/'last'/'false'."""
    if value is None or value is False:
        return "false"
    if value is True:
        return "true"
    text = str(value).lower()
    if text not in SNAPSHOT_VALUES:
        raise ValidationError(f"Debezium source.snapshot {value!r} is unknown", field="source.snapshot")
    return SNAPSHOT_VALUES[text]


# --- the conversion ---------------------------------------------------------------------------


class DebeziumConverter:
    """Converts Debezium records of one department's datasets into yurong envelopes.

    ``converter.envelope(value)`` → envelope dict (input of ``to_enterprise_event``) or
    ``None`` (tombstone, truncate, logical message). The dataset is found from
    ``source.schema``/``source.table`` (PostgreSQL) or ``source.db``/``source.table`` (MySQL).
    """

    def __init__(self, dept: Department, schemas=None) -> None:
        self.dept = dept
        self._by_table: dict[str, Dataset] = {}
        self._rows: dict[str, RowDecoder] = {}
        for ds in dept.datasets.values():
            self._by_table[ds.table] = ds
            self._by_table.setdefault(ds.schema_table, ds)
            self._rows[ds.qualified] = RowDecoder(ds, schemas)

    def dataset(self, source: Mapping[str, Any]) -> Dataset:
        table = source.get("table")
        for owner in (source.get("schema"), source.get("db")):
            if owner and f"{owner}.{table}" in self._by_table:
                return self._by_table[f"{owner}.{table}"]
        if table in self._by_table:
            return self._by_table[table]
        raise ValidationError(f"Debezium record of table {source.get('schema') or source.get('db')}.{table} "
                              f"is not a dataset of {self.dept.dept}", field="source.table")

    def envelope(self, value: bytes | str | Mapping[str, Any] | None) -> tuple[Dataset, dict] | None:
        """``(dataset, envelope)`` for a Debezium record value, ``None`` if it carries no row change."""
        payload, schema = parse_record(value)
        if payload is None:
            return None
        return self.from_payload(payload, schema)

    def from_payload(self, payload: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> tuple[Dataset, dict] | None:
        op = payload.get("op")
        if op in ("t", "m"):
            return None
        source = payload.get("source")
        if not isinstance(source, Mapping):
            raise ValidationError("Debezium record without source block", field="source")
        ds = self.dataset(source)
        position, seq = _position(source, payload.get("transaction"))
        where = f"{ds.name}@{position}"
        rows = self._rows[ds.qualified]
        ts_ms = int(source.get("ts_ms") or 0)
        envelope = {
            "before": rows(payload.get("before"), _field_schemas(schema, "before"), where),
            "after": rows(payload.get("after"), _field_schemas(schema, "after"), where),
            "source": {
                "connector": str(source.get("connector") or "debezium"),
                "dept": ds.dept,
                "db": str(source.get("db") or ""),
                "schema": source.get("schema"),
                "table": str(source.get("table")),
                "position": position,
                "seq": seq,
                "ts_ms": ts_ms,
                "snapshot": snapshot_flag(source.get("snapshot")),
                "tx_id": int(source["txId"]) if source.get("txId") is not None else None,
            },
            "op": op,
            "ts_ms": int(payload.get("ts_ms") or ts_ms),
        }
        return ds, envelope


def topic_datasets(dept: Department, prefix: str = "debezium", database: str | None = None) -> dict[str, Dataset]:
    """Debezium topic names of a department's datasets.

    PostgreSQL: ``<topic.prefix>.<schema>.<table>`` (schema ``public`` unless the mapping names
    one). MySQL/MariaDB: ``<topic.prefix>.<database>.<table>``; ``database`` defaults to the
    department's name, the database name yurong's settings assume (``SourceSettings.dsn``).
    """
    out = {}
    for ds in dept.datasets.values():
        schema, _, table = ds.table.rpartition(".")
        if dept.kind == "mysql":
            out[f"{prefix}.{database or schema or dept.dept}.{table}"] = ds
        else:
            out[f"{prefix}.{schema or 'public'}.{table}"] = ds
    return out
