"""Debezium records written with a schema-registry Avro converter → Debezium's JSON payload.

``streams.codecs.debezium.DebeziumConverter`` reads what Kafka Connect's ``JsonConverter`` writes. A
connector configured with an Avro converter writes Avro binary instead, naming its writer schema
by an id that only a schema registry can resolve. This module turns such a record back into the
two things the JSON converter would have given: the ``payload`` dict (``before``/``after``/
``source``/``op``/``ts_ms``) and a Connect ``schema`` dict, so that
``DebeziumConverter.from_payload(payload, schema)`` handles both converters the same way.

Framings of the schema id (``split``), as written by the converters:

- Apicurio 2.x ``io.apicurio.registry.utils.converter.AvroConverter``, default
  (``apicurio.registry.headers.enabled=true``): the id is the 8-byte big-endian **globalId** in
  the Kafka header ``apicurio.value.globalId`` (``apicurio.key.globalId`` for keys); the value is
  plain Avro binary.
- Apicurio with ``apicurio.registry.headers.enabled=false``: magic byte ``0`` + 8-byte globalId
  + Avro binary (``id_size=8``).
- Confluent's wire format (Confluent ``AvroConverter``, Apicurio with
  ``apicurio.registry.as-confluent=true``): magic byte ``0`` + 4-byte id + Avro (``id_size=4``).
  With Apicurio the 4-byte id is the **contentId** when ``apicurio.registry.use-id=contentId``.

Schemas by id (``SchemaRegistry``), over HTTP with ``urllib`` (no extra dependency), cached
forever (ids are immutable in both registries):

- ``api="apicurio"``: ``<url>/ids/globalIds/<id>`` (or ``/ids/contentIds/<id>``) with ``url`` the
  converter's ``apicurio.registry.url``, e.g. ``http://127.0.0.1:18081/apis/registry/v2``; the
  body is the schema itself.
- ``api="confluent"``: ``<url>/schemas/ids/<id>`` → ``{"schema": "<json>"}``: Confluent Schema
  Registry, Karapace, or Apicurio's compatibility API (``…/apis/ccompat/v6``; its ids are
  contentIds).

Values (``to_json_payload``): decoded *without* Avro logical types, then encoded as the JSON
converter does: ``io.debezium.time.Date``/``date`` → int days, ``timestamp-millis``/``-micros``
→ int epoch, ``io.debezium.time.ZonedTimestamp`` → its ISO string, ``bytes`` (e.g. a Connect
``Decimal`` under ``decimal.handling.mode=precise``) → base64 text, ``VariableScaleDecimal`` →
``{"scale", "value": base64}``; ``double`` (``decimal.handling.mode=double``) stays a float.
The Connect schema is rebuilt from the ``connect.name``/``connect.parameters``/``connect.type``
properties the converter writes into the Avro schema.

Errors: malformed bytes, an unknown id (HTTP 404) or a schema that is not Avro →
``DecodeError`` (the record goes to the dead-letter topic). A registry that cannot be reached →
``RegistryUnavailable`` (an outage: retry, never dead-letter).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import fastavro

from streams.errors import DecodeError, YurongError

MAGIC = 0
APICURIO_VALUE_HEADER = "apicurio.value.globalId"
APICURIO_KEY_HEADER = "apicurio.key.globalId"

_CONNECT_TYPES = {
    "int": "int32",
    "long": "int64",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
    "fixed": "bytes",
    "enum": "string",
    "null": "null",
}


class RegistryUnavailable(YurongError):
    """The schema registry did not answer (connection refused, timeout, 5xx): retry later."""


# --- framing -----------------------------------------------------------------------------------


def _header(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None, name: str) -> bytes | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key == name:
            return bytes(value) if value is not None else None
    return None


def split(
    value: bytes,
    headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None = None,
    *,
    id_size: int = 8,
    header: str = APICURIO_VALUE_HEADER,
) -> tuple[int, bytes]:
    """``(schema id, Avro body)`` of one record value.

    An Apicurio id header (``header``, 8-byte big-endian) wins; otherwise the value must start
    with magic byte 0 and an ``id_size``-byte (8 Apicurio, 4 Confluent) big-endian id.
    """
    if id_size not in (4, 8):
        raise ValueError("id_size must be 4 (Confluent) or 8 (Apicurio)")
    data = bytes(value)
    in_header = _header(headers, header)
    if in_header is not None:
        if len(in_header) != 8:
            raise DecodeError(f"header {header} has {len(in_header)} bytes, expected an 8-byte id", field="headers")
        return struct.unpack(">q", in_header)[0], data
    if len(data) < 1 + id_size or data[0] != MAGIC:
        raise DecodeError(
            f"not a schema-registry Avro record: expected magic byte 0 and a {id_size}-byte schema id"
            f" (or the {header} header), got {data[:1 + id_size].hex() or 'nothing'}",
            field="value",
        )
    fmt = ">q" if id_size == 8 else ">i"
    return struct.unpack(fmt, data[1:1 + id_size])[0], data[1 + id_size:]


# --- the registry ------------------------------------------------------------------------------


def _http_get(url: str, timeout: float) -> bytes | None:
    """Body of a GET, ``None`` on 404; ``RegistryUnavailable`` on anything that may pass."""
    req = urllib.request.Request(url, headers={"Accept": "application/json, application/*+json, */*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # the configured registry's URL
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        if exc.code >= 500 or exc.code == 429:
            raise RegistryUnavailable(f"schema registry {url}: HTTP {exc.code}") from exc
        raise DecodeError(f"schema registry {url}: HTTP {exc.code}", field="schema_id") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise RegistryUnavailable(f"schema registry {url} unreachable ({exc})") from exc


class SchemaRegistry:
    """Avro writer schemas by id from Apicurio (``api="apicurio"``) or a Confluent-API registry.

    ``get(id)`` → the schema as a JSON-like dict, fetched once per id. ``fetch`` replaces the HTTP
    GET (``url`` → body bytes or ``None`` for "no such id"), e.g. in tests.
    """

    def __init__(
        self,
        url: str,
        *,
        api: str = "apicurio",
        id_kind: str = "globalId",
        timeout: float = 5.0,
        fetch: Callable[[str], bytes | None] | None = None,
    ) -> None:
        if api not in ("apicurio", "confluent"):
            raise ValueError("api must be 'apicurio' or 'confluent'")
        if id_kind not in ("globalId", "contentId"):
            raise ValueError("id_kind must be 'globalId' or 'contentId'")
        self.url = url.rstrip("/")
        self.api = api
        self.id_kind = id_kind
        self._fetch = fetch or (lambda u: _http_get(u, timeout))
        self._schemas: dict[int, dict | list | str] = {}

    def schema_url(self, schema_id: int) -> str:
        if self.api == "confluent":
            return f"{self.url}/schemas/ids/{schema_id}"
        return f"{self.url}/ids/{self.id_kind}s/{schema_id}"

    def get(self, schema_id: int) -> dict | list | str:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        url = self.schema_url(schema_id)
        body = self._fetch(url)
        if body is None:
            raise DecodeError(f"schema id {schema_id} is not in the registry ({url})", field="schema_id")
        try:
            doc = json.loads(body)
            if self.api == "confluent":
                if doc.get("schemaType", "AVRO") != "AVRO":
                    raise DecodeError(f"schema id {schema_id} is {doc['schemaType']}, not Avro", field="schema_id")
                doc = json.loads(doc["schema"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(f"schema id {schema_id} at {url} is not an Avro schema ({exc})", field="schema_id") from exc
        if not isinstance(doc, (dict, list, str)):
            raise DecodeError(f"schema id {schema_id} at {url} is not an Avro schema", field="schema_id")
        self._schemas[schema_id] = doc
        return doc


# --- schema handling ---------------------------------------------------------------------------


def strip_logical_types(schema: Any) -> Any:
    """A copy of an Avro schema without ``logicalType``: fastavro then returns the raw values
    (days, epoch numbers, decimal bytes), which is what the JSON converter writes."""
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        out = {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
        return out
    return schema


def _fullname(schema: Mapping[str, Any], namespace: str | None) -> tuple[str, str | None]:
    name = schema["name"]
    if "." in name:
        return name, name.rpartition(".")[0]
    ns = schema.get("namespace", namespace)
    return (f"{ns}.{name}" if ns else name), ns


def connect_schema(avro: Any) -> dict:
    """The Connect schema (JsonConverter's ``schema`` block) described by an Avro schema that
    Kafka Connect's AvroData wrote: struct fields, ``optional``, semantic ``name``,
    ``parameters`` and ``version`` from the ``connect.*`` properties."""
    named: dict[str, Any] = {}

    def walk(s: Any, namespace: str | None, optional: bool = False) -> dict:
        if isinstance(s, list):
            branches = [b for b in s if b != "null"]
            nullable = len(branches) < len(s)
            if len(branches) == 1:
                return walk(branches[0], namespace, optional or nullable)
            return {"type": "union", "optional": optional or nullable}  # not produced by Debezium
        if isinstance(s, str):
            if s in named:
                return walk(named[s], namespace, optional)
            qualified = f"{namespace}.{s}" if namespace and "." not in s else s
            if qualified in named:
                return walk(named[qualified], namespace, optional)
            return {"type": _CONNECT_TYPES.get(s, s), "optional": optional}
        t = s.get("type")
        if isinstance(t, (list, dict)) or (isinstance(t, str) and t not in _CONNECT_TYPES and t not in ("record", "array", "map")):
            return walk(t, namespace, optional)  # {"type": {...}} wrappers and named references
        out: dict[str, Any] = {}
        if t == "record":
            full, ns = _fullname(s, namespace)
            named[full] = s
            named.setdefault(s["name"], s)
            out["type"] = "struct"
            out["fields"] = [{**walk(f["type"], ns), "field": f["name"]} for f in s.get("fields", ())]
            out["name"] = s.get("connect.name", full)
        elif t in ("enum", "fixed"):
            full, _ = _fullname(s, namespace)
            named[full] = s
            named.setdefault(s["name"], s)
            out["type"] = _CONNECT_TYPES[t]
        elif t == "array":
            out["type"] = "array"
            out["items"] = walk(s["items"], namespace)
        elif t == "map":
            out["type"] = "map"
            out["keys"] = {"type": "string", "optional": False}
            out["values"] = walk(s["values"], namespace)
        else:
            out["type"] = s.get("connect.type") or _CONNECT_TYPES.get(t, t)
        out["optional"] = optional
        if "connect.name" in s and t != "record":
            out["name"] = s["connect.name"]
        if "connect.version" in s:
            out["version"] = s["connect.version"]
        params = dict(s.get("connect.parameters") or {})
        if s.get("logicalType") == "decimal" and "scale" not in params:
            params["scale"] = str(s.get("scale", 0))
        if params:
            out["parameters"] = params
        return out

    return walk(avro, None)


def to_json_value(value: Any) -> Any:
    """A raw fastavro value as Kafka Connect's JsonConverter writes it (bytes → base64 text)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


# --- the decoder -------------------------------------------------------------------------------


class _Writer:
    __slots__ = ("parsed", "connect")

    def __init__(self, schema: Any) -> None:
        try:
            self.parsed = fastavro.parse_schema(strip_logical_types(copy.deepcopy(schema)))
        except Exception as exc:  # fastavro raises assorted types on a bad schema
            raise DecodeError(f"registry schema does not parse ({type(exc).__name__}: {exc})", field="schema_id") from exc
        self.connect = connect_schema(schema)


class AvroRegistryDecoder:
    """Bytes of a registry-Avro record → ``(payload, connect_schema)`` as the JSON converter gives.

    ``decoder.decode(value, headers)`` → ``(None, None)`` for a tombstone. ``envelope(conv, …)``
    feeds the result to a ``DebeziumConverter`` and returns its ``(dataset, envelope)``.
    """

    def __init__(
        self,
        registry: SchemaRegistry,
        *,
        id_size: int = 8,
        header: str = APICURIO_VALUE_HEADER,
    ) -> None:
        self.registry = registry
        self.id_size = id_size
        self.header = header
        self._writers: dict[int, _Writer] = {}

    def writer(self, schema_id: int) -> _Writer:
        w = self._writers.get(schema_id)
        if w is None:
            w = self._writers[schema_id] = _Writer(self.registry.get(schema_id))
        return w

    def decode(
        self, value: bytes | None, headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None = None
    ) -> tuple[dict | None, dict | None]:
        if value is None:
            return None, None
        schema_id, body = split(value, headers, id_size=self.id_size, header=self.header)
        w = self.writer(schema_id)
        buf = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buf, w.parsed, None)
        except Exception as exc:  # fastavro raises assorted types on hostile bytes
            raise DecodeError(f"schema id {schema_id}: body does not decode ({type(exc).__name__}: {exc})", field="value") from exc
        if buf.tell() != len(body):
            raise DecodeError(f"schema id {schema_id}: {len(body) - buf.tell()} trailing bytes after the record", field="value")
        return to_json_value(record), w.connect

    def envelope(self, converter, value: bytes | None, headers=None):
        """``converter.from_payload`` of the decoded record (``None`` for tombstones, ``t``/``m``)."""
        payload, schema = self.decode(value, headers)
        if payload is None:
            return None
        return converter.from_payload(payload, schema)


def decode_debezium_record(converter, value: bytes, headers=None, avro: AvroRegistryDecoder | None = None):
    """``(dataset, envelope)`` of one record on a Debezium topic, whichever converter wrote it:
    a JSON-converter record starts with ``{``; anything else is taken as registry Avro and needs
    ``avro`` (``YURONG_WORKER_DEBEZIUM_REGISTRY_URL``) — without it the record is a ``DecodeError``
    (dead-lettered with the reason), never guessed at."""
    if bytes(value[:1]) == b"{":
        return converter.envelope(value)
    if avro is None:
        raise DecodeError("a schema-registry (Avro converter) record, but no registry is configured:"
                          " set YURONG_WORKER_DEBEZIUM_REGISTRY_URL", field="value")
    return avro.envelope(converter, value, headers)


def schema_id_of(value: bytes | None, headers, avro: AvroRegistryDecoder) -> int | None:
    """The registry schema id a record names, or None if it is not registry-framed."""
    if value is None or bytes(value[:1]) == b"{":
        return None
    try:
        return split(value, headers, id_size=avro.id_size, header=avro.header)[0]
    except DecodeError:
        return None
