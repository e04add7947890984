"""MariaDB/MySQL CDC from the binary log (``mysql-replication`` + PyMySQL), MariaDB GTIDs.

The server must run with ``log_bin``, ``binlog_format=ROW``, ``binlog_row_image=FULL`` and
``binlog_row_metadata=FULL`` (``scripts/stack.sh`` configures its MariaDB so): FULL row images
give updates and deletes their whole before-image, FULL metadata puts the column names into
every table-map event, so rows are mapped by *name* and an ``ALTER TABLE`` mid-stream cannot
shift values into the wrong fields.

Lifecycle:

1. No completed snapshot recorded in ``connect.<dept>.offsets`` (or ``resnapshot``): under
   ``FLUSH TABLES WITH READ LOCK`` read ``@@gtid_binlog_pos`` (and ``SHOW MASTER STATUS`` for
   the log), ``START TRANSACTION WITH CONSISTENT SNAPSHOT``, ``UNLOCK TABLES``; then read every
   table inside that transaction in chunks (``op='r'``). The snapshot is exactly the state at
   that GTID position, so streaming from it afterwards neither misses nor doubles a change.
   A snapshot restarted after an interrupted run ends with deletes for the rows that run
   published and that are gone now (``connectors.snapshot``).
2. Stream the binlog from the GTID position (``slave_connect_state``) on a reader thread;
   rows are collected per transaction and handed out at its commit (XID), all events of one
   transaction together. Every row change has its own ``position`` and ``seq``: the
   transaction's GTID and the change's 0-based index among the transaction's row changes in
   the binlog (all tables of the schema), ``0-1-42#3`` and ``change_seq(42, 3)`` =
   ``(42 << 20) | 3``. One transaction may change a row twice (``UPDATE`` … ``UPDATE``,
   ``INSERT`` … ``DELETE``); the profile merge keeps a row's change only if its seq is above
   the last merged one, so the changes of one transaction must not share a seq. Snapshot rows
   at GTID 42 have ``snapshot_row_seq(42)`` = ``(42 << 20) | 0xFFFFF``: after every change of
   transaction 42, which the snapshot holds, and before every change streamed after it.
   (Snapshot rows keep the GTID state as ``position``.) The seq earlier versions gave a
   transaction (its bare GTID sequence number, still in stored profiles) is below the new seq
   of every change of that transaction and of every later one. One replication
   domain per department server is assumed for the ordering of ``seq``; the saved position
   keeps every domain.
3. ``acknowledge(seq)`` (after Kafka acknowledged everything up to it; ``ack_position`` is
   the transaction's GTID sequence number, not the change's seq) records the GTID state
   up to that transaction in ``connect.<dept>.offsets`` (``seq`` there is the GTID sequence number
   too, as in offsets saved by earlier versions) — at most once per second, and on ``stop``.
   A restart resumes from there without a new snapshot.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
import pymysql.cursors
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import MariadbGtidEvent, QueryEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from connectors.base import ChangeEvent
from connectors.offsets import OffsetStore
from connectors.snapshot import StaleSnapshotRows
from streams.codecs.convert import row_converter
from streams.codecs.positions import MAX_TXN_INDEX, change_seq, snapshot_row_seq
from streams.core.catalogue import Dataset, Department, _value_schema
from streams.errors import ConfigError, SourceError, ValidationError
from streams.settings import SourceSettings

log = logging.getLogger(__name__)

SNAPSHOT_CHUNK = 5000
SAVE_INTERVAL_S = 1.0  # at most one connect.<dept>.offsets write per second while streaming
HEARTBEAT_S = 5.0  # the server sends a heartbeat when idle this long; the read timeout is a multiple
QUEUE_TRANSACTIONS = 2000  # transactions buffered between the binlog thread and poll()
FL_STANDALONE = 1  # MariaDB GTID event flag: a DDL/statement without BEGIN … COMMIT


# --- pure helpers ------------------------------------------------------------------------------


def parse_dsn(dsn: str) -> tuple[dict[str, Any], str]:
    """``mysql://user:password@host:port/db`` → (PyMySQL connection settings without db, db)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise ConfigError(f"not a MySQL/MariaDB DSN (mysql://user:password@host:port/db): scheme {parts.scheme!r}")
    db = unquote(parts.path.lstrip("/"))
    if not db:
        raise ConfigError("the MySQL/MariaDB DSN names no database (mysql://user:password@host:port/<db>)")
    settings = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "charset": "utf8mb4",
        "connect_timeout": 10,
    }
    return settings, db


@dataclass(frozen=True, order=True)
class Gtid:
    """A MariaDB GTID ``domain-server-seq``."""

    domain: int
    server: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> Gtid:
        try:
            d, s, n = (int(x) for x in text.strip().split("-"))
        except ValueError:
            raise ValueError(f"{text!r} is not a MariaDB GTID (domain-server-sequence)") from None
        return cls(d, s, n)

    def __str__(self) -> str:
        return f"{self.domain}-{self.server}-{self.seq}"


class GtidState:
    """A MariaDB GTID position (``@@gtid_binlog_pos`` / ``slave_connect_state``): the last GTID
    per replication domain, e.g. ``0-1-42,1-2-7``."""

    def __init__(self, text: str = "") -> None:
        self._by_domain: dict[int, Gtid] = {}
        for part in (p for p in text.split(",") if p.strip()):
            self.advance(Gtid.parse(part))

    def advance(self, gtid: Gtid) -> None:
        self._by_domain[gtid.domain] = gtid

    @property
    def seq(self) -> int:
        """The highest sequence number over all domains (0 for an empty position)."""
        return max((g.seq for g in self._by_domain.values()), default=0)

    def copy(self) -> GtidState:
        return GtidState(str(self))

    def __str__(self) -> str:
        return ",".join(str(self._by_domain[d]) for d in sorted(self._by_domain))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GtidState) and str(self) == str(other)


@dataclass
class RowChange:
    table: str
    op: str  # c, u, d
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class Transaction:
    """One committed binlog transaction (or a standalone statement such as DDL)."""

    gtid: Gtid
    ts_ms: int = 0
    xid: int | None = None
    rows: list[RowChange] = field(default_factory=list)


class TransactionAssembler:
    """Groups binlog events into transactions: GTID event … row events … XID (or ``COMMIT``).

    A standalone GTID (DDL) ends with its one statement. A new GTID while one is still open
    (its statement was filtered out) closes the open one first.
    """

    def __init__(self) -> None:
        self._open: Transaction | None = None
        self._standalone = False

    def gtid(self, gtid: Gtid, flags: int) -> Transaction | None:
        txn = self._open
        done = self._close(txn, 0, None) if txn is not None else None
        self._open = Transaction(gtid)
        self._standalone = bool(flags & FL_STANDALONE)
        return done

    def rows(self, table: str, op: str, pairs: list[tuple[dict | None, dict | None]]) -> None:
        if self._open is None:
            return  # rows before the first GTID of a resumed stream belong to a transaction already handled
        self._open.rows.extend(RowChange(table, op, b, a) for b, a in pairs)

    def xid(self, ts_ms: int, xid: int) -> Transaction | None:
        txn = self._open
        return self._close(txn, ts_ms, xid) if txn is not None else None

    def query(self, sql: str, ts_ms: int) -> Transaction | None:
        txn = self._open
        if txn is None:
            return None
        if self._standalone or sql.strip().upper() in ("COMMIT", "COMMIT;"):
            return self._close(txn, ts_ms, None)
        return None

    def _close(self, txn: Transaction, ts_ms: int, xid: int | None) -> Transaction:
        """End the open transaction ``txn``."""
        self._open = None
        txn.ts_ms = ts_ms or txn.ts_ms
        txn.xid = xid
        return txn

    @property
    def open(self) -> Transaction | None:
        return self._open


def replica_server_id(name: str) -> int:
    """A stable replica server id for the binlog dump connection, distinct per source name
    (the server drops an older dump connection that registers with the same id)."""
    return 1000 + zlib.crc32(name.encode()) % 0x7FFF0000


def change_position(gtid: Gtid, index: int) -> str:
    """``position`` of the ``index``-th row change of transaction ``gtid``: ``0-1-42#3``
    (unique per change, so event ids of two changes of one row in one transaction differ)."""
    return f"{gtid}#{index}"


# --- the binlog reader thread ------------------------------------------------------------------


class _Stopped(Exception):
    pass


class _Reconnect(Exception):
    pass


class _BinlogThread(threading.Thread):
    """Reads the binlog of one schema (blocking, with heartbeats) and queues whole transactions.

    The library reconnects by itself from the *original* position after a lost connection;
    we refuse that and restart a fresh reader from the last transaction queued instead.
    """

    def __init__(self, name: str, conn: dict[str, Any], db: str, start: GtidState, server_id: int) -> None:
        super().__init__(name=f"binlog-{name}", daemon=True)
        self.source_name = name
        self.conn = conn
        self.db = db
        self.state = start.copy()  # position after the last transaction put on the queue
        self.server_id = server_id
        self.out: queue.Queue = queue.Queue(maxsize=QUEUE_TRANSACTIONS)
        self.stopping = threading.Event()
        self._stream_conn: pymysql.connections.Connection[Any] | None = None
        self._stream_connects = 0

    def _connect(self, **kwargs):
        if self.stopping.is_set():
            raise _Stopped()
        is_ctl = kwargs.get("cursorclass") is not None
        if "db" in kwargs:  # the library still passes PyMySQL's deprecated alias
            kwargs["database"] = kwargs.pop("db")
        if not is_ctl:
            self._stream_connects += 1
            if self._stream_connects > 1:
                raise _Reconnect()
        conn = pymysql.connect(**kwargs)
        if not is_ctl:
            self._stream_conn = conn
        return conn

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            self._stream_connects = 0
            reader = BinLogStreamReader(
                connection_settings={**self.conn, "read_timeout": int(HEARTBEAT_S * 6)},
                server_id=self.server_id,
                blocking=True,
                is_mariadb=True,
                auto_position=str(self.state),
                only_events=[MariadbGtidEvent, XidEvent, QueryEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
                only_schemas=[self.db],
                slave_heartbeat=HEARTBEAT_S,
                pymysql_wrapper=self._connect,
                enable_logging=False,
            )
            try:
                self._read(reader)
                backoff = 0.5
            except _Stopped:
                return
            except _Reconnect:
                log.warning("%s: binlog connection lost; reconnecting at %s", self.source_name, self.state)
            except pymysql.err.OperationalError as exc:
                if self.stopping.is_set():
                    return
                code = exc.args[0] if exc.args else 0
                if code in (1236, 1045, 1227, 1044):  # position not in the binlog; access denied
                    self._fatal(exc)
                    return
                log.warning("%s: binlog read failed (%s); retrying at %s in %.1fs", self.source_name, exc, self.state, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:  # noqa: BLE001 — handed to poll(), which raises it in the runner
                if not self.stopping.is_set():
                    self._fatal(exc)
                return
            finally:
                reader.close()

    def _fatal(self, exc: BaseException) -> None:
        self._put(exc)

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def _read(self, reader: BinLogStreamReader) -> None:
        asm = TransactionAssembler()
        for ev in reader:
            done = None
            if isinstance(ev, MariadbGtidEvent):
                done = asm.gtid(Gtid(ev.domain_id, ev.server_id, ev.gtid_seq_no), ev.flags)
            elif isinstance(ev, WriteRowsEvent):
                asm.rows(ev.table, "c", [(None, r["values"]) for r in ev.rows])
            elif isinstance(ev, UpdateRowsEvent):
                asm.rows(ev.table, "u", [(r["before_values"], r["after_values"]) for r in ev.rows])
            elif isinstance(ev, DeleteRowsEvent):
                asm.rows(ev.table, "d", [(r["values"], None) for r in ev.rows])
            elif isinstance(ev, XidEvent):
                done = asm.xid(ev.timestamp * 1000, ev.xid)
            elif isinstance(ev, QueryEvent):
                schema = ev.schema.decode() if isinstance(ev.schema, bytes) else ev.schema
                sql = ev.query if isinstance(ev.query, str) else ev.query.decode(errors="replace")
                if schema == self.db and sql.strip().upper().startswith(("ALTER", "TRUNCATE", "DROP", "RENAME", "CREATE")):
                    log.info("%s: DDL in the binlog: %s", self.source_name, sql.strip()[:200])
                    if sql.strip().upper().startswith("TRUNCATE"):
                        log.warning("%s: TRUNCATE is not propagated as row deletes", self.source_name)
                done = asm.query(sql, ev.timestamp * 1000)
            if done is not None:
                self._put(done)
                self.state.advance(done.gtid)


# --- the source --------------------------------------------------------------------------------


class MySqlSource:
    """One department database (MariaDB schema), all of its catalogue datasets, one binlog reader."""

    def __init__(self, dept: Department, dsn: str, offsets: OffsetStore, schemas, settings: SourceSettings,
                 resnapshot: bool = False) -> None:
        self._resnapshot = resnapshot
        self.dept = dept
        self._conn, self._db = parse_dsn(dsn)
        self.name = f"{dept.dept}@{self._db}"  # the key in connect.<dept>.offsets
        self._offsets = offsets
        self._by_table = {ds.schema_table: ds for ds in dept.datasets.values()}
        self._convert = {
            ds.schema_table: row_converter(_value_schema(schemas.get(ds.schema_name).parsed)) for ds in dept.datasets.values()
        }
        self._server_id = int(dept.options.get("server_id") or replica_server_id(self.name))
        self._snapshot_iter: Iterator[list[ChangeEvent]] | None = None
        self._snapshot_state = GtidState()
        self._snapshot_done = False
        self._snapshot_marked = False
        self._thread: _BinlogThread | None = None
        self._state = GtidState()  # position after the last transaction handed out (or skipped)
        self._pending: collections.deque[tuple[int, str]] = collections.deque()  # (seq, state) returned, not acked
        self._acked_state = ""
        self._acked_seq = 0
        self._saved = ("", 0)
        self._last_save = 0.0
        self._first_chunk: list[ChangeEvent] | None = None

    # --- Source interface ----------------------------------------------------------------------

    def start(self) -> None:
        saved = None if self._resnapshot else self._offsets.load(self.name)
        if saved and saved.get("snapshot_completed"):
            state = GtidState(saved.get("position") or "")
            log.info("%s: resuming the binlog at GTID %s", self.name, state or "(start)")
            self._snapshot_done = self._snapshot_marked = True
            self._snapshot_state = GtidState(saved.get("position") or "")
            self._acked_state, self._acked_seq = str(state), int(saved.get("seq") or state.seq)
            self._saved = (self._acked_state, self._acked_seq)
            self._start_streaming(state)
            return
        if self._resnapshot:
            log.warning("%s: --resnapshot: reading every table again", self.name)
        elif saved is not None:
            log.warning("%s: the last snapshot never completed: snapshotting again", self.name)
        self._snapshot_iter = self._read_snapshot(saved)
        # Reading starts here: the lock and the GTID position are taken before start() returns.
        self._first_chunk = next(self._snapshot_iter, None)

    def poll(self, timeout: float) -> list[ChangeEvent]:
        if self._snapshot_iter is not None:
            chunk, self._first_chunk = self._first_chunk, None
            if chunk is None:
                chunk = next(self._snapshot_iter, None)
            if chunk is not None:
                return chunk
            self._finish_snapshot()
            return []
        return self._poll_stream(timeout)

    def acknowledge(self, position: int) -> None:
        while self._pending and self._pending[0][0] <= position:
            seq, state = self._pending.popleft()
            self._acked_state, self._acked_seq = state, seq
        self._save_if_due()

    def snapshot_completed(self) -> bool:
        return self._snapshot_done

    def mark_snapshot_completed(self) -> None:
        """Record in ``connect.<dept>.offsets`` that the snapshot is fully in Kafka (runner calls it after a flush)."""
        self._snapshot_marked = True
        self._save(force=True)

    def lag_transactions(self) -> int | None:
        """Binlog transactions of the server written after the acknowledged GTID (the binlog is
        server-wide, so other databases' transactions count: the connector reads through them)."""
        try:
            conn = pymysql.connect(**{**self._conn, "connect_timeout": 3})
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
                    server = GtidState(cur.fetchone()[0] or "")
            finally:
                conn.close()
        except pymysql.Error:
            return None
        return max(0, server.seq - self._acked_seq)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stopping.set()
            sock = getattr(self._thread._stream_conn, "_sock", None)
            if sock is not None:
                try:
                    sock.shutdown(2)  # unblocks the thread's read
                except OSError:
                    pass
            self._thread.join(10)
            self._thread = None
        if self._snapshot_marked:
            self._save(force=True)

    # --- snapshot --------------------------------------------------------------------------------

    def _read_snapshot(self, saved: dict[str, Any] | None) -> Iterator[list[ChangeEvent]]:
        # rows an interrupted earlier run published: read from Kafka before the read lock, and
        # before this run publishes anything
        stale = StaleSnapshotRows(self.name, self._by_table.values(), self._offsets, "mysql", self._db)
        snapshot_start = stale.start(saved)
        conn = pymysql.connect(**self._conn, database=self._db)
        try:
            with conn.cursor() as cur:
                # TIMESTAMP columns in UTC, as the binlog decoder gives them
                cur.execute("SET SESSION time_zone = '+00:00'")
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("FLUSH TABLES WITH READ LOCK")
                try:
                    cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
                    gtid_pos = cur.fetchone()[0] or ""
                    cur.execute("SHOW MASTER STATUS")
                    master = cur.fetchone()
                    if master is None:
                        raise SourceError(f"{self.name}: the server has no binary log (start it with log_bin, binlog_format=ROW)")
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                finally:
                    cur.execute("UNLOCK TABLES")
            self._snapshot_state = GtidState(gtid_pos)
            self._state = self._snapshot_state.copy()
            seq = self._snapshot_state.seq  # GTID level: connect.<dept>.offsets and acknowledgements
            row_seq = snapshot_row_seq(seq)  # the rows' seq: after the snapshot GTID's changes, before later ones
            position = str(self._snapshot_state)
            self._acked_state, self._acked_seq = position, seq
            self._offsets.save({"source": self.name, "slot": None, "snapshot_seq": seq, "snapshot_completed": False,
                                "position": position, "seq": seq, "snapshot_start": snapshot_start})
            log.info("%s: snapshot at GTID %s (%s:%s)", self.name, position or "(empty)", master[0], master[1])
            now_ms = int(time.time() * 1000)
            for table, ds in self._by_table.items():
                with conn.cursor(pymysql.cursors.SSCursor) as cur:  # unbuffered: rows stream in chunks
                    # MySQL has no identifier parameters; the table name comes from the mapping and is quoted.
                    cur.execute(f"SELECT * FROM `{table.replace('`', '``')}`")
                    cols = [d[0] for d in cur.description]
                    while True:
                        rows = cur.fetchmany(SNAPSHOT_CHUNK)
                        if not rows:
                            break
                        chunk = [self._event(ds, "r", None, dict(zip(cols, row, strict=True)), position, row_seq, now_ms, "true", None, 0)
                                 for row in rows]
                        stale.found(chunk)
                        yield chunk
            conn.commit()
        finally:
            conn.close()
        # rows an interrupted earlier run published and this snapshot did not find: deleted since
        yield from stale.deletes(position, row_seq)

    def _finish_snapshot(self) -> None:
        self._snapshot_iter = None
        self._snapshot_done = True
        self._start_streaming(self._snapshot_state)

    # --- streaming -------------------------------------------------------------------------------

    def _start_streaming(self, state: GtidState) -> None:
        self._state = state.copy()
        self._thread = _BinlogThread(self.name, self._conn, self._db, state, self._server_id)
        self._thread.start()
        log.info("%s: streaming the binlog from GTID %s", self.name, state or "(start)")

    def _poll_stream(self, timeout: float) -> list[ChangeEvent]:
        thread = self._thread
        if thread is None:
            raise SourceError(f"{self.name}: not streaming (stopped)")
        out: list[ChangeEvent] = []
        deadline = time.monotonic() + timeout
        while len(out) < SNAPSHOT_CHUNK:
            try:
                if out:
                    item = thread.out.get_nowait()
                else:
                    item = thread.out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(item, pymysql.err.OperationalError) and item.args and item.args[0] == 1236:
                raise SourceError(
                    f"{self.name}: the binlog no longer holds GTID {self._state} ({item.args[1] if len(item.args) > 1 else item}); "
                    f"changes made meanwhile are lost to CDC. Recover with `yurong connect {self.dept.dept} --resnapshot`."
                )
            if isinstance(item, BaseException):
                raise SourceError(f"{self.name}: binlog reader failed at GTID {self._state}: {item!r}") from item
            out.extend(self._transaction_events(item))
        if not out and not self._pending and self._acked_state != str(self._state):
            # Caught up and everything acknowledged: transactions of other schemas or DDL moved the
            # position; record it now and then so a restart does not re-read them.
            self._acked_state, self._acked_seq = str(self._state), max(self._acked_seq, self._state.seq)
        self._save_if_due()  # an acknowledgement that came within the interval is written now
        return out

    def _transaction_events(self, txn: Transaction) -> list[ChangeEvent]:
        self._state.advance(txn.gtid)
        ack = txn.gtid.seq  # acknowledgements and connect.<dept>.offsets count transactions, not changes
        if len(txn.rows) > MAX_TXN_INDEX + 1:
            log.warning("%s: transaction %s has %d row changes; change %d and all after it share one seq, so the "
                        "profile merge keeps only the first of them per row", self.name, txn.gtid, len(txn.rows),
                        MAX_TXN_INDEX + 1)
        events = []
        # the index counts every row change of the schema, also of tables that are no dataset:
        # what Debezium's transaction.total_order counts when it captures the whole database
        for index, rc in enumerate(txn.rows):
            ds = self._by_table.get(rc.table)
            if ds is not None:
                events.append(self._event(ds, rc.op, rc.before, rc.after, change_position(txn.gtid, index),
                                          change_seq(txn.gtid.seq, index), txn.ts_ms, "false", txn.xid, ack))
        state = str(self._state)
        if events:
            self._pending.append((ack, state))
        elif self._pending:
            # nothing of ours: acknowledging the previous transaction also covers this one
            self._pending[-1] = (self._pending[-1][0], state)
        return events

    def _save_if_due(self) -> None:
        if time.monotonic() - self._last_save >= SAVE_INTERVAL_S:
            self._save()

    def _save(self, force: bool = False) -> None:
        if not self._snapshot_marked:
            return
        if not force and self._saved == (self._acked_state, self._acked_seq):
            return
        self._offsets.save({"source": self.name, "slot": None, "snapshot_seq": self._snapshot_state.seq,
                            "snapshot_completed": True, "position": self._acked_state, "seq": self._acked_seq})
        self._saved = (self._acked_state, self._acked_seq)
        self._last_save = time.monotonic()

    def _event(self, ds: Dataset, op, before, after, position, seq, ts_ms, snapshot, tx_id, ack) -> ChangeEvent:
        where = f"{ds.name}@{position}"
        conv = self._convert[ds.schema_table]
        source: dict[str, Any] = {
            "connector": "mysql", "dept": ds.dept, "db": self._db, "schema": None, "table": ds.schema_table,
            "position": position, "seq": seq, "ts_ms": ts_ms, "snapshot": snapshot, "tx_id": tx_id,
        }
        try:
            b = conv(before, where) if before is not None else None
            a = conv(after, where) if after is not None else None
        except ValidationError as exc:
            raw = after if after is not None else before
            return ChangeEvent(ds, op, None, None, source, "|".join(str(raw.get(k)) for k in ds.key), ack,
                               error=exc, raw=dict(raw))
        row = a if a is not None else b
        assert row is not None, where  # every change carries a before or an after image
        return ChangeEvent(ds, op, b, a, source, "|".join(str(row.get(k)) for k in ds.key), ack)
