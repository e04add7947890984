"""Issue 3's bar: `yurong simulate` plus `yurong connect --all` bring every catalogue dataset onto
Kafka from its real kind of source (PostgreSQL CDC, MariaDB binlog, polling, file drop)."""

from __future__ import annotations

import json
import threading

import psycopg2
import pymysql
import pytest

from connectors.catalogue import catalogue
from connectors.fleet import Fleet
from connectors.mysql import parse_dsn
from connectors.simulator.city import CitySimulator
from connectors.simulator.postgres_depts import Rates, RowGenerator
from streams.errors import DecodeError
from streams.serde import schema_store
from streams.settings import Settings
from tests.conftest import drop_database, wait_for

pytestmark = pytest.mark.integration


def test_every_dataset_reaches_kafka_from_its_kind_of_source(pg_admin_dsn, kafka_bootstrap, unique, tmp_path,
                                                             monkeypatch, topic_reader):
    cat = catalogue()
    base = Settings().source
    dsns = {d.dept: base.dsn(d.dept, d.kind).rsplit("/", 1)[0] + f"/{d.dept}_c{unique}"
            for d in cat.departments.values() if d.kind != "file"}
    monkeypatch.setenv("YURONG_SOURCE_DSNS", json.dumps(dsns))
    monkeypatch.setenv("YURONG_SOURCE_DROP_DIR", str(tmp_path / "drops"))
    monkeypatch.setenv("YURONG_SOURCE_POLL_INTERVAL_S", "0.3")
    monkeypatch.setenv("YURONG_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    settings = Settings()
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
        for dept, dsn in dsns.items():
            kind = cat.department(dept).kind
            if kind == "mysql":
                conn_settings, db = parse_dsn(dsn)
                admin = pymysql.connect(**conn_settings, autocommit=True)
                with admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{db}`")  # generated name
                admin.close()
            else:
                drop_database(pg_admin_dsn, dsn.rsplit("/", 1)[1])
