"""The department catalogue: one TOML mapping per department in ``streams/core/departments/``.

A mapping names the source kind and, per dataset, the source table, key columns, the USCC
column, validation rules and the PII class of each personal field. It is checked against the
dataset's Avro schema when loaded, so a typo fails at start-up with a clear message instead of
mid-stream.

Validation keys of a ``[datasets.<name>]`` table (all optional but ``table`` and ``key``)::

    required     = [fields]             not null, not empty
    dates        = [fields]             Avro ``date`` values
    non_negative = [fields]             amounts and counts: finite and >= 0
    periods      = [fields]             month text ``YYYY-MM`` (month 01-12)
    [datasets.<name>.enums]   field = [allowed values]
    [datasets.<name>.bounds]  field = [min, max]   inclusive, in the field's own unit
                                                   (a rate 0..1 is a fraction, 0..100 a percent)
    [datasets.<name>.pii]     field = "class" or {class = ..., actions = [...]}
    [datasets.<name>.id_number_when]  field = {other = [values]}
                                      a field of PII class ``id_number`` that holds a person's
                                      ID number only in rows where ``other`` is one of ``values``
                                      (an equity pledgor: a person's ID or an enterprise's USCC);
                                      the GB 11643 check applies to those rows only

Every field of PII class ``id_number`` must be a plausible 居民身份证号 (GB 11643 check digit,
birth date, region) unless null or empty.

``streams.core.ingest.validate_row`` applies them to every row; a violation dead-letters the record.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from streams.core.masking import MaskingPolicy
from streams.errors import ConfigError
from streams.settings import get_settings

MAPPINGS_DIR = Path(__file__).resolve().parent / "departments"


class NamedSchema(Protocol):
    """A schema as the catalogue reads it: the parsed JSON of its ``.avsc``."""

    @property
    def parsed(self) -> Any: ...


class SchemaSource(Protocol):
    """Where the catalogue finds a dataset's Avro schema by name (``dept/<dept>/<dataset>``):
    :class:`AvscFolder`, or the codecs' ``SchemaStore``."""

    def get(self, name: str) -> NamedSchema: ...


@dataclass(frozen=True)
class AvscFile:
    """One ``.avsc`` file's schema, by name."""

    name: str
    parsed: Any


class AvscFolder:
    """The ``.avsc`` files of an ``avro/`` folder as plain JSON: all the catalogue needs to check a
    mapping against its schema (field names and types), without the Avro codec."""

    def __init__(self, avro_dir: Path) -> None:
        self.avro_dir = avro_dir

    def get(self, name: str) -> AvscFile:
        path = self.avro_dir / f"{name}.avsc"
        try:
            return AvscFile(name, json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"no Avro schema named {name!r} in {self.avro_dir}") from None
        except ValueError as exc:
            raise ConfigError(f"schema {path} is not valid JSON: {exc}") from None


DATASET_KEYS = frozenset({
    "table", "key", "uscc_column", "required", "dates", "enums", "pii", "non_negative", "periods", "bounds",
    "id_number_when",
})
_NUMERIC = frozenset({"int", "long", "float", "double"})


@dataclass(frozen=True)
class Dataset:
    """One department dataset: a source table and the rules its rows obey."""

    dept: str
    name: str
    table: str
    key: tuple[str, ...]
    uscc_column: str
    required: tuple[str, ...]
    enums: dict[str, tuple[str, ...]]
    dates: tuple[str, ...]
    masking: MaskingPolicy
    non_negative: tuple[str, ...] = ()
    periods: tuple[str, ...] = ()
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    id_number_when: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def id_number_fields(self) -> tuple[str, ...]:
        """The fields of PII class ``id_number``: each checked as a 居民身份证号 at ingest."""
        return tuple(r.field for r in self.masking.rules if r.pii_class == "id_number")

    @property
    def qualified(self) -> str:
        """``<dept>.<dataset>``, e.g. ``market.enterprise_registration``."""
        return f"{self.dept}.{self.name}"

    @property
    def topic(self) -> str:
        return f"dept.{self.dept}.{self.name}"

    @property
    def schema_name(self) -> str:
        return f"dept/{self.dept}/{self.name}"

    @property
    def schema_table(self) -> str:
        """Table name without its schema: ``public.x`` → ``x``."""
        return self.table.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Department:
    dept: str
    name_zh: str
    kind: str
    options: dict[str, str]
    datasets: dict[str, Dataset] = field(default_factory=dict)


def _load_department(path: Path, schemas: SchemaSource) -> Department:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    head = doc.get("department") or {}
    dept = head.get("dept")
    if not dept or dept != path.stem:
        raise ConfigError(f"{path}: [department] dept must be {path.stem!r}, got {dept!r}")
    kind = head.get("kind")
    if kind not in ("postgres", "mysql", "polling", "file"):
        raise ConfigError(f"{path}: kind {kind!r} is not one of postgres, mysql, polling, file")
    datasets: dict[str, Dataset] = {}
    for name, spec in (doc.get("datasets") or {}).items():
        where = f"{path.name} [datasets.{name}]"
        schema_name = f"dept/{dept}/{name}"
        try:
            schema = schemas.get(schema_name)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        value_schema = _value_schema(schema.parsed)
        value_fields = {f["name"] for f in value_schema["fields"]}
        unknown_keys = sorted(set(spec) - DATASET_KEYS)
        if unknown_keys:
            raise ConfigError(f"{where}: unknown keys {unknown_keys} (known: {', '.join(sorted(DATASET_KEYS))})")
        ds = Dataset(
            dept=dept,
            name=name,
            table=spec.get("table") or "",
            key=tuple(spec.get("key") or ()),
            uscc_column=spec.get("uscc_column", "uscc"),
            required=tuple(spec.get("required") or ()),
            enums={k: tuple(v) for k, v in (spec.get("enums") or {}).items()},
            dates=tuple(spec.get("dates") or ()),
            masking=_masking_policy(where, f"{dept}.{name}", spec.get("pii") or {}),
            non_negative=_field_list(where, "non_negative", spec),
            periods=_field_list(where, "periods", spec),
            bounds=_bounds(where, spec.get("bounds") or {}),
            id_number_when=_id_number_when(where, spec.get("id_number_when") or {}),
        )
        if not ds.table or not ds.key:
            raise ConfigError(f"{where}: 'table' and 'key' are required")
        named = [ds.uscc_column, *ds.key, *ds.required, *ds.enums, *ds.dates, *(r.field for r in ds.masking.rules),
                 *ds.non_negative, *ds.periods, *ds.bounds, *ds.id_number_when,
                 *(c for cond in ds.id_number_when.values() for c in cond)]
        unknown = sorted({n for n in named if n not in value_fields})
        if unknown:
            raise ConfigError(f"{where}: fields {unknown} are not in schema {schema_name} (has: {sorted(value_fields)})")
        _check_types(where, schema_name, value_schema, ds)
        not_ids = sorted(set(ds.id_number_when) - set(ds.id_number_fields))
        if not_ids:
            raise ConfigError(f"{where}: id_number_when names {not_ids}, which are not fields of PII class id_number")
        datasets[name] = ds
    if not datasets:
        raise ConfigError(f"{path}: no [datasets.*] tables")
    options = {k: v for k, v in head.items() if k not in ("dept", "name_zh", "kind")}
    return Department(dept=dept, name_zh=head.get("name_zh", ""), kind=kind, options=options, datasets=datasets)


def _field_list(where: str, key: str, spec: dict) -> tuple[str, ...]:
    value = spec.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of field names, got {value!r}")
    return tuple(value)


def _bounds(where: str, spec: object) -> dict[str, tuple[float, float]]:
    """``[datasets.x.bounds]`` → ``{field: (min, max)}``, both finite numbers with min <= max."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: bounds must be a table of field = [min, max]")
    out = {}
    for name, pair in spec.items():
        ok = (isinstance(pair, list) and len(pair) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair))
        if not ok or pair[0] > pair[1]:
            raise ConfigError(f"{where}: bounds.{name} must be [min, max] with finite numbers and min <= max, got {pair!r}")
        out[name] = (float(pair[0]), float(pair[1]))
    return out


def _id_number_when(where: str, spec: object) -> dict[str, dict[str, tuple[str, ...]]]:
    """``[datasets.x.id_number_when]`` → ``{id field: {condition field: (values, …)}}``."""
    ok = isinstance(spec, dict) and all(
        isinstance(cond, dict) and cond and all(
            isinstance(vals, list) and vals and all(isinstance(v, str) for v in vals) for vals in cond.values())
        for cond in spec.values())
    if not ok:
        raise ConfigError(f"{where}: id_number_when must be a table of field = {{other_field = [values]}}, got {spec!r}")
    assert isinstance(spec, dict)
    return {name: {other: tuple(vals) for other, vals in cond.items()} for name, cond in spec.items()}


def _avro_base_type(avro_type: object) -> str:
    """``["null", {"type": "int", "logicalType": "date"}]`` → ``"int"``; logical types keep their base."""
    t = avro_type
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if isinstance(t, dict):
        if t.get("logicalType"):
            return f"{t.get('type')}:{t['logicalType']}"
        t = t.get("type")
    return str(t)


def _check_types(where: str, schema_name: str, value_schema: dict, ds: Dataset) -> None:
    """Amount and bound rules only on numbers, period rules only on text: a rule on a field of
    the wrong type would never hold (or never be checked) at run time."""
    types = {f["name"]: _avro_base_type(f["type"]) for f in value_schema["fields"]}
    for rule, fields, wanted in (("non_negative", ds.non_negative, _NUMERIC), ("bounds", ds.bounds, _NUMERIC),
                                 ("periods", ds.periods, {"string"})):
        wrong = sorted(f for f in fields if types[f] not in wanted)
        if wrong:
            shown = ", ".join(f"{f} ({types[f]})" for f in wrong)
            raise ConfigError(f"{where}: {rule} applies to {' or '.join(sorted(wanted))} fields; "
                              f"in schema {schema_name} these are not: {shown}")


def _masking_policy(where: str, dataset: str, pii: dict) -> MaskingPolicy:
    try:
        return MaskingPolicy.from_mapping(dataset, pii)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _value_schema(envelope: dict) -> dict:
    """The row record inside a change envelope (the non-null branch of ``after``)."""
    for f in envelope["fields"]:
        if f["name"] == "before":
            return next(t for t in f["type"] if isinstance(t, dict))
    raise ConfigError(f"schema {envelope.get('name')} is not a change envelope (no 'before' field)")


@dataclass(frozen=True)
class Catalogue:
    departments: dict[str, Department]

    def dataset(self, qualified: str) -> Dataset:
        dept, _, name = qualified.partition(".")
        try:
            return self.departments[dept].datasets[name]
        except KeyError:
            raise ConfigError(f"unknown dataset {qualified!r}") from None

    def by_topic(self) -> dict[str, Dataset]:
        return {ds.topic: ds for d in self.departments.values() for ds in d.datasets.values()}

    def department(self, dept: str) -> Department:
        try:
            return self.departments[dept]
        except KeyError:
            raise ConfigError(f"unknown department {dept!r} (known: {', '.join(sorted(self.departments))})") from None


def load_catalogue(mappings_dir: Path = MAPPINGS_DIR, schemas: SchemaSource | None = None) -> Catalogue:
    """Load and check every ``<dept>.toml`` mapping."""
    source: SchemaSource = schemas or AvscFolder(get_settings().paths.avro_dir)
    depts = {}
    for path in sorted(mappings_dir.glob("*.toml")):
        d = _load_department(path, source)
        depts[d.dept] = d
    return Catalogue(depts)


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    return load_catalogue()
