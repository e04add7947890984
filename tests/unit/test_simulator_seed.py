"""Seeding at scale without changing the data: chunked seeds, bulk-load encoding, indexed draws.

The department simulators seed a chunk of enterprises at a time and load it with COPY /
LOAD DATA; these tests pin that the rows are exactly those the generators make for the whole
population at once (for any chunk size), and that the live changes' indexes draw what a choice
over the filtered lists would draw. No database: loads are captured.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import threading
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.filedrop import read_rows
from connectors.simulator import bulk, file_depts, mysql_depts, polled_depts, postgres_depts
from connectors.simulator.file_depts import COLUMNS as FILE_COLUMNS
from connectors.simulator.file_depts import FileDropSimulator, csv_bytes
from connectors.simulator.identities import UniqueCodes
from connectors.simulator.market import Enterprise, MarketSimulator
from connectors.simulator.mysql_depts import MySqlDepartmentsSimulator
from connectors.simulator.polled_depts import PolledDepartmentsSimulator
from connectors.simulator.postgres_depts import PostgresDepartmentsSimulator, Rates, RowGenerator, _on_path, _waiting
from connectors.simulator.sampling import PositionSubset
from tests.unit import simulated_rows

TODAY = dt.date(2026, 3, 10)


def enterprises(n: int, seed: int = 3, distressed_every: int = 4) -> list[Enterprise]:
    return simulated_rows.enterprises(n, seed, distressed_every, label="seed-test")


# --- encoding for COPY / LOAD DATA ---------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (None, "\\N"),
    ("重庆火锅有限公司", "重庆火锅有限公司"),
    ("a\tb\nc\\d\re", "a\\tb\\nc\\\\d\\re"),
    ("\\N", "\\\\N"),  # the two characters, not NULL
    (True, "1"),
    (False, "0"),
    (7, "7"),
    (0.1 + 0.2, "0.30000000000000004"),
    (dt.date(2026, 2, 1), "2026-02-01"),
    (dt.datetime(2026, 2, 1, 8, 30), "2026-02-01 08:30:00"),
])
def test_tsv_field_is_the_text_format_both_databases_read(value, text):
    assert bulk.tsv_field(value) == text


def test_tsv_lines():
    assert bulk.tsv([("a", None, 1), ("b\tc", 2.5, dt.date(2026, 1, 2))]) == b"a\t\\N\t1\nb\\tc\t2.5\t2026-01-02\n"


_values = st.one_of(st.none(), st.text(max_size=12), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.dates(), st.datetimes(), st.decimals(allow_nan=False, allow_infinity=False, places=2))


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.lists(_values, min_size=1, max_size=6), max_size=8))
def test_tsv_is_tsv_field_of_every_value(rows):
    assert bulk.tsv(rows) == "".join("\t".join(map(bulk.tsv_field, r)) + "\n" for r in rows).encode("utf-8")


def test_chunks_cover_the_items_in_order():
    assert list(bulk.chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(bulk.chunks(iter(range(4)), 4)) == [[0, 1, 2, 3]]
    assert list(bulk.chunks([], 3)) == []
    with pytest.raises(ValueError):
        list(bulk.chunks([1], -1))


def test_background_loader_runs_jobs_in_order_and_hands_back_the_first_failure():
    done: list[int] = []
    with bulk.BackgroundLoader("t") as loader:
        for i in range(5):
            loader.submit(lambda i=i: done.append(i))
    assert done == [0, 1, 2, 3, 4]

    def fail():
        raise OSError("disk full")

    loader = bulk.BackgroundLoader("t")
    loader.submit(fail)
    loader.submit(lambda: done.append(99))  # not run: an earlier job failed
    with pytest.raises(OSError, match="disk full"):
        loader.close()
    assert 99 not in done


def test_background_loader_skips_queued_jobs_when_the_generator_fails():
    started, done = threading.Event(), []

    def slow():
        started.set()
        loader._abandon.wait(10)  # still loading when the generating side gives up
        done.append("slow")

    with pytest.raises(KeyError):
        with bulk.BackgroundLoader("t") as loader:
            loader.submit(slow)
            started.wait(10)
            loader.submit(lambda: done.append("queued"))
            raise KeyError("generation failed")
    assert done == ["slow"]  # the running job finished, the queued one was skipped


def test_mysql_identifiers_are_plain_names_only():
    assert bulk.mysql_identifier("social_insurance") == "`social_insurance`"
    with pytest.raises(ValueError):
        bulk.mysql_identifier("x`; DROP TABLE y")


def test_unique_codes_draw_again_on_a_collision():
    codes = UniqueCodes()
    draws = iter(["A1", "B2", "A1", "A1", "C3"])
    assert [codes.draw(lambda: next(draws)) for _ in range(3)] == ["A1", "B2", "C3"]
    assert len(codes) == 3


def test_power_accounts_are_unique_even_when_the_random_numbers_repeat(monkeypatch):
    sim = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=4)
    numbers = itertools.chain([5, 5, 5, 6, 5], itertools.count(100))  # the same account number, again and again
    monkeypatch.setattr(random.Random, "randint", lambda self, a, b: next(numbers) if b == 99_999_999 else a)
    ents = enterprises(3)
    accounts = [a for e in ents for a in sim._profile(e).account_nos]
    assert len(set(accounts)) == len(accounts)


# --- indexed draws -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(flags=st.lists(st.booleans(), max_size=80),
       changes=st.lists(st.tuples(st.integers(min_value=0, max_value=79), st.booleans()), max_size=60),
       seed=st.integers(min_value=0, max_value=2**32))
def test_position_subset_draws_what_choice_over_the_filtered_list_draws(flags, changes, seed):
    subset = PositionSubset(flags)
    members = list(flags)
    for position, member in changes:
        if position < len(members):
            subset.set(position, member)
            members[position] = member
    listed = [i for i, m in enumerate(members) if m]
    assert len(subset) == len(listed)
    assert [subset.kth(k) for k in range(len(listed))] == listed
    if listed:
        a, b = random.Random(seed), random.Random(seed)
        assert [subset.pick(a) for _ in range(5)] == [b.choice(listed) for _ in range(5)]
        assert a.random() == b.random()  # the same random numbers consumed
    with pytest.raises(IndexError):
        subset.kth(len(listed))


def test_step_index_stays_equal_to_the_filters_it_replaces():
    gen = RowGenerator(5, Rates(litigation_per_year=0.3, arrears_per_year=0.3))
    gen.seed_rows(enterprises(300, distressed_every=3), TODAY)
    healthy = [a for a in gen.outstanding_arrears if not gen.profiles[a["uscc"]].distressed]
    assert gen._healthy_arrears == healthy and healthy
    for i in range(1500):  # across a month and a year boundary: waiting / unrated are rebuilt
        gen.step_ops(TODAY + dt.timedelta(days=i // 5))
    today = TODAY + dt.timedelta(days=299)
    ix = gen._step_index(today)
    profiles = list(gen.profiles.values())
    assert ix.profiles == profiles
    due = ix.due
    for subset, keep in ((ix.on_path, _on_path), (ix.waiting, lambda p: _waiting(p, due)),
                         (ix.unrated, lambda p: (p.uscc, ix.year) not in gen.rated)):
        assert [subset.kth(k) for k in range(len(subset))] == [i for i, p in enumerate(profiles) if keep(p)]
    assert gen._healthy_arrears == [a for a in gen.outstanding_arrears if not gen.profiles[a["uscc"]].distressed]


def test_market_on_path_list_stays_equal_to_the_filter(monkeypatch):
    monkeypatch.setattr(MarketSimulator, "_insert_listings", lambda self, cur, rows, today=None: None)
    monkeypatch.setattr(MarketSimulator, "_insert_pledges", lambda self, cur, rows, today=None: None)
    sim = MarketSimulator("postgresql://unused/market", seed=4, distress_share=0.3)
    sim.enterprises = enterprises(200, distressed_every=3)

    class Cursor:
        rowcount = 1

        def execute(self, *args):
            pass

    for _ in range(400):  # registrations, distress steps (revocations), updates
        sim._one_change(Cursor(), TODAY)
    assert sim._on_path() == [e for e in sim.enterprises if e.distressed and e.stage < 3]
    assert any(e.stage >= 3 for e in sim.enterprises) and len(sim.enterprises) > 200


# --- chunked seeds load exactly the rows of one seed_rows over everyone ------------------------


class FakeConnection:
    """Accepts cursors and commits; the loads themselves are captured by patched bulk functions."""

    def __init__(self, log: list) -> None:
        self.log = log

    @contextmanager
    def cursor(self):
        yield self

    def commit(self) -> None:
        self.log.append("commit")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("chunk", [1, 7, 5000])
def test_postgres_departments_chunked_seed_loads_the_rows_of_one_pass(monkeypatch, chunk):
    ents = enterprises(40)
    expected = RowGenerator(9, Rates(litigation_per_year=0.5)).seed_rows(ents, TODAY)
    loaded: dict[str, list[tuple]] = {}
    log: list = []
    monkeypatch.setattr(postgres_depts, "pg_copy",
                        lambda cur, table, cols, rows: loaded.setdefault(table, []).extend(
                            dict(zip(cols, r, strict=True)) for r in rows))
    sim = PostgresDepartmentsSimulator("postgresql://unused/{db}", seed=9, rates=Rates(litigation_per_year=0.5))
    monkeypatch.setattr(sim, "_connections", lambda: {d: FakeConnection(log) for d in postgres_depts.DEPARTMENTS})
    progress: list[int] = []
    counts = sim.seed(ents, TODAY, chunk=chunk, progress=progress.append)
    assert {t: rows for t, rows in loaded.items()} == {t: rows for t, rows in expected.items() if rows}
    assert counts == {t: len(rows) for t, rows in expected.items()}
    assert sum(progress) == 40 and len(progress) == -(-40 // chunk)
    # and the live changes go on from the same state
    one_pass = RowGenerator(9, Rates(litigation_per_year=0.5))
    one_pass.seed_rows(ents, TODAY)
    assert [sim.rows.step_ops(TODAY) for _ in range(200)] == [one_pass.step_ops(TODAY) for _ in range(200)]


@pytest.mark.parametrize("chunk", [3, 5000])
def test_mysql_departments_chunked_seed_loads_the_rows_of_one_pass(monkeypatch, chunk):
    ents = enterprises(30)
    expected = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=4).seed_rows(ents, TODAY)
    loaded: dict[str, list[tuple]] = {}
    monkeypatch.setattr(mysql_depts, "mysql_load",
                        lambda conn, table, cols, rows: loaded.setdefault(table, []).extend(rows))
    monkeypatch.setattr(mysql_depts, "mysql_local_infile", lambda conn: True)
    sim = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=4)
    monkeypatch.setattr(sim, "connect", lambda dept, local_infile=False: FakeConnection([]))
    counts = sim.seed(ents, TODAY, chunk=chunk)
    assert {t: sorted(rows) for t, rows in loaded.items()} == {t: sorted(rows) for t, rows in expected.items() if rows}
    assert counts == {t: len(rows) for t, rows in expected.items()}
    first = [r[0] for r in loaded["social_insurance"]]
    assert first == sorted(first)  # loaded in (uscc, period) order: InnoDB appends


def test_mysql_profiles_do_not_depend_on_the_order_enterprises_come_in():
    """One Faker serves every profile, re-seeded per enterprise: the same people per (seed, uscc)."""
    ents = enterprises(12)
    forward = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=4)
    backward = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=4)
    a = {e.uscc: forward._profile(e) for e in ents}
    b = {e.uscc: backward._profile(e) for e in reversed(ents)}
    assert a == b
    assert len({p.contact_name for p in a.values()}) > 6


@pytest.mark.parametrize("chunk", [4, 5000])
def test_polled_departments_chunked_seed_loads_the_rows_of_one_pass(monkeypatch, chunk):
    ents = enterprises(50)
    expected = PolledDepartmentsSimulator("postgresql://unused/{db}", seed=6).seed_rows(ents, TODAY)
    loaded: dict[str, list[tuple]] = {}
    monkeypatch.setattr(polled_depts, "pg_copy",
                        lambda cur, table, cols, rows: loaded.setdefault(table, []).extend(rows))
    sim = PolledDepartmentsSimulator("postgresql://unused/{db}", seed=6)
    monkeypatch.setattr(sim, "connect", lambda dept: FakeConnection([]))
    counts = sim.seed(ents, TODAY, chunk=chunk)
    assert {t: r for t, r in loaded.items() if r} == {t: r for t, r in expected.items() if r}
    assert counts == {t: len(rows) for t, rows in expected.items()}


def test_polled_candidates_follow_a_second_seed():
    sim = PolledDepartmentsSimulator("postgresql://unused/{db}", seed=6)
    sim.seed_rows(enterprises(40), TODAY)
    first = sim._candidates()
    sim.seed_rows(enterprises(40, seed=8), TODAY)
    with_gas, by_uscc, distressed = sim._candidates()
    assert first != (with_gas, by_uscc, distressed)
    assert with_gas == list(sim.gas_accounts) and set(by_uscc) == {e.uscc for e in sim.enterprises}
    assert distressed == [e for e in sim.enterprises if e.distressed]


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_file_drops_are_the_same_for_any_chunk_size(tmp_path):
    ents = enterprises(90)
    a = FileDropSimulator(tmp_path / "a", seed=3).seed(ents, today=TODAY, chunk=7)
    b = FileDropSimulator(tmp_path / "b", seed=3).seed(ents, today=TODAY)
    assert [p.name for p in a] == [p.name for p in b]
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and not any(name.split("/")[-1].startswith(".") for name in fa)
    for name in fa:
        if name.endswith(".xlsx"):  # a zip: compare the cells
            assert read_rows(name, fa[name]) == read_rows(name, fb[name])
        elif not name.endswith(".xlsx.manifest.json"):
            assert fa[name] == fb[name], name
    # the CSV files hold exactly what csv_bytes makes of the rows seed_rows generates
    rows = FileDropSimulator(tmp_path / "c", seed=3).seed_rows(ents, TODAY)
    patent = next(p for p in a if p.name.startswith("patent-"))
    assert patent.read_bytes() == csv_bytes(FILE_COLUMNS["patent"], rows["patent"])


def test_large_seed_files_are_split_into_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(file_depts, "MAX_FILE_ROWS", 25)
    ents = enterprises(60)
    whole = FileDropSimulator(tmp_path / "rows", seed=2).seed_rows(ents, TODAY)
    paths = FileDropSimulator(tmp_path / "drop", seed=2).seed(ents, today=TODAY, chunk=9)
    by_dataset: dict[str, list] = {}
    for p in paths:
        manifest = json.loads((p.parent / (p.name + ".manifest.json")).read_text())
        got = [r for _, r in read_rows(p.name, p.read_bytes())]
        assert manifest["rows"] == len(got) <= 25
        by_dataset.setdefault(manifest["dataset"], []).extend(got)
    assert len(by_dataset["patent"]) == len(whole["patent"]) > 25  # really split
    assert [r["application_no"] for r in by_dataset["patent"]] == [r["application_no"] for r in whole["patent"]]
    assert len(by_dataset["water_usage"]) == len(whole["water_usage"])
    serials = [int(p.stem.rsplit("-", 1)[1]) for p in paths]
    assert serials == sorted(serials) and len(set(serials)) == len(serials)


def test_file_step_candidates_follow_a_second_seed(tmp_path):
    sim = FileDropSimulator(tmp_path, seed=3)
    sim.seed_rows(enterprises(30), TODAY)
    sim.step(20, TODAY)
    sim.seed_rows(enterprises(30, seed=5), TODAY)
    by_uscc, with_water = sim._candidates()
    assert set(by_uscc) == {e.uscc for e in sim.enterprises} and with_water == sorted(sim.water_accounts)


def test_live_water_bills_are_paid_in_a_later_drop_by_enterprises_that_pay(tmp_path):
    sim = FileDropSimulator(tmp_path, seed=3)
    sim.seed_rows(enterprises(40), TODAY)
    distressed = {e.uscc for e in sim.enterprises if e.distressed}
    states: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for day in range(1, 9):
        for path in sim.step(30, TODAY + dt.timedelta(days=day)):
            if path.name.startswith("water_usage-"):
                for _, row in read_rows(path.name, path.read_bytes()):
                    states.setdefault((row["uscc"], row["billing_month"]), []).append(
                        (row["payment_status"], float(row["arrears"])))
    healthy = {k: v for k, v in states.items() if k[0] not in distressed}
    assert healthy and all(v[0][0] == "unpaid" for v in states.values()), "a live bill is issued unpaid"
    paid_later = [k for k, v in healthy.items() if ("paid", 0.0) in v[1:]]
    assert len(paid_later) >= len(healthy) // 2, f"only {len(paid_later)} of {len(healthy)} bills were paid"
    assert not any(s == "paid" for k, v in states.items() if k[0] in distressed for s, _ in v), "distressed firms do not pay"
