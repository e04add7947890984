"""Batch writer into the ``yurong`` database, through clickhouse-connect.

``chdb://<path>`` DSNs run the embedded engine (one process per data path); any other DSN
(``http://user:pass@host:8123/yurong``) reaches a ClickHouse server. All values go through the
client's parameter binding; identifiers are fixed names from ``TABLES``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from streams.errors import ConfigError, SinkError

SCHEMA_FILE = Path(__file__).with_name("schema.sql")

PROFILE_COLUMNS = (
    "uscc", "name", "status", "district_code", "industry_code", "registered_capital", "established_date",
    "legal_rep_pseudonym", "legal_rep_id_masked", "legal_rep_name_masked", "legal_rep_phone_masked",
    "address_masked", "abnormal_open_count", "abnormal_listings_total", "indicators", "ratings", "risk_score",
    "risk_level", "reason_codes", "score_factors", "version", "last_event_id", "last_event_ts", "updated_ts",
)

# table → insert column order (columns with defaults are left out)
TABLES: dict[str, tuple[str, ...]] = {
    "enterprise_profile": PROFILE_COLUMNS,
    "enterprise_profile_history": PROFILE_COLUMNS,  # the same row: every version of every profile
    "enterprise_event": (
        "event_id", "uscc", "dept", "dataset", "op", "attributes", "before", "source_topic", "source_partition",
        "source_offset", "position", "seq", "snapshot", "event_ts", "ingest_ts",
    ),
    "risk_change": (
        "change_id", "uscc", "category", "severity", "reason_codes", "before", "after", "score_before",
        "score_after", "level_before", "level_after", "source_dataset", "source_position", "source_seq",
        "event_ts", "detected_ts",
    ),
    "alert_delivery": (
        "alert_id", "bank_id", "consent_id", "change_id", "uscc", "category", "severity", "reason_codes",
        "topic", "partition", "offset", "event_ts", "detected_ts", "published_ts",
    ),
    "dlq_event": (
        "dlq_topic", "dlq_partition", "dlq_offset", "source_topic", "source_partition", "source_offset",
        "component", "error_kind", "error_class", "error_field", "error_message", "value_bytes", "dead_lettered_ts",
    ),
}


def open_client(dsn: str, database: str) -> Client:
    """A clickhouse-connect client for ``dsn``; the database is created if missing."""
    try:
        client = clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:  # clickhouse-connect raises several types for a bad DSN or engine lock
        raise ConfigError(f"cannot open ClickHouse at {_redact(dsn)}: {exc}") from exc
    client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": database})
    client.database = database
    return client


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


def schema_statements() -> list[str]:
    text = "\n".join(line for line in SCHEMA_FILE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("--"))
    # a statement ends with ';' at the end of a line (a ';' inside a COMMENT string does not)
    return [s.strip() for s in re.split(r";[ \t]*$", text, flags=re.MULTILINE) if s.strip()]


def apply_schema(client: Client) -> None:
    for stmt in schema_statements():
        client.command(stmt)


class ClickHouseWriter:
    """Writes row batches; one ``write`` per table per sink batch. Thread-safe (the embedded
    engine is shared with the read-only query endpoint)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.lock = threading.Lock()

    def write(self, table: str, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        """Insert ``rows`` (in ``TABLES[table]`` column order). ``dedup_token`` must be the same
        on every retry of the same batch; duplicates beyond it are removed by ReplacingMergeTree."""
        if not rows:
            return
        try:
            with self.lock:
                self.client.insert(
                    table, rows, column_names=list(TABLES[table]), settings={"insert_deduplication_token": dedup_token}
                )
        except Exception as exc:
            raise SinkError(f"insert of {len(rows)} rows into {table} failed: {exc}") from exc
