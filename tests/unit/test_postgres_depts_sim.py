"""Pure helpers of the tax / court / environment simulator: document numbers, periods, rows."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from connectors.simulator.identities import CHONGQING_DISTRICTS, make_uscc, pick_district
from connectors.simulator.market import Enterprise
from connectors.simulator.postgres_depts import (
    CASE_NO_RE,
    DDL,
    PENALTY_NO_RE,
    TABLE_DEPT,
    Insert,
    Rates,
    RowGenerator,
    Update,
    add_months,
    case_number,
    court_code,
    district_short,
    filing_due_date,
    penalty_decision_no,
    period_of,
)
from streams.core.catalogue import catalogue
from streams.core.identifiers import is_valid_id_number
from streams.core.ingest import validate_row

TODAY = dt.date(2026, 3, 10)


def enterprises(n: int, seed: int = 7, distressed_every: int = 5) -> list[Enterprise]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        code = make_uscc(rng, pick_district(rng))
        out.append(Enterprise(code, code[2:8], i % distressed_every == 0))
    return out


def test_case_number_format():
    assert case_number(2026, "500103", "民初", 1234) == "（2026）渝0103民初1234号"
    assert case_number(2025, "500243", "执", 7) == "（2025）渝0243执7号"
    m = CASE_NO_RE.match(case_number(2026, "500112", "执恢", 88))
    assert m and m.groups() == ("2026", "0112", "执恢", "88")
    assert court_code("500236") == "渝0236"
    with pytest.raises(ValueError):
        case_number(2026, "500103", "刑初", 1)
    with pytest.raises(ValueError):
        case_number(2026, "500103", "民初", 0)


def test_penalty_decision_number_uses_the_district_short_name():
    assert penalty_decision_no(2026, "500107", 25) == "渝（九龙坡）环罚〔2026〕25号"
    assert district_short("500240") == "石柱"
    assert district_short("500243") == "彭水"
    for code in CHONGQING_DISTRICTS:
        assert PENALTY_NO_RE.match(penalty_decision_no(2026, code, 3)), code


def test_periods_and_due_dates():
    assert period_of(dt.date(2026, 2, 17)) == "2026-02"
    assert add_months(dt.date(2025, 11, 30), 2) == dt.date(2026, 1, 1)
    assert add_months(dt.date(2026, 1, 5), -12) == dt.date(2025, 1, 1)
    assert filing_due_date(dt.date(2025, 12, 1)) == dt.date(2026, 1, 15)


def test_ddl_covers_every_table():
    for table, dept in TABLE_DEPT.items():
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in DDL[dept]
        assert f"ALTER TABLE {table} REPLICA IDENTITY FULL" in DDL[dept]


def _seed(seed: int, rates: Rates | None = None):
    gen = RowGenerator(seed, rates)
    rows = gen.seed_rows(enterprises(60), TODAY)
    steps = [gen.step_ops(TODAY + dt.timedelta(days=i // 20)) for i in range(200)]
    return rows, steps


def test_rows_are_deterministic_from_the_seed():
    assert _seed(3) == _seed(3)
    assert _seed(3)[0]["tax_filing"] != _seed(4)[0]["tax_filing"]


def _datasets():
    cat = catalogue()
    return {ds.schema_table: ds for dept in ("tax", "court", "environment") for ds in cat.department(dept).datasets.values()}


def test_generated_rows_pass_the_catalogue_rules():
    datasets = _datasets()
    rows, steps = _seed(11, Rates(litigation_per_year=0.3, environment_penalty_per_year=0.3))
    assert all(rows[t] for t in TABLE_DEPT), {t: len(r) for t, r in rows.items()}
    inserted = [(t, r) for t, rs in rows.items() for r in rs]
    inserted += [(op.table, op.row) for _, ops in steps for op in ops if isinstance(op, Insert)]
    for table, row in inserted:
        ds = datasets[table]
        validate_row(ds, {"id": 1, **row})
        assert set(row) | {"id"} <= {f for f in _fields(ds)}, table
        for rule in ds.masking.rules:
            if rule.pii_class == "id_number" and row.get(rule.field):
                assert is_valid_id_number(row[rule.field])
        if "case_no" in row:
            assert CASE_NO_RE.match(row["case_no"]), row["case_no"]
    for _, ops in steps:
        for op in ops:
            if isinstance(op, Update):
                assert op.where and op.values and op.table in TABLE_DEPT


def _fields(ds) -> set[str]:
    from streams.codecs.serde import schema_store
    from streams.core.catalogue import _value_schema

    return {f["name"] for f in _value_schema(schema_store().get(ds.schema_name).parsed)["fields"]}


def test_monthly_filings_and_distress_path():
    gen = RowGenerator(5)
    ents = enterprises(100, distressed_every=4)
    rows = gen.seed_rows(ents, TODAY)
    vat = [r for r in rows["tax_filing"] if r["tax_type"] == "vat"]
    healthy = {e.uscc for e in ents if not e.distressed}
    per = {}
    for r in vat:
        per.setdefault(r["uscc"], set()).add(r["period"])
    # every healthy enterprise filed the last twelve months, except returns not yet filed by today
    assert all(len(per.get(u, ())) >= 10 for u in healthy)
    assert sum(len(per.get(u, ())) >= 11 for u in healthy) > 0.9 * len(healthy)
    assert all(r["late"] == (r["filing_date"] > r["due_date"]) for r in vat)
    # arrears, enforcement and dishonest-debtor listings come (almost) only from the distressed
    distressed = {e.uscc for e in ents if e.distressed}
    assert {r["uscc"] for r in rows["dishonest_debtor"]} <= distressed
    assert {r["uscc"] for r in rows["enforcement"]} <= distressed
    assert rows["dishonest_debtor"], "some distressed enterprises reached the end of the path"
    # revenue of the distressed falls over the year
    first, last = period_of(add_months(TODAY, -12)), period_of(add_months(TODAY, -2))
    falling = [u for u in distressed
               if {r["period"]: r["taxable_revenue"] for r in vat if r["uscc"] == u}.get(last, 0)
               < {r["period"]: r["taxable_revenue"] for r in vat if r["uscc"] == u}.get(first, 0)]
    assert len(falling) >= 0.8 * len([u for u in distressed if u in per])
    ratings = [r["rating"] for r in rows["tax_credit_rating"] if r["uscc"] in healthy]
    assert sum(r in "AB" for r in ratings) > 0.6 * len(ratings)
