"""ClickHouse (or embedded chDB) schema and batch writer."""

from sinks.clickhouse.writer import TABLES, ClickHouseWriter, apply_schema, open_client

__all__ = ["TABLES", "ClickHouseWriter", "apply_schema", "open_client"]
