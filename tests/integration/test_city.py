"""`yurong simulate` plus `yurong connect --all` bring every catalogue dataset onto
Kafka from its real kind of source (PostgreSQL CDC, MariaDB binlog, polling, file drop); and the
seed that fills those sources in chunks (COPY, LOAD DATA) stores exactly the generated rows."""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal

import psycopg2
import pymysql
import pytest
from psycopg2 import sql

from connectors.fleet import Fleet
from connectors.mysql import parse_dsn
from connectors.simulator import bulk, mysql_depts, postgres_depts
from connectors.simulator.city import CitySimulator
from connectors.simulator.file_depts import COLUMNS as FILE_COLUMNS
from connectors.simulator.mysql_depts import MySqlDepartmentsSimulator
from connectors.simulator.polled_depts import PolledDepartmentsSimulator
from connectors.simulator.postgres_depts import Rates, RowGenerator
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.errors import DecodeError
from streams.settings import Settings
from tests.conftest import drop_database, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def city_settings(pg_admin_dsn, unique, tmp_path, monkeypatch):
    """Settings whose department databases (every kind but files) are this test's own."""
    cat = catalogue()
    base = Settings().source
    dsns = {d.dept: base.dsn(d.dept, d.kind).rsplit("/", 1)[0] + f"/{d.dept}_s{unique}"
            for d in cat.departments.values() if d.kind != "file"}
    monkeypatch.setenv("YURONG_SOURCE_DSNS", json.dumps(dsns))
    monkeypatch.setenv("YURONG_SOURCE_DROP_DIR", str(tmp_path / "drops"))
    try:
        yield Settings()
    finally:
        _drop_city(cat, dsns, pg_admin_dsn)


def _drop_city(cat, dsns: dict[str, str], pg_admin_dsn: str) -> None:
    for dept, dsn in dsns.items():
        if cat.department(dept).kind == "mysql":
            conn_settings, db = parse_dsn(dsn)
            admin = pymysql.connect(**conn_settings, autocommit=True)
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")  # generated name
            admin.close()
        else:
            drop_database(pg_admin_dsn, dsn.rsplit("/", 1)[1])


def test_every_dataset_reaches_kafka_from_its_kind_of_source(city_settings, kafka_admin, unique, monkeypatch,
                                                             topic_reader):
    cat = catalogue()
    monkeypatch.setenv("YURONG_SOURCE_POLL_INTERVAL_S", "0.3")
    monkeypatch.setenv("YURONG_KAFKA_BOOTSTRAP_SERVERS", kafka_admin["bootstrap.servers"])
    settings = Settings()
    dsns = {dept: dsn.get_secret_value() for dept, dsn in settings.source.dsns.items()}
    datasets = {ds.topic: ds for ds in cat.by_topic().values()}
    reader = topic_reader(sorted(datasets))

    city = CitySimulator(settings, seed=int(unique[:6], 16), distress_share=0.2)
    # Court and environment events are rare at realistic rates; raise them so that a small city
    # has rows in every table (the dynamics are the same).
    city.groups["postgres"].rows = RowGenerator(int(unique[:6], 16), Rates(litigation_per_year=0.5,
                                                                            environment_penalty_per_year=0.5))
    fleet = Fleet(cat, settings, schema_store())
    thread = threading.Thread(target=fleet.run, daemon=True)
    try:
        city.create()
        usccs = city.seed(200)
        # a small city may have no abnormal-operation listing yet (2 % of enterprises): add one
        with psycopg2.connect(dsns["market"]) as pg, pg.cursor() as cur:
            cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) VALUES (%s, 'unreachable_address', CURRENT_DATE)",
                        (usccs[0],))
        pg.close()
        thread.start()
        ours = {d: (dsn.rsplit("/", 1)[1]) for d, dsn in dsns.items()}
        schemas = schema_store()

        def arrived() -> set[str]:
            reader.poll(0.5)
            seen = set()
            for m in reader.messages:
                if m.value() is None or m.topic() in seen:
                    continue
                ds = datasets[m.topic()]
                try:
                    _, env = schemas.decode(m.value(), ds.schema_name)
                except DecodeError:
                    continue
                # a database of this test, or (file drops) the department's folder under tmp_path
                if env["source"]["db"] == ours.get(ds.dept, ds.dept):
                    seen.add(m.topic())
            return seen

        missing = lambda: sorted(set(datasets) - arrived())  # noqa: E731
        wait_for(lambda: not missing(), 120, lambda: f"datasets still missing: {missing()}")
        city.step(30)  # and live changes keep flowing
    finally:
        fleet.stop()
        if thread.is_alive():
            thread.join(30)


# --- seeding in chunks with COPY / LOAD DATA -----------------------------------------------------

TODAY = dt.date(2026, 3, 10)


def _plain(value):
    return float(value) if isinstance(value, Decimal) else value


def _pg_rows(dsn: str, table: str, cols) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY id").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table)))
        rows = [tuple(map(_plain, r)) for r in cur.fetchall()]
    conn.close()
    return rows


def _mysql_rows(dsn: str, table: str, cols) -> list[tuple]:
    conn_settings, db = parse_dsn(dsn)
    conn = pymysql.connect(**conn_settings, database=db)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(cols)} FROM {table}")  # the simulator's own column names
            return sorted(tuple(map(_plain, r)) for r in cur.fetchall())
    finally:
        conn.close()


def test_chunked_seed_loads_exactly_the_generated_rows_and_a_second_seed_adds_none(city_settings, monkeypatch):
    """Seeding in chunks through COPY and LOAD DATA stores what the generators make for the whole
    population (NULLs, dates, decimals, booleans intact), and seeding again with the same seed
    (the same enterprises) leaves the tables with unique keys as they were."""
    monkeypatch.setattr(bulk, "SEED_CHUNK", 17)  # several chunks for 60 enterprises
    city = CitySimulator(city_settings, seed=4242, distress_share=0.25)
    city.create()
    progress: dict[str, int] = {}
    city.seed(60, progress=lambda group, k: progress.__setitem__(group, progress.get(group, 0) + k), today=TODAY)
    assert progress == dict.fromkeys(("market", "postgres", "mysql", "polling", "file"), 60)
    ents = city.market.enterprises
    src = city_settings.source

    pg = RowGenerator(4242).seed_rows(ents, TODAY)
    for table in ("tax_filing", "tax_credit_rating", "litigation_case"):
        cols = list(pg[table][0])
        dsn = src.dsn(postgres_depts.TABLE_DEPT[table], "postgres")
        assert _pg_rows(dsn, table, cols) == [tuple(r[c] for c in cols) for r in pg[table]], table
    assert any(r["closed_date"] is None for r in pg["litigation_case"]) or not pg["litigation_case"]

    my_sim = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=4242)
    my = my_sim.seed_rows(ents, TODAY)
    for table in ("social_insurance", "electricity_usage", "customs_credit"):
        cols = my_sim.COLUMNS[table]
        got = _mysql_rows(src.dsn(mysql_depts.TABLE_DEPT[table], "mysql"), table, cols)
        assert got == sorted(my[table]), table
    assert any(r[5] is None for r in my["customs_credit"])  # registered only: NULL valid_until made it through

    polled = PolledDepartmentsSimulator("postgresql://unused/{db}", seed=4242).seed_rows(ents, TODAY)
    assert _pg_rows(src.dsn("gas", "polling"), "gas_usage", PolledDepartmentsSimulator._COLUMNS["gas_usage"]) == \
        polled["gas_usage"]
    counted = {t: n for seeded in city.seeded.values() for t, n in seeded.rows.items()}
    assert counted["tax_filing"] == len(pg["tax_filing"]) and counted["water_usage"] > 0

    again = CitySimulator(city_settings, seed=4242, distress_share=0.25)
    again.seed(60, today=TODAY)
    assert again.market.enterprises[-1].uscc == ents[-1].uscc  # the same population
    assert len(_pg_rows(src.dsn("tax", "postgres"), "tax_filing", ["uscc"])) == len(pg["tax_filing"])
    assert len(_pg_rows(src.dsn("gas", "polling"), "gas_usage", ["uscc"])) == len(polled["gas_usage"])
    assert len(_mysql_rows(src.dsn("hrss", "mysql"), "social_insurance", ["uscc"])) == len(my["social_insurance"])

    counts = again.step(25, today=TODAY)  # 5 changes per group; the file group counts the records it dropped
    assert sum(n for kind, n in counts.items() if kind.startswith("market.")) == 5
    assert 0 < sum(n for kind, n in counts.items() if kind.startswith("file.")) <= 5
    assert all(kind.split(".", 1)[1] in FILE_COLUMNS for kind in counts if kind.startswith("file."))


AWKWARD = [(1, "tab\there", 1.5, dt.date(2026, 1, 31), True), (2, "line\nbreak\r", None, None, False),
           (3, "back\\slash \\N", 0.1, dt.date(2000, 2, 29), None), (4, "\\N", 12345.67, None, True),
           (5, "", -2.25, dt.date(2026, 12, 1), False), (6, None, None, None, None),
           (7, "重庆市渝中区解放碑 'quoted' \"double\"", 99.99, dt.date(1999, 1, 1), True)]


def test_bulk_loads_keep_awkward_values(department_db, settings, unique):
    """Tabs, newlines, backslashes, the text ``\\N``, empty strings and NULLs survive COPY and LOAD DATA."""
    with psycopg2.connect(department_db) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE awkward (id int PRIMARY KEY, s text, n numeric(8,2), d date, b boolean)")
        bulk.pg_copy(cur, "awkward", ("id", "s", "n", "d", "b"), AWKWARD)
        bulk.pg_copy(cur, "awkward", ("id", "s", "n", "d", "b"), AWKWARD[:2])  # already there: skipped
        cur.execute("SELECT id, s, n, d, b FROM awkward ORDER BY id")
        assert [tuple(map(_plain, r)) for r in cur.fetchall()] == AWKWARD
    conn.close()

    conn_settings, _ = parse_dsn(settings.source.dsn("hrss", "mysql"))
    db = f"awkward_t{unique}"
    admin = pymysql.connect(**conn_settings, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")  # generated name
        conn = pymysql.connect(**conn_settings, database=db, local_infile=True)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE awkward (id INT PRIMARY KEY, s VARCHAR(100), n DECIMAL(8,2), d DATE,"
                        " b TINYINT(1))")
            assert bulk.mysql_local_infile(conn)
            bulk.mysql_load(conn, "awkward", ("id", "s", "n", "d", "b"), AWKWARD)
            bulk.mysql_load(conn, "awkward", ("id", "s", "n", "d", "b"), AWKWARD[:2])  # replaced by the same
            conn.commit()
            cur.execute("SELECT id, s, n, d, b FROM awkward ORDER BY id")
            got = [tuple(map(_plain, r)) for r in cur.fetchall()]
        conn.close()
        assert got == [(i, s, n, d, None if b is None else int(b)) for i, s, n, d, b in AWKWARD]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()
