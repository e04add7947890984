"""Avro single-object encoding with the schemas in ``avro/``.

Framing (Avro spec, "Single-object encoding"): ``C3 01`` + the schema's 8-byte CRC-64-AVRO
fingerprint (little-endian) + the binary-encoded body. Any consumer that has the ``.avsc``
files can decode every yurong message without a registry service.

A schema is named by its path below ``avro/`` without the suffix, e.g.
``dept/market/enterprise_registration`` or ``enterprise/event``.

Evolution: when a schema changes, its previous version is kept as
``<folder>/history/<name>.v<N>.avsc``. Records written with an old version are still decoded,
resolved to the current schema by Avro's schema-resolution rules (new fields take their
defaults); ``tests/unit/test_schema_evolution.py`` checks each step is BACKWARD compatible.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.errors import ConfigError, DecodeError, SchemaMismatchError

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8


@dataclass(frozen=True)
class AvroSchema:
    """One parsed schema and its single-object header. ``version`` is None for the current
    schema of ``name`` and N for ``history/<name>.vN.avsc``.

    ``parsed`` is the plain parsed schema (for fingerprints and for code that walks the fields);
    ``codec`` is the same schema parsed for fastavro's reader and writer. fastavro marks a schema
    it parsed itself and trusts the mark; an unmarked schema is parsed again on every call —
    about half the time of decoding a department record (measured in bench/risk_bench.py)."""

    name: str
    parsed: Any
    fingerprint: bytes
    codec: Any = None
    version: int | None = None

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


class SchemaStore:
    """All schemas of an ``avro/`` folder, by name and by fingerprint."""

    def __init__(self, avro_dir: Path) -> None:
        self._by_name: dict[str, AvroSchema] = {}
        self._by_fingerprint: dict[bytes, AvroSchema] = {}
        self._history: dict[str, list[AvroSchema]] = {}
        if not avro_dir.is_dir():
            raise ConfigError(f"Avro schema folder {avro_dir} does not exist (set YURONG_AVRO_DIR)")
        for path in sorted(avro_dir.rglob("*.avsc")):
            rel = path.relative_to(avro_dir)
            if rel.parent.name == "history":
                stem, _, v = path.stem.rpartition(".v")
                if not stem or not v.isdigit():
                    raise ConfigError(f"{path}: history files are named <schema>.v<N>.avsc")
                name, version = (rel.parent.parent / stem).as_posix(), int(v)
            else:
                name, version = rel.with_suffix("").as_posix(), None
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                parsed = fastavro.parse_schema(raw, _write_hint=False)
            except (ValueError, fastavro.schema.SchemaParseException) as exc:
                raise ConfigError(f"schema {path} does not parse: {exc}") from exc
            fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
            schema = AvroSchema(name=name, parsed=parsed, fingerprint=fp, codec=fastavro.parse_schema(raw),
                                version=version)
            if version is None:
                self._by_name[name] = schema
            else:
                self._history.setdefault(name, []).append(schema)
            self._by_fingerprint.setdefault(fp, schema)  # an unchanged history copy keeps the current entry
        orphans = sorted(set(self._history) - set(self._by_name))
        if orphans:
            raise ConfigError(f"history versions without a current schema: {orphans}")

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def history(self, name: str) -> list[AvroSchema]:
        """Earlier versions of ``name``, oldest first."""
        return sorted(self._history.get(name, []), key=lambda s: s.version or 0)

    def get(self, name: str) -> AvroSchema:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"no Avro schema named {name!r} (known: {', '.join(self.names())})") from None

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode ``record`` with schema ``name`` as an Avro single object."""
        schema = self.get(name)
        buf = io.BytesIO()
        buf.write(schema.header)
        fastavro.schemaless_writer(buf, schema.codec, record)
        return buf.getvalue()

    def decode(self, data: bytes | None, expected: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode single-object bytes; return ``(schema name, record)``.

        Raises ``DecodeError`` for anything that is not a well-formed single object of a known
        schema, and ``SchemaMismatchError`` if ``expected`` is given and the writer schema differs.
        """
        if not data or len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not an Avro single-object encoding (missing C3 01 header)")
        schema = self._by_fingerprint.get(bytes(data[2:HEADER_LEN]))
        if schema is None:
            raise DecodeError(f"unknown schema fingerprint {bytes(data[2:HEADER_LEN]).hex()}")
        if expected is not None and schema.name != expected:
            raise SchemaMismatchError(f"expected schema {expected!r}, got {schema.name!r}")
        reader = None if schema.version is None else self._by_name[schema.name].codec
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            record = fastavro.schemaless_reader(buf, schema.codec, reader)
        except Exception as exc:  # fastavro raises assorted types on hostile bytes
            raise DecodeError(f"{schema.name}: body does not decode ({type(exc).__name__}: {exc})") from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{schema.name}: {len(data) - buf.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError(f"{schema.name}: not a record schema")
        return schema.name, record


@lru_cache(maxsize=4)
def schema_store(avro_dir: Path | None = None) -> SchemaStore:
    """The process-wide store for ``avro_dir`` (default: the settings' folder)."""
    if avro_dir is None:
        from streams.settings import get_settings

        avro_dir = get_settings().paths.avro_dir
    return SchemaStore(avro_dir)
