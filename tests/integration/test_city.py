"""`yurong simulate` plus `yurong connect --all` bring every catalogue dataset onto
Kafka from its real kind of source (PostgreSQL CDC, MariaDB binlog, polling, file drop); and the
seed that fills those sources in chunks (COPY, LOAD DATA) stores exactly the generated rows."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import stat
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg2
import pymysql
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg2 import sql
from stdnum import luhn
from stdnum.cn import ric

from connectors.fleet import Fleet
from connectors.mysql import parse_dsn
from connectors.simulator import bulk, mysql_depts, postgres_depts
from connectors.simulator.city import CitySimulator
from connectors.simulator.file_depts import COLUMNS as FILE_COLUMNS
from connectors.simulator.mysql_depts import MySqlDepartmentsSimulator
from connectors.simulator.polled_depts import PolledDepartmentsSimulator
from connectors.simulator.postgres_depts import Rates, RowGenerator
from streams.cli.demo import pipeline
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.core.masking import find_pii_in_text
from streams.errors import DecodeError
from streams.kafka.admin import ensure_topics, watermark_offsets
from streams.settings import Settings
from tests.conftest import TEST_KEY, drop_database, wait_for
from tests.harness import IsolatedPipeline, seed_every_dataset, skip_history

REPO = Path(__file__).resolve().parents[2]

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


# --- no raw identifier downstream after a full city (issue 14, item 6) ---------------------------

# Independent of streams.core.masking: a GB 11643 ID (python-stdnum), a mobile of the numbering
# plan, a Luhn-valid 16–19-digit card number, each a whole digit run; our own pseudonyms
# (p<N>_<32 hex>, and the profile's short row keys p_<14 hex>: avro/enterprise/profile.avsc,
# source_seqs) are taken out first (a digit run inside a hex token is not a person's number).
_ID_RUN = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9])")
_MOBILE_RUN = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")
_CARD_RUN = re.compile(r"(?<![0-9])[0-9]{16,19}(?![0-9])")
_OWN_PSEUDONYM = re.compile(r"(?<![0-9A-Za-z])p[0-9]*_[0-9a-f]{14}(?:[0-9a-f]{18})?(?![0-9A-Za-z])")


def independent_hits(text: str) -> list[str]:
    """``kind:value`` of every raw ID, mobile or card number in ``text``."""
    text = _OWN_PSEUDONYM.sub(" ", text)
    hits = [f"id_number:{m.group()}" for m in _ID_RUN.finditer(text) if ric.is_valid(m.group().upper())]
    hits += [f"phone:{m.group()}" for m in _MOBILE_RUN.finditer(text)]
    hits += [f"card:{m.group()}" for m in _CARD_RUN.finditer(text) if luhn.is_valid(m.group())]
    return hits


def pii_scan(text: str) -> list[str]:
    """What the project's last-line detector and the independent oracle find in ``text``."""
    hits = independent_hits(text)
    found = find_pii_in_text(text)
    return hits + ([f"detector:{found}"] if found else [])


def _text_parts(column: str, ctype: str) -> list[str]:
    """SQL expressions giving a column's text, whatever the table: String-like columns (also
    Nullable, LowCardinality, FixedString, in arrays and tuples) as they are, a map's keys and
    values as far as they are text."""
    quoted = f"`{column}`"
    if ctype.startswith("Map("):
        key_type, _, value_type = ctype[4:-1].partition(", ")
        return ([f"toString(mapKeys({quoted}))"] if "String" in key_type else []) + \
            ([f"toString(mapValues({quoted}))"] if "String" in value_type else [])
    return [f"ifNull(toString({quoted}), '')"] if "String" in ctype else []


def scan_store(folder: str) -> dict:
    """Scan every table of every database of the embedded store in ``folder`` (run in a process of
    its own: chDB opens one store per process). Returns rows and texts seen per table and the hits."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=f"chdb://{folder}")
    tables = client.query("SELECT database, name, engine FROM system.tables WHERE database NOT IN "
                          "('system', 'INFORMATION_SCHEMA', 'information_schema') AND engine NOT LIKE '%View%' "
                          "ORDER BY database, name").result_rows
    out: dict = {"tables": {}, "hits": []}
    for db, table, _engine in tables:
        cols = client.query("SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} "
                            "ORDER BY position", parameters={"d": db, "t": table}).result_rows
        parts = [e for name, ctype in cols for e in _text_parts(name, ctype)]
        if not parts:
            out["tables"][f"{db}.{table}"] = {"rows": 0, "texts": 0}
            continue
        rows = texts = 0
        joined = ", '\\n', ".join(parts)  # a line break between the texts: no digit run spans two
        for (text,) in client.query(f"SELECT concat({joined}, '') FROM `{db}`.`{table}`").result_rows:
            rows += 1
            texts += len(parts)
            for hit in pii_scan(text):
                out["hits"].append(f"{db}.{table}: {hit}")
        out["tables"][f"{db}.{table}"] = {"rows": rows, "texts": texts}
    return out


DOWNSTREAM_PREFIXES = ("enterprise.", "risk.", "alerts.", "matches.", "dlq.enterprise.", "dlq.risk.", "dlq.alerts.")


def downstream_topics(admin: dict) -> list[str]:
    topics = AdminClient(dict(admin)).list_topics(timeout=15).topics
    return sorted(t for t in topics if t.startswith(DOWNSTREAM_PREFIXES) or t == "consent.grants")


def high_watermarks(admin: dict, topics: list[str]) -> dict[tuple[str, int], int]:
    c = Consumer({**admin, "group.id": "unused", "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=15).topics
        return {(t, p): watermark_offsets(c, TopicPartition(t, p))[1] for t in topics if t in md for p in md[t].partitions}
    finally:
        c.close()


def read_since(admin: dict, start: dict[tuple[str, int], int], topics: list[str]) -> list:
    """Every record of ``topics`` from ``start`` (a partition missing there: from its beginning)
    to the current end, as raw messages."""
    end = high_watermarks(admin, topics)
    c = Consumer({**admin, "group.id": "unused", "enable.auto.commit": False})
    out: list = []
    try:
        todo = {tp: hi for tp, hi in end.items() if hi > start.get(tp, 0)}
        if not todo:
            return out
        c.assign([TopicPartition(t, p, start.get((t, p), 0)) for t, p in todo])
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, 1.0):
                if m.error():
                    continue
                tp = (m.topic(), m.partition())
                if tp in todo and m.offset() < todo[tp]:
                    out.append(m)
                    if m.offset() + 1 >= todo[tp]:
                        del todo[tp]
        assert not todo, f"could not read to the end of {sorted(todo)}"
    finally:
        c.close()
    return out


def as_text(data: bytes | None) -> str:
    """Raw bytes read leniently as text."""
    return data.decode("utf-8", errors="replace") if data else ""


def record_texts(data: bytes | None) -> list[str]:
    """The texts of one record's value, whatever its schema: an Avro single object is decoded
    with the schema its header names, and every string in it (map keys too) is one text; anything
    else is its raw bytes read leniently. (The raw bytes of an Avro record are not scanned whole: a
    double's bytes can be ASCII digits — 0.3 is 33 33 33 33 33 33 D3 3F — and glue onto the digits
    of the string before them.)"""
    try:
        _, record = schema_store().decode(data)
    except DecodeError:
        return [as_text(data)]
    out: list[str] = []

    def walk(v) -> None:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                out.append(str(k))
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
    walk(record)
    return out


def test_a_full_city_leaves_no_raw_identifier_in_clickhouse_or_downstream(
        city_settings, kafka_admin, redis_url, unique, tmp_path, monkeypatch):
    """A city with every department (PostgreSQL logical replication, MariaDB binlog, polling, file
    drops) seeded with raw IDs, phones and names, run through connectors, worker and sink, plus live
    changes and alerts to two banks: no table of the sink's store and no record of a downstream
    topic holds a raw ID, mobile or card number, by the project's detector or an independent one."""
    # the scanner finds what it must: a raw ID, a mobile and a card number planted in scratch text
    planted_id = "11010519491231002X"
    scratch = f'{{"note": "身份证{planted_id} 电话13912345678 卡号6222021234567890128"}}'
    assert {h.split(":")[0] for h in pii_scan(scratch)} == {"id_number", "phone", "card", "detector"}
    assert pii_scan(f"p1_{'0' * 32} 91500000202805720T 2026-03-10 1709294400000") == []

    cat = catalogue()
    monkeypatch.setenv("YURONG_SOURCE_POLL_INTERVAL_S", "0.3")
    seed = int(unique[:6], 16)
    city = CitySimulator(Settings(), seed=seed, distress_share=0.2)
    city.groups["postgres"].rows = RowGenerator(seed, Rates(litigation_per_year=0.5, environment_penalty_per_year=0.5))
    city.create()
    usccs = seed_every_dataset(city, 60)
    rng = random.Random(unique)
    dsns = {d: dsn.get_secret_value() for d, dsn in Settings().source.dsns.items()}
    with psycopg2.connect(dsns["market"]) as pg, pg.cursor() as cur:  # 2 % of enterprises: maybe none of 60
        cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) VALUES (%s, 'unreachable_address', "
                    "CURRENT_DATE - 30)", (usccs[2],))
    pg.close()
    banks = [f"b{rng.randint(1000, 4999)}", f"b{rng.randint(5000, 9999)}"]
    p = IsolatedPipeline(tmp_path, dsns["market"], kafka_admin, redis_url, unique, TEST_KEY,
                         {"YURONG_CLICKHOUSE_BATCH_SECONDS": "0.3", "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.1"},
                         label="city")

    async def setup(reg):
        for bank in banks:
            for code in usccs:
                await reg.grant(bank, code, "post-loan monitoring", expiry_ms=4_102_444_800_000,
                                recorded_by="consent", evidence_ref="auth-letter:test/city")
            await reg.watch(bank, usccs)
    p.registry(setup)
    ensure_topics(kafka_admin, {f"alerts.{b}": {} for b in banks})
    skip_history(kafka_admin, p.app_id, p.sink_group)
    topics = downstream_topics(kafka_admin)
    start = high_watermarks(kafka_admin, topics)
    ours = set(usccs)
    datasets = {ds.qualified for ds in cat.by_topic().values()}

    with pipeline(p.env, p.logs, ("connect --all", "worker", f"sink --group {p.sink_group}")) as procs:
        p.procs = procs

        def seen_datasets() -> set[str]:
            rows = p.sql("SELECT DISTINCT concat(dept, '.', dataset) FROM enterprise_event WHERE has({u:Array(String)}, uscc)",
                         u=usccs)
            return {r[0] for r in rows or []}
        wait_for(lambda: seen_datasets() >= datasets, 150,
                 lambda: f"datasets not in ClickHouse yet: {sorted(datasets - seen_datasets())}\n{p.logs_tail()}")
        # live changes of every kind, and two that alert: a revocation and an abnormal-operation listing
        city.step(30)
        with psycopg2.connect(dsns["market"]) as pg, pg.cursor() as cur:
            cur.execute("UPDATE enterprise_registration SET status = 'revoked' WHERE uscc = %s", (usccs[0],))
            cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) "
                        "VALUES (%s, 'unreachable_address', CURRENT_DATE)", (usccs[1],))
        pg.close()
        wait_for(lambda: (p.sql("SELECT count() FROM alert_delivery FINAL WHERE has({b:Array(String)}, bank_id) "
                                "AND has({u:Array(String)}, uscc)", b=banks, u=usccs) or [[0]])[0][0] >= 4, 90,
                 lambda: "alerts delivered to both banks\n" + p.logs_tail())
        time.sleep(2)  # the sink's last batches
    store = tmp_path / "home" / "chdb"

    # every table of the sink's store, in a process of its own (the pipeline released the store)
    done = subprocess.run([sys.executable, "-c", "import json, sys\nfrom tests.integration.test_city import scan_store\n"
                           "print(json.dumps(scan_store(sys.argv[1])))", str(store)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scanned = json.loads(done.stdout.strip().splitlines()[-1])
    tables = scanned["tables"]
    for t in ("yurong.enterprise_profile", "yurong.enterprise_event", "yurong.risk_change", "yurong.alert_delivery"):
        assert tables[t]["rows"] > 0, f"{t} is empty: the scan saw nothing"
    assert scanned["hits"] == [], f"raw identifiers in ClickHouse: {scanned['hits'][:20]}"

    # every record this city put on a downstream topic, read as raw bytes
    records = read_since(kafka_admin, start, downstream_topics(kafka_admin))
    mine = [m for m in records if (m.key() and m.key().decode(errors="replace") in ours)
            or m.topic() in {f"alerts.{b}" for b in banks}
            or (m.topic() == "consent.grants" and any(b.encode() in (m.value() or b"") for b in banks))]
    per_topic: dict[str, int] = {}
    hits = []
    texts = 0
    for m in mine:
        per_topic[m.topic()] = per_topic.get(m.topic(), 0) + 1
        for text in (as_text(m.key()), *record_texts(m.value())):
            texts += 1
            hits += [f"{m.topic()}[{m.partition()}]@{m.offset()}: {h}" for h in pii_scan(text)]
    for t in ("enterprise.events", "enterprise.profiles", "risk.changes", *(f"alerts.{b}" for b in banks)):
        assert per_topic.get(t, 0) > 0, f"nothing of this city on {t}: {per_topic}"
    assert texts > 10 * len(mine), "the records' texts were read"
    assert hits == [], f"raw identifiers downstream: {hits[:20]}"

    # the sink's store and the drop folders are private (the chDB store: open_client; drops: the connector)
    bad = [str(x) for x in store.rglob("*") if not x.is_symlink() and x.stat().st_mode & 0o077]
    assert not bad, bad[:10]
    drops = Path(Settings().source.drop_dir or "")
    for dept in (d.dept for d in cat.departments.values() if d.kind == "file"):
        assert stat.S_IMODE((drops / dept / "done").stat().st_mode) == 0o700
        assert (drops / dept).stat().st_mode & 0o007 == 0


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
