"""kill -9 of the MariaDB binlog, polling and file-drop connectors loses nothing.

Each connector runs as ``yurong connect <dept>`` in a child process, is killed with SIGKILL while
its department keeps committing (or while it reads a large file) and is started again; then every
committed row's final state is in Kafka. Duplicates are allowed (at-least-once) and counted; the
PostgreSQL connector's counterpart is ``test_connector_faults.py``.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pymysql
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.filedrop import FILE_SCHEMA
from connectors.mysql import parse_dsn
from connectors.offsets import connect_topic
from connectors.simulator.file_depts import COLUMNS, drop_file
from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.mysql_depts import DDL as MYSQL_DDL
from connectors.simulator.polled_depts import DDL as POLLED_DDL
from streams.codecs.serde import schema_store
from streams.kafka.admin import watermark_offsets
from tests.conftest import _unavailable, drop_database, make_database, wait_for
from tests.harness import ConnectorProcess, Envelopes

pytestmark = pytest.mark.integration

SOCIAL_INSURANCE = "dept.hrss.social_insurance"
GAS = "dept.gas.gas_usage"
WATER = "dept.water.water_usage"


# --- shared helpers -----------------------------------------------------------------------------


class Writer(threading.Thread):
    """Commits one source transaction after another until ``halt()``.

    ``step()`` runs and commits one transaction and returns what it committed; ``committed``
    grows only after the commit returned, so it never holds a change the database may not have.
    """

    def __init__(self, step: Callable[[], list], pause: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.step = step
        self.pause = pause
        self.committed: list = []
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self.committed.extend(self.step())
                time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 — reported by check()/halt()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the writer failed: {self.error!r}") from self.error

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)


def wait_committed_while_down(writer: Writer, n: int = 20) -> None:
    """Let ``n`` more transactions commit (the connector is down meanwhile)."""
    down_at = len(writer.committed)
    wait_for(lambda: writer.check() or len(writer.committed) >= down_at + n, 30, "changes committed while the connector is down",
             interval=0.02)


def last_by_key(envelopes: list[dict], key: Callable[[dict], object]) -> dict:
    """The last event of every row key: what a compacted topic (or an upsert sink) ends with."""
    last = {}
    for env in envelopes:
        last[key(env["after"] or env["before"])] = env
    return last


def usccs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add(make_uscc(rng, pick_district(rng)))
    return sorted(out)


# --- MariaDB binlog (hrss) ----------------------------------------------------------------------

PERIODS = [f"2025-{m:02d}" for m in range(1, 13)]


def si_key(row: dict) -> tuple[str, str]:
    return row["uscc"], row["period"]


@pytest.fixture
def hrss_db(settings, unique):
    """A fresh MariaDB database with the hrss schema; yields (DSN, database name)."""
    admin_dsn = settings.source.dsn("hrss", "mysql")
    conn_settings, _ = parse_dsn(admin_dsn)
    try:
        admin = pymysql.connect(**{**conn_settings, "connect_timeout": 3}, autocommit=True)
    except pymysql.err.OperationalError:
        _unavailable("MariaDB (the hrss/housing_fund/power/customs department DB)")
    db = f"hrss_f{unique}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + db
    conn = pymysql.connect(**conn_settings, database=db)
    with conn.cursor() as cur:
        cur.execute(MYSQL_DDL["hrss"][0])
    conn.close()
    yield dsn, db
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    admin.close()


def hrss_connector(dsn: str, bootstrap: dict, log: Path) -> ConnectorProcess:
    return ConnectorProcess("hrss", bootstrap, log, {"YURONG_SOURCE_DSNS": json.dumps({"hrss": dsn})})


def mysql_conn(dsn: str):
    conn_settings, db = parse_dsn(dsn)
    return pymysql.connect(**conn_settings, database=db, autocommit=False)


def seed_social_insurance(dsn: str, enterprises: int, seed: int) -> dict[tuple[str, str], int]:
    """``enterprises`` × 12 monthly rows, insured_headcount (the row's version) 1."""
    keys = [(u, p) for u in usccs(enterprises, seed) for p in PERIODS]
    conn = mysql_conn(dsn)
    try:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status)"
                            " VALUES (%s, %s, 1, 'paid')", keys)
        conn.commit()
    finally:
        conn.close()
    return dict.fromkeys(keys, 1)


class SocialInsuranceChanges:
    """One transaction per ``__call__``: a new row, an update of 1–3 rows (insured_headcount + 1:
    the version) or, with ``deletes``, a delete. Returns ``[(key, version or None for a delete)]``."""

    def __init__(self, dsn: str, rows: dict[tuple[str, str], int], deletes: bool, seed: int) -> None:
        self.conn = mysql_conn(dsn)
        self.rows = dict(rows)
        self.live = list(rows)
        self.deletes = deletes
        self.rng = random.Random(seed)
        self.new_usccs = iter(usccs(5000, seed + 1))

    def _take_live(self) -> tuple[str, str]:
        i = self.rng.randrange(len(self.live))
        self.live[i], self.live[-1] = self.live[-1], self.live[i]
        return self.live.pop()

    def __call__(self) -> list:
        roll = self.rng.random()
        done = []
        with self.conn.cursor() as cur:
            if roll < 0.35 or len(self.live) < 5:
                key = (next(self.new_usccs), "2026-05")
                cur.execute("INSERT INTO social_insurance (uscc, period, insured_headcount, payment_status)"
                            " VALUES (%s, %s, 1, 'paid')", key)
                self.conn.commit()
                self.rows[key] = 1
                self.live.append(key)
                done.append((key, 1))
            elif roll < 0.85 or not self.deletes:
                for key in self.rng.sample(self.live, self.rng.choice((1, 1, 2, 3))):
                    cur.execute("UPDATE social_insurance SET insured_headcount = insured_headcount + 1,"
                                " payment_status = 'partial' WHERE uscc = %s AND period = %s", key)
                    self.rows[key] += 1
                    done.append((key, self.rows[key]))
                self.conn.commit()
            else:
                key = self._take_live()
                cur.execute("DELETE FROM social_insurance WHERE uscc = %s AND period = %s", key)
                self.conn.commit()
                del self.rows[key]
                done.append((key, None))
        return done

    def close(self) -> None:
        self.conn.close()


def social_insurance_now(dsn: str) -> dict[tuple[str, str], int]:
    conn = mysql_conn(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT uscc, period, insured_headcount FROM social_insurance")
            return {(u, p): n for u, p, n in cur.fetchall()}
    finally:
        conn.close()


def final_state_problems(last: dict, final: dict, version: Callable[[dict], object], deleted: set = frozenset()) -> list[str]:
    """What in ``last`` (key → last event) does not match ``final`` (key → version of the row now);
    ``deleted`` keys must end with a delete. Empty when Kafka holds the final state of every row."""
    problems = []
    for key, v in final.items():
        env = last.get(key)
        if env is None:
            problems.append(f"{key}: no event")
        elif env["op"] == "d" or version(env["after"]) != v:
            problems.append(f"{key}: last event {env['op']} {env['after'] and version(env['after'])}, the row has {v}")
    for key in deleted:
        if key in last and last[key]["op"] != "d":
            problems.append(f"{key}: deleted, last event {last[key]['op']}")
    problems += [f"{key}: not a row of ours" for key in last.keys() - final.keys() - set(deleted)]
    return problems


def test_mysql_kill_mid_snapshot_under_commits_then_restart(hrss_db, kafka_admin, topic_reader, tmp_path):
    dsn, db = hrss_db
    seeded = seed_social_insurance(dsn, 3500, seed=41)  # 42,000 rows: a snapshot of a few seconds
    events = Envelopes(topic_reader([SOCIAL_INSURANCE]), lambda env: env["source"]["db"] == db)
    conn = hrss_connector(dsn, kafka_admin, tmp_path / "connect.log")
    changes = SocialInsuranceChanges(dsn, seeded, deletes=False, seed=42)
    writer = Writer(changes)
    conn.start()
    writer.start()  # commits before, during and after the snapshots
    try:
        wait_for(lambda: conn.snapshot_rows() >= 5000, 60, lambda: "the first snapshot rows\n" + conn.log_tail(), interval=0.02)
        conn.kill9()
        assert "snapshot complete" not in conn.log_text(), "killed too late: seed more rows"
        first_snapshot = sum(1 for e in events.refresh(0.2) if e["op"] == "r")
        wait_committed_while_down(writer)

        conn.start()
        wait_for(lambda: writer.check() or "snapshot complete" in conn.log_since_start(), 60,
                 lambda: "the second snapshot to complete\n" + conn.log_tail())
        assert "snapshotting again" in conn.log_since_start()
        streaming_at = len(writer.committed)
        wait_for(lambda: writer.check() or len(writer.committed) >= streaming_at + 100, 30, "changes after the snapshot")
        writer.halt()
        writer.check()

        final = social_insurance_now(dsn)
        assert len(final) == len(seeded) + sum(1 for _, v in writer.committed if v == 1)
        wait_for(lambda: not final_state_problems(last_by_key(events.refresh(0.5), si_key), final,
                                                  lambda r: r["insured_headcount"]), 60,
                 lambda: "the final state of every row: " + "; ".join(final_state_problems(
                     last_by_key(events.items, si_key), final, lambda r: r["insured_headcount"])[:5]) + "\n" + conn.log_tail())
        snapshot = [e for e in events.items if e["op"] == "r"]
        streamed = [e for e in events.items if e["op"] != "r"]
        dup_stream = len(streamed) - len({(e["source"]["position"], si_key(e["after"])) for e in streamed})
        print(f"\nmysql mid-snapshot: {len(final)} rows, {len(writer.committed)} committed changes; snapshot events "
              f"{len(snapshot)} ({first_snapshot} from the killed snapshot, sent again), streamed {len(streamed)} "
              f"({dup_stream} duplicates)")
        assert dup_stream == 0, "a fresh snapshot streams from its own GTID: no change twice"
    finally:
        writer.halt()
        changes.close()
        conn.stop()


def test_mysql_kill_mid_stream_under_commits_then_restart(hrss_db, kafka_admin, topic_reader, tmp_path):
    dsn, db = hrss_db
    seeded = seed_social_insurance(dsn, 20, seed=43)
    events = Envelopes(topic_reader([SOCIAL_INSURANCE]), lambda env: env["source"]["db"] == db)
    conn = hrss_connector(dsn, kafka_admin, tmp_path / "connect.log")
    changes = SocialInsuranceChanges(dsn, seeded, deletes=True, seed=44)
    writer = Writer(changes)
    conn.start()
    try:
        wait_for(lambda: "streaming the binlog from" in conn.log_text(), 60, lambda: "the connector to stream\n" + conn.log_tail())
        writer.start()
        for _ in range(3):  # kill -9 three times while changes keep being committed
            streamed_before = sum(1 for e in events.refresh(0.1) if e["op"] != "r")
            wait_for(lambda before=streamed_before: writer.check() or sum(1 for e in events.refresh(0.1) if e["op"] != "r") >= before + 30,
                     60, lambda: "streamed changes\n" + conn.log_tail())
            conn.kill9()
            wait_committed_while_down(writer)
            conn.start()
        streaming_at = len(writer.committed)
        wait_for(lambda: writer.check() or len(writer.committed) >= streaming_at + 50, 30, "changes after the last restart")
        writer.halt()
        writer.check()

        final = social_insurance_now(dsn)
        deleted = {k for k, v in writer.committed if v is None}
        version = lambda r: r["insured_headcount"]  # noqa: E731
        wait_for(lambda: not final_state_problems(last_by_key(events.refresh(0.5), si_key), final, version, deleted), 60,
                 lambda: "the final state of every row: " + "; ".join(final_state_problems(
                     last_by_key(events.items, si_key), final, version, deleted)[:5]) + "\n" + conn.log_tail())
        # every committed change itself, not only the last state of each row, reached Kafka
        seen = Counter((si_key(e["after"] or e["before"]), None if e["op"] == "d" else e["after"]["insured_headcount"])
                       for e in events.items)
        missing = [c for c in writer.committed if c not in seen]
        assert not missing, f"{len(missing)} committed changes never reached Kafka, e.g. {missing[:5]}"
        assert all((k, 1) in seen for k in seeded), "every seeded row (snapshot)"
        streamed = [e for e in events.items if e["op"] != "r"]
        copies = Counter((e["source"]["position"], si_key(e["after"] or e["before"]), e["op"]) for e in streamed)
        dup = sum(n - 1 for n in copies.values())
        print(f"\nmysql mid-stream: {len(writer.committed)} committed changes ({len(deleted)} deletes); streamed "
              f"{len({e['source']['position'] for e in streamed})} distinct changes (positions) in "
              f"{len({e['source']['position'].partition('#')[0] for e in streamed})} transactions, 3 kills, "
              f"{dup} duplicate events")
    finally:
        writer.halt()
        changes.close()
        conn.stop()


# --- polling (gas) ------------------------------------------------------------------------------


@pytest.fixture
def gas_db(pg_admin_dsn, unique):
    name = f"gas_f{unique}"
    dsn = make_database(pg_admin_dsn, name)
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute(POLLED_DDL["gas"])
    pg.close()
    yield dsn, name
    drop_database(pg_admin_dsn, name)


class GasChanges:
    """One transaction per ``__call__``: a new bill or an update of 1–3 bills (volume_m3 + 1: the
    version; ``updated_at = now()`` as the department does). Returns ``[(id, version)]``."""

    def __init__(self, dsn: str, seed: int) -> None:
        self.pg = psycopg2.connect(dsn)
        self.rng = random.Random(seed)
        self.usccs = usccs(50, seed)
        self.rows: dict[int, int] = {}
        self.serial = 0

    def insert(self) -> list:
        self.serial += 1
        with self.pg.cursor() as cur:
            cur.execute("INSERT INTO gas_usage (uscc, account_no, billing_month, customer_type, volume_m3, amount,"
                        " payment_status) VALUES (%s, %s, '2026-05-01', 'commercial', 1, 3.41, 'unpaid') RETURNING id",
                        (self.rng.choice(self.usccs), f"RQF{self.serial:08d}"))
            row_id = cur.fetchone()[0]
        self.pg.commit()
        self.rows[row_id] = 1
        return [(row_id, 1)]

    def __call__(self) -> list:
        if self.rng.random() < 0.4 or len(self.rows) < 5:
            return self.insert()
        ids = self.rng.sample(sorted(self.rows), self.rng.choice((1, 1, 2, 3)))
        with self.pg.cursor() as cur:
            cur.execute("UPDATE gas_usage SET volume_m3 = volume_m3 + 1, updated_at = now() WHERE id = ANY(%s)", (ids,))
        self.pg.commit()
        for i in ids:
            self.rows[i] += 1
        return [(i, self.rows[i]) for i in ids]

    def close(self) -> None:
        self.pg.close()


def test_polling_kill_mid_stream_under_inserts_and_updates_then_restart(gas_db, kafka_admin, topic_reader, tmp_path):
    dsn, db = gas_db
    changes = GasChanges(dsn, seed=51)
    for _ in range(100):
        changes.insert()  # what the snapshot reads
    events = Envelopes(topic_reader([GAS]), lambda env: env["source"]["db"] == db)
    conn = ConnectorProcess("gas", kafka_admin, tmp_path / "connect.log",
                            {"YURONG_SOURCE_DSNS": json.dumps({"gas": dsn}), "YURONG_SOURCE_POLL_INTERVAL_S": "0.1"})
    writer = Writer(changes, pause=0.005)
    conn.start()
    try:
        wait_for(lambda: "snapshot read completely" in conn.log_text(), 60, lambda: "the snapshot\n" + conn.log_tail())
        writer.start()
        for _ in range(3):  # kill -9 three times while bills keep being inserted and updated
            streamed_before = sum(1 for e in events.refresh(0.1) if e["op"] != "r")
            wait_for(lambda before=streamed_before: writer.check() or sum(1 for e in events.refresh(0.1) if e["op"] != "r") >= before + 30,
                     60, lambda: "polled changes\n" + conn.log_tail())
            conn.kill9()
            wait_committed_while_down(writer)
            conn.start()
        streaming_at = len(writer.committed)
        wait_for(lambda: writer.check() or len(writer.committed) >= streaming_at + 50, 30, "changes after the last restart")
        writer.halt()
        writer.check()

        with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
            cur.execute("SELECT id, volume_m3 FROM gas_usage")
            final = {i: int(v) for i, v in cur.fetchall()}
        pg.close()
        assert final == changes.rows
        version = lambda r: int(r["volume_m3"])  # noqa: E731
        wait_for(lambda: not final_state_problems(last_by_key(events.refresh(0.5), lambda r: r["id"]), final, version), 60,
                 lambda: "the final state of every bill: " + "; ".join(final_state_problems(
                     last_by_key(events.items, lambda r: r["id"]), final, version)[:5]) + "\n" + conn.log_tail())
        # polling sees states, not changes: updates between two polls collapse, so only the last
        # state of each row is owed; count what was read more than once
        copies = Counter((e["after"]["id"], e["source"]["seq"]) for e in events.items)
        dup = sum(n - 1 for n in copies.values())
        print(f"\npolling mid-stream: {len(final)} bills, {len(writer.committed)} committed row changes, "
              f"{len(events.items)} events ({len(copies)} distinct row states, {dup} read again after a kill)")
    finally:
        writer.halt()
        changes.close()
        conn.stop()


# --- file drop (water) --------------------------------------------------------------------------


def water_rows(n: int, first: int, pool: list[str]) -> list[dict]:
    return [{"account_no": f"SWF{first + i:09d}", "billing_month": "2026-03-01", "uscc": pool[i % len(pool)],
             "volume_m3": 10 + i % 90, "amount": round((10 + i % 90) * 4.65, 2), "arrears": 0, "payment_status": "paid"}
            for i in range(n)]


def processed_file_records(bootstrap: dict, source: str) -> list[dict]:
    """Every ``connect.<dept>.files`` record of ``source`` (``<dept>@<folder>``, one per file a connector finished)."""
    schemas = schema_store()
    files_topic = connect_topic(source.split("@")[0], "files")
    consumer = Consumer({**bootstrap, "group.id": "test-files-reader", "enable.auto.commit": False})
    out = []
    try:
        low, high = watermark_offsets(consumer, TopicPartition(files_topic, 0))
        if high <= low:
            return out
        consumer.assign([TopicPartition(files_topic, 0, low)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            if msg.value() and (msg.key() or b"").startswith(f"{source}:".encode()):
                out.append(schemas.decode(msg.value(), FILE_SCHEMA)[1])
            if msg.offset() >= high - 1:
                return out
        raise AssertionError(f"could not read {files_topic} to offset {high}")
    finally:
        consumer.close()


def test_filedrop_kill_mid_file_and_between_files_then_restart(kafka_admin, topic_reader, tmp_path, unique):
    root = tmp_path / "drops"
    folder = root / "water"  # the connector reads <drop dir>/<dept>
    source = f"water@{folder.resolve()}"
    pool = usccs(200, seed=61)
    stem = f"water_usage-{unique}"
    sizes = {"1a": 300, "2b": 300, "3big": 40_000}
    files: dict[str, Path] = {}
    first = 0

    def drop(tag: str, n: int) -> None:
        nonlocal first
        files[tag] = drop_file(folder, f"{stem}-{tag}.csv", "water_usage", COLUMNS["water_usage"], water_rows(n, first, pool))
        first += n
        time.sleep(0.01)  # distinct modification times: files are taken oldest first

    for tag, n in sizes.items():
        drop(tag, n)
    events = Envelopes(topic_reader([WATER]), lambda env: (env["source"]["schema"] or "").startswith(stem + "-"))

    def lines_of(tag: str) -> list[str]:
        return [e["source"]["position"] for e in events.items if e["source"]["schema"] == files[tag].name]

    def done() -> set[str]:
        return {p.name for p in (folder / "done").glob(f"{stem}-*.csv")}

    conn = ConnectorProcess("water", kafka_admin, tmp_path / "connect.log",
                            {"YURONG_SOURCE_DROP_DIR": str(root), "YURONG_SOURCE_POLL_INTERVAL_S": "0.1"})
    conn.start()
    try:
        # 1) kill -9 in the middle of the large file, once two of its chunks were produced
        small = sizes["1a"] + sizes["2b"]
        wait_for(lambda: conn.metric("yurong_events_out_total") >= small + 10_000, 60,
                 lambda: "the first rows of the large file\n" + conn.log_tail(), interval=0.01)
        conn.kill9()
        done_at_first_kill = done()
        assert files["3big"].exists(), "killed too late: the large file was finished; make it larger"
        drop("4d", 300)  # dropped while the connector is down
        conn.start()
        wait_for(lambda: done() == {p.name for p in files.values()}, 90,
                 lambda: f"every file processed, done/ has {sorted(done())}\n" + conn.log_tail())

        # 2) kill -9 between files; meanwhile a new file and two files whose content was processed
        wait_for(lambda: events.refresh(0.2) is not None and all(len(set(lines_of(t))) == n for t, n in sizes.items()),
                 30, "every row in Kafka")
        before_second_kill = Counter(e["source"]["schema"] for e in events.items)
        conn.kill9()
        drop("5e", 300)
        for tag in ("1a", "3big"):  # the same content again, under another name
            copy = folder / f"{stem}-9copy{tag}.csv"
            shutil.copyfile(folder / "done" / files[tag].name, copy)
            shutil.copyfile(folder / "done" / (files[tag].name + ".manifest.json"), folder / (copy.name + ".manifest.json"))
        conn.start()
        expected_done = {p.name for p in files.values()} | {f"{stem}-9copy1a.csv", f"{stem}-9copy3big.csv"}
        wait_for(lambda: done() == expected_done, 60, lambda: f"the new files handled, done/ has {sorted(done())}\n" + conn.log_tail())
        wait_for(lambda: events.refresh(0.2) is not None and len(set(lines_of("5e"))) == 300, 30, "the rows of the new file")
        sizes["4d"] = sizes["5e"] = 300

        events.refresh(1.0)  # anything still arriving
        per_file = Counter(e["source"]["schema"] for e in events.items)
        for tag, n in sizes.items():
            lines = lines_of(tag)
            assert len(set(lines)) == n, f"{tag}: {n - len(set(lines))} rows never reached Kafka"
        ops = {tag: {(e["op"], e["source"]["snapshot"]) for e in events.items if e["source"]["schema"] == files[tag].name}
               for tag in sizes}
        load, news = {("r", "true")}, {("c", "false")}
        assert ops == {"1a": load, "2b": load, "3big": load, "4d": load, "5e": news}, \
            "the initial load (interrupted by the kill, finished after it) is a snapshot; a file after it is news"
        for name in done_at_first_kill:
            assert per_file[name] == before_second_kill[name] and len(set(
                e["source"]["position"] for e in events.items if e["source"]["schema"] == name)) == per_file[name], \
                f"{name} was finished before the first kill and sent again"
        for name, n in before_second_kill.items():
            assert per_file[name] == n, f"{name} was finished before the second kill and sent again"
        assert not any(name.startswith(f"{stem}-9copy") for name in per_file), "a processed content was sent again"
        assert "has the content of a file processed before" in conn.log_since_start()
        assert not list((folder / "rejected").iterdir())

        # exactly once per content: one connect.<dept>.files record per file, none for the copies
        records = processed_file_records(kafka_admin, source)
        by_sha = Counter(r["sha256"] for r in records)
        assert sorted(r["file"] for r in records) == sorted(p.name for p in files.values())
        assert all(n == 1 for n in by_sha.values()), f"a content recorded twice: {by_sha}"

        dup = {tag: len(lines_of(tag)) - sizes[tag] for tag in sizes}
        print(f"\nfiledrop: {len(sizes)} files, {sum(sizes.values())} rows; rows sent twice per file {dup} "
              f"(finished before the first kill: {sorted(done_at_first_kill)})")
    finally:
        conn.stop()
