"""tax / court / environment: simulator → PostgreSQL → logical replication → dept.<dept>.* → ingest.

Each test gets databases of its own (``<dept>_t<hex>``), made by the simulator's ``create()``
through a DSN template, and dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import time

import psycopg2
import pytest

from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.market import Enterprise
from connectors.simulator.postgres_depts import PostgresDepartmentsSimulator, Rates
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer, find_pii
from streams.errors import DecodeError
from streams.settings import SourceSettings
from tests.conftest import TEST_KEY, drop_database, wait_for
from tests.harness import RunningConnector as _Running

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 3, 10)


class RunningConnector(_Running):
    def __init__(self, dept_name: str, dsn: str, bootstrap: str) -> None:
        super().__init__(dept_name, dsn, bootstrap, SourceSettings(status_interval_s=1.0))


def ours(reader, dept: str, db: str) -> list[tuple[object, dict]]:
    """(message, envelope) of our database; other tests' records on the shared topics are skipped."""
    schemas = schema_store()
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue
        try:
            _, env = schemas.decode(m.value(), f"dept/{dept}/" + m.topic().rsplit(".", 1)[1])
        except DecodeError:
            continue
        if env["source"]["db"] == db:
            out.append((m, env))
    return out


def _enterprises(n: int, seed: int) -> list[Enterprise]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        code = make_uscc(rng, pick_district(rng))
        out.append(Enterprise(code, code[2:8], i % 4 == 0))
    return out


@pytest.fixture
def departments(pg_admin_dsn, unique, settings):
    template = settings.source.postgres_template.get_secret_value().replace("{db}", "{db}_t" + unique)
    # Rates raised so that 50 enterprises produce rows in every table; the dynamics are the same.
    sim = PostgresDepartmentsSimulator(template, seed=29, rates=Rates(litigation_per_year=0.3,
                                                                      environment_penalty_per_year=0.3))
    yield sim
    for dept in sim.departments:
        drop_database(pg_admin_dsn, sim.database(dept))


def test_create_is_idempotent_and_uses_the_template(departments):
    dsns = departments.create()
    assert departments.create() == dsns
    assert set(dsns) == {"tax", "court", "environment"}
    for dept, dsn in dsns.items():
        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            assert pg.info.dbname == departments.database(dept) and pg.info.dbname.startswith(dept + "_t")
            cur.execute("SELECT relname, relreplident FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
            tables = dict(cur.fetchall())
        pg.close()
        assert set(tables) == {ds.schema_table for ds in catalogue().department(dept).datasets.values()}
        assert set(tables.values()) == {"f"}


@pytest.mark.parametrize("dept", ["tax", "court", "environment"])
def test_snapshot_and_stream_reach_kafka_and_pass_ingest(departments, dept, kafka_admin, topic_reader):
    departments.create()
    counts = departments.seed(_enterprises(50, seed=3), today=TODAY)
    department = catalogue().department(dept)
    expected = {ds.name: counts[ds.schema_table] for ds in department.datasets.values()}
    assert all(expected.values()), expected
    dsn, db = departments.dsn(dept), departments.database(dept)

    reader = topic_reader([ds.topic for ds in department.datasets.values()])
    conn = RunningConnector(dept, dsn, kafka_admin)
    try:
        def snapshot_counts() -> dict[str, int]:
            reader.poll()
            got = dict.fromkeys(expected, 0)
            for _, env in ours(reader, dept, db):
                if env["op"] == "r":
                    got[env["source"]["table"]] += 1
            return got

        wait_for(lambda: snapshot_counts() == expected, 90,
                 lambda: f"the snapshot of {expected}, got {snapshot_counts()} (connector error: {conn.error})")

        # live changes: step until this department saw some (others' changes go to the other DBs)
        streamed: list = []
        day = TODAY
        deadline = time.monotonic() + 60
        while not streamed and time.monotonic() < deadline:
            departments.step(20, day)
            day += dt.timedelta(days=1)
            reader.poll(1.0)
            streamed = [env for _, env in ours(reader, dept, db) if env["op"] in "cud"]
        assert streamed, f"no streamed change of {dept} arrived (connector error: {conn.error})"
        assert all(e["source"]["snapshot"] == "false" and e["source"]["ts_ms"] > 0 for e in streamed)
        updates = [e for e in streamed if e["op"] == "u"]
        assert all(e["before"] is not None for e in updates), "REPLICA IDENTITY FULL gives before-images"
    finally:
        conn.stop()
    assert conn.error is None

    pseudonymizer = Pseudonymizer(TEST_KEY.encode())
    now_ms = int(time.time() * 1000)
    raw_pii_seen = 0
    for m, env in ours(reader, dept, db):
        ds = department.datasets[env["source"]["table"]]
        assert m.topic() == ds.topic and env["source"]["dept"] == dept and env["source"]["connector"] == "postgresql"
        row = env["after"] or env["before"]
        assert m.key() == "|".join(str(row[k]) for k in ds.key).encode()
        raw_pii_seen += bool(find_pii(row))
        event = to_enterprise_event(ds, env, Provenance(m.topic(), m.partition(), m.offset()), pseudonymizer, now_ms)
        assert event["uscc"] == row["uscc"] and event["dataset"] == ds.name
        assert find_pii(event) is None
        for rule in ds.masking.rules:
            raw = row.get(rule.field)
            if raw:
                assert event["attributes"][rule.field] != raw, f"{ds.qualified}.{rule.field} left unmasked"
                if rule.pii_class == "id_number":
                    assert re.fullmatch(r"p1_[0-9a-f]{32}", event["attributes"][f"{rule.field}_pseudonym"])
    if dept in ("tax", "court"):
        assert raw_pii_seen, "raw PII (ID or phone numbers) travels on dept.* and is masked by ingest"
