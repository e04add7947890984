"""Pure helpers of the MariaDB binlog connector: DSN, GTID positions, transaction grouping."""

from __future__ import annotations

import pytest

from connectors.mysql import FL_STANDALONE, Gtid, GtidState, TransactionAssembler, parse_dsn, replica_server_id
from connectors.simulator.mysql_depts import month_add, seasonal_power_factor
from streams.errors import ConfigError


def test_parse_dsn():
    settings, db = parse_dsn("mysql://yurong:p%40ss@127.0.0.1:13306/hrss")
    assert db == "hrss"
    assert (settings["host"], settings["port"], settings["user"], settings["password"]) == ("127.0.0.1", 13306, "yurong", "p@ss")
    assert settings["charset"] == "utf8mb4"


@pytest.mark.parametrize("dsn, fragment", [("postgresql://a:b@h/db", "scheme"), ("mysql://a:b@h:1/", "no database")])
def test_parse_dsn_rejects(dsn, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_dsn(dsn)


def test_gtid_parse_order_and_text():
    assert Gtid.parse("0-1-42") == Gtid(0, 1, 42) and str(Gtid(0, 1, 42)) == "0-1-42"
    assert Gtid.parse("0-1-9") < Gtid.parse("0-1-10")  # numeric, not text order
    with pytest.raises(ValueError, match="not a MariaDB GTID"):
        Gtid.parse("3E11FA47-71CA-11E1-9E33-C80AA9429562:23")


def test_gtid_state_keeps_one_gtid_per_domain():
    state = GtidState("1-2-7, 0-1-40")
    state.advance(Gtid(0, 1, 41))
    assert str(state) == "0-1-41,1-2-7" and state.seq == 41
    copy = state.copy()
    copy.advance(Gtid(0, 1, 42))
    assert str(state) == "0-1-41,1-2-7"  # a copy is independent
    assert GtidState("").seq == 0 and str(GtidState("")) == ""


def test_transaction_groups_rows_until_xid():
    asm = TransactionAssembler()
    assert asm.gtid(Gtid(0, 1, 5), 0) is None
    asm.rows("t", "c", [(None, {"a": 1}), (None, {"a": 2})])
    asm.rows("t", "u", [({"a": 1}, {"a": 3})])
    txn = asm.xid(1_700_000_000_000, 99)
    assert (txn.gtid, txn.ts_ms, txn.xid) == (Gtid(0, 1, 5), 1_700_000_000_000, 99)
    assert [(r.op, r.before, r.after) for r in txn.rows] == [("c", None, {"a": 1}), ("c", None, {"a": 2}), ("u", {"a": 1}, {"a": 3})]
    assert asm.open is None


def test_standalone_ddl_and_commit_statements_close_a_transaction():
    asm = TransactionAssembler()
    asm.gtid(Gtid(0, 1, 6), FL_STANDALONE)
    ddl = asm.query("ALTER TABLE t ADD COLUMN x INT", 1000)
    assert ddl.gtid.seq == 6 and ddl.rows == []
    asm.gtid(Gtid(0, 1, 7), 0)  # a non-transactional engine: rows, then a COMMIT statement
    asm.rows("t", "d", [({"a": 1}, None)])
    assert asm.query("BEGIN", 1000) is None
    assert asm.query("COMMIT", 2000).rows[0].op == "d"


def test_a_new_gtid_closes_a_transaction_whose_end_was_filtered_out():
    asm = TransactionAssembler()
    asm.gtid(Gtid(0, 1, 8), FL_STANDALONE)  # its DDL statement was in another schema
    closed = asm.gtid(Gtid(0, 1, 9), 0)
    assert closed.gtid.seq == 8 and asm.open.gtid.seq == 9


def test_rows_before_the_first_gtid_are_ignored():
    asm = TransactionAssembler()
    asm.rows("t", "c", [(None, {"a": 1})])
    assert asm.xid(1, 1) is None


def test_replica_server_id_is_stable_and_not_the_servers_own():
    assert replica_server_id("hrss@hrss") == replica_server_id("hrss@hrss") != replica_server_id("power@power")
    assert 1000 <= replica_server_id("hrss@hrss") < 2**32


def test_simulator_calendar_helpers():
    assert month_add("2026-01", -1) == "2025-12" and month_add("2025-11", 14) == "2027-01"
    factors = {m: seasonal_power_factor(m) for m in range(1, 13)}
    assert factors[7] > factors[4] and factors[8] > factors[10] and factors[1] > factors[4]  # summer and winter peaks
    assert factors[2] < factors[3]  # Spring Festival
