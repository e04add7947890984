"""pgoutput v1 messages built byte by byte after PostgreSQL's "Logical Replication Message Formats"."""

from __future__ import annotations

import datetime as dt
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Change,
    Column,
    Commit,
    Relation,
    Skipped,
    Truncate,
    parse_message,
)
from streams.codecs.positions import format_lsn, parse_lsn

PROPERTY = settings(max_examples=200, deadline=None)
PG_EPOCH_UNIX_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
RELID = 16385


def cstr(s: str) -> bytes:
    return s.encode("utf-8") + b"\x00"


def relation_msg(relid=RELID, namespace="public", name="enterprise_registration", identity=b"d",
                 columns=(("uscc", 25, True), ("name", 25, False), ("status", 25, False), ("notes", 25, False))) -> bytes:
    body = b"R" + struct.pack(">I", relid) + cstr(namespace) + cstr(name) + identity + struct.pack(">h", len(columns))
    for cname, oid, is_key in columns:
        body += struct.pack(">b", 1 if is_key else 0) + cstr(cname) + struct.pack(">Ii", oid, -1)
    return body


def tuple_data(*values) -> bytes:
    """TupleData: None → 'n', UNCHANGED_TOAST → 'u', str → 't' with Int32 length."""
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED_TOAST:
            out += b"u"
        else:
            raw = v.encode("utf-8")
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


@pytest.fixture
def relations():
    rels: dict[int, Relation] = {}
    parse_message(relation_msg(), rels)
    return rels


def test_relation_message_registers_columns():
    rels: dict[int, Relation] = {}
    rel = parse_message(relation_msg(identity=b"f"), rels)
    assert rels[RELID] is rel
    assert rel.qualified == "public.enterprise_registration"
    assert rel.replica_identity == "f"
    assert rel.columns == (
        Column("uscc", 25, True), Column("name", 25, False), Column("status", 25, False), Column("notes", 25, False),
    )


def test_begin():
    committed = dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    pg_us = (committed - dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    msg = b"B" + struct.pack(">qqI", 0x3_16B3748, pg_us, 4_000_000_000)
    begin = parse_message(msg, {})
    assert begin == Begin(final_lsn=0x3_16B3748, commit_ts_ms=begin.commit_ts_ms, xid=4_000_000_000)
    assert begin.commit_ts_ms == 1_709_294_400_123  # 2024-03-01T12:00:00.123Z


@PROPERTY
@given(pg_us=st.integers(0, 200 * 366 * 86_400 * 10**6))
def test_commit_timestamp_is_unix_ms(pg_us):
    msg = b"C" + struct.pack(">bqqq", 0, 100, 200, pg_us)
    assert parse_message(msg, {}) == Commit(commit_lsn=100, end_lsn=200, commit_ts_ms=PG_EPOCH_UNIX_MS + pg_us // 1000)


def test_commit_at_pg_epoch_is_the_year_2000():
    msg = b"C" + struct.pack(">bqqq", 0, 1, 2, 0)
    assert parse_message(msg, {}).commit_ts_ms == int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def test_insert_with_text_null_and_unicode(relations):
    msg = b"I" + struct.pack(">I", RELID) + b"N" + tuple_data("91110000600037341L", "重庆某某公司", "active", None)
    assert parse_message(msg, relations) == Change(
        "c", RELID, new={"uscc": "91110000600037341L", "name": "重庆某某公司", "status": "active", "notes": None}
    )


def test_update_with_old_row_and_unchanged_toast(relations):
    old = tuple_data("91110000600037341L", "重庆某某公司", "active", "long text")
    new = tuple_data("91110000600037341L", "重庆某某公司", "revoked", UNCHANGED_TOAST)
    msg = b"U" + struct.pack(">I", RELID) + b"O" + old + b"N" + new
    change = parse_message(msg, relations)
    assert change.op == "u"
    assert change.old == {"uscc": "91110000600037341L", "name": "重庆某某公司", "status": "active", "notes": "long text"}
    assert change.new["status"] == "revoked"
    assert change.new["notes"] is UNCHANGED_TOAST
    assert change.old_is_key_only is False


def test_update_with_key_only_old_tuple(relations):
    old = tuple_data("91110000600037341L", None, None, None)
    msg = b"U" + struct.pack(">I", RELID) + b"K" + old + b"N" + tuple_data("91110000600037341X", "n", "active", None)
    change = parse_message(msg, relations)
    assert change.old_is_key_only is True
    assert change.old["uscc"] == "91110000600037341L"
    assert change.new["uscc"] == "91110000600037341X"


def test_update_without_old_tuple(relations):
    msg = b"U" + struct.pack(">I", RELID) + b"N" + tuple_data("91110000600037341L", "n", "suspended", None)
    change = parse_message(msg, relations)
    assert change.old is None and change.new["status"] == "suspended"


@pytest.mark.parametrize("marker, key_only", [(b"K", True), (b"O", False)])
def test_delete(relations, marker, key_only):
    msg = b"D" + struct.pack(">I", RELID) + marker + tuple_data("91110000600037341L", None, None, None)
    assert parse_message(msg, relations) == Change(
        "d", RELID, old={"uscc": "91110000600037341L", "name": None, "status": None, "notes": None}, old_is_key_only=key_only
    )


def test_truncate():
    msg = b"T" + struct.pack(">ib", 2, 0) + struct.pack(">II", RELID, RELID + 1)
    assert parse_message(msg, {}) == Truncate((RELID, RELID + 1))


@pytest.mark.parametrize("kind", [b"O", b"Y", b"M", b"Z"])
def test_other_messages_are_skipped(kind):
    assert parse_message(kind + b"\x00" * 16, {}) == Skipped(kind.decode())


def test_change_before_relation_is_an_error():
    msg = b"I" + struct.pack(">I", 999) + b"N" + tuple_data("x")
    with pytest.raises(ValueError, match="999"):
        parse_message(msg, {})


def test_unknown_tuple_column_kind_is_an_error(relations):
    msg = b"I" + struct.pack(">I", RELID) + b"N" + struct.pack(">h", 1) + b"?"
    with pytest.raises(ValueError, match="column kind"):
        parse_message(msg, relations)


@pytest.mark.parametrize("lsn, text", [(0, "0/0"), (0x16B3748, "0/16B3748"), (0x3_374A9A4E, "3/374A9A4E"),
                                       (2**64 - 1, "FFFFFFFF/FFFFFFFF")])
def test_format_lsn(lsn, text):
    assert format_lsn(lsn) == text
    assert parse_lsn(text) == lsn


@PROPERTY
@given(st.integers(0, 2**64 - 1))
def test_lsn_text_round_trip(lsn):
    assert parse_lsn(format_lsn(lsn)) == lsn


@PROPERTY
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_lsn_text_keeps_order_after_parsing(a, b):
    assert (parse_lsn(format_lsn(a)) < parse_lsn(format_lsn(b))) == (a < b)
