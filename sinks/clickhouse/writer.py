"""Batch writer into the ``yurong`` database, through clickhouse-connect.

``chdb://<path>`` DSNs run the embedded engine (one process per data path); any other DSN
(``http://user:pass@host:8123/yurong``) reaches a ClickHouse server. All values go through the
client's parameter binding; identifiers are fixed names from ``TABLES``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from streams.errors import ConfigError, SinkError
from streams.settings import RetentionSettings, get_settings

log = logging.getLogger(__name__)

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
    "connector_heartbeat": ("source", "dept", "kind", "position", "snapshotting", "events", "lag", "ts"),
    "dept_assessment": ("day", "dept", "dataset", "score", "grade", "dimensions", "indicators", "reasons", "live",
                        "computed_ts"),
    "dlq_event": (
        "dlq_topic", "dlq_partition", "dlq_offset", "source_topic", "source_partition", "source_offset",
        "component", "error_kind", "error_class", "error_field", "error_message", "value_bytes", "dead_lettered_ts",
    ),
}


def open_client(dsn: str, database: str, wait_s: float = 0.0) -> Client:
    """A clickhouse-connect client for ``dsn``; the database is created if missing. An embedded
    store (``chdb://<folder>``) that another process holds is waited for, up to ``wait_s``, with a
    log line every few seconds, instead of failing at once."""
    if dsn.startswith("chdb://"):
        _private_store(Path(dsn.removeprefix("chdb://")))
        _wait_for_store(Path(dsn.removeprefix("chdb://")), wait_s)
    try:
        client = clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:  # clickhouse-connect raises several types for a bad DSN or engine lock
        raise ConfigError(f"cannot open ClickHouse at {_redact(dsn)}: {exc}") from exc
    client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": database})
    client.database = database
    return client


def _private_store(folder: Path) -> None:
    """The embedded store is the owner's only: its folder 0700 and what is already in it without
    group or other access (a store made before), and this process's umask 077, so the parts chDB
    writes from now on are 0600 too. The process is the sink, the store's one owner."""
    os.umask(os.umask(0o077) | 0o077)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                os.chmod(path, mode & 0o700)
    folder.chmod(0o700)


def _store_held(folder: Path) -> bool:
    """True while another process holds the embedded store in ``folder``: ClickHouse keeps an
    exclusive flock on its ``status`` file for as long as it runs. (chDB cannot be opened again in
    a process after a failed open, so the lock is probed before opening, not by trying.)"""
    status = folder / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _wait_for_store(folder: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    next_log = 0.0
    while _store_held(folder):
        if time.monotonic() >= deadline:
            raise ConfigError(f"the ClickHouse store {folder} is held by another process (is another sink running?)")
        if time.monotonic() >= next_log:
            log.warning("the ClickHouse store %s is held by another process; waiting up to %.0f s more",
                        folder, deadline - time.monotonic())
            next_log = time.monotonic() + 5.0
        time.sleep(0.5)


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


def schema_statements() -> list[str]:
    text = "\n".join(line for line in SCHEMA_FILE.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("--"))
    # a statement ends with ';' at the end of a line (a ';' inside a COMMENT string does not)
    return [s.strip() for s in re.split(r";[ \t]*$", text, flags=re.MULTILINE) if s.strip()]


# ``ALTER TABLE <table> MODIFY TTL … toIntervalDay({<setting>:UInt32})`` of schema.sql
_TTL_STATEMENT = re.compile(r"ALTER TABLE (\w+) MODIFY TTL .*\{(\w+):UInt32\}", re.DOTALL)
# the day count in a table's stored TTL (``system.tables.create_table_query``): the server renders a
# bound parameter as ``toIntervalDay(_CAST(30, 'UInt32'))``, a literal as ``toIntervalDay(30)``
_STORED_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((?:_CAST\()?(\d+)\b", re.DOTALL)


def stored_ttl_days(client: Client, table: str, database: str | None = None) -> int | None:
    """The day count of ``table``'s TTL as stored (in ``database``, default the client's), None
    without a TTL in days."""
    query = client.command("SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                           parameters={"db": database or client.database, "t": table})
    found = _STORED_TTL_DAYS.search(str(query))
    return int(found.group(1)) if found else None


def apply_schema(client: Client, retention: RetentionSettings | None = None) -> None:
    """Create what is missing (schema.sql), then give every table holding enterprise data its TTL
    from ``retention`` (default: the process's ``YURONG_RETENTION_*`` settings). The days are bound
    as query parameters (validated ints of the settings, never text); a TTL is altered only when it
    differs from the setting, since ClickHouse then re-applies it to every stored part."""
    days = (retention or get_settings().retention).model_dump()
    for stmt in schema_statements():
        ttl = _TTL_STATEMENT.match(stmt)
        if ttl is None:
            client.command(stmt)
            continue
        table, setting = ttl.groups()
        wanted = int(days[setting])  # a KeyError here is a schema.sql naming no RetentionSettings field
        current = stored_ttl_days(client, table)
        if current != wanted:
            log.info("retention of %s: %s → %d days", table, f"{current} days" if current is not None else "none", wanted)
            client.command(stmt, parameters={setting: wanted})


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
