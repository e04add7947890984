"""Retention (TTL from YURONG_RETENTION_*) and erasure of one enterprise on an embedded chDB.

One store for the module (chDB holds one data path per process); each test works in a database
of its own.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from connectors.simulator.identities import make_uscc
from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
from sinks.clickhouse.erase import ERASABLE, erase_enterprise
from sinks.clickhouse.writer import stored_ttl_days
from sinks.rows import alert_row, change_row, event_row, profile_row
from streams.settings import RetentionSettings
from tests.integration.test_clickhouse_sink import alert, change, event, profile

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
TTL_TABLES = {  # table → the RetentionSettings field of its TTL
    "enterprise_profile": "profile_days", "enterprise_profile_history": "profile_days", "enterprise_event": "event_days",
    "risk_change": "risk_change_days", "alert_delivery": "alert_delivery_days", "dlq_event": "dlq_event_days",
}


@pytest.fixture(scope="module")
def chdb(tmp_path_factory) -> Iterator[Client]:
    client = open_client(f"chdb://{tmp_path_factory.mktemp('chdb')}", "yurong")
    yield client
    client.close()


@pytest.fixture
def db(chdb) -> Client:
    """The module's client, switched to a fresh database."""
    name = f"yurong_{uuid.uuid4().hex[:8]}"
    chdb.command("CREATE DATABASE {db:Identifier}", parameters={"db": name})
    chdb.database = name
    return chdb


def rows_of(uscc: str, ts_ms: int, n: int = 1) -> dict[str, list[list]]:
    """Rows of every table for ``uscc`` whose time columns are ``ts_ms`` (n versions/events)."""
    out: dict[str, list[list]] = {t: [] for t in TTL_TABLES}
    for i in range(1, n + 1):
        p = {**profile(uscc, i), "last_event_ts_ms": ts_ms, "updated_ts_ms": ts_ms}
        e = {**event(uscc, i), "event_ts_ms": ts_ms, "ingest_ts_ms": ts_ms}
        c = {**change(uscc, i), "event_ts_ms": ts_ms, "detected_ts_ms": ts_ms}
        a = {**alert("b0001", c), "published_ts_ms": ts_ms}
        out["enterprise_profile"].append(profile_row(p))
        out["enterprise_profile_history"].append(profile_row(p))
        out["enterprise_event"].append(event_row(e))
        out["risk_change"].append(change_row(c))
        out["alert_delivery"].append(alert_row(a, "alerts.b0001", 0, i))
        out["dlq_event"].append([f"dlq.test.{uscc}", 0, i, "enterprise.events", 0, i, "worker", "validation",
                                 "ValidationError", "", "a test dead letter", 10, ts_ms])
    return out


def write(client: Client, rows: dict[str, list[list]]) -> None:
    writer = ClickHouseWriter(client)
    for table, batch in rows.items():
        writer.write(table, batch, uuid.uuid4().hex)


def count(client: Client, table: str, column: str, value: str) -> int:
    return int(client.query(f"SELECT count() FROM {table} WHERE {column} = {{v:String}}",
                            parameters={"v": value}).result_rows[0][0])


def mutations(client: Client) -> int:
    return int(client.query("SELECT count() FROM system.mutations WHERE database = {db:String}",
                            parameters={"db": client.database}).result_rows[0][0])


def test_every_table_with_enterprise_data_gets_its_ttl_from_the_settings(db):
    retention = RetentionSettings(profile_days=400, event_days=300, risk_change_days=200, alert_delivery_days=100,
                                  dlq_event_days=30)
    apply_schema(db, retention)
    for table, setting in TTL_TABLES.items():
        assert stored_ttl_days(db, table) == getattr(retention, setting), table
        query = db.command("SELECT create_table_query FROM system.tables WHERE database = {d:String} AND name = {t:String}",
                           parameters={"d": db.database, "t": table})
        assert "TTL toDateTime(" in str(query) and "toIntervalDay(" in str(query), query
    assert stored_ttl_days(db, "sql_audit") is None  # left to the audit's own retention

    # again with the same settings: nothing is altered (an ALTER of a TTL rewrites every part)
    before = mutations(db)
    apply_schema(db, retention)
    assert mutations(db) == before
    # a changed setting is applied, the others stay
    apply_schema(db, retention.model_copy(update={"event_days": 10}))
    assert stored_ttl_days(db, "enterprise_event") == 10
    assert stored_ttl_days(db, "risk_change") == 200


def test_defaults_are_documented_values(db):
    apply_schema(db, RetentionSettings())
    assert {t: stored_ttl_days(db, t) for t in TTL_TABLES} == {
        "enterprise_profile": 1826, "enterprise_profile_history": 1826, "enterprise_event": 1826,
        "risk_change": 1826, "alert_delivery": 1826, "dlq_event": 90}


def test_rows_older_than_the_retention_disappear(db):
    apply_schema(db, RetentionSettings(profile_days=30, event_days=30, risk_change_days=30, alert_delivery_days=30,
                                       dlq_event_days=30))
    rng = random.Random(uuid.uuid4().hex)
    old, young = make_uscc(rng, "500103"), make_uscc(rng, "500104")
    now = int(time.time() * 1000)
    write(db, rows_of(old, now - 31 * DAY_MS))
    write(db, rows_of(young, now - 29 * DAY_MS))
    for table in TTL_TABLES:
        db.command("OPTIMIZE TABLE {t:Identifier} FINAL", parameters={"t": table})
    for table in ERASABLE:
        assert count(db, table, "uscc", old) == 0, f"{table}: a row older than the retention is still there"
        assert count(db, table, "uscc", young) == 1, f"{table}: a row within the retention is gone"
    assert count(db, "dlq_event", "dlq_topic", f"dlq.test.{old}") == 0
    assert count(db, "dlq_event", "dlq_topic", f"dlq.test.{young}") == 1


def test_erase_enterprise_deletes_its_rows_in_every_table_and_nothing_else(db):
    apply_schema(db, RetentionSettings())
    rng = random.Random(uuid.uuid4().hex)
    gone, kept = make_uscc(rng, "500103"), make_uscc(rng, "500105")
    now = int(time.time() * 1000)
    write(db, rows_of(gone, now, n=3))
    write(db, rows_of(kept, now, n=2))

    erased = erase_enterprise(db, gone)

    # (the latest-profile table keeps one row per enterprise: an insert's versions collapse at once)
    assert erased == {"enterprise_profile": 1, "enterprise_profile_history": 3, "enterprise_event": 3,
                      "risk_change": 3, "alert_delivery": 3}
    for table in ERASABLE:
        assert count(db, table, "uscc", gone) == 0, table
        assert count(db, table, "uscc", kept) == (1 if table == "enterprise_profile" else 2), table
    # physically gone: no active part holds the erased enterprise any more (a mutation, not a mask)
    with_deleted_mask = db.query("SELECT count() FROM enterprise_event WHERE uscc = {u:String} "
                                 "SETTINGS apply_deleted_mask = 0", parameters={"u": gone}).result_rows[0][0]
    assert with_deleted_mask == 0
    # again: nothing left, nothing done
    assert erase_enterprise(db, gone) == dict.fromkeys(ERASABLE, 0)


def test_erase_refuses_what_is_not_a_uscc(db):
    from streams.errors import ConfigError

    apply_schema(db, RetentionSettings())
    with pytest.raises(ConfigError):
        erase_enterprise(db, "x' OR 1=1 --")
