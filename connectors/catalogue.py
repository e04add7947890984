"""The department catalogue: one TOML mapping per department in ``connectors/mappings/``.

A mapping names the source kind and, per dataset, the source table, key columns, the USCC
column, validation rules (required fields, enums, dates) and the PII class of each personal
field. It is checked against the dataset's Avro schema when loaded, so a typo fails at start-up
with a clear message instead of mid-stream.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from streams.errors import ConfigError
from streams.masking import MaskingPolicy
from streams.serde import SchemaStore, schema_store

MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"


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


def _load_department(path: Path, schemas: SchemaStore) -> Department:
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
        value_fields = {f["name"] for f in _value_schema(schema.parsed)["fields"]}
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
        )
        if not ds.table or not ds.key:
            raise ConfigError(f"{where}: 'table' and 'key' are required")
        named = [ds.uscc_column, *ds.key, *ds.required, *ds.enums, *ds.dates, *(r.field for r in ds.masking.rules)]
        unknown = sorted({n for n in named if n not in value_fields})
        if unknown:
            raise ConfigError(f"{where}: fields {unknown} are not in schema {schema_name} (has: {sorted(value_fields)})")
        datasets[name] = ds
    if not datasets:
        raise ConfigError(f"{path}: no [datasets.*] tables")
    options = {k: v for k, v in head.items() if k not in ("dept", "name_zh", "kind")}
    return Department(dept=dept, name_zh=head.get("name_zh", ""), kind=kind, options=options, datasets=datasets)


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


def load_catalogue(mappings_dir: Path = MAPPINGS_DIR, schemas: SchemaStore | None = None) -> Catalogue:
    """Load and check every ``<dept>.toml`` mapping."""
    schemas = schemas or schema_store()
    depts = {}
    for path in sorted(mappings_dir.glob("*.toml")):
        d = _load_department(path, schemas)
        depts[d.dept] = d
    return Catalogue(depts)


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    return load_catalogue()
