"""The stream layer accepts what a real Debezium MariaDB connector writes.

One fresh MariaDB department database (hrss: ``social_insurance``, seeded by the department
simulator); yurong's own binlog connector (connectors/mysql.py) and Debezium's MariaDbConnector
(Kafka Connect standalone, ``YURONG_DEBEZIUM_SOURCE=mariadb scripts/debezium.sh``) both snapshot
it and then stream the same live changes: an update, an insert, a delete, a multi-row update in
one transaction, transactions that change one row more than once (an update twice; an insert,
update and delete; a multi-row upsert updating one row twice within one row event), the
simulator's own mix of upserts and corrections, and a sentinel update last.
Both record streams are turned into enterprise events (``streams.codecs.debezium`` for Debezium's JSON
records, Avro decoding for ours) and merged in source order with the pure ``to_enterprise_event``
+ ``merge_event`` (whose per-row source positions decide what is a replay). Then:

- the streamed row images are identical, change by change, and so are their positions and seqs
  (``0-1-42#3``, ``(42 << 20) | 3``): ``scripts/debezium.sh`` runs Debezium with
  ``provide.transaction.metadata=true``, so every record carries ``transaction.total_order`` and
  ``streams.codecs.debezium`` takes the change's index in its transaction from it, as ours counts it;
- the merged per-row final state (masked attributes) is identical from both, and equal to the
  table's actual final content read from MariaDB.

Needs Java 17 and Maven (fails under CI when missing, skips otherwise).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
import uuid

import pymysql
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from connectors.mysql import parse_dsn
from connectors.simulator.mysql_depts import DEPARTMENTS, MySqlDepartmentsSimulator
from streams.codecs.convert import row_converter
from streams.codecs.debezium import DebeziumConverter, topic_datasets
from streams.codecs.positions import change_seq
from streams.codecs.serde import schema_store
from streams.core.catalogue import _value_schema, catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import merge_event, source_row
from streams.errors import DecodeError
from streams.kafka.admin import ensure_topics
from tests.conftest import TEST_KEY, free_port, wait_for
from tests.harness import DebeziumScript, StreamPair, need_tools
from tests.integration.test_debezium_interop import TailReader, _debezium_envelopes
from tests.integration.test_mysql_connector import RunningConnector, enterprises, execute, mysql_admin_dsn  # noqa: F401

pytestmark = pytest.mark.integration

DEPT = "hrss"
OUR_TOPIC = "dept.hrss.social_insurance"
TODAY = dt.date(2026, 5, 10)
N_ENTERPRISES = 40  # × 12 months of history = 480 rows


class MariaDbDebezium(DebeziumScript):
    """``scripts/debezium.sh`` run/stop with ``YURONG_DEBEZIUM_SOURCE=mariadb`` for one database."""

    def __init__(self, db: str, bootstrap: str, mysql_port: int) -> None:
        name = f"test-{db}"
        self.prefix = f"dbz{uuid.uuid4().hex[:8]}"
        self.history_topic = f"debezium-history.{name}"
        # BEGIN/END records of provide.transaction.metadata=true (no dataset topic: never ingested)
        self.transaction_topic = f"{self.prefix}.transaction"
        super().__init__(name, {
            "YURONG_DEBEZIUM_SOURCE": "mariadb",
            "YURONG_DEBEZIUM_DBNAME": db,
            "YURONG_DEBEZIUM_TOPIC_PREFIX": self.prefix,
            "YURONG_DEBEZIUM_HISTORY_TOPIC": self.history_topic,
            "YURONG_DEBEZIUM_REST_PORT": str(free_port()),
            "YURONG_KAFKA_PORT": bootstrap["bootstrap.servers"].split(",")[0].rpartition(":")[2],
            "YURONG_MYSQL_PORT": str(mysql_port),
        })


@pytest.fixture
def hrss_db(mysql_admin_dsn, unique):  # noqa: F811 — the fixture imported above
    """A simulator with the four MariaDB department databases under unique names; dropped after."""
    template = mysql_admin_dsn.rsplit("/", 1)[0] + "/{db}"
    sim = MySqlDepartmentsSimulator(template, seed=7, databases={d: f"{d}_d{unique}" for d in DEPARTMENTS})
    sim.create()
    yield sim
    conn_settings, _ = parse_dsn(mysql_admin_dsn)
    admin = pymysql.connect(**conn_settings, autocommit=True)
    with admin.cursor() as cur:
        for db in sim.databases.values():
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")  # generated names, quoted identifiers
    admin.close()


def _our_envelopes(reader, db: str) -> list[tuple]:
    schemas = schema_store()
    ds = catalogue().department(DEPT).datasets["social_insurance"]
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue
        try:
            _, env = schemas.decode(m.value(), ds.schema_name)
        except DecodeError:
            continue  # other tests' deliberately bad records
        if env["source"]["db"] == db:
            out.append((ds, env, m.topic(), m.partition(), m.offset()))
    return out


def _key(row: dict) -> tuple[str, str]:
    return row["uscc"], row["period"]


def _final_state(records: list[tuple]) -> tuple[dict, dict]:
    """Ingest + merge in source order (snapshot first, then by seq); for every change the merge
    accepts (not a replay by its per-row source position), apply it to the row it changed.

    Returns ``(masked, raw)``: masked event attributes per source row, and the raw row images
    per ``(uscc, period)``.
    """
    pseudonymizer = Pseudonymizer(TEST_KEY.encode())
    events = []
    for ds, env, topic, partition, offset in records:
        ev = to_enterprise_event(ds, env, Provenance(topic, partition, offset), pseudonymizer, 0)
        events.append((env["op"] != "r", ev["seq"], ev, env))
    events.sort(key=lambda t: (t[0], t[1]))  # stable: one row's changes keep their topic order
    profiles: dict[str, dict] = {}
    masked: dict[str, dict] = {}
    raw: dict[tuple, dict] = {}
    for version, (_, _, ev, env) in enumerate(events):
        merged, _ = merge_event(profiles.get(ev["uscc"]), ev, version, 0)
        profiles[ev["uscc"]] = merged
        if merged["version"] != version:
            continue  # skipped as already merged
        if ev["op"] == "d":
            masked.pop(source_row(ev), None)
            raw.pop(_key(env["before"]), None)
        else:
            masked[source_row(ev)] = ev["attributes"]
            raw[_key(env["after"])] = env["after"]
    return masked, raw


def _table_now(dsn: str) -> dict[tuple, dict]:
    """The table's actual content, converted as yurong's connector converts rows."""
    ds = catalogue().department(DEPT).datasets["social_insurance"]
    convert = row_converter(_value_schema(schema_store().get(ds.schema_name).parsed))
    settings, db = parse_dsn(dsn)
    conn = pymysql.connect(**settings, database=db, cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM social_insurance")
            return {_key(r): convert(r, "table") for r in cur.fetchall()}
    finally:
        conn.close()


def _changes(sim: MySqlDepartmentsSimulator, usccs: list[str]) -> str:
    """Live changes, one transaction each; returns the sentinel USCC changed last."""
    dsn = sim.dsn(DEPT)
    execute(dsn, ("UPDATE social_insurance SET payment_status = 'arrears', paid_amount = 0,"
                  " arrears_amount = payable_amount, arrears_months = 1 WHERE uscc = %s AND period = '2026-04'", (usccs[0],)))
    execute(dsn, ("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status, paid_date,"
                  " contribution_base, contact_name, contact_phone) VALUES (%s, '2026-05', 17, 'paid', '2026-06-10',"
                  " 102000.50, '王小明', '13800138000')", (usccs[1],)))
    execute(dsn, ("DELETE FROM social_insurance WHERE uscc = %s AND period = '2025-05'", (usccs[2],)))
    # one transaction, twelve rows: both connectors give every row the transaction's GTID
    execute(dsn, ("UPDATE social_insurance SET agency = '重庆市社会保险事务中心', contact_phone = '13900001111'"
                  " WHERE uscc = %s", (usccs[3],)))
    # two statements on different rows in one transaction
    execute(dsn, ("UPDATE social_insurance SET new_insured = new_insured + 1 WHERE uscc = %s AND period = '2026-03'", (usccs[4],)),
            ("DELETE FROM social_insurance WHERE uscc = %s AND period = '2025-06'", (usccs[4],)))
    # rows changed more than once in one transaction: the merge must keep every change (each has
    # its own seq), or a row ends in an intermediate state
    execute(dsn, ("UPDATE social_insurance SET insured_headcount = 101 WHERE uscc = %s AND period = '2026-02'", (usccs[5],)),
            ("UPDATE social_insurance SET insured_headcount = 102, payment_status = 'suspended'"
             " WHERE uscc = %s AND period = '2026-02'", (usccs[5],)),
            ("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status)"
             " VALUES (%s, '2026-05', 3, 'paid')", (usccs[6],)),
            ("UPDATE social_insurance SET insured_headcount = 4 WHERE uscc = %s AND period = '2026-05'", (usccs[6],)),
            ("DELETE FROM social_insurance WHERE uscc = %s AND period = '2026-05'", (usccs[6],)))
    # one row event holding two updates of one row (rows 0 and 1)
    execute(dsn, ("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status) VALUES"
                  " (%s, '2026-05', 5, 'paid'), (%s, '2026-05', 6, 'paid'), (%s, '2026-05', 7, 'paid')"
                  " ON DUPLICATE KEY UPDATE insured_headcount = VALUES(insured_headcount)", (usccs[7],) * 3))
    sim.step(40, today=TODAY)  # the simulator's own mix: monthly upserts, arrears paid or grown, power, customs
    execute(dsn, ("UPDATE social_insurance SET payment_status = 'suspended' WHERE uscc = %s AND period = '2026-04'",
                  (usccs[-1],)))
    return usccs[-1]


def test_debezium_mariadb_and_our_connector_give_the_same_state(hrss_db, mysql_admin_dsn, kafka_admin):  # noqa: F811
    need_tools("java", "mvn")
    started = time.monotonic()
    sim = hrss_db
    ents = enterprises(N_ENTERPRISES, seed=9)
    counts = sim.seed(ents, today=TODAY)
    rows_at_start = counts["social_insurance"]
    dsn, db = sim.dsn(DEPT), sim.databases[DEPT]
    usccs = [e.uscc for e in ents]

    dept = catalogue().department(DEPT)
    conv = DebeziumConverter(dept)
    dbz = MariaDbDebezium(db, kafka_admin, parse_dsn(mysql_admin_dsn)[0]["port"])
    dbz_topics = list(topic_datasets(dept, dbz.prefix, db))
    assert dbz_topics == [f"{dbz.prefix}.{db}.social_insurance"]
    # Created up front, so the reader can start at their (empty) end before Debezium writes.
    ensure_topics(kafka_admin, {t: {} for t in dbz_topics}, partitions=4)
    ours_reader = TailReader(kafka_admin, [OUR_TOPIC])
    dbz_reader = TailReader(kafka_admin, dbz_topics)

    ours = None
    try:
        dbz.run()
        ours = RunningConnector(dsn, kafka_admin)
        t_up = time.monotonic() - started
        streams = StreamPair({"ours": (ours_reader, lambda: _our_envelopes(ours_reader, db)),
                              "debezium": (dbz_reader, lambda: _debezium_envelopes(dbz_reader, conv, db))}, dbz.log_tail)
        snapshot_done = {k: t - started for k, t in
                         streams.wait_snapshots(rows_at_start, f"both snapshots of {db} ({rows_at_start} rows)").items()}
        # our connector streams from the snapshot's GTID once it has marked the snapshot complete
        wait_for(lambda: ours.source.snapshot_completed(), 30, "our snapshot to complete")
        t_snap = time.monotonic() - started

        sentinel = _changes(sim, usccs)

        def has_sentinel(records) -> bool:
            return any(e[1]["op"] == "u" and _key(e[1]["after"]) == (sentinel, "2026-04")
                       and e[1]["after"]["payment_status"] == "suspended" for e in records)

        streams.wait_caught_up(has_sentinel, "both streams to carry every change")
        t_stream = time.monotonic() - started
        # Debezium wrote its BEGIN/END records to <prefix>.transaction; the worker's Debezium topics
        # (streams.worker.topics: topic_datasets of the department) are the dataset topics only
        admin = AdminClient(dict(kafka_admin))
        wait_for(lambda: dbz.transaction_topic in admin.list_topics(timeout=10).topics, 30,
                 f"Debezium's transaction topic {dbz.transaction_topic}")
        assert dbz.transaction_topic not in topic_datasets(dept, dbz.prefix, db)
        assert dbz.transaction_topic not in topic_datasets(dept, dbz.prefix)
    finally:
        if ours is not None:
            ours.stop()
        dbz.stop()
        ours_reader.close()
        dbz_reader.close()
        shutil.rmtree(dbz.home, ignore_errors=True)
        admin = AdminClient(dict(kafka_admin))
        cleanup = dbz_topics + [dbz.history_topic, dbz.transaction_topic]
        for f in admin.delete_topics(cleanup, operation_timeout=30).values():
            try:
                f.result()
            except KafkaException:  # best-effort clean-up: a failed run may not have created them
                pass
    assert ours.error is None

    mine, theirs = _our_envelopes(ours_reader, db), _debezium_envelopes(dbz_reader, conv, db)
    assert len(mine) == len(theirs)
    assert sum(e[1]["op"] == "r" for e in mine) == sum(e[1]["op"] == "r" for e in theirs) == rows_at_start
    assert {e[1]["source"]["connector"] for e in theirs} == {"mariadb"}
    assert {e[1]["source"]["snapshot"] for e in theirs if e[1]["op"] == "r"} <= {"true", "last"}

    # Streamed changes: the same row images, change by change, at the same position and seq —
    # ours from the change's index in the transaction (0-1-42#3), Debezium's from its
    # transaction.total_order (provide.transaction.metadata=true). Sorted by seq = binlog order.
    def streamed(records):
        envs = sorted((e[1] for e in records if e[1]["op"] != "r"), key=lambda env: env["source"]["seq"])
        return [(e["source"]["position"], e["source"]["seq"], e["op"],
                 repr(_key(e["after"] or e["before"])), repr(e["before"]), repr(e["after"])) for e in envs]
    s_mine, s_theirs = streamed(mine), streamed(theirs)
    assert len(s_mine) >= 5 + 12 + 8
    assert [x[2:] for x in s_mine] == [x[2:] for x in s_theirs]
    differ = [(a[:4], b[:2]) for a, b in zip(s_mine, s_theirs, strict=True) if a[:2] != b[:2]]
    assert not differ, f"{len(differ)} changes at another position/seq (ours, Debezium's), e.g. {differ[:3]}"
    assert {x[2] for x in s_mine} == {"c", "u", "d"}
    assert len({x[0] for x in s_mine}) == len(s_mine), "every change has its own position"
    for position, seq, *_ in s_mine:
        m = re.fullmatch(r"\d+-\d+-(\d+)#(\d+)", position)
        assert m and seq == change_seq(int(m.group(1)), int(m.group(2))), (position, seq)
    # the rows changed more than once in one transaction, in both streams: A twice, B inserted,
    # updated and deleted, C inserted then updated twice within one row event
    ops = {}
    for _, _, op, key, _, _ in s_mine:
        if key in (repr((usccs[5], "2026-02")), repr((usccs[6], "2026-05")), repr((usccs[7], "2026-05"))):
            ops.setdefault(key, []).append(op)
    assert ops[repr((usccs[5], "2026-02"))][:2] == ["u", "u"] and ops[repr((usccs[6], "2026-05"))][:3] == ["c", "u", "d"]
    assert ops[repr((usccs[7], "2026-05"))][:3] == ["c", "u", "u"]

    # Snapshot rows: the same images (positions differ by design: ours the GTID state, theirs the
    # binlog coordinates with seq 0, both before every streamed change).
    def snap(records):
        return sorted((repr(_key(e[1]["after"])), repr(e[1]["after"])) for e in records if e[1]["op"] == "r")
    assert snap(mine) == snap(theirs)

    # Merged final state per row: identical from both, and what the table holds now.
    masked_mine, raw_mine = _final_state(mine)
    masked_theirs, raw_theirs = _final_state(theirs)
    assert masked_theirs == masked_mine
    assert raw_theirs == raw_mine
    table = _table_now(dsn)
    assert raw_mine == table
    assert table[(usccs[0], "2026-04")]["payment_status"] == "arrears" and (usccs[2], "2025-05") not in table
    assert table[(sentinel, "2026-04")]["payment_status"] == "suspended"
    assert all("13900001111" not in repr(a) for a in masked_mine.values())  # the contact phone is masked

    print(f"\ndebezium mariadb interop: connectors up {t_up:.1f}s, snapshots {t_snap:.1f}s "
          f"(ours {snapshot_done['ours']:.1f}s, debezium {snapshot_done['debezium']:.1f}s), changes streamed {t_stream:.1f}s, "
          f"{len(mine)} envelopes each ({len(s_mine)} streamed), {len(table)} rows")
