"""Bulk loading for the simulators' seeds: PostgreSQL ``COPY`` and MariaDB ``LOAD DATA LOCAL INFILE``.

Seeding a million enterprises writes tens of millions of rows; row-by-row parameter binding
(``execute_values``, PyMySQL's ``executemany``) spends most of that time escaping values in
Python. Both databases read the same tab-separated text instead (``\\N`` for NULL, backslash
escapes), which ``tsv`` produces with one ``str`` per value.

Seeding stays idempotent: re-running a seed with the same ``--seed`` re-creates the same rows.
PostgreSQL keeps the existing row, as the simulators' former ``INSERT … ON CONFLICT DO
NOTHING`` did (a ``COPY`` that hits a unique key is redone through a staging table); MariaDB
replaces it (``LOAD DATA … REPLACE``, as the former ``ON DUPLICATE KEY UPDATE``: the row ends up
as generated). ``BackgroundLoader`` lets a group load one chunk while it generates the next.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import psycopg2.errors
from psycopg2 import sql

T = TypeVar("T")

# Enterprises per seed chunk: rows of one chunk are generated, loaded and committed together, so
# a seed's memory is bounded by the chunk, not the population (≈ 60 rows per enterprise).
SEED_CHUNK = 5000

_PLAIN = frozenset({int, float, dt.date, dt.datetime, Decimal})  # str() is their text form
_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_field(value: Any) -> str:
    """One value in the text format both ``COPY … FROM STDIN`` and ``LOAD DATA`` read by default."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_TEXT_ESCAPES)
    if isinstance(value, bool):
        return "1" if value else "0"  # PostgreSQL booleans and MariaDB TINYINT(1) both read 1/0
    return str(value)  # int, float (str is repr: what psycopg2 and PyMySQL send), date, datetime, Decimal


def tsv(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows as tab-separated UTF-8 lines, each ending in ``\\n``: ``tsv_field`` of every value,
    inlined (this runs for every one of the tens of millions of seed rows; half the time of
    calling ``tsv_field``), and strings translated only when they hold a character to escape."""
    esc = _TEXT_ESCAPES
    return "".join(["\t".join(["\\N" if v is None
                               else (v.translate(esc) if ("\\" in v or "\t" in v or "\n" in v or "\r" in v) else v)
                               if v.__class__ is str
                               else str(v) if v.__class__ in _PLAIN
                               else tsv_field(v)  # bool, str subclasses, anything else
                               for v in row]) + "\n" for row in rows]).encode("utf-8")


def chunks(items: Iterable[T], size: int = 0) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items (default ``SEED_CHUNK``)."""
    size = size or SEED_CHUNK
    it = iter(items)
    while part := list(itertools.islice(it, size)):
        yield part


class BackgroundLoader:
    """Runs load jobs on one worker thread while the caller generates the next chunk.

    Generating rows holds the GIL; loading them mostly waits for the database (psycopg2 and
    sockets release the GIL), so the two overlap. At most ``depth`` jobs wait in the queue, so
    memory stays bounded by a few chunks. Jobs run in submission order; the first job that
    fails stops the rest and its exception is raised by the next ``submit`` or by ``close``.
    Use as a context manager: leaving the block waits for the queued jobs (or, after an
    exception in the block, skips them).
    """

    def __init__(self, name: str, depth: int = 1) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"yurong-load-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None and not self._abandon.is_set():
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 — any failure, handed to the submitting thread, which re-raises it
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` (waits while ``depth`` jobs are queued); raises an earlier job's error."""
        self._raise()
        self._jobs.put(job)

    def close(self, abandon: bool = False) -> None:
        """Wait until the queued jobs are done (``abandon``: skip those not started); raise a job's error."""
        if abandon:
            self._abandon.set()
        self._jobs.put(None)
        self._thread.join()
        if not abandon:
            self._raise()

    def __enter__(self) -> BackgroundLoader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abandon=exc_type is not None)


# --- PostgreSQL -----------------------------------------------------------------------------------


def seed_in_chunks(name: str, enterprises: Iterable[T], chunk: int,
                   seed_rows: Callable[[list[T]], dict[str, list]], conns: Mapping[str, Any],
                   table_dept: Mapping[str, str], insert: Callable[[Any, str, list], None], counts: dict[str, int],
                   progress: Callable[[int], None] | None = None) -> None:
    """A group's seeding loop: ``seed_rows(part)`` makes each chunk's rows per table while the
    previous chunk is loaded on a :class:`BackgroundLoader` — ``insert(conn, table, rows)`` per
    table on the connection of the table's department (``conns[table_dept[table]]``), then every
    connection commits and ``progress(len(part))`` is called. The rows per table are added to
    ``counts``."""
    def load(tables: dict[str, list], k: int) -> None:
        for table, rows in tables.items():
            insert(conns[table_dept[table]], table, rows)
        for conn in conns.values():
            conn.commit()
        if progress:
            progress(k)

    with BackgroundLoader(name) as loader:
        for part in chunks(enterprises, chunk):
            tables = seed_rows(part)
            for table, rows in tables.items():
                counts[table] += len(rows)
            loader.submit(functools.partial(load, tables, len(part)))


class _BytesReader:
    """The minimal file object ``copy_expert`` reads from (no copy of the buffer, unlike BytesIO)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._pos + size
        out = self._view[self._pos:end].tobytes()
        self._pos += len(out)
        return out


def pg_copy(cur, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) into ``table``; rows whose unique key already
    exists are skipped, as with ``INSERT … ON CONFLICT DO NOTHING``. Runs in the cursor's
    transaction; the caller commits.

    Rows are copied straight into ``table`` inside a savepoint; only if that hits a unique key
    (a seed run again over existing rows) are they copied into a temporary staging table and
    inserted from there with ``ON CONFLICT DO NOTHING``.
    """
    if not rows:
        return
    data = tsv(rows)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    cur.execute("SAVEPOINT yurong_bulk")
    try:
        cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), cols).as_string(cur),
                        _BytesReader(data))
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT yurong_bulk")
    else:
        cur.execute("RELEASE SAVEPOINT yurong_bulk")
        return
    stage = sql.Identifier(f"yurong_stage_{table}")
    cur.execute(sql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
        stage, cols, sql.Identifier(table)))
    cur.execute(sql.SQL("TRUNCATE {}").format(stage))
    cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, cols).as_string(cur), _BytesReader(data))
    cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
        sql.Identifier(table), cols, cols, stage))
    cur.execute(sql.SQL("TRUNCATE {}").format(stage))


# --- MariaDB ------------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def mysql_identifier(name: str) -> str:
    """A table or column name, back-quoted; only plain names (the simulator's own constants) pass."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain table or column name")
    return f"`{name}`"


def mysql_local_infile(conn) -> bool:
    """True if the server accepts ``LOAD DATA LOCAL INFILE`` (``local_infile`` is ON)."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.local_infile")
        (value,) = cur.fetchone()
    return bool(int(value))


def mysql_load(conn, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               tmp_dir: str | None = None) -> None:
    """``LOAD DATA LOCAL INFILE … REPLACE`` ``rows`` into ``table`` (a row whose key exists is
    replaced). ``conn`` must be a PyMySQL connection opened with ``local_infile=True``; runs in
    its transaction, the caller commits."""
    if not rows:
        return
    fd, path = tempfile.mkstemp(prefix="yurong-load-", suffix=".tsv", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(tsv(rows))
        statement = (f"LOAD DATA LOCAL INFILE %s REPLACE INTO TABLE {mysql_identifier(table)} CHARACTER SET utf8mb4"
                     f" ({', '.join(map(mysql_identifier, columns))})")
        with conn.cursor() as cur:
            cur.execute(statement, (path,))
    finally:
        os.unlink(path)
