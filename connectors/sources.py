"""Build the ``Source`` of a department from its catalogue entry: one constructor per kind.

Every source class takes ``(dept, location, offsets, schemas, settings)``: ``location`` is the
DSN (postgres, mysql, polling) or the drop folder (file); ``settings`` the ``SourceSettings``
for intervals. Kinds whose module is not there yet fail with a clear error.
"""

from __future__ import annotations

import importlib

from connectors.base import Source
from connectors.offsets import OffsetStore
from streams.codecs.serde import SchemaStore
from streams.core.catalogue import Department
from streams.errors import ConfigError
from streams.settings import Settings

# kind → (module, class)
SOURCE_CLASSES = {
    "postgres": ("connectors.postgres", "PostgresSource"),
    "mysql": ("connectors.mysql", "MySqlSource"),
    "polling": ("connectors.polling", "PollingSource"),
    "file": ("connectors.filedrop", "FileDropSource"),
}


def location_of(dept: Department, settings: Settings) -> str:
    """DSN or folder the department's source reads."""
    if dept.kind == "file":
        return str(settings.drop_dir / dept.dept)
    return settings.source.dsn(dept.dept, dept.kind)


def source_class(kind: str) -> type:
    module_name, class_name = SOURCE_CLASSES[kind]
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"no {kind} connector in this build ({exc})") from None


def make_source(dept: Department, settings: Settings, offsets: OffsetStore, schemas: SchemaStore,
                resnapshot: bool = False) -> Source:
    cls = source_class(dept.kind)
    return cls(dept, location_of(dept, settings), offsets, schemas, settings.source, resnapshot=resnapshot)
