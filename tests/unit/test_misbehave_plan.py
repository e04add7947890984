"""The misbehaviour plan (connectors/simulator/misbehave.py) without databases: parsing, the
stable half a ``missing`` department keeps, and what each kind does to a live row."""

from __future__ import annotations

import datetime as dt

import pytest

from connectors.simulator.misbehave import KINDS, Misbehaviour, keeps, parse_plan
from streams.core.identifiers import id_check_digit, id_number_problem, uscc_check_digit, uscc_problem

TODAY = dt.date(2026, 3, 10)
USCC17 = "91500103MA5U7XXX0"
USCC = USCC17 + uscc_check_digit(USCC17)
ARREARS = {"uscc": USCC, "tax_type": "vat", "amount": 1000.0, "late_fee": 5.0, "since_date": TODAY,
           "cleared_date": None, "status": "outstanding", "legal_rep_name": "张三",
           "legal_rep_id_number": "50011219830715423" + id_check_digit("50011219830715423"), "tax_authority": "x"}


def test_parse_plan():
    assert parse_plan("tax=late, hrss=silent,,") == {"tax": "late", "hrss": "silent"}
    assert parse_plan("") == parse_plan(None) == {}
    for bad in ("tax", "tax=slow", "=late", "tax=late,tax=silent"):
        with pytest.raises(ValueError):
            parse_plan(bad)


def test_unknown_departments_are_refused(catalogue):
    with pytest.raises(ValueError, match="unknown departments"):
        Misbehaviour({"nowhere": "late"}, catalogue=catalogue)


def test_missing_keeps_a_stable_half():
    codes = [f"{i:018d}" for i in range(4000)]
    kept = [c for c in codes if keeps(7, "tax", c)]
    assert 0.45 < len(kept) / len(codes) < 0.55
    assert kept == [c for c in codes if keeps(7, "tax", c)]
    assert kept != [c for c in codes if keeps(7, "hrss", c)], "each department misses its own half"


@pytest.mark.parametrize("kind", KINDS)
def test_a_behaving_department_is_untouched(catalogue, kind):
    m = Misbehaviour({"court": kind}, catalogue=catalogue)
    assert m.live_row("tax", "tax_arrears", ARREARS, TODAY) is ARREARS
    assert m.writes("tax", USCC) and not m.silent("tax")


def test_each_kind_on_a_live_row(catalogue):
    def rows(kind: str) -> list[dict | None]:
        m = Misbehaviour({"tax": kind}, seed=3, catalogue=catalogue)
        return [m.live_row("tax", "tax_arrears", dict(ARREARS), TODAY) for _ in range(400)]

    assert rows("silent") == [None] * 400
    late = rows("late")
    assert all(20 <= (TODAY - r["since_date"]).days <= 40 for r in late if r)
    bad = [r for r in rows("bad_rows") if r != ARREARS]
    assert 0.2 < len(bad) / 400 < 0.4
    assert {("uscc" if uscc_problem(r["uscc"]) else "id" if id_number_problem(r["legal_rep_id_number"], TODAY)
             else "empty" if "" in r.values() else "?") for r in bad} == {"uscc", "id", "empty"}
    odd = [r for r in rows("inconsistent") if r != ARREARS]
    assert 0.2 < len(odd) / 400 < 0.4 and all(uscc_problem(r["uscc"]) is None for r in odd)
    assert rows("late") == late, "deterministic from the seed"
