"""MariaDB binlog connector against the real MariaDB and Kafka (scripts/stack.sh)."""

from __future__ import annotations

import datetime as dt
import random

import pymysql
import pytest

from connectors.mysql import Gtid, parse_dsn
from connectors.offsets import read_offsets
from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.market import Enterprise
from connectors.simulator.mysql_depts import DEPARTMENTS, MySqlDepartmentsSimulator
from streams.codecs.positions import change_seq, snapshot_row_seq
from streams.codecs.serde import schema_store
from streams.core.catalogue import catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import merge_event
from streams.errors import DecodeError
from streams.settings import SourceSettings
from tests.conftest import TEST_KEY, _unavailable, wait_for
from tests.harness import RunningConnector as _Running

pytestmark = pytest.mark.integration

TOPIC = "dept.hrss.social_insurance"
TODAY = dt.date(2026, 5, 10)


@pytest.fixture(scope="session")
def mysql_admin_dsn(settings) -> str:
    """DSN of the local MariaDB (user yurong may create databases); fails under CI=true when down."""
    dsn = settings.source.dsn("hrss", "mysql")
    conn_settings, _ = parse_dsn(dsn)
    try:
        pymysql.connect(**{**conn_settings, "connect_timeout": 3}).close()
    except pymysql.err.OperationalError:
        _unavailable("MariaDB (the hrss/housing_fund/power/customs department DB)")
    return dsn


@pytest.fixture
def mysql_depts(mysql_admin_dsn, unique):
    """The four MariaDB department databases under unique names (``hrss_t<hex>`` …), seeded."""
    template = mysql_admin_dsn.rsplit("/", 1)[0] + "/{db}"
    sim = MySqlDepartmentsSimulator(template, seed=5, databases={d: f"{d}_t{unique}" for d in DEPARTMENTS})
    sim.create()
    yield sim
    conn_settings, _ = parse_dsn(mysql_admin_dsn)
    admin = pymysql.connect(**conn_settings, autocommit=True)
    with admin.cursor() as cur:
        for db in sim.databases.values():
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    admin.close()


def enterprises(n: int, seed: int = 3) -> list[Enterprise]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        code = make_uscc(rng, pick_district(rng))
        out.append(Enterprise(code, code[2:8], distressed=(i % 7 == 0)))
    return out


class RunningConnector(_Running):
    def __init__(self, dsn: str, bootstrap: str, dept: str = "hrss", resnapshot: bool = False) -> None:
        super().__init__(dept, dsn, bootstrap, SourceSettings(), resnapshot)


def ours(reader, db: str) -> list[dict]:
    """Decoded envelopes of our database among everything read so far (topics are shared)."""
    schemas = schema_store()
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue
        dept, name = m.topic().split(".")[1:3]
        try:
            _, env = schemas.decode(m.value(), f"dept/{dept}/{name}")
        except DecodeError:
            continue
        if env["source"]["db"] == db:
            out.append(env)
    return out


def execute(dsn: str, *statements: tuple[str, tuple]) -> None:
    """Run statements in one transaction."""
    conn_settings, db = parse_dsn(dsn)
    conn = pymysql.connect(**conn_settings, database=db)
    try:
        with conn.cursor() as cur:
            for sql, args in statements:
                cur.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def offset_record(kafka: dict, name: str) -> dict | None:
    """The offset record of source ``name`` (``<dept>@<db>``), read from its department's topic."""
    return read_offsets(kafka, name.split("@")[0], schema_store(), "test-offsets").get(name)


def test_snapshot_then_stream_with_before_images_tombstones_and_gtids(mysql_depts, kafka_admin, topic_reader):
    sim = mysql_depts
    ents = enterprises(10)
    counts = sim.seed(ents, today=TODAY)
    dsn, db = sim.dsn("hrss"), sim.databases["hrss"]
    reader = topic_reader([TOPIC])
    conn = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and len(ours(reader, db)) >= counts["social_insurance"], 60,
                 f"the snapshot of {counts['social_insurance']} social insurance rows")
        snap = ours(reader, db)
        assert len(snap) == counts["social_insurance"] == 120
        assert len({(e["after"]["uscc"], e["after"]["period"]) for e in snap}) == 120  # each row exactly once
        assert {e["op"] for e in snap} == {"r"} and {e["source"]["snapshot"] for e in snap} == {"true"}
        assert {e["source"]["connector"] for e in snap} == {"mysql"}
        assert len({e["source"]["position"] for e in snap}) == 1
        assert snap[0]["after"]["contact_phone"] and snap[0]["after"]["contact_name"]  # raw PII only on dept.*
        snapshot_gtid = Gtid.parse(snap[0]["source"]["position"])
        wait_for(lambda: conn.source.snapshot_completed(), 30, "the snapshot to complete")

        target = ents[1].uscc
        execute(dsn, ("UPDATE social_insurance SET payment_status = 'arrears', paid_amount = 0,"
                      " arrears_amount = payable_amount WHERE uscc = %s AND period = '2026-04'", (target,)))
        execute(dsn, ("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status, paid_date,"
                      " contribution_base, contact_name, contact_phone) VALUES (%s, '2026-05', 17, 'paid', '2026-06-10',"
                      " 102000.50, '王小明', '13800138000')", (target,)))
        execute(dsn, ("DELETE FROM social_insurance WHERE uscc = %s AND period = '2026-05'", (target,)))

        def streamed():
            reader.poll()
            return [e for e in ours(reader, db) if e["op"] in "cud"]

        changes = wait_for(lambda: len(streamed()) >= 3 and streamed(), 30, "three streamed changes")
        upd, ins, dele = changes[:3]
        assert (upd["op"], upd["before"]["payment_status"], upd["after"]["payment_status"]) == ("u", "paid", "arrears")
        assert upd["after"]["paid_amount"] == 0.0 and upd["before"]["uscc"] == target
        assert (ins["op"], ins["before"], ins["after"]["period"], ins["after"]["insured_headcount"]) == ("c", None, "2026-05", 17)
        assert ins["after"]["paid_date"] == dt.date(2026, 6, 10) and ins["after"]["contribution_base"] == 102000.5
        assert ins["after"]["contact_name"] == "王小明"
        assert ins["after"]["updated_at"] is not None
        assert (dele["op"], dele["before"]["period"], dele["after"]) == ("d", "2026-05", None)
        # one change per transaction: <gtid>#0, seq (gtid seq << 20) | 0
        assert all(c["source"]["position"].endswith("#0") for c in changes[:3])
        gtids = [Gtid.parse(c["source"]["position"].partition("#")[0]) for c in changes[:3]]
        assert snapshot_gtid < gtids[0] < gtids[1] < gtids[2]
        assert [c["source"]["seq"] for c in changes[:3]] == [change_seq(g.seq, 0) for g in gtids]
        # the snapshot rows sort after every change their GTID holds, before every change streamed after it
        assert {e["source"]["seq"] for e in snap} == {snapshot_row_seq(snapshot_gtid.seq)}
        assert snapshot_row_seq(snapshot_gtid.seq) < changes[0]["source"]["seq"]
        assert all(c["source"]["snapshot"] == "false" and c["source"]["ts_ms"] > 0 and c["source"]["tx_id"] for c in changes)
        key = f"{target}|2026-05".encode()
        assert any(m.value() is None and m.key() == key for m in reader.messages), "a delete is followed by a tombstone"

        # the GTID of the delete is recorded in connect.<dept>.offsets once Kafka has it
        wait_for(lambda: (offset_record(kafka_admin, conn.source.name) or {}).get("seq", 0) >= gtids[2].seq, 30,
                 "connect.offsets to record the delete's GTID")
    finally:
        conn.stop()
    assert conn.error is None
    saved = offset_record(kafka_admin, conn.source.name)
    assert saved["snapshot_completed"] and Gtid.parse(saved["position"].split(",")[0]).seq >= gtids[2].seq


def _merged(envelopes: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """Ingest and merge ``envelopes`` in order: the profiles per USCC, and the positions of the
    changes the merge skipped as replays (a seq not above the last merged for its row)."""
    ds = catalogue().department("hrss").datasets["social_insurance"]
    pseudonymizer = Pseudonymizer(TEST_KEY.encode())
    profiles: dict[str, dict] = {}
    skipped = []
    for offset, env in enumerate(envelopes):
        ev = to_enterprise_event(ds, env, Provenance(TOPIC, 0, offset), pseudonymizer, 0)
        profiles[ev["uscc"]], _ = merge_event(profiles.get(ev["uscc"]), ev, offset, 0)
        if profiles[ev["uscc"]]["version"] != offset:
            skipped.append(env["source"]["position"])
    return profiles, skipped


def test_rows_changed_more_than_once_in_one_transaction_end_in_their_final_state(mysql_depts, kafka_admin, topic_reader):
    """One transaction updates row A twice and inserts, updates and deletes row B; a second one
    inserts row C with a multi-row upsert that updates C twice within one row event. Every change
    has its own position and a seq above the one before it, so the merge keeps all of them and every
    row ends in its final state."""
    sim = mysql_depts
    ents = enterprises(3, seed=41)
    counts = sim.seed(ents, today=TODAY)
    dsn, db = sim.dsn("hrss"), sim.databases["hrss"]
    a, b, c = (e.uscc for e in ents)
    reader = topic_reader([TOPIC])
    conn = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and len(ours(reader, db)) >= counts["social_insurance"]
                 and conn.source.snapshot_completed(), 60, "the snapshot")
        execute(dsn,
                ("UPDATE social_insurance SET insured_headcount = 101 WHERE uscc = %s AND period = '2026-04'", (a,)),
                ("UPDATE social_insurance SET insured_headcount = 102, payment_status = 'suspended'"
                 " WHERE uscc = %s AND period = '2026-04'", (a,)),
                ("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status)"
                 " VALUES (%s, '2026-05', 3, 'paid')", (b,)),
                ("UPDATE social_insurance SET insured_headcount = 4 WHERE uscc = %s AND period = '2026-05'", (b,)),
                ("DELETE FROM social_insurance WHERE uscc = %s AND period = '2026-05'", (b,)))
        execute(dsn, ("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status) VALUES"
                      " (%s, '2026-05', 5, 'paid'), (%s, '2026-05', 6, 'paid'), (%s, '2026-05', 7, 'paid')"
                      " ON DUPLICATE KEY UPDATE insured_headcount = VALUES(insured_headcount)", (c, c, c)))

        def streamed():
            reader.poll()
            return [e for e in ours(reader, db) if e["op"] != "r"]
        wait_for(lambda: len(streamed()) >= 8, 30, "the eight changes of the two transactions")
        reader.poll(0.5)
    finally:
        conn.stop()
    assert conn.error is None
    changes = sorted(streamed(), key=lambda e: e["source"]["seq"])
    assert len(changes) == 8
    first, second = (Gtid.parse(changes[i]["source"]["position"].partition("#")[0]) for i in (0, 5))
    assert first < second
    assert [(e["op"], e["source"]["position"], e["source"]["seq"]) for e in changes] == [
        (op, f"{g}#{i}", change_seq(g.seq, i))
        for g, ops in ((first, "uucud"), (second, "cuu")) for i, op in enumerate(ops)]
    assert [(e["after"] or e["before"])["uscc"] for e in changes] == [a, a, b, b, b, c, c, c]
    assert [e["after"]["insured_headcount"] for e in changes if e["after"]] == [101, 102, 3, 4, 5, 6, 7]

    profiles, skipped = _merged(changes)
    assert skipped == [], "changes taken for replays of the change before them"
    assert profiles[a]["monthly"]["hrss.headcount"] == {"2026-04": 102.0}
    assert "2026-05" not in profiles[b]["monthly"].get("hrss.headcount", {})  # inserted, updated, deleted
    assert profiles[c]["monthly"]["hrss.headcount"] == {"2026-05": 7.0}
    # the table agrees
    settings, _ = parse_dsn(dsn)
    check = pymysql.connect(**settings, database=db)
    try:
        with check.cursor() as cur:
            cur.execute("SELECT uscc, period, insured_headcount, payment_status FROM social_insurance"
                        " WHERE (uscc = %s AND period = '2026-04') OR (uscc IN (%s, %s) AND period = '2026-05')", (a, b, c))
            assert sorted(cur.fetchall()) == sorted([(a, "2026-04", 102, "suspended"), (c, "2026-05", 7, "paid")])
    finally:
        check.close()


def test_restart_resumes_from_the_saved_gtid_without_resnapshot(mysql_depts, kafka_admin, topic_reader):
    sim = mysql_depts
    ents = enterprises(5, seed=9)
    sim.seed(ents, today=TODAY)
    dsn, db = sim.dsn("hrss"), sim.databases["hrss"]
    reader = topic_reader([TOPIC])
    first = RunningConnector(dsn, kafka_admin)
    wait_for(lambda: reader.poll() is not None and len(ours(reader, db)) >= 60 and first.source.snapshot_completed(),
             60, "the snapshot")
    execute(dsn, ("UPDATE social_insurance SET agency = 'before the stop' WHERE uscc = %s AND period = '2026-04'",
                  (ents[0].uscc,)))
    wait_for(lambda: reader.poll() is not None and any(e["op"] == "u" for e in ours(reader, db)), 30, "a streamed update")
    first.stop()
    assert first.error is None

    # what the lag gauge reports: the binlog transactions after the acknowledged GTID
    behind_before = first.source.lag_transactions()
    # 25 committed changes while the connector is down, one transaction each
    for i, e in enumerate(ents):
        for period in ("2025-12", "2026-01", "2026-02", "2026-03"):
            execute(dsn, ("UPDATE social_insurance SET insured_headcount = insured_headcount + %s"
                          " WHERE uscc = %s AND period = %s", (i + 1, e.uscc, period)))
        execute(dsn, ("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status)"
                      " VALUES (%s, '2026-05', 9, 'paid')", (e.uscc,)))
    expected = 1 + 25
    second = RunningConnector(dsn, kafka_admin)
    try:
        def streamed():
            reader.poll()
            return [e for e in ours(reader, db) if e["op"] != "r"]
        wait_for(lambda: len(streamed()) >= expected, 60, f"{expected} changes, 25 of them made while the connector was down")
        reader.poll(1.0)
        snapshot_rows = [e for e in ours(reader, db) if e["op"] == "r"]
        assert len(snapshot_rows) == 60, "the restart must not snapshot again"
        positions = [e["source"]["position"] for e in streamed()]
        assert len(positions) == len(set(positions)) == expected, "no change lost, none twice after a clean stop"
        assert sum(1 for e in streamed() if e["op"] == "c") == 5
        assert first.source.lag_transactions() >= behind_before + 25, "the 25 changes counted as lag of the old position"
        wait_for(lambda: second.source.lag_transactions() < 25, 30, "the new position's lag to shrink")
    finally:
        second.stop()
    assert second.error is None


def test_add_column_mid_stream_keeps_columns_mapped_by_name(mysql_depts, kafka_admin, topic_reader):
    sim = mysql_depts
    ents = enterprises(2, seed=21)
    sim.seed(ents, today=TODAY)
    dsn, db = sim.dsn("hrss"), sim.databases["hrss"]
    reader = topic_reader([TOPIC])
    conn = RunningConnector(dsn, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and len(ours(reader, db)) >= 24 and conn.source.snapshot_completed(),
                 60, "the snapshot")
        # a new column in the middle: every later column moves one position to the right
        execute(dsn, ("ALTER TABLE social_insurance ADD COLUMN industry_code VARCHAR(8) NULL AFTER period", ()))
        execute(dsn, ("INSERT INTO social_insurance (uscc, period, industry_code, unit_name, insured_headcount,"
                      " payment_status, contact_phone) VALUES (%s, '2026-05', 'C3670', '重庆山城机械有限公司', 42, 'partial',"
                      " '13912345678')", (ents[0].uscc,)))
        execute(dsn, ("UPDATE social_insurance SET insured_headcount = 41, payment_status = 'arrears'"
                      " WHERE uscc = %s AND period = '2026-05'", (ents[0].uscc,)))
        # and one dropped: the remaining columns move left
        execute(dsn, ("ALTER TABLE social_insurance DROP COLUMN new_insured", ()))
        execute(dsn, ("UPDATE social_insurance SET unit_name = '重庆山城重工有限公司' WHERE uscc = %s AND period = '2026-05'",
                      (ents[0].uscc,)))

        def streamed():
            reader.poll()
            return [e for e in ours(reader, db) if e["op"] in "cu"]
        ins, upd, upd2 = wait_for(lambda: len(streamed()) >= 3 and streamed(), 30, "the changes after ALTER TABLE")[:3]
        assert ins["after"]["unit_name"] == "重庆山城机械有限公司"
        assert ins["after"]["insured_headcount"] == 42 and ins["after"]["payment_status"] == "partial"
        assert ins["after"]["contact_phone"] == "13912345678"
        assert (upd["before"]["insured_headcount"], upd["after"]["insured_headcount"]) == (42, 41)
        assert upd["after"]["unit_name"] == "重庆山城机械有限公司" and upd["after"]["payment_status"] == "arrears"
        assert upd2["after"]["unit_name"] == "重庆山城重工有限公司" and upd2["after"]["insured_headcount"] == 41
        assert upd2["after"]["new_insured"] is None and upd2["after"]["contact_phone"] == "13912345678"
    finally:
        conn.stop()
    assert conn.error is None


def test_simulator_step_streams_every_department(mysql_depts, kafka_admin, topic_reader):
    """The four simulated departments go through their connectors; each row converts to its schema."""
    sim = mysql_depts
    ents = enterprises(40, seed=33)
    counts = sim.seed(ents, today=TODAY)
    topics = [ds.topic for d in DEPARTMENTS for ds in catalogue().department(d).datasets.values()]
    reader = topic_reader(topics)
    conns = [RunningConnector(sim.dsn(d), kafka_admin, dept=d) for d in DEPARTMENTS]
    try:
        total = sum(counts.values())
        dbs = set(sim.databases.values())

        def mine():
            reader.poll()
            return [e for db in dbs for e in ours(reader, db)]
        wait_for(lambda: len(mine()) >= total, 90, f"the snapshots of all {total} rows")
        sim.step(30, today=TODAY)
        wait_for(lambda: sum(1 for e in mine() if e["op"] != "r") >= 10, 60, "streamed simulator changes")
        tables = {e["source"]["table"] for e in mine()}
        assert tables == {"social_insurance", "housing_fund_contribution", "electricity_usage", "customs_trade", "customs_credit"}
    finally:
        for c in conns:
            c.stop()
    assert all(c.error is None for c in conns)
