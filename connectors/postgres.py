"""PostgreSQL CDC through logical replication with ``pgoutput`` (psycopg2).

Lifecycle:

1. Publication ``<publication>`` FOR the department's tables is created if missing, and each
   table gets ``REPLICA IDENTITY FULL`` so updates and deletes carry the whole old row
   (the envelope's ``before``).
2. No slot, or a slot whose snapshot never completed: (re)create the slot with
   ``EXPORT_SNAPSHOT`` and read every table inside ``SET TRANSACTION SNAPSHOT`` — the snapshot
   is exactly the state at the slot's consistent point, so streaming from the slot afterwards
   neither misses nor doubles a change. Snapshot rows are ``op = 'r'``. A snapshot restarted
   after an interrupted run ends with deletes for the rows that run published and that are gone
   now (``connectors.snapshot``).
3. Stream from the slot. Changes are buffered per transaction and returned at its Commit; the
   commit's end LSN is acknowledged (``send_feedback(flush_lsn=...)``) only after the runner
   saw Kafka acknowledge every event up to it. A restart resumes at ``confirmed_flush_lsn``.
4. Incremental snapshots on demand (DBLog watermarks, like Debezium's): the signal table
   (option ``signal_table``, default ``public.yurong_signal``; ``""`` disables it) is created if
   missing and added to the publication; its rows are never emitted. A row
   ``INSERT INTO yurong_signal (id, type, data) VALUES ('<any id>', 'execute-snapshot',
   '{"tables": ["public.enterprise_registration"]}')`` seen in the stream queues those tables.
   While streaming, ``poll`` alternates: one chunk (``incremental_chunk`` rows, default 1000,
   ``WHERE key > last ORDER BY key LIMIT n``) between a low and a high watermark row written to
   the signal table, then the stream. Between the two watermarks in the stream, every streamed
   change to a key of the chunk drops that key from the chunk (the streamed event is newer); at the
   high watermark the rest of the chunk is emitted as ``op = 'r'`` with ``source.snapshot =
   'true'`` (as Debezium's ``incremental`` maps in ``streams.codecs.debezium``), ``ack_position = 0`` and
   the low watermark's LSN as position/seq — so a snapshot row never overwrites a newer change.
   Progress survives restarts: the queue is saved to ``connect.<dept>.offsets`` when a signal is seen,
   and the last key of each chunk once the runner saw Kafka acknowledge the chunk (``flushed``);
   a restarted connector goes on after that key (a chunk in flight at a crash is read again —
   at least once). Watermark rows of a dead window are deleted at start. Caveat: a transaction open across a
   whole chunk window whose changes have WAL positions before the low watermark gets a lower ``seq`` than the
   snapshot row of its key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import select
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from connectors.base import ChangeEvent
from connectors.offsets import OffsetStore
from connectors.pgoutput import UNCHANGED_TOAST, Begin, Change, Commit, Relation, Truncate, parse_message
from connectors.snapshot import StaleSnapshotRows
from streams.codecs.convert import row_converter
from streams.codecs.positions import format_lsn, parse_lsn
from streams.core.catalogue import Dataset, Department, _value_schema
from streams.errors import SourceError, ValidationError
from streams.settings import SourceSettings

log = logging.getLogger(__name__)

SNAPSHOT_CHUNK = 5000


def _table_ident(table: str) -> sql.Identifier:
    """``schema.table`` (or ``table`` in ``public``) as a quoted identifier."""
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema or "public", name)


def _one_row(cur) -> tuple[Any, ...]:
    """The row of a statement that always returns one (``count(*)``, ``CREATE_REPLICATION_SLOT``)."""
    row = cur.fetchone()
    if row is None:
        raise SourceError(f"no row from {cur.query!r}")
    return row


class PostgresSource:
    """One department database, all of its catalogue datasets, one slot."""

    def __init__(self, dept: Department, dsn: str, offsets: OffsetStore, schemas, settings: SourceSettings,
                 resnapshot: bool = False) -> None:
        self._resnapshot = resnapshot
        self.name = dept.dept  # becomes <dept>@<database> once connected: the key in connect.<dept>.offsets
        self.dept = dept
        self._dsn = dsn
        self._offsets = offsets
        self._publication = dept.options.get("publication", f"yurong_{dept.dept}")
        self._slot = ""  # yurong_<dept>_<database>: slots are cluster-wide, one per source database
        self._status_interval = settings.status_interval_s
        self._by_table = {ds.table: ds for ds in dept.datasets.values()}
        self._convert = {
            ds.table: row_converter(_value_schema(schemas.get(ds.schema_name).parsed)) for ds in dept.datasets.values()
        }
        self._relations: dict[int, Relation] = {}
        self._repl_conn: psycopg2.extras.LogicalReplicationConnection | None = None
        self._cur: psycopg2.extras.ReplicationCursor | None = None  # of the replication connection, set by start()
        self._snapshot_iter: Iterator[list[ChangeEvent]] | None = None
        self._stale: StaleSnapshotRows | None = None  # rows of interrupted earlier snapshot runs
        self._snapshot_seq = 0
        self._snapshot_done = False
        self._snapshot_sent = 0  # rows of the initial snapshot handed out
        self._snapshot_total = -1  # rows in the exported snapshot, counted inside it
        self._streaming = False
        self._txn: list[ChangeEvent] = []
        self._begin: Begin | None = None
        self._db = ""
        self._returned = 0  # highest ack position handed out
        self._acked = 0
        self._last_feedback = 0.0
        # incremental snapshots (see the module doc)
        signal = dept.options.get("signal_table", "public.yurong_signal")
        self._signal_table = (signal if "." in signal else f"public.{signal}") if signal else ""
        self._inc_chunk = int(dept.options.get("incremental_chunk", 1000))
        self._inc_queue: list[str] = []  # tables still to snapshot incrementally, the first in progress
        self._inc_last: tuple | None = None  # last key read of the table in progress
        self._window: dict[str, Any] | None = None  # the chunk between its watermarks
        self._ready: list[ChangeEvent] = []  # chunk rows to hand out at the high watermark's commit
        self._inc_rows = self._inc_total = 0  # progress of the table in progress (rows sent, rows at its start)
        # checkpoints of the queue and last key: after a closed window, once handed out, once saved
        self._inc_closed: dict | None | Literal[False] = False  # False: no window closed since the last commit
        self._inc_returned: dict | None = None
        self._inc_saved: dict | None = None
        self._sig_conn: psycopg2.extensions.connection | None = None

    # --- Source interface ----------------------------------------------------------------------

    def start(self) -> None:
        with psycopg2.connect(self._dsn) as conn, conn.cursor() as cur:
            self._db = conn.info.dbname
            self._slot = self.dept.options.get("slot") or re.sub(r"[^a-z0-9_]", "_", f"yurong_{self.dept.dept}_{self._db}".lower())
            self.name = f"{self.dept.dept}@{self._db}"
            self._ensure_publication(cur)
            cur.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (self._slot,))
            slot = cur.fetchone()
        conn.close()
        saved = None if self._resnapshot else self._offsets.load(self.name)
        self._repl_conn = psycopg2.connect(self._dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        repl_cur = self._cur = self._repl_conn.cursor()
        if slot and saved and saved.get("slot") == self._slot and saved.get("snapshot_completed"):
            log.info("%s: resuming slot %s at %s", self.name, self._slot, slot[0])
            self._snapshot_done = True
            self._restore_incremental(saved.get("incremental"))
            self._start_streaming()
            return
        if slot:
            if self._resnapshot:
                log.warning("%s: --resnapshot: dropping slot %s and reading every table again", self.name, self._slot)
            elif saved is None or not saved.get("snapshot_completed"):
                log.warning("%s: slot %s exists but its snapshot never completed: re-snapshotting", self.name, self._slot)
            repl_cur.drop_replication_slot(self._slot)
        elif saved and saved.get("snapshot_completed"):
            raise SourceError(
                f"{self.name}: replication slot {self._slot!r} is gone although a completed snapshot was recorded; "
                f"changes made meanwhile are lost to CDC. Recover with `yurong connect {self.dept.dept} --resnapshot`."
            )
        self._create_slot_and_plan_snapshot(saved)

    def poll(self, timeout: float) -> list[ChangeEvent]:
        if self._snapshot_iter is not None:
            chunk = next(self._snapshot_iter, None)
            if chunk is not None:
                return chunk
            self._finish_snapshot()
            return []
        if self._inc_queue and self._window is None:
            self._read_incremental_chunk()
        return self._poll_stream(timeout)

    def acknowledge(self, position: int) -> None:
        if not self._streaming or position <= self._acked:
            return
        self._acked = position
        self._replication.send_feedback(flush_lsn=position, reply=True)
        self._last_feedback = time.monotonic()

    def snapshot_completed(self) -> bool:
        return self._snapshot_done

    def position(self) -> str:
        """The LSN last acknowledged (streaming) or the snapshot's consistent point."""
        return format_lsn(self._acked if self._streaming else self._snapshot_seq)

    def snapshot_progress(self) -> tuple[int, int] | None:
        """Initial snapshot: rows sent of those in the exported snapshot. Incremental: rows sent
        of the table in progress, of those it had when its first chunk was read."""
        if not self._snapshot_done:
            return self._snapshot_sent, self._snapshot_total
        if self._inc_queue:
            return self._inc_rows, self._inc_total
        return None

    def flushed(self) -> None:
        """Everything handed out is in Kafka: save incremental-snapshot progress if it moved."""
        if self._inc_returned != self._inc_saved:
            self._save_offset(self._inc_returned)

    def stop(self) -> None:
        if self._sig_conn is not None:
            self._sig_conn.close()
            self._sig_conn = None
        if self._repl_conn is not None:
            self._repl_conn.close()
            self._repl_conn = None

    @property
    def _replication(self) -> psycopg2.extras.ReplicationCursor:
        """The replication connection's cursor (slot commands, the stream, feedback)."""
        if self._cur is None:
            raise SourceError(f"{self.name}: not started (or stopped)")
        return self._cur

    def slot_lag_bytes(self) -> int | None:
        """WAL the slot retains: ``pg_current_wal_lsn() - confirmed_flush_lsn``."""
        with psycopg2.connect(self._dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (self._slot,),
            )
            row = cur.fetchone()
        conn.close()
        return int(row[0]) if row and row[0] is not None else None

    # --- setup -----------------------------------------------------------------------------------

    def _ensure_publication(self, cur) -> None:
        if self._signal_table:
            cur.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, type text NOT NULL, data jsonb,"
                " created_at timestamptz DEFAULT now())").format(_table_ident(self._signal_table)))
            # watermarks of a window a killed connector left open: nobody waits for them any more
            cur.execute(sql.SQL("DELETE FROM {} WHERE type IN ('snapshot-window-open', 'snapshot-window-close')")
                        .format(_table_ident(self._signal_table)))
        for table in self._by_table:
            cur.execute("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table,))
            if cur.fetchone()[0] != "f":
                # Without FULL, updates and deletes carry no complete before-image.
                log.warning("%s: setting REPLICA IDENTITY FULL on %s", self.name, table)
                cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(_table_ident(table)))
        cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self._publication,))
        if cur.fetchone() is None:
            published = [*self._by_table, *([self._signal_table] if self._signal_table else [])]
            tables = sql.SQL(", ").join(_table_ident(t) for t in published)
            cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(self._publication), tables))
            log.info("%s: created publication %s", self.name, self._publication)
        elif self._signal_table:
            schema, _, name = self._signal_table.rpartition(".")
            cur.execute("SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s AND tablename = %s",
                        (self._publication, schema, name))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(self._publication), _table_ident(self._signal_table)))
                log.info("%s: added signal table %s to publication %s", self.name, self._signal_table, self._publication)

    def _create_slot_and_plan_snapshot(self, saved: dict[str, Any] | None) -> None:
        # rows an interrupted earlier run published: read from Kafka before this run publishes any
        stale = self._stale = StaleSnapshotRows(self.name, self._by_table.values(), self._offsets, "postgresql", self._db)
        snapshot_start = stale.start(saved)
        # CREATE_REPLICATION_SLOT ... LOGICAL pgoutput exports a snapshot by default; it stays
        # valid until the next command on this replication connection.
        self._replication.create_replication_slot(self._slot, output_plugin="pgoutput")
        _, consistent_point, snapshot_name, _ = _one_row(self._replication)
        self._snapshot_seq = parse_lsn(consistent_point)
        self._offsets.save({"source": self.name, "slot": self._slot, "snapshot_seq": self._snapshot_seq,
                            "snapshot_completed": False, "position": consistent_point, "seq": self._snapshot_seq,
                            "snapshot_start": snapshot_start})
        log.info("%s: slot %s created at %s; snapshotting", self.name, self._slot, consistent_point)
        self._snapshot_iter = self._read_snapshot(snapshot_name, consistent_point, stale)

    def _read_snapshot(self, snapshot_name: str, consistent_point: str, stale: StaleSnapshotRows) -> Iterator[list[ChangeEvent]]:
        conn = psycopg2.connect(self._dsn)
        try:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
                total = 0
                for table in self._by_table:  # exact, and consistent with what is about to be read
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_table_ident(table)))
                    total += _one_row(cur)[0]
                self._snapshot_total = total
                now_ms = int(time.time() * 1000)
                for table, ds in self._by_table.items():
                    with conn.cursor(name=f"snap_{ds.name}") as named:
                        named.itersize = SNAPSHOT_CHUNK
                        named.execute(sql.SQL("SELECT * FROM {}").format(_table_ident(table)))
                        cols: list[str] = []
                        while True:
                            rows = named.fetchmany(SNAPSHOT_CHUNK)
                            if not cols and named.description:
                                cols = [d.name for d in named.description]
                            if not rows:
                                break
                            self._snapshot_sent += len(rows)
                            chunk = [
                                self._event(ds, "r", None, dict(zip(cols, row, strict=True)), consistent_point, self._snapshot_seq,
                                            now_ms, "true", None, ack=0)
                                for row in rows
                            ]
                            stale.found(chunk)
                            yield chunk
            conn.commit()
        finally:
            conn.close()
        # rows an interrupted earlier run published and this snapshot did not find: deleted since
        yield from stale.deletes(consistent_point, self._snapshot_seq)

    def _finish_snapshot(self) -> None:
        # Called once every snapshot chunk was handed to the runner; the runner flushes Kafka
        # before calling acknowledge, and marks completion through mark_snapshot_completed.
        self._snapshot_iter = None
        self._snapshot_done = True
        self._start_streaming()

    def mark_snapshot_completed(self) -> None:
        """Record in ``connect.<dept>.offsets`` that the snapshot is fully in Kafka (runner calls it after a flush)."""
        self._save_offset(None)

    def _save_offset(self, incremental: dict | None) -> None:
        """The completed-snapshot record, with the incremental snapshot still to do (if any)."""
        self._offsets.save({"source": self.name, "slot": self._slot, "snapshot_seq": self._snapshot_seq,
                            "snapshot_completed": True, "position": format_lsn(self._snapshot_seq), "seq": self._snapshot_seq,
                            "incremental": incremental})
        self._inc_saved = incremental

    def _start_streaming(self) -> None:
        self._replication.start_replication(
            slot_name=self._slot,
            decode=False,
            options={"proto_version": "1", "publication_names": self._publication},
            status_interval=self._status_interval,  # type: ignore[arg-type]  # a float (C "d"); types-psycopg2 says int
        )
        self._streaming = True
        log.info("%s: streaming from slot %s", self.name, self._slot)

    # --- streaming --------------------------------------------------------------------------------

    def _poll_stream(self, timeout: float) -> list[ChangeEvent]:
        out: list[ChangeEvent] = []
        deadline = time.monotonic() + timeout
        cur = self._replication
        while True:
            msg = cur.read_message()
            if msg is None:
                if out or (self._inc_queue and self._window is None):
                    return out
                self._idle_feedback()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return out
                select.select([cur], [], [], min(remaining, 1.0))
                continue
            done = self._handle(msg)
            if done:
                out.extend(done)
                if len(out) >= SNAPSHOT_CHUNK:
                    return out

    def _idle_feedback(self) -> None:
        """Caught up and every returned event acknowledged: let the slot advance past WAL that
        holds nothing for us (other tables, keepalives), so an idle source does not retain WAL."""
        if self._begin is None and self._acked >= self._returned and time.monotonic() - self._last_feedback > self._status_interval:
            wal_end = self._replication.wal_end
            if wal_end and wal_end > self._acked:
                self._replication.send_feedback(flush_lsn=wal_end)
                self._acked = self._returned = wal_end
            self._last_feedback = time.monotonic()

    def _handle(self, msg) -> list[ChangeEvent] | None:
        parsed = parse_message(msg.payload, self._relations)
        if isinstance(parsed, Begin):
            self._begin = parsed
            self._txn = []
        elif isinstance(parsed, Change):
            rel = self._relations[parsed.relid]
            ds = self._by_table.get(rel.qualified)
            if ds is not None:
                event = self._change_event(ds, parsed, msg.data_start)
                self._txn.append(event)
                w = self._window
                if w is not None and w["open"] and w["ds"] is ds:
                    # a streamed change inside the window is newer than the chunk's copy of the row
                    w["rows"].pop(event.key, None)
                    if event.before is not None:
                        w["rows"].pop("|".join(str(event.before.get(k)) for k in ds.key), None)
            elif self._signal_table and rel.qualified == self._signal_table and parsed.op == "c":
                self._on_signal(parsed.new or {}, msg.data_start)
        elif isinstance(parsed, Truncate):
            names = [self._relations[r].qualified for r in parsed.relids if r in self._relations]
            log.warning("%s: TRUNCATE of %s is not propagated as row deletes", self.name, names)
        elif isinstance(parsed, Commit):
            events, self._txn, self._begin = self._txn, [], None
            ready, self._ready = self._ready, []
            if self._inc_closed is not False:  # this commit hands out a closed window's rows: checkpoint after them
                self._inc_returned, self._inc_closed = self._inc_closed, False
            if events:
                events = [self._with_ack(e, parsed.end_lsn) for e in events]
                self._returned = parsed.end_lsn
                return events + ready
            if ready:
                # chunk rows carry nothing to acknowledge (ack_position 0)
                if self._acked >= self._returned:
                    self._acked = self._returned = parsed.end_lsn
                return ready
            # a transaction without our tables: nothing to wait for
            if self._acked >= self._returned:
                self._acked = self._returned = parsed.end_lsn
        return None

    def _change_event(self, ds: Dataset, ch: Change, lsn: int) -> ChangeEvent:
        begin = self._begin
        new = {k: v for k, v in (ch.new or {}).items() if v is not UNCHANGED_TOAST} if ch.new is not None else None
        old = ch.old
        if ch.op == "u" and new is not None and ch.new and any(v is UNCHANGED_TOAST for v in ch.new.values()) and old:
            new = {**{k: v for k, v in old.items() if v is not UNCHANGED_TOAST}, **new}
        return self._event(ds, ch.op, old, new, format_lsn(lsn), lsn, begin.commit_ts_ms if begin else 0, "false",
                           begin.xid if begin else None, ack=0)

    # --- incremental snapshots -------------------------------------------------------------------

    def _on_signal(self, row: dict[str, Any], lsn: int) -> None:
        kind, sig_id = row.get("type"), row.get("id")
        w = self._window
        if w is not None and sig_id == w["low"]:
            w["open"], w["seq"] = True, lsn
        elif w is not None and sig_id == w["high"] and w["open"]:
            self._close_window(w)
        elif kind == "execute-snapshot":
            try:
                data = json.loads(row.get("data") or "{}")
                requested = data.get("tables") or data.get("data-collections") or []
            except (ValueError, AttributeError):
                log.warning("%s: signal %s: data is not a JSON object with 'tables'", self.name, sig_id)
                return
            for t in requested:
                table = t if "." in t else f"public.{t}"
                if table not in self._by_table:
                    log.warning("%s: signal %s: %s is not a catalogue table of %s", self.name, sig_id, t, self.dept.dept)
                elif table not in self._inc_queue:
                    self._inc_queue.append(table)
                    log.info("%s: signal %s: incremental snapshot of %s queued", self.name, sig_id, table)
            # saved now, before the slot can be confirmed past the signal row
            self._inc_returned = self._inc_state()
            self._save_offset(self._inc_returned)

    def _inc_state(self) -> dict | None:
        """The incremental snapshot still to do, as saved in ``connect.<dept>.offsets``."""
        if not self._inc_queue:
            return None
        last = json.dumps(list(self._inc_last), default=str, ensure_ascii=False) if self._inc_last is not None else None
        return {"tables": list(self._inc_queue), "last_key": last}

    def _restore_incremental(self, saved: dict | None) -> None:
        if not saved:
            return
        self._inc_queue = [t for t in saved["tables"] if t in self._by_table]
        self._inc_last = tuple(json.loads(saved["last_key"])) if saved.get("last_key") and self._inc_queue else None
        self._inc_returned = self._inc_saved = saved
        if self._inc_queue:
            log.info("%s: resuming the incremental snapshot of %s after key %s", self.name, self._inc_queue, self._inc_last)

    def _signal_conn(self) -> psycopg2.extensions.connection:
        conn = self._sig_conn
        if conn is None or conn.closed:
            conn = self._sig_conn = psycopg2.connect(self._dsn)
            conn.autocommit = True
        return conn

    def _watermark(self, cur, kind: str, table: str) -> str:
        wid = f"{kind}-{uuid.uuid4().hex}"
        cur.execute(sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(_table_ident(self._signal_table)),
                    (wid, kind, json.dumps({"table": table})))
        return wid

    def _read_incremental_chunk(self) -> None:
        """Low watermark, one chunk of the table in progress, high watermark (each committed on its own)."""
        table = self._inc_queue[0]
        ds = self._by_table[table]
        if self._inc_last is None or not self._inc_total:  # a table starts (or resumes): how many rows it has
            with self._signal_conn().cursor() as cur:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_table_ident(table)))
                self._inc_total = _one_row(cur)[0]
            if self._inc_last is None:
                self._inc_rows = 0
        keys = [sql.Identifier(k) for k in ds.key]
        key_list = sql.SQL(", ").join(keys)
        query = sql.SQL("SELECT * FROM {} ").format(_table_ident(table))
        params: list[Any] = []
        if self._inc_last is not None:
            query += sql.SQL("WHERE ({}) > ({}) ").format(key_list, sql.SQL(", ").join(sql.Placeholder() * len(keys)))
            params.extend(self._inc_last)
        query += sql.SQL("ORDER BY {} LIMIT {}").format(key_list, sql.Literal(self._inc_chunk))
        conn = self._signal_conn()
        with conn.cursor() as cur:
            low = self._watermark(cur, "snapshot-window-open", table)
            cur.execute(query, params)
            cols = [d.name for d in cur.description or ()]  # set after a SELECT
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            high = self._watermark(cur, "snapshot-window-close", table)
        if rows:
            self._inc_last = tuple(rows[-1][k] for k in ds.key)
        now_ms = int(time.time() * 1000)
        events = (self._event(ds, "r", None, row, "", 0, now_ms, "true", None, ack=0) for row in rows)
        # key → snapshot event; position and seq are the low watermark's, set when the stream reaches it
        self._window = {"ds": ds, "low": low, "high": high, "open": False, "seq": 0,
                        "rows": {e.key: e for e in events}, "read": len(rows), "last_chunk": len(rows) < self._inc_chunk}

    def _close_window(self, w: dict[str, Any]) -> None:
        """Hand out the rows of the window ``w`` (``self._window``) that no streamed change superseded."""
        self._window = None
        ds, seq = w["ds"], w["seq"]
        position = format_lsn(seq)
        log.info("%s: incremental chunk of %s: %d rows read, %d superseded by streamed changes", self.name, ds.table,
                 w["read"], w["read"] - len(w["rows"]))
        self._ready.extend(dataclasses.replace(e, source={**e.source, "position": position, "seq": seq})
                           for e in w["rows"].values())
        with self._signal_conn().cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE id IN (%s, %s)").format(_table_ident(self._signal_table)),
                        (w["low"], w["high"]))
        self._inc_rows += w["read"]
        if w["last_chunk"]:
            log.info("%s: incremental snapshot of %s complete", self.name, ds.table)
            self._inc_queue.pop(0)
            self._inc_last = None
            self._inc_total = 0
        self._inc_closed = self._inc_state()

    @staticmethod
    def _with_ack(e: ChangeEvent, end_lsn: int) -> ChangeEvent:
        return dataclasses.replace(e, ack_position=end_lsn)

    def _event(self, ds, op, before, after, position, seq, ts_ms, snapshot, tx_id, ack) -> ChangeEvent:
        where = f"{ds.name}@{position}"
        conv = self._convert[ds.table]
        source: dict[str, Any] = {
            "connector": "postgresql", "dept": ds.dept, "db": self._db, "schema": ds.table.rpartition(".")[0] or "public",
            "table": ds.schema_table, "position": position, "seq": seq, "ts_ms": ts_ms, "snapshot": snapshot, "tx_id": tx_id,
        }
        try:
            b = conv(before, where) if before is not None else None
            a = conv(after, where) if after is not None else None
        except ValidationError as exc:
            raw = after if after is not None else before
            return ChangeEvent(ds, op, None, None, source, "|".join(str(raw.get(k)) for k in ds.key), ack,
                               error=exc, raw={k: (None if v is UNCHANGED_TOAST else v) for k, v in raw.items()})
        row = a if a is not None else b
        assert row is not None, where  # every change carries a before or an after image
        return ChangeEvent(ds, op, b, a, source, "|".join(str(row.get(k)) for k in ds.key), ack)
