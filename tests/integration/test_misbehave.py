"""Department misbehaviours on demand (connectors/simulator/misbehave.py) in the real sources: for
each kind, a small city where one department of every source kind misbehaves — tax (PostgreSQL
CDC), power (MariaDB binlog), procurement (polled), water (file drop) — while court, housing_fund,
emergency and science of the same kinds behave. The rows each department holds (SQL, or the files
it dropped) show the misbehaviour in the expected share, and none in the others."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import psycopg2
import psycopg2.extras
import pymysql
import pymysql.cursors
import pytest

from connectors.mysql import parse_dsn
from connectors.simulator.city import CitySimulator
from connectors.simulator.misbehave import keeps
from streams.core.catalogue import Dataset, catalogue
from streams.core.identifiers import id_number_problem, uscc_problem
from streams.settings import Settings
from tests.integration.test_city import city_settings  # noqa: F401 — the fixture: this test's own department databases

pytestmark = pytest.mark.integration

SEED = 2019
ENTERPRISES = 300
# the 10th of a month in spring: the simulator's own live business dates then lie within ±15 days,
# far from the late window (20–40 days back) and the future one (30+ days ahead)
TODAY = dt.date(dt.date.today().year, 3, 10)
# misbehaving department → its dataset looked at; a behaving department of the same source kind
MISBEHAVING = {"tax": "tax_filing", "power": "electricity_usage", "procurement": "bid_award", "water": "water_usage"}
BEHAVING = {"court": "litigation_case", "housing_fund": "housing_fund_contribution", "emergency": "safety_penalty",
            "science": "high_tech_certification"}


class Sources:
    """Reads a city's rows back from its real sources."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dsns = {d: dsn.get_secret_value() for d, dsn in settings.source.dsns.items()}
        self.cat = catalogue()

    def dataset(self, dept: str, name: str) -> Dataset:
        return self.cat.dataset(f"{dept}.{name}")

    def rows(self, dept: str, table: str, where: str = "", args: tuple = ()) -> list[dict]:
        """Every row of ``table`` (``where``: an SQL condition of this test's own)."""
        kind = self.cat.department(dept).kind
        if kind == "file":
            return [r for path in self.files(dept) if path.name.startswith(f"{table}-") for r in _csv_rows(path)]
        query = f"SELECT * FROM {table}" + (f" WHERE {where}" if where else "")  # fixed table names of this test
        if kind == "mysql":
            conn_settings, db = parse_dsn(self.dsns[dept])
            conn = pymysql.connect(**conn_settings, database=db, cursorclass=pymysql.cursors.DictCursor)
            try:
                with conn.cursor() as cur:
                    cur.execute(query, args)
                    return list(cur.fetchall())
            finally:
                conn.close()
        with psycopg2.connect(self.dsns[dept]) as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, args)
            out = [dict(r) for r in cur.fetchall()]
        conn.close()
        return out

    def files(self, dept: str) -> list[Path]:
        folder = self.settings.drop_dir / dept
        return sorted(p for p in folder.glob("*.csv")) if folder.exists() else []

    def clock(self, dept: str):
        """Where ``dept`` stands: for a database its clock (what ``updated_at`` is set from) and the
        last id of each table that has one; for a drop folder the files it holds."""
        kind = self.cat.department(dept).kind
        if kind == "file":
            return set(self.files(dept))
        now = self.rows(dept, "(SELECT now(3) AS t) AS c" if kind == "mysql" else "(SELECT now() AS t) AS c")[0]["t"]
        ids = {} if kind == "mysql" else {
            ds.schema_table: self.rows(dept, f"(SELECT coalesce(max(id), 0) AS m FROM {ds.schema_table}) AS x")[0]["m"]
            for ds in self.cat.department(dept).datasets.values()}
        return now, ids

    def live_rows(self, dept: str, table: str, since) -> list[dict]:
        """The rows ``dept`` wrote after ``since`` (its clock): inserted rows where a table has ids,
        else rows inserted or upserted (MariaDB: every live row of these departments is an upsert);
        for a drop folder the rows of the files it dropped."""
        if self.cat.department(dept).kind == "file":
            return [r for p in self.files(dept) if p not in since and p.name.startswith(f"{table}-") for r in _csv_rows(p)]
        now, ids = since
        if table in ids:
            return self.rows(dept, table, "id > %s", (ids[table],))
        return self.rows(dept, table, "updated_at > %s", (now,))

    def changed_rows(self, dept: str, table: str, since) -> list[dict]:
        """Rows inserted or updated after ``since`` (a database department's clock)."""
        return self.rows(dept, table, "updated_at > %s", (since[0],))

    def register(self) -> dict[str, str]:
        """USCC → status in the market register."""
        return {r["uscc"]: r["status"] for r in self.rows("market", "enterprise_registration")}


def _csv_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [{k: (v if v != "" else None) if k not in ("uscc",) else v for k, v in r.items()}
                for r in csv.DictReader(f)]


def business_date(ds: Dataset, row: dict) -> dt.date | None:
    value = row.get(ds.dates[0])
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def broken(ds: Dataset, row: dict) -> bool:
    """The row breaks one of the validation rules ``bad_rows`` breaks: the USCC's check digit, a
    GB 11643 ID number, a required text field left empty."""
    code = row.get(ds.uscc_column)
    if not isinstance(code, str) or uscc_problem(code):
        return True
    if any(row.get(f) not in (None, "") and id_number_problem(row[f], TODAY) for f in ds.id_number_fields):
        return True
    return any(isinstance(row.get(f), str) and not row[f].strip() for f in ds.required)


def run_city(settings: Settings, kind: str, before_live=None) -> tuple[CitySimulator, Sources, dict, list[str]]:
    """Seed a city whose four MISBEHAVING departments are ``kind``, then a few live steps; the
    clocks taken between seed and steps are returned to tell live rows from history."""
    city = CitySimulator(settings, seed=SEED, distress_share=0.1, misbehave=dict.fromkeys(MISBEHAVING, kind))
    city.create()
    usccs = city.seed(ENTERPRISES, today=TODAY)
    src = Sources(settings)
    if before_live:
        before_live(src, usccs)
    clocks = {d: src.clock(d) for d in (*MISBEHAVING, *BEHAVING)}
    for _ in range(3):
        city.step(600, today=TODAY)
    return city, src, clocks, usccs


def test_silent_departments_make_no_live_changes(city_settings):  # noqa: F811 — the imported fixture
    _, src, clocks, _ = run_city(city_settings, "silent")
    for dept, table in MISBEHAVING.items():
        tables = [ds.schema_table for ds in src.cat.department(dept).datasets.values()]
        if src.cat.department(dept).kind == "file":
            assert src.files(dept) and set(src.files(dept)) == clocks[dept], f"{dept} dropped files after its seed"
        else:
            assert src.rows(dept, table), f"{dept} has its seed"
            for t in tables:
                assert src.changed_rows(dept, t, clocks[dept]) == [], f"{dept}.{t} changed while silent"
    for dept, table in BEHAVING.items():
        if dept == "court":  # litigation is rare: any table of the department
            changed = sum(len(src.live_rows(dept, ds.schema_table, clocks[dept]))
                          for ds in src.cat.department(dept).datasets.values())
        else:
            changed = len(src.live_rows(dept, table, clocks[dept]))
        assert changed > 0, f"{dept} behaves: it has live changes"


def test_late_departments_send_business_dates_20_to_40_days_back(city_settings):  # noqa: F811 — the imported fixture
    _, src, clocks, _ = run_city(city_settings, "late")
    window = (TODAY - dt.timedelta(days=40), TODAY - dt.timedelta(days=20))
    for dept, table in MISBEHAVING.items():
        ds = src.dataset(dept, table)
        live = src.live_rows(dept, table, clocks[dept])
        assert len(live) >= 10, f"{dept}: {len(live)} live rows"
        dates = [business_date(ds, r) for r in live]
        assert all(d is not None and window[0] <= d <= window[1] for d in dates), (dept, sorted(set(dates))[:5])
    for dept, table in BEHAVING.items():
        ds = src.dataset(dept, table)
        dates = [business_date(ds, r) for r in src.live_rows(dept, table, clocks[dept])]
        assert not any(d is not None and window[0] <= d <= window[1] for d in dates), f"{dept} behaves: not late"


def test_bad_rows_are_about_30_percent_of_live_inserts(city_settings):  # noqa: F811 — the imported fixture
    _, src, clocks, _ = run_city(city_settings, "bad_rows")
    ways: set[str] = set()
    for dept, table in MISBEHAVING.items():
        ds = src.dataset(dept, table)
        live = src.live_rows(dept, table, clocks[dept])
        bad = [r for r in live if broken(ds, r)]
        assert len(live) >= 30 and 0.15 <= len(bad) / len(live) <= 0.45, (dept, len(bad), len(live))
        for r in bad:
            ways.add("uscc" if uscc_problem(r[ds.uscc_column]) else "required")
        seeded = [r for r in src.rows(dept, table) if r not in live]
        assert not any(broken(ds, r) for r in seeded), f"{dept}: its seed is valid"
    assert ways == {"uscc", "required"}, ways
    for dept, table in BEHAVING.items():
        ds = src.dataset(dept, table)
        assert not any(broken(ds, r) for r in src.rows(dept, table)), f"{dept} behaves: every row valid"


def test_bad_rows_break_gb11643_where_a_dataset_has_id_numbers(city_settings):  # noqa: F811 — the imported fixture
    # tax_arrears carries the legal representative's ID number: some of its bad rows break it
    _, src, clocks, _ = run_city(city_settings, "bad_rows")
    ds = src.dataset("tax", "tax_arrears")
    live = src.live_rows("tax", "tax_arrears", clocks["tax"])
    ids = [r for r in live if r["legal_rep_id_number"] and id_number_problem(r["legal_rep_id_number"], TODAY)]
    assert live and all(uscc_problem(r["uscc"]) is None for r in ids)
    assert ids or len(live) < 8, f"no broken ID number among {len(live)} live arrears"
    assert all(id_number_problem(r["legal_rep_id_number"], TODAY)[0] == "gb11643.check_digit" for r in ids)
    assert not any(broken(ds, r) for r in src.rows("court", "enforcement")), "court behaves"


def test_missing_departments_hold_half_the_enterprises(city_settings):  # noqa: F811 — the imported fixture
    city, src, _, usccs = run_city(city_settings, "missing")
    for dept, table in MISBEHAVING.items():
        ds = src.dataset(dept, table)
        held = {r[ds.uscc_column] for r in src.rows(dept, table)}
        assert held and all(keeps(SEED, dept, u) for u in held), f"{dept} holds an enterprise of the missing half"
        if dept in ("tax", "power"):  # every enterprise files, every enterprise has a meter: about half remain
            assert 0.35 <= len(held & set(usccs)) / len(usccs) <= 0.65, (dept, len(held), len(usccs))
    for dept, table in BEHAVING.items():
        ds = src.dataset(dept, table)
        held = {r[ds.uscc_column] for r in src.rows(dept, table)}
        halves = {keeps(SEED, "tax", u) for u in held}
        assert halves == {True, False}, f"{dept} behaves: it holds enterprises of both halves"
    assert len(src.rows("housing_fund", "housing_fund_contribution")) > 0
    assert {r["uscc"] for r in src.rows("market", "enterprise_registration")} >= set(usccs), "the register is whole"


def test_inconsistent_departments_contradict_the_register_in_about_30_percent(city_settings):  # noqa: F811 — the imported fixture
    def revoke_some(src: Sources, usccs: list[str]) -> None:  # the register has gone enterprises to name
        with psycopg2.connect(src.dsns["market"]) as pg, pg.cursor() as cur:
            cur.execute("UPDATE enterprise_registration SET status = 'revoked' WHERE uscc = ANY(%s)", (usccs[::30],))
        pg.close()

    _, src, clocks, usccs = run_city(city_settings, "inconsistent", before_live=revoke_some)
    register = src.register()
    gone = {u for u, s in register.items() if s in ("revoked", "cancelled")}
    future = TODAY + dt.timedelta(days=30)
    ways: set[str] = set()
    for dept, table in MISBEHAVING.items():
        ds = src.dataset(dept, table)
        live = src.live_rows(dept, table, clocks[dept])
        odd = []
        for r in live:
            code, day = r[ds.uscc_column], business_date(ds, r)
            assert uscc_problem(code) is None, f"{dept}: an inconsistent USCC still has a valid check digit"
            why = ("unknown" if code not in register else "deregistered" if code in gone
                   else "future" if day is not None and day >= future else None)
            if why:
                odd.append(why)
        assert len(live) >= 30 and 0.15 <= len(odd) / len(live) <= 0.5, (dept, len(odd), len(live))
        ways.update(odd)
    assert ways == {"unknown", "deregistered", "future"}, ways
    for dept, table in BEHAVING.items():
        ds = src.dataset(dept, table)
        for r in src.live_rows(dept, table, clocks[dept]):
            day = business_date(ds, r)
            assert r[ds.uscc_column] in register and (day is None or day < future), f"{dept} behaves"
