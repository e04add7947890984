"""Parser for PostgreSQL's ``pgoutput`` logical replication protocol, version 1.

Message formats: PostgreSQL docs, "Logical Replication Message Formats". Pure functions over
bytes; the connector feeds it the payload of each XLogData message. Only what a CDC connector
needs is decoded: Begin, Commit, Relation, Insert, Update, Delete, Truncate; Origin, Type and
logical Message are recognised and skipped.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
UNCHANGED_TOAST = object()  # column value not sent (unchanged TOASTed value)


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d=default, n=nothing, f=full, i=index
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_ts_ms: int
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_ts_ms: int


@dataclass(frozen=True)
class Change:
    """An Insert, Update or Delete; tuples are ``{column: text or None or UNCHANGED_TOAST}``."""

    op: str  # c, u, d
    relid: int
    new: dict[str, object] | None = None
    old: dict[str, object] | None = None
    old_is_key_only: bool = False


@dataclass(frozen=True)
class Truncate:
    relids: tuple[int, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Skipped:
    kind: str


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def byte(self) -> str:
        b = self.buf[self.pos : self.pos + 1]
        self.pos += 1
        return b.decode("ascii")

    def int8(self) -> int:
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def int16(self) -> int:
        (v,) = struct.unpack_from(">h", self.buf, self.pos)
        self.pos += 2
        return v

    def int32(self) -> int:
        (v,) = struct.unpack_from(">i", self.buf, self.pos)
        self.pos += 4
        return v

    def uint32(self) -> int:
        (v,) = struct.unpack_from(">I", self.buf, self.pos)
        self.pos += 4
        return v

    def int64(self) -> int:
        (v,) = struct.unpack_from(">q", self.buf, self.pos)
        self.pos += 8
        return v

    def string(self) -> str:
        end = self.buf.index(b"\x00", self.pos)
        s = self.buf[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return s

    def tuple_data(self, columns: tuple[Column, ...]) -> dict[str, object]:
        n = self.int16()
        out: dict[str, object] = {}
        for i in range(n):
            kind = self.byte()
            name = columns[i].name if i < len(columns) else f"col{i}"
            if kind == "n":
                out[name] = None
            elif kind == "u":
                out[name] = UNCHANGED_TOAST
            elif kind in ("t", "b"):
                length = self.int32()
                raw = self.buf[self.pos : self.pos + length]
                self.pos += length
                out[name] = raw.decode("utf-8") if kind == "t" else bytes(raw)
            else:
                raise ValueError(f"pgoutput: unknown tuple column kind {kind!r}")
        return out


def _ts_ms(pg_us: int) -> int:
    return int((PG_EPOCH + dt.timedelta(microseconds=pg_us)).timestamp() * 1000)


def parse_message(payload: bytes, relations: dict[int, Relation]):
    """Decode one pgoutput message. ``relations`` is updated in place by Relation messages."""
    r = _Reader(payload)
    kind = r.byte()
    if kind == "B":
        return Begin(final_lsn=r.int64(), commit_ts_ms=_ts_ms(r.int64()), xid=r.uint32())
    if kind == "C":
        r.int8()  # flags, unused
        return Commit(commit_lsn=r.int64(), end_lsn=r.int64(), commit_ts_ms=_ts_ms(r.int64()))
    if kind == "R":
        relid = r.uint32()
        namespace, name = r.string(), r.string()
        identity = chr(r.int8())
        cols = []
        for _ in range(r.int16()):
            flags = r.int8()
            cname = r.string()
            oid = r.uint32()
            r.int32()  # typmod
            cols.append(Column(cname, oid, bool(flags & 1)))
        relation = Relation(relid, namespace or "public", name, identity, tuple(cols))
        relations[relid] = relation
        return relation
    if kind in ("I", "U", "D"):
        relid = r.uint32()
        rel = relations.get(relid)
        if rel is None:
            raise ValueError(f"pgoutput: change for relation {relid} before its Relation message")
        if kind == "I":
            r.byte()  # 'N'
            return Change("c", relid, new=r.tuple_data(rel.columns))
        if kind == "D":
            marker = r.byte()  # 'K' (key only) or 'O' (full old row)
            return Change("d", relid, old=r.tuple_data(rel.columns), old_is_key_only=marker == "K")
        marker = r.byte()
        old = None
        key_only = False
        if marker in ("K", "O"):
            key_only = marker == "K"
            old = r.tuple_data(rel.columns)
            marker = r.byte()
        if marker != "N":
            raise ValueError(f"pgoutput: Update without new tuple (marker {marker!r})")
        return Change("u", relid, new=r.tuple_data(rel.columns), old=old, old_is_key_only=key_only)
    if kind == "T":
        n = r.int32()
        r.int8()
        return Truncate(tuple(r.uint32() for _ in range(n)))
    return Skipped(kind)
