"""Rows of every catalogue dataset as the department simulators make them, without a database.

The simulators' row builders are pure (random generators seeded from ``seed``): the rows come
from their ``seed_rows`` (what ``seed`` loads) and row builders, and the file drops' ``_drop``
is replaced here by a collector. Each raw row then goes through what its connector does to it: the file-drop
rows through the real CSV/XLSX writer and reader, every row through
``streams.codecs.convert.row_converter`` of its Avro schema — so the result is the ``after`` image
the ingest agent would receive.

Live changes that the simulators make with SQL expressions (``arrears_amount + payable * 0.2``)
cannot be evaluated without a database; ``tests/integration/test_city.py`` covers those.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from typing import Any

from connectors.filedrop import read_rows
from connectors.simulator.file_depts import COLUMNS as FILE_COLUMNS
from connectors.simulator.file_depts import DATASETS as FILE_DATASETS
from connectors.simulator.file_depts import FileDropSimulator, csv_bytes, xlsx_bytes
from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.market import Enterprise, MarketSimulator
from connectors.simulator.mysql_depts import MySqlDepartmentsSimulator
from connectors.simulator.polled_depts import PolledDepartmentsSimulator
from connectors.simulator.postgres_depts import Insert, Rates, RowGenerator
from streams.codecs.convert import row_converter
from streams.codecs.serde import SchemaStore
from streams.core.catalogue import Catalogue, _value_schema

TODAY = dt.date(2026, 3, 10)

# Column order of the market simulator's INSERT statements (connectors/simulator/market.py).
MARKET_COLUMNS = {
    "enterprise_registration": ("uscc", "name", "legal_rep_name", "legal_rep_id_number", "legal_rep_phone",
                                "district_code", "industry_code", "registered_capital", "established_date", "status",
                                "address"),
    "abnormal_operation": ("uscc", "reason_code", "listed_date", "authority"),
    "equity_pledge": ("uscc", "registration_no", "pledgor_type", "pledgor_name", "pledgor_id_number", "pledgee",
                      "pledged_amount", "registration_date"),
}
# Columns the department database fills itself (serial ids, defaults).
DB_DEFAULTS: dict[str, dict[str, Any]] = {
    "enterprise_registration": {},
    "abnormal_operation": {"id": 1},
    "equity_pledge": {"id": 1, "status": "valid"},
    **{t: {"id": 1} for t in ("tax_filing", "tax_credit_rating", "tax_arrears", "litigation_case", "enforcement",
                             "dishonest_debtor", "environmental_penalty", "gas_usage", "bid_award", "safety_penalty")},
}


def enterprises(n: int, seed: int, distressed_every: int = 4, label: str = "sample") -> list[Enterprise]:
    """``n`` enterprises, every ``distressed_every``-th distressed; the same for the same (label, seed)."""
    rng = random.Random(f"{label}:{seed}")
    out = []
    for i in range(n):
        code = make_uscc(rng, pick_district(rng))
        out.append(Enterprise(code, code[2:8], i % distressed_every == 0))
    return out


def _market(ents: list[Enterprise], seed: int) -> dict[str, list[dict]]:
    sim = MarketSimulator("postgresql://unused/market", seed=seed)  # no connection is made
    sim.enterprises = list(ents)
    out: dict[str, list[dict]] = defaultdict(list)
    for i, e in enumerate(ents):
        out["enterprise_registration"].append(dict(zip(MARKET_COLUMNS["enterprise_registration"], sim._registration_row(e), strict=True)))
        day = TODAY - dt.timedelta(days=i % 700)
        out["abnormal_operation"].append(dict(zip(MARKET_COLUMNS["abnormal_operation"], sim._listing_row(e.uscc, day), strict=True)))
        out["equity_pledge"].append(dict(zip(MARKET_COLUMNS["equity_pledge"], sim._pledge_row(e, day), strict=True)))
    return out


def _postgres(ents: list[Enterprise], seed: int) -> dict[str, list[dict]]:
    gen = RowGenerator(seed, Rates(litigation_per_year=0.5, environment_penalty_per_year=0.5, arrears_per_year=0.3))
    rows = gen.seed_rows(ents, TODAY)
    out: dict[str, list[dict]] = defaultdict(list)
    for table, table_rows in rows.items():
        out[table].extend(table_rows)
    for i in range(300):
        _, ops = gen.step_ops(TODAY + dt.timedelta(days=i // 30))
        for op in ops:
            if isinstance(op, Insert):
                out[op.table].append(op.row)
    return out


def _mysql(ents: list[Enterprise], seed: int) -> dict[str, list[dict]]:
    sim = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=seed)
    out: dict[str, list[dict]] = defaultdict(list)
    for table, rows in sim.seed_rows(ents, TODAY).items():  # what seed() loads
        out[table].extend(dict(zip(sim.COLUMNS[table], r, strict=True)) for r in rows)
    return out


def _polled(ents: list[Enterprise], seed: int) -> dict[str, list[dict]]:
    sim = PolledDepartmentsSimulator("postgresql://unused/{db}", seed=seed)
    out: dict[str, list[dict]] = defaultdict(list)
    for table, rows in sim.seed_rows(ents, TODAY).items():  # what seed() loads
        out[table].extend(dict(zip(sim._COLUMNS[table], r, strict=True)) for r in rows)
    by_uscc = {e.uscc: e for e in ents}
    for uscc in list(sim.gas_accounts)[:30]:  # this month's bills, not yet paid
        row = sim._gas_row(by_uscc[uscc], TODAY.replace(day=1), settled=False)
        out["gas_usage"].append(dict(zip(sim._COLUMNS["gas_usage"], row, strict=True)))
    for e in ents[:40]:
        out["bid_award"].append(dict(zip(sim._COLUMNS["bid_award"], sim._award_row(e, TODAY, contracted=False), strict=True)))
        out["safety_penalty"].append(dict(zip(sim._COLUMNS["safety_penalty"], sim._penalty_row(e, TODAY, settled=False), strict=True)))
    return out


def _files(ents: list[Enterprise], seed: int) -> dict[str, list[dict]]:
    """Through the simulator's own CSV/XLSX writer and the connector's reader."""
    sim = FileDropSimulator("/nonexistent", seed=seed)
    out: dict[str, list[dict]] = defaultdict(list)

    def drop(dept: str, dataset: str, tag: str, rows: list[dict]):
        ext = FILE_DATASETS[dept][dataset]
        data = (xlsx_bytes if ext == "xlsx" else csv_bytes)(FILE_COLUMNS[dataset], rows)
        out[dataset].extend(row for _, row in read_rows(f"{dataset}-{tag}.{ext}", data))

    sim._drop = drop
    seeded = sim.seed_rows(ents, TODAY)  # what seed() writes: water by month, then each dataset
    for month in sorted({r["billing_month"] for r in seeded["water_usage"]}):
        drop("water", "water_usage", "seed", [r for r in seeded["water_usage"] if r["billing_month"] == month])
    for dept, dataset in (("ip", "patent"), ("ip", "trademark"), ("ip", "ip_pledge"), ("science", "high_tech_certification")):
        if seeded[dataset]:
            drop(dept, dataset, "seed", seeded[dataset])
    for day in range(3):
        sim.step(60, TODAY + dt.timedelta(days=day))
    return out


def simulated_rows(catalogue: Catalogue, schemas: SchemaStore, n: int = 120, seed: int = 11) -> dict[str, list[dict]]:
    """``{qualified dataset: [row as the ingest agent receives it]}`` for every catalogue dataset."""
    ents = enterprises(n, seed)
    raw: dict[str, list[dict]] = {}
    for part in (_market(ents, seed), _postgres(ents, seed), _mysql(ents, seed), _polled(ents, seed), _files(ents, seed)):
        raw.update(part)
    out = {}
    for ds in catalogue.by_topic().values():
        convert = row_converter(_value_schema(schemas.get(ds.schema_name).parsed))
        rows = raw.get(ds.schema_table, [])
        defaults = DB_DEFAULTS.get(ds.schema_table, {})
        out[ds.qualified] = [convert({**defaults, **r}, ds.qualified) for r in rows]
    return out
