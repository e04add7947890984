"""Polling connector: a department PostgreSQL database read without logical-replication rights.

Some departments (gas, procurement, emergency) only grant a read-only login. Their tables carry
``created_at`` and ``updated_at`` (``timestamptz``, set by the department on every insert and
update). The source reads each table incrementally by the cursor ``(updated_at, key)``::

    SELECT * FROM t WHERE (updated_at, id) > (%s, %s) AND updated_at <= <bound>
    ORDER BY updated_at, id LIMIT <chunk>

The key is part of the cursor, so rows that share one ``updated_at`` (one transaction, one
millisecond) are never skipped at a chunk boundary. Names are ``psycopg2.sql.Identifier``s and
values query parameters; no SQL is built from strings.

Lifecycle and positions:

1. ``start()``: the source name is ``<dept>@<database>`` (the key in ``connect.<dept>.offsets``). Its
   record keeps the per-table cursors as JSON in ``position``
   (``{"public.gas_usage": {"updated_at": "<iso>", "key": [42]}}``), the snapshot horizon (µs) in
   ``snapshot_seq`` and whether the snapshot completed.
2. Snapshot: the first pass reads every row with ``updated_at <= horizon`` (the database's
   ``now()`` when the source first started) as ``op = 'r'``, ``snapshot = 'true'``; it ends once the
   lag window (below) has passed the horizon and every table is read up to it. A restart during
   the snapshot continues it from the saved cursors with the same horizon.
3. Streaming: rows with ``updated_at`` up to ``now() − lag`` (database clock) are read every
   ``SourceSettings.poll_interval_s``; ``op = 'c'`` when ``created_at == updated_at``, else ``'u'``.
4. ``acknowledge(n)``: the runner saw Kafka acknowledge every event whose ``ack_position`` ≤ n; the
   cursors those events reached are then written to ``connect.<dept>.offsets`` (and only then). A restart
   resumes from them: at-least-once, rows after the last saved cursor are read again.

Each event's ``position`` is ``"<updated_at iso>|<key>"``, its ``seq`` ``updated_at`` in µs since
the epoch: per row it grows with every update, which is what the profile merge compares.

Known limits of polling (documented trade-offs, not bugs):

- **Deletes are invisible.** A deleted row simply stops appearing; no ``op = 'd'`` and no
  tombstone is produced. Departments that delete must soft-delete (a status column) instead.
- **No before image.** ``before`` is always ``None``; only the latest state of a row is seen, and
  several updates between two polls collapse into one event.
- **Late commits.** ``updated_at`` is set when the department's transaction runs (``now()`` is
  the transaction start), but the row becomes visible only at commit. A row committed after the
  cursor passed its ``updated_at`` would be missed, so the source never reads rows newer than
  ``now() − lag`` (``lag_ms`` option, default 1000 ms) and reads them on a later poll. This adds
  ``lag`` to the latency; a department transaction that stays open longer than ``lag`` between
  setting ``updated_at`` and committing can still be missed — raise ``lag_ms`` for such sources.
- **Clock.** ``updated_at`` must come from the database clock (``DEFAULT now()`` / a trigger), not
  from application servers with drifting clocks; the bound uses the database's ``now()``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from connectors.base import ChangeEvent
from connectors.offsets import OffsetStore
from streams.codecs.convert import row_converter
from streams.core.catalogue import Dataset, Department, _value_schema
from streams.errors import SourceError, ValidationError
from streams.settings import SourceSettings

log = logging.getLogger(__name__)

CHUNK = 5000
DEFAULT_LAG_MS = 1000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _one_row(cur) -> tuple[Any, ...]:
    """The row of a query that always returns one."""
    row = cur.fetchone()
    if row is None:
        raise SourceError(f"no row from {cur.query!r}")
    return row


def _table_ident(table: str) -> sql.Identifier:
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema or "public", name)


def to_micros(ts: dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


@dataclass(frozen=True)
class Cursor:
    """Last ``(updated_at, key)`` read from one table."""

    updated_at: dt.datetime
    key: tuple

    def to_json(self) -> dict[str, Any]:
        return {"updated_at": self.updated_at.isoformat(), "key": list(self.key)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Cursor:
        return cls(dt.datetime.fromisoformat(doc["updated_at"]), tuple(doc["key"]))


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, str)) else str(v)


class PollingSource:
    """All catalogue tables of one department database, read by ``(updated_at, key)`` cursors."""

    def __init__(self, dept: Department, dsn: str, offsets: OffsetStore, schemas, settings: SourceSettings,
                 resnapshot: bool = False) -> None:
        self.name = dept.dept  # <dept>@<database> once connected
        self.dept = dept
        self._dsn = dsn
        self._offsets = offsets
        self._resnapshot = resnapshot
        self._poll_interval = settings.poll_interval_s
        self._lag_ms = int(dept.options.get("lag_ms", DEFAULT_LAG_MS))
        self._chunk = int(dept.options.get("chunk", CHUNK))
        self._updated_col = dept.options.get("updated_column", "updated_at")
        self._created_col = dept.options.get("created_column", "created_at")
        self._datasets = list(dept.datasets.values())
        self._convert = {ds.table: row_converter(_value_schema(schemas.get(ds.schema_name).parsed)) for ds in self._datasets}
        self._conn: psycopg2.extensions.connection | None = None
        self._db = ""
        self._read: dict[str, Cursor] = {}  # cursors of what poll() returned
        self._committed: dict[str, Cursor] = {}  # cursors Kafka acknowledged (saved in connect.<dept>.offsets)
        self._pending: list[tuple[int, str, Cursor]] = []  # (ack token, table, cursor) not yet acknowledged
        self._token = 0
        self._acked_token = 0
        self._snapshot_last_token: int | None = None  # last ack token of the snapshot, once it is read
        self._horizon_us = 0  # snapshot reads rows with updated_at <= horizon
        self._snapshot_done = False
        self._next_poll = 0.0
        self._turn = 0  # round-robin start among tables

    # --- Source interface ----------------------------------------------------------------------

    def start(self) -> None:
        self._connect()
        self.name = f"{self.dept.dept}@{self._db}"
        saved = None if self._resnapshot else self._offsets.load(self.name)
        if saved is not None:
            tables = json.loads(saved.get("position") or "{}")
            self._committed = {t: Cursor.from_json(c) for t, c in tables.items() if t in self._convert}
            self._read = dict(self._committed)
            self._horizon_us = int(saved.get("snapshot_seq") or 0)
            self._snapshot_done = bool(saved.get("snapshot_completed"))
            self._snapshot_last_token = 0 if self._snapshot_done else None
            log.info("%s: resuming %s from %s", self.name, "streaming" if self._snapshot_done else "the snapshot",
                     {t: c.to_json() for t, c in self._committed.items()})
            return
        if self._resnapshot:
            log.warning("%s: --resnapshot: reading every table again from the start", self.name)
        with self._connection().cursor() as cur:
            cur.execute("SELECT now()")
            self._horizon_us = to_micros(_one_row(cur)[0])
        self._save()
        log.info("%s: snapshotting rows up to %s", self.name, from_micros(self._horizon_us).isoformat())

    def poll(self, timeout: float) -> list[ChangeEvent]:
        if self._snapshot_done and time.monotonic() < self._next_poll:
            time.sleep(max(0.0, min(timeout, self._next_poll - time.monotonic())))
            return []
        try:
            if self._conn is None:
                self._connect()
            n = len(self._datasets)
            for i in range(n):
                ds = self._datasets[(self._turn + i) % n]
                events = self._read_chunk(ds)
                if events:
                    self._turn = (self._turn + i) % n  # stay on this table until it is drained
                    return events
        except psycopg2.OperationalError as exc:
            # An outage is retried, never dead-lettered: reconnect on the next poll.
            log.warning("%s: database unreachable (%s); retrying", self.name, str(exc).strip())
            self._close()
            self._next_poll = time.monotonic() + self._poll_interval
            time.sleep(min(timeout, self._poll_interval))
            return []
        # every table is caught up
        if not self._snapshot_done:
            if not self._lag_passed_horizon():
                # rows up to the horizon may still be inside the lag window: read them first
                time.sleep(min(timeout, 0.1))
                return []
            self._snapshot_done = True
            self._snapshot_last_token = self._token
            log.info("%s: snapshot read completely", self.name)
        self._next_poll = time.monotonic() + self._poll_interval
        return []

    def acknowledge(self, position: int) -> None:
        self._acked_token = max(self._acked_token, position)
        changed = False
        while self._pending and self._pending[0][0] <= position:
            _, table, cursor = self._pending.pop(0)
            self._committed[table] = cursor
            changed = True
        if changed:
            self._save()

    def snapshot_completed(self) -> bool:
        return self._snapshot_done

    def mark_snapshot_completed(self) -> None:
        """The runner flushed Kafka after the last snapshot chunk: everything returned is in Kafka."""
        if self._pending:
            self.acknowledge(self._token)  # saves
        else:
            self._acked_token = max(self._acked_token, self._token)
            self._save()

    def stop(self) -> None:
        self._close()

    # --- internals --------------------------------------------------------------------------------

    def _connect(self) -> psycopg2.extensions.connection:
        conn = self._conn = psycopg2.connect(self._dsn)
        conn.set_session(readonly=True, autocommit=True)
        self._db = conn.info.dbname
        return conn

    def _connection(self) -> psycopg2.extensions.connection:
        """The open connection; connects if there is none (at start, after an outage)."""
        return self._conn if self._conn is not None else self._connect()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _lag_passed_horizon(self) -> bool:
        with self._connection().cursor() as cur:
            cur.execute("SELECT now() - make_interval(secs => %s) >= %s", (self._lag_ms / 1000.0, from_micros(self._horizon_us)))
            return bool(_one_row(cur)[0])

    def _save(self) -> None:
        position = json.dumps({t: c.to_json() for t, c in sorted(self._committed.items())}, ensure_ascii=False)
        seq = max((to_micros(c.updated_at) for c in self._committed.values()), default=0)
        # the snapshot is complete in connect.<dept>.offsets only once everything it read is acknowledged
        completed = self._snapshot_last_token is not None and self._acked_token >= self._snapshot_last_token
        self._offsets.save({"source": self.name, "slot": None, "snapshot_seq": self._horizon_us,
                            "snapshot_completed": completed, "position": position, "seq": seq})

    def _query(self, ds: Dataset, cursor: Cursor | None) -> tuple[sql.Composed, tuple]:
        upd = sql.Identifier(self._updated_col)
        keys = [sql.Identifier(k) for k in ds.key]
        where = []
        params: list[Any] = []
        if cursor is not None:
            where.append(sql.SQL("({}) > ({})").format(
                sql.SQL(", ").join([upd, *keys]), sql.SQL(", ").join(sql.Placeholder() * (1 + len(keys)))))
            params += [cursor.updated_at, *cursor.key]
        where.append(sql.SQL("{} <= now() - make_interval(secs => %s)").format(upd))
        params.append(self._lag_ms / 1000.0)
        if not self._snapshot_done:
            where.append(sql.SQL("{} <= %s").format(upd))
            params.append(from_micros(self._horizon_us))
        query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY {} LIMIT %s").format(
            _table_ident(ds.table), sql.SQL(" AND ").join(where), sql.SQL(", ").join([upd, *keys]))
        params.append(self._chunk)
        return query, tuple(params)

    def _read_chunk(self, ds: Dataset) -> list[ChangeEvent]:
        query, params = self._query(ds, self._read.get(ds.table))
        with self._connection().cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        if not rows:
            return []
        self._token += 1
        events = [self._event(ds, dict(r), self._token) for r in rows]
        last = rows[-1]
        cursor = Cursor(last[self._updated_col], tuple(_jsonable(last[k]) for k in ds.key))
        self._read[ds.table] = cursor
        self._pending.append((self._token, ds.table, cursor))
        return events

    def _event(self, ds: Dataset, raw: dict[str, Any], token: int) -> ChangeEvent:
        updated = raw[self._updated_col]  # a column of the query's WHERE and ORDER BY
        key = "|".join(str(raw.get(k)) for k in ds.key)
        position = f"{updated.isoformat()}|{key}"
        seq = to_micros(updated)
        if not self._snapshot_done:
            op, snapshot = "r", "true"
        else:
            op = "c" if raw.get(self._created_col) is not None and raw.get(self._created_col) == updated else "u"
            snapshot = "false"
        source = {"connector": "polling", "dept": ds.dept, "db": self._db, "schema": ds.table.rpartition(".")[0] or "public",
                  "table": ds.schema_table, "position": position, "seq": seq, "ts_ms": seq // 1000,
                  "snapshot": snapshot, "tx_id": None}
        try:
            after = self._convert[ds.table](raw, f"{ds.name}@{position}")
        except ValidationError as exc:
            return ChangeEvent(ds, op, None, None, source, key, token, error=exc, raw=raw)
        return ChangeEvent(ds, op, None, after, source, key, token)
