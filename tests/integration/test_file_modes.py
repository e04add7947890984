"""Data at rest is its owner's only (issue 14, item 6): after `scripts/stack.sh up`, the data
directories of Kafka, Redis, PostgreSQL and MariaDB, the stack's logs, and a sink's embedded
ClickHouse store hold no file that group or others can read, their directories are 0700 (0711 where
the postgres or mysql user must pass through, as root), and the services keep it so for what they
write next (they run with umask 077, MariaDB with UMASK=0600)."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Producer

from sinks.clickhouse.writer import open_client
from streams.kafka.admin import ensure_topics
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

READABLE = stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH


def exposed(top: Path) -> list[str]:
    """Regular files and directories under ``top`` (itself included) that group or others may
    read or write (a directory's x alone lets them pass, not list; sockets and links are not data)."""
    out = []
    for root, _dirs, files in os.walk(top):
        for path in [Path(root)] + [Path(root) / n for n in files]:
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:  # e.g. a Kafka segment deleted while we walk
                continue
            if (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and mode & READABLE:
                out.append(f"{stat.filemode(mode)} {path}")
    return out


def service_pid(home: Path, name: str) -> int:
    return int((home / "run" / f"{name}.pid").read_text().split()[0])


def proc_umask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask in /proc/{pid}/status")


def test_the_stacks_data_is_its_owners_only(settings, kafka_admin, pg_admin_dsn):
    home = settings.paths.home
    data = [home / "kafka" / "data", home / "redis", home / "pg" / "data", home / "mariadb" / "data", home / "logs"]
    for d in data:
        assert d.is_dir(), f"{d}: no such folder — was the stack started by scripts/stack.sh up?"
    bad = [x for d in data for x in exposed(d)]
    assert not bad, f"{len(bad)} data files or folders others can read, e.g.\n" + "\n".join(bad[:20])
    for d in (home, home / "pg", home / "mariadb"):
        assert stat.S_IMODE(d.stat().st_mode) in (0o700, 0o711), f"{d}: {oct(d.stat().st_mode)}"
    assert sum(1 for _ in (home / "kafka" / "data").rglob("*.log")) > 0, "Kafka's segments were seen"

    # what the services write from now on is private too: they run with umask 077 (MariaDB 066
    # with UMASK=0600 — its files are 0600; PostgreSQL sets 077 itself)
    for name in ("kafka", "redis", "mariadb", "postgres"):
        assert proc_umask(service_pid(home, name)) & 0o044 == 0o044, f"{name} runs with umask {oct(proc_umask(service_pid(home, name)))}"
    topic = f"test.modes.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_admin, {topic: {}}, partitions=1)
    producer = Producer(dict(kafka_admin))
    producer.produce(topic, b"x")
    assert producer.flush(15) == 0
    part = home / "kafka" / "data" / f"{topic}-0"
    wait_for(part.is_dir, 30, f"{part}")
    assert stat.S_IMODE(part.stat().st_mode) == 0o700 and not exposed(part)
    db = f"modes_{uuid.uuid4().hex[:8]}"
    pg = psycopg2.connect(pg_admin_dsn)
    pg.autocommit = True
    try:
        with pg.cursor() as cur:
            cur.execute(f"CREATE DATABASE {db}")  # generated name
            cur.execute(f"DROP DATABASE {db}")
    finally:
        pg.close()
    subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(os.environ.get("YURONG_MYSQL_PORT", "13306")),
                    "-u", "yurong", "-pyurong", "-e", f"CREATE DATABASE {db}; CREATE TABLE {db}.t (i INT); DROP DATABASE {db}"],
                   check=True, capture_output=True, timeout=60)
    bad = [x for d in data for x in exposed(d)]
    assert not bad, "after new writes:\n" + "\n".join(bad[:20])


def test_a_sinks_embedded_store_is_its_owners_only(tmp_path):
    folder = tmp_path / "home" / "chdb"
    # a store made before: a folder and a part others could read
    (folder / "old").mkdir(parents=True)
    (folder / "old" / "part.bin").write_bytes(b"x")
    os.chmod(folder / "old" / "part.bin", 0o644)
    os.chmod(folder, 0o755)
    before = os.umask(0o022)
    try:
        client = open_client(f"chdb://{folder}", "yurong_modes")
        client.command("CREATE TABLE t (s String) ENGINE = MergeTree ORDER BY s")
        client.command("INSERT INTO t VALUES ('a'), ('b')")
        assert client.query("SELECT count() FROM t").result_rows == [(2,)]
        files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
        assert len(files) > 10, "chDB wrote its store"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        bad = exposed(folder)
        assert not bad, "\n".join(bad[:20])
        client.close()
    finally:
        os.umask(before)

