"""Risk evaluation: how early and how precisely the scorecard and the alert catalogue flag the
simulators' distress paths.

    .venv/bin/python -m bench.risk_eval --enterprises 2000 --months 24 --seed 2019

No database, no Kafka: the departments' rows come from the simulators' pure row builders
(``connectors/simulator/*``), are turned into change envelopes of exactly the shape each kind of
connector emits (PostgreSQL CDC, MariaDB binlog, polling, file drop: ``before``/``after``/``op``/
``source{…}``/``ts_ms``, ``source.ts_ms`` the simulated commit time), and go through the worker's
pure core — ``streams.core.ingest.to_enterprise_event`` (validate, mask with a fixed test key) and
``streams.core.profile.merge_event`` (facts, indicators, scorecard, alert catalogue) — in commit order.

What one run does:

1. **Population.** ``--enterprises`` USCCs from the market simulator; ``--distress-share`` of them
   will walk the distress path, each from an onset month drawn uniformly over the window.
2. **Snapshot** on the day before the window: every database department's history (the
   simulators' seeds, everyone still healthy) as ``op = 'r'`` — no alerts — and the file
   departments' history files as ``op = 'c'`` (a drop folder has no snapshot mode).
3. **Month by month** (``--months``): monthly tax returns, social insurance, housing fund,
   electricity, customs trade, gas and water bills for every enterprise; yearly tax ratings in
   April; rare events at the simulators' yearly rates (``postgres_depts.Rates`` and the seeds'
   frequencies); and the distress path on the timeline the simulators' seeds imply (tax decline
   from month 0, tax arrears at month 5, sued at 7, enforcement at 9, dishonest debtor at 11,
   social-insurance/housing-fund/power distress ramping up over months 6–11), stretched or
   squeezed per enterprise by a pace factor. Updates (cases closing, bills paid, arrears
   cleared) are applied to an in-memory copy of the department tables, so every ``u`` envelope
   carries the before image its connector would send.
4. **Scoring.** Ground truth: an enterprise *defaults* when an enforcement case
   (``court.enforcement``) is filed against it. For several alert policies: precision, recall
   before enforcement, lead time (first alert → enforcement filing), false alerts per 1,000
   healthy enterprise-months; which reason codes fire first on the distress path; how often
   healthy enterprises trigger each alert category.

Results: a summary on the console, ``bench/results/risk-eval-<date>.json`` and, with
``--markdown FILE``, the result tables as Markdown. The reading is in docs/risk-evaluation.md.
Figures are never asserted in tests (tests/unit/test_risk_eval.py checks invariants only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import heapq
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.filedrop import read_rows
from connectors.simulator.file_depts import COLUMNS as FILE_COLUMNS
from connectors.simulator.file_depts import DATASETS as FILE_DATASETS
from connectors.simulator.file_depts import FileDropSimulator, csv_bytes, xlsx_bytes
from connectors.simulator.identities import make_id_number, make_mobile
from connectors.simulator.market import Enterprise, MarketSimulator
from connectors.simulator.mysql_depts import RATINGS as CUSTOMS_RATINGS
from connectors.simulator.mysql_depts import MonthState, MySqlDepartmentsSimulator
from connectors.simulator.polled_depts import PolledDepartmentsSimulator
from connectors.simulator.postgres_depts import Insert, Op, Rates, RowGenerator, add_months
from streams.codecs.convert import row_converter
from streams.codecs.positions import format_lsn
from streams.codecs.serde import schema_store
from streams.core.catalogue import Dataset, _value_schema, catalogue
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import Pseudonymizer
from streams.core.profile import merge_event
from streams.core.scorecard import DEFAULT_SCORECARD, SEVERITY_RANK, Scorecard
from streams.errors import PIILeakError, ValidationError

REPO = Path(__file__).resolve().parent.parent

# The pseudonymisation key of the test suite (tests/conftest.py TEST_KEY): fixed, so runs repeat.
EVAL_KEY = b"yurong-test-pseudonymisation-key-0123456789abcdef"
DAY_MS = 86_400_000

# --- the distress timeline ------------------------------------------------------------------------
# Months after onset, from the simulators' own seeds: postgres_depts.RowGenerator.seed_rows starts
# the revenue decline in month 0 and puts tax arrears, the lender's suit, judgment + enforcement and
# the dishonest-debtor listing at months 5, 7, 9 and 11; mysql_depts.seed ramps social insurance,
# housing fund and power distress from 0 to 1 over the six months before its end, i.e. months 6-11
# of the same window. How far an enterprise gets follows seed_rows' weights for its target stage.
STAGE_MONTH = {1: 5, 2: 7, 3: 9, 4: 11}
RAMP_START, RAMP_MONTHS = 5, 6
TERMINAL_WEIGHTS = (1, 2, 2, 2, 2)  # stops at stage 0 (decline only) … 4 (dishonest debtor)
PACE = (0.6, 1.4)  # per-enterprise factor on every interval of the timeline (the seeds have none)
MARKET_LISTING_MONTH = (8, 12)  # 经营异常名录 listing; market.py has no timing of its own (see docs)
MARKET_SUSPEND_AFTER, MARKET_REVOKE_AFTER = (2, 4), (4, 8)
CUSTOMS_DISHONEST_SHARE, CUSTOMS_DISHONEST_MONTH = 0.3, (6, 11)  # mysql_depts._credit_row: 30 %

# Yearly rates of the rare live events. Court, environment and tax arrears use postgres_depts.Rates
# (its "realistic" defaults); the others are read off the simulators' seeds (e.g. polled_depts
# seeds Poisson(0.12) awards over 30-900 days ≈ 0.05 a year). The simulators' step() mixes are
# per *change*, tuned for a demo stream, and cannot be used per enterprise-month (see docs).
PER_YEAR = {
    "bid_award": 0.05,
    "safety_penalty": 0.016, "safety_penalty_distressed": 0.13,
    "equity_pledge": 0.02, "capital_increase": 0.05, "legal_rep_change": 0.05,
    "patent": 0.10, "trademark": 0.05, "ip_pledge": 0.05, "high_tech": 0.025,
    "customs_rerating": 0.05,
}
LISTING_REMOVED_PER_MONTH = 0.05
PLEDGE_CANCELLED_PER_MONTH = 1 / 18

MARKET_COLUMNS = {
    "enterprise_registration": ("uscc", "name", "legal_rep_name", "legal_rep_id_number", "legal_rep_phone",
                                "district_code", "industry_code", "registered_capital", "established_date", "status",
                                "address"),
    "abnormal_operation": ("uscc", "reason_code", "listed_date", "authority"),
    "equity_pledge": ("uscc", "registration_no", "pledgor_type", "pledgor_name", "pledgor_id_number", "pledgee",
                      "pledged_amount", "registration_date"),
}


def month_index(d: dt.date) -> int:
    return d.year * 12 + d.month - 1


def at(day: dt.date, rng: random.Random) -> int:
    """Epoch ms of a commit on ``day`` during office hours in Chongqing (01:00-09:00 UTC)."""
    return int(dt.datetime(day.year, day.month, day.day, 1, tzinfo=dt.UTC).timestamp() * 1000) \
        + rng.randrange(8 * 3_600_000)


def utc(ts_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)


def chance(rng: random.Random, per_year: float) -> bool:
    return rng.random() < per_year / 12


@dataclass(frozen=True)
class Config:
    enterprises: int = 2000
    months: int = 24
    seed: int = 2019
    distress_share: float = 0.10
    start: dt.date = dt.date(2025, 1, 1)
    scorecard: Path | None = None  # None: the default card (streams/core/scorecard.toml)


@dataclass
class Plan:
    """One distressed enterprise's path: onset, pace, how far it gets, and when."""

    uscc: str
    onset: dt.date
    pace: float
    terminal: int
    events: list[tuple[dt.date, str]] = field(default_factory=list)  # (day, "pg" | "market" | "customs")
    enforced_ms: int | None = None  # commit time of the enforcement filing, once it happened

    def months_since_onset(self, month: dt.date) -> float:
        return (month_index(month) - month_index(self.onset)) / self.pace

    def distress(self, month: dt.date) -> float:
        """The MariaDB departments' distress level for ``month`` (0 … 1)."""
        k = self.months_since_onset(month)
        return max(0.0, min(1.0, (k - RAMP_START) / RAMP_MONTHS))


@dataclass(frozen=True)
class Change:
    """The part of a ``risk.changes`` record the evaluation uses."""

    ts_ms: int
    category: str
    severity: str
    codes: tuple[str, ...]
    level_before: str
    level_after: str
    score_after: int
    dataset: str
    profile_codes: tuple[str, ...] = ()  # the profile's adverse reason codes after the change

    @property
    def adverse(self) -> bool:
        return self.category != "positive"


# --- the department tables, in memory -----------------------------------------------------------

class Tables:
    """What the simulators' SQL would leave in the department tables: rows by (table, USCC)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self.serial: Counter[str] = Counter()

    def insert(self, table: str, row: dict, with_id: bool) -> dict:
        if with_id:
            self.serial[table] += 1
            row = {"id": self.serial[table], **row}
        self.rows[(table, row["uscc"])].append(row)
        return row

    def find(self, table: str, uscc: str, where: dict) -> list[dict]:
        return [r for r in self.rows[(table, uscc)] if all(r.get(k) == v for k, v in where.items())]

    def update(self, row: dict, values: dict) -> tuple[dict, dict]:
        before = dict(row)
        row.update(values)
        return before, dict(row)


# --- the pipeline's pure core ---------------------------------------------------------------------

class Pipeline:
    """Connector framing → ``to_enterprise_event`` → ``merge_event``, per change, in commit order."""

    def __init__(self, scorecard: Scorecard) -> None:
        cat = catalogue()
        schemas = schema_store()
        self.scorecard = scorecard
        self.pseudonymizer = Pseudonymizer(EVAL_KEY)
        self.datasets: dict[str, Dataset] = {}
        self.kinds: dict[str, str] = {}
        self.convert: dict[str, Callable] = {}
        for dept in cat.departments.values():
            for ds in dept.datasets.values():
                if ds.schema_table in self.datasets:
                    raise RuntimeError(f"table name {ds.schema_table} is not unique across departments")
                self.datasets[ds.schema_table] = ds
                self.kinds[ds.schema_table] = dept.kind
                self.convert[ds.schema_table] = row_converter(_value_schema(schemas.get(ds.schema_name).parsed))
        self.lsn = 0x3000000
        self.gtid = 1000
        self.tx = 700
        self.profiles: dict[str, dict] = {}
        self.offset = 0
        self.changes: dict[str, list[Change]] = defaultdict(list)
        self.events: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.dead_letter_samples: list[str] = []

    # connector framing, one per kind of source (connectors/postgres.py, mysql.py, polling.py, filedrop.py)

    def _source(self, table: str, ts_ms: int, snapshot: bool, row: dict) -> dict[str, Any]:
        ds, kind = self.datasets[table], self.kinds[table]
        if kind == "postgres":
            if not snapshot:
                self.lsn += 120 + (ts_ms % 4000)
                self.tx += 1
            return {"connector": "postgresql", "dept": ds.dept, "db": ds.dept, "schema": "public", "table": table,
                    "position": format_lsn(self.lsn), "seq": self.lsn, "ts_ms": ts_ms,
                    "snapshot": "true" if snapshot else "false", "tx_id": None if snapshot else self.tx}
        if kind == "mysql":
            if not snapshot:
                self.gtid += 1
            return {"connector": "mysql", "dept": ds.dept, "db": ds.dept, "schema": None, "table": table,
                    "position": f"0-1-{self.gtid}", "seq": self.gtid, "ts_ms": ts_ms,
                    "snapshot": "true" if snapshot else "false", "tx_id": None if snapshot else self.gtid}
        # polling: position "<updated_at iso>|<key>", seq updated_at in µs
        updated = row["updated_at"]
        micros = int(updated.timestamp() * 1_000_000)
        key = "|".join(str(row.get(k)) for k in ds.key)
        return {"connector": "polling", "dept": ds.dept, "db": ds.dept, "schema": "public", "table": table,
                "position": f"{updated.isoformat()}|{key}", "seq": micros, "ts_ms": micros // 1000,
                "snapshot": "true" if snapshot else "false", "tx_id": None}

    def change(self, table: str, op: str, before: dict | None, after: dict | None, ts_ms: int,
               snapshot: bool = False) -> None:
        """One row change of a database department (PostgreSQL, MariaDB or polled)."""
        if self.kinds[table] == "polling":
            before = None  # polling sees only the latest state
            op = "r" if snapshot else ("c" if after["created_at"] == after["updated_at"] else "u")
        source = self._source(table, ts_ms, snapshot, after or before)
        self._feed(table, op, before, after, source)

    def drop(self, table: str, name: str, rows: list[dict], ts_ms: int) -> None:
        """One file of a file-drop department: written by the simulator's writer, read by the connector's reader."""
        ds = self.datasets[table]
        ext = FILE_DATASETS[ds.dept][ds.name]
        data = (xlsx_bytes if ext == "xlsx" else csv_bytes)(FILE_COLUMNS[ds.name], rows)
        sha = hashlib.sha256(data).hexdigest()
        for line, raw in read_rows(name, data):
            source = {"connector": "filedrop", "dept": ds.dept, "db": ds.dept, "schema": name, "table": ds.name,
                      "position": f"{sha[:16]}:{line}", "seq": ts_ms * 1_000_000 + min(line, 999_999), "ts_ms": ts_ms,
                      "snapshot": "false", "tx_id": None}
            self._feed(table, "c", None, raw, source)

    def _feed(self, table: str, op: str, before: dict | None, after: dict | None, source: dict) -> None:
        ds = self.datasets[table]
        convert = self.convert[table]
        ts_ms = source["ts_ms"]
        now_ms = ts_ms + 1500  # the worker is seconds behind the source; lead times are days
        self.offset += 1
        self.events[ds.qualified] += 1
        try:
            envelope = {"before": convert(before, ds.qualified) if before is not None else None,
                        "after": convert(after, ds.qualified) if after is not None else None,
                        "source": source, "op": op, "ts_ms": ts_ms + 500}
            event = to_enterprise_event(ds, envelope, Provenance(ds.topic, 0, self.offset), self.pseudonymizer, now_ms)
        except (ValidationError, PIILeakError) as exc:
            self.dead_letters[ds.qualified] += 1
            if len(self.dead_letter_samples) < 10:
                self.dead_letter_samples.append(f"{ds.qualified}: {exc}")
            return
        uscc = event["uscc"]
        profile, changes = merge_event(self.profiles.get(uscc), event, self.offset, now_ms, self.scorecard)
        self.profiles[uscc] = profile
        for c in changes:
            self.changes[uscc].append(Change(c["event_ts_ms"], c["category"], c["severity"], tuple(c["reason_codes"]),
                                             c["level_before"], c["level_after"], c["score_after"], c["source_dataset"],
                                             tuple(profile["reason_codes"])))


# --- the city, month by month -----------------------------------------------------------------------

class City:
    """Every department's simulator, driven by a monthly clock, feeding one ``Pipeline``."""

    def __init__(self, cfg: Config, pipeline: Pipeline) -> None:
        self.cfg = cfg
        self.pipe = pipeline
        seed = cfg.seed
        self.rng = random.Random(f"risk_eval:{seed}")  # the clock's own draws: onsets, paces, event days
        self.market = MarketSimulator("postgresql://unused/market", seed=seed, distress_share=cfg.distress_share)
        self.pg = RowGenerator(seed, Rates())
        self.my = MySqlDepartmentsSimulator("mysql://unused/{db}", seed=seed)
        self.polled = PolledDepartmentsSimulator("postgresql://unused/{db}", seed=seed)
        self.files = FileDropSimulator("/nonexistent", seed=seed)  # rows only: nothing is written
        self._water_issued: dict[str, dict] = {}  # the newest live water bill per enterprise, paid next month
        self.tables = Tables()
        self.enterprises: list[Enterprise] = []
        self.by_uscc: dict[str, Enterprise] = {}
        self.plans: dict[str, Plan] = {}
        self.my_state: dict[str, MonthState] = {}
        self.my_rng: dict[str, random.Random] = {}
        self._queue: list[tuple[int, int, Callable[[int], None]]] = []
        self._n = 0
        self.t0 = cfg.start
        self.t0_ms = int(dt.datetime(self.t0.year, self.t0.month, self.t0.day, tzinfo=dt.UTC).timestamp() * 1000)
        self.end = add_months(self.t0, cfg.months)
        self.end_ms = self.t0_ms + (self.end - self.t0).days * DAY_MS
        self.month_levels: dict[str, list[str]] = defaultdict(list)
        self.enforcements: dict[str, int] = {}  # every enforcement filed in the window, by USCC

    # scheduling: every change is applied at its commit time, in commit order

    def later(self, ts_ms: int, apply: Callable[[int], None]) -> None:
        self._n += 1
        heapq.heappush(self._queue, (ts_ms, self._n, apply))

    def run_until(self, ts_ms: int) -> None:
        while self._queue and self._queue[0][0] < ts_ms:
            when, _, apply = heapq.heappop(self._queue)
            apply(when)

    def insert(self, table: str, row: dict, ts_ms: int, snapshot: bool = False) -> dict:
        ds = self.pipe.datasets[table]
        row = {**row}
        row = self.tables.insert(table, self._stamp(table, row, ts_ms, created=True), with_id=ds.key == ("id",))
        self.pipe.change(table, "r" if snapshot else "c", None, row, ts_ms, snapshot)
        return row

    def update(self, table: str, uscc: str, where: dict, values: dict, ts_ms: int) -> int:
        hits = self.tables.find(table, uscc, where)
        for row in hits:
            before, after = self.tables.update(row, self._stamp(table, dict(values), ts_ms, created=False))
            self.pipe.change(table, "u", before, after, ts_ms)
        return len(hits)

    def upsert(self, table: str, row: dict, ts_ms: int, snapshot: bool = False) -> None:
        """MariaDB's ``INSERT … ON DUPLICATE KEY UPDATE`` (the MariaDB simulator's only write)."""
        key = {k: row[k] for k in self.pipe.datasets[table].key}
        hits = self.tables.find(table, row["uscc"], key)
        if hits:
            self.update(table, row["uscc"], key, row, ts_ms)
        else:
            self.insert(table, row, ts_ms, snapshot)

    def _stamp(self, table: str, row: dict, ts_ms: int, created: bool) -> dict:
        if self.pipe.kinds[table] == "file":
            return row
        row["updated_at"] = utc(ts_ms)
        if created and self.pipe.kinds[table] == "polling":
            row["created_at"] = row["updated_at"]
        return row

    def apply_ops(self, uscc: str, ops: list[Op], ts_ms: int) -> None:
        """The PostgreSQL simulator's operations (``RowGenerator``), as its ``step`` would run them."""
        for i, op in enumerate(ops):
            if isinstance(op, Insert):
                self.insert(op.table, op.row, ts_ms + i)
                if op.table == "enforcement":
                    self.enforcements.setdefault(uscc, ts_ms + i)
                    if uscc in self.plans and self.plans[uscc].enforced_ms is None:
                        self.plans[uscc].enforced_ms = ts_ms + i
            else:
                self.update(op.table, uscc, op.where, op.values, ts_ms + i)

    # --- population and snapshot ------------------------------------------------------------------

    def populate(self) -> None:
        m, cfg = self.market, self.cfg
        for _ in range(cfg.enterprises):
            e = Enterprise(m._new_uscc(), "", False)
            e.district = e.uscc[2:8]
            m.enterprises.append(e)
            self.enterprises.append(e)
            self.by_uscc[e.uscc] = e
            if m.rng.random() < cfg.distress_share:  # market.py's draw; the flag is set at onset
                self.plans[e.uscc] = self._plan(e.uscc)

    def _plan(self, uscc: str) -> Plan:
        rng = self.rng
        onset_month = add_months(self.t0, rng.randrange(1, max(2, self.cfg.months)))
        plan = Plan(uscc, onset_month + dt.timedelta(days=rng.randint(0, 27)), rng.uniform(*PACE),
                    rng.choices(range(5), weights=TERMINAL_WEIGHTS)[0])

        def day(months: float) -> dt.date:
            return onset_month + dt.timedelta(days=round(months * plan.pace * 30.44) + rng.randint(0, 27))

        plan.events = [(day(STAGE_MONTH[s]), "pg") for s in range(1, plan.terminal + 1)]
        listing = rng.uniform(*MARKET_LISTING_MONTH)
        suspended = listing + rng.uniform(*MARKET_SUSPEND_AFTER)
        plan.events += [(day(listing), "market"), (day(suspended), "market"),
                        (day(suspended + rng.uniform(*MARKET_REVOKE_AFTER)), "market")]
        if rng.random() < CUSTOMS_DISHONEST_SHARE:
            plan.events.append((day(rng.uniform(*CUSTOMS_DISHONEST_MONTH)), "customs"))
        plan.events.sort()
        return plan

    def snapshot(self) -> None:
        """The day before the window: every database department's history as ``op = 'r'``, the file
        departments' history files as ``op = 'c'``."""
        ents, t0 = self.enterprises, self.t0
        snap = self.t0_ms - DAY_MS // 2
        m = self.market
        for e in ents:
            row = dict(zip(MARKET_COLUMNS["enterprise_registration"], m._registration_row(e), strict=True))
            self.insert("enterprise_registration", row, snap, snapshot=True)
            if m.rng.random() < 0.02:
                listed = t0 - dt.timedelta(days=m.rng.randint(30, 700))
                row = dict(zip(MARKET_COLUMNS["abnormal_operation"], m._listing_row(e.uscc, listed), strict=True))
                self.insert("abnormal_operation", row, snap, snapshot=True)
            if m.rng.random() < 0.04:
                self._pledge(e, t0 - dt.timedelta(days=m.rng.randint(0, 900)), snap, snapshot=True)
        for table, rows in self.pg.seed_rows(ents, t0).items():
            for row in rows:
                self.insert(table, row, snap, snapshot=True)
        for table, rows in self.my.seed_rows(ents, t0).items():
            cols = self.my.COLUMNS[table]
            for tup in rows:
                row = dict(zip(cols, tup, strict=True))
                self.insert(table, row, snap, snapshot=True)
                if table == "social_insurance":  # the newest month's headcount carries on
                    self.my_state[row["uscc"]] = MonthState(row["insured_headcount"])
        for table, rows in self.polled.seed_rows(ents, t0).items():
            for tup in rows:
                self.insert(table, dict(zip(self.polled._COLUMNS[table], tup, strict=True)), snap, snapshot=True)
        for e in ents:
            self.my_rng[e.uscc] = random.Random(f"{self.cfg.seed}:{e.uscc}:live")
        # the file departments' history files: a drop folder has no snapshot, every file is news
        seed_files = self.files.seed_rows(ents, t0)
        drop = snap + 3_600_000
        by_month: dict[str, list[dict]] = defaultdict(list)
        for row in seed_files.pop("water_usage"):
            by_month[row["billing_month"]].append(row)
        for month, rows in sorted(by_month.items()):
            self.pipe.drop("water_usage", f"water_usage-{month[:7]}-seed.csv", rows, drop)
        for ds, rows in seed_files.items():
            if rows:
                self.pipe.drop(ds, f"{ds}-seed.{FILE_DATASETS[self.pipe.datasets[ds].dept][ds]}", rows, drop)
        # what the PostgreSQL seed left open moves on in the window
        for case in self.pg.pending_cases:
            self._case_progress(case, self.t0)
        for arr in self.pg.outstanding_arrears:
            self._arrears_cleared(arr, self.t0)
        for pen in self.pg.issued_penalties:
            self._penalty_executed(pen, self.t0)

    # --- one month ---------------------------------------------------------------------------------------

    def month(self, k: int) -> None:
        start, end = add_months(self.t0, k), add_months(self.t0, k + 1)
        self._distress(start, end)
        self._tax_court_environment(start)
        self._mariadb(start)
        self._polled(start)
        self._files(start)
        self._market(start)
        self.run_until(min(self.end_ms, self.t0_ms + (end - self.t0).days * DAY_MS))
        for e in self.enterprises:
            p = self.pipe.profiles.get(e.uscc)
            self.month_levels[e.uscc].append(p["risk_level"] if p else "?")

    def _day(self, start: dt.date) -> dt.date:
        return start + dt.timedelta(days=self.rng.randint(0, 27))

    def _distress(self, start: dt.date, end: dt.date) -> None:
        due: list[tuple[dt.date, str, Plan]] = []
        for plan in self.plans.values():
            if start <= plan.onset < end:  # the flag every simulator reads
                self.by_uscc[plan.uscc].distressed = True
                self.pg.profiles[plan.uscc].distressed = True
            due += [(d, kind, plan) for d, kind in plan.events if start <= d < end]
        for day, kind, plan in sorted(due, key=lambda x: (x[0], x[1], x[2].uscc)):
            ts = at(day, self.rng)
            if kind == "pg":
                _, ops = self.pg.advance_distress(self.pg.profiles[plan.uscc], day)
                self.later(ts, lambda t, u=plan.uscc, ops=ops: self.apply_ops(u, ops, t))
            elif kind == "market":
                self.later(ts, lambda t, e=self.by_uscc[plan.uscc], d=day: self._market_distress(e, d, t))
            else:
                self.later(ts, lambda t, u=plan.uscc, d=day: self._customs_rating(u, "dishonest", d, "拖欠应缴税款或罚没款项", t))

    def _customs_rating(self, uscc: str, new: str, day: dt.date, reason: str, ts: int) -> None:
        """mysql_depts step's customs decision: ``previous_rating = credit_rating`` unless it is already ``new``."""
        rows = self.tables.find("customs_credit", uscc, {})
        if rows and rows[0]["credit_rating"] != new:
            self.update("customs_credit", uscc, {}, {"previous_rating": rows[0]["credit_rating"], "credit_rating": new,
                                                     "rating_date": day, "reason": reason}, ts)

    def _market_distress(self, e: Enterprise, day: dt.date, ts: int) -> None:
        """market.MarketSimulator.advance_distress without the cursor: listed → suspended → revoked."""
        e.stage += 1
        if e.stage == 1:
            self.insert("abnormal_operation", dict(zip(MARKET_COLUMNS["abnormal_operation"],
                                                       self.market._listing_row(e.uscc, day), strict=True)), ts)
            if self.market.rng.random() < 0.5:
                self._pledge(e, day, ts + 1)
            return
        self.update("enterprise_registration", e.uscc, {}, {"status": "suspended" if e.stage == 2 else "revoked"}, ts)

    def _pledge(self, e: Enterprise, day: dt.date, ts: int, snapshot: bool = False) -> None:
        row = dict(zip(MARKET_COLUMNS["equity_pledge"], self.market._pledge_row(e, day), strict=True))
        self.insert("equity_pledge", {**row, "status": "valid"}, ts, snapshot)

    def _tax_court_environment(self, start: dt.date) -> None:
        pg, rng, rates = self.pg, self.rng, self.pg.rates
        if start.month == 4:  # the yearly tax credit ratings are published in April
            year = start.year - 1
            for p in pg.profiles.values():
                if (p.uscc, year) not in pg.rated:
                    pg.rated.add((p.uscc, year))
                    row = pg.rating_row(p, year)
                    self.later(at(row["rated_date"], rng), lambda t, r=row: self.insert("tax_credit_rating", r, t))
        due = add_months(start, -1)
        for p in pg.profiles.values():
            plan = self.plans.get(p.uscc)
            if not (p.distressed and p.stage >= 3):  # an enterprise under enforcement stops filing
                month = add_months(p.last_period, 1) if p.last_period else due
                while month <= due:
                    if p.distressed and plan:
                        p.decline = max(0.0, plan.months_since_onset(month))
                    rows = pg.filing_rows(p, month)  # one return: VAT (and CIT after a quarter), one transaction
                    # (a catch-up return for a month the seed left unfiled may carry an earlier filing date)
                    self.later(at(max(rows[0]["filing_date"], start), rng),
                               lambda t, rs=rows: [self.insert("tax_filing", r, t + i) for i, r in enumerate(rs)])
                    p.last_period = month
                    month = add_months(month, 1)
            if rng.random() < rates.litigation_per_year / 12:
                case = pg.litigation_row(p, self._day(start))
                self.later(at(case["filed_date"], rng), lambda t, r=dict(case): self.insert("litigation_case", r, t))
                self._case_progress(case, case["filed_date"])
            if rng.random() < pg.penalty_probability(p) / 12:
                pen = pg.penalty_row(p, self._day(start))
                self.later(at(pen["decision_date"], rng), lambda t, r=dict(pen): self.insert("environmental_penalty", r, t))
                self._penalty_executed(pen, pen["decision_date"])
            if not p.distressed and rng.random() < rates.arrears_per_year / 12:
                arr = pg.arrears_row(p, self._day(start), amount=pg.rng.uniform(2_000, 30_000))
                self.later(at(arr["since_date"], rng), lambda t, r=dict(arr): self.insert("tax_arrears", r, t))
                self._arrears_cleared(arr, arr["since_date"])

    def _case_progress(self, case: dict, since: dt.date) -> None:
        rng, key = self.rng, {"case_no": case["case_no"]}
        if case["status"] == "closed":
            return
        trial = max(since, case["filed_date"]) + dt.timedelta(days=rng.randint(20, 90))
        closed = trial + dt.timedelta(days=rng.randint(30, 180))
        if case["status"] == "filed":
            self.later(at(trial, rng), lambda t: self.update("litigation_case", case["uscc"], key, {"status": "in_trial"}, t))
        outcome = rng.choices(["judgment", "mediation", "withdrawal", "dismissal"], weights=(4, 4, 2, 1))[0]
        self.later(at(closed, rng), lambda t: self.update("litigation_case", case["uscc"], key,
                                                          {"status": "closed", "closed_date": closed, "outcome": outcome}, t))

    def _penalty_executed(self, pen: dict, since: dt.date) -> None:
        if self.rng.random() < 0.7:
            day = max(since, pen["decision_date"]) + dt.timedelta(days=self.rng.randint(10, 60))
            key = {"decision_no": pen["decision_no"]}
            self.later(at(day, self.rng), lambda t: self.update("environmental_penalty", pen["uscc"], key,
                                                                {"status": "executed", "executed_date": day}, t))

    def _arrears_cleared(self, arr: dict, since: dt.date) -> None:
        if self.pg.profiles[arr["uscc"]].distressed:
            return
        day = max(since, arr["since_date"]) + dt.timedelta(days=self.rng.randint(20, 120))
        key = {"tax_type": arr["tax_type"], "since_date": arr["since_date"]}
        self.later(at(day, self.rng), lambda t: self.update("tax_arrears", arr["uscc"], key,
                                                            {"status": "cleared", "cleared_date": day, "amount": 0.0}, t))

    def _mariadb(self, start: dt.date) -> None:
        """This month's rows of hrss, housing fund, power and customs, committed early next month."""
        my, rng = self.my, self.rng
        period = f"{start:%Y-%m}"
        nxt = add_months(start, 1)
        cols = my.COLUMNS
        for uscc, p in my.profiles.items():
            plan = self.plans.get(uscc)
            d = plan.distress(start) if plan and self.by_uscc[uscc].distressed else 0.0
            for table, tup in my.month_rows(p, period, d, self.my_state[uscc], self.my_rng[uscc]):
                row = dict(zip(cols[table], tup, strict=True))
                if table == "social_insurance":
                    day = row["paid_date"] or nxt.replace(day=15)
                elif table == "housing_fund_contribution":
                    day = row["paid_date"] or nxt.replace(day=20)
                elif table == "electricity_usage":
                    day = row["meter_read_date"] + dt.timedelta(days=rng.randint(1, 3))
                else:
                    day = nxt.replace(day=10)
                self.later(at(day, rng), lambda t, tb=table, r=row: self.upsert(tb, r, t))
            if d > 0.3 and rng.random() < 0.5:  # mysql_depts step: "si_arrears_grown" on the newest month
                day = nxt + dt.timedelta(days=rng.randint(19, 27))
                self.later(at(day, rng), lambda t, u=uscc: self._si_arrears_grown(u, t))
            if p.customs_code and not self.by_uscc[uscc].distressed and chance(rng, PER_YEAR["customs_rerating"]):
                new = rng.choice(CUSTOMS_RATINGS[:3])
                day = self._day(start)
                self.later(at(day, rng), lambda t, u=uscc, n=new, d=day: self._customs_rating(u, n, d, "信用等级调整", t))

    def _si_arrears_grown(self, uscc: str, ts: int) -> None:
        rows = self.tables.find("social_insurance", uscc, {})
        if rows:
            newest = max(rows, key=lambda r: r["period"])
            self.update("social_insurance", uscc, {"period": newest["period"]},
                        {"arrears_amount": round(newest["arrears_amount"] + newest["payable_amount"] * 0.2, 2),
                         "arrears_months": newest["arrears_months"] + 1, "payment_status": "arrears"}, ts)

    def _polled(self, start: dt.date) -> None:
        ps, rng = self.polled, self.rng
        cols = ps._COLUMNS
        for uscc in ps.gas_accounts:  # this month's bill, unpaid when issued; paid (or not) later
            e = self.by_uscc[uscc]
            row = dict(zip(cols["gas_usage"], ps._gas_row(e, start, settled=False), strict=True))
            issued = start + dt.timedelta(days=rng.randint(22, 27))
            self.later(at(issued, rng), lambda t, r=row: self.insert("gas_usage", r, t))
            paid = 0.0 if e.distressed and rng.random() < 0.7 else 1.0  # polled_depts step: gas_payment / gas_unpaid
            day = issued + dt.timedelta(days=rng.randint(5, 20))
            self.later(at(day, rng), lambda t, u=uscc, pd=paid: self._gas_payment(u, pd, t))
        for e in self.enterprises:
            if chance(rng, PER_YEAR["bid_award"]):
                day = self._day(start)
                row = dict(zip(cols["bid_award"], ps._award_row(e, day, contracted=False), strict=True))
                self.later(at(day, rng), lambda t, r=row: self.insert("bid_award", r, t))
                signed = day + dt.timedelta(days=rng.randint(7, 30))
                self.later(at(signed, rng), lambda t, r=row, s=signed: self.update(
                    "bid_award", r["uscc"], {"project_code": r["project_code"]}, {"status": "contracted", "contract_date": s}, t))
            if chance(rng, PER_YEAR["safety_penalty_distressed" if e.distressed else "safety_penalty"]):
                day = self._day(start)
                row = dict(zip(cols["safety_penalty"], ps._penalty_row(e, day, settled=False), strict=True))
                self.later(at(day, rng), lambda t, r=row: self.insert("safety_penalty", r, t))
                if row["penalty_type"] == "fine" and rng.random() < 0.7:
                    paid_day = day + dt.timedelta(days=rng.randint(15, 90))
                    self.later(at(paid_day, rng), lambda t, r=row: self.update(
                        "safety_penalty", r["uscc"], {"decision_no": r["decision_no"]}, {"status": "paid"}, t))

    def _gas_payment(self, uscc: str, paid: float, ts: int) -> None:
        rows = self.tables.find("gas_usage", uscc, {})
        if rows:
            newest = max(rows, key=lambda r: r["id"])
            values = {"arrears": round(newest["arrears"] * (1.0 - paid), 2)}
            if paid:
                values["payment_status"] = "paid"
            self.update("gas_usage", uscc, {"id": newest["id"]}, values, ts)

    def _files(self, start: dt.date) -> None:
        fs, rng = self.files, self.rng
        day = start + dt.timedelta(days=27)
        rows: dict[str, list[dict]] = defaultdict(list)
        for uscc in sorted(fs.water_accounts):  # files_depts step: last month's bills paid, this month's issued
            e = self.by_uscc[uscc]
            last = self._water_issued.pop(uscc, None)
            if last is not None and not e.distressed:
                rows["water_usage"].append({**last, "arrears": 0.0, "payment_status": "paid"})
            self._water_issued[uscc] = bill = fs._water_row(e, start, settled=False)
            rows["water_usage"].append(bill)
        for e in self.enterprises:
            if chance(rng, PER_YEAR["patent"]):
                rows["patent"].append(fs._patent_row(e, day - dt.timedelta(days=rng.randint(0, 30)), day))
            if chance(rng, PER_YEAR["trademark"]):
                rows["trademark"].append(fs._trademark_row(e, day - dt.timedelta(days=rng.randint(0, 30)), day))
            if fs.ip_held.get(e.uscc) and chance(rng, PER_YEAR["ip_pledge"]):
                rows["ip_pledge"].append(fs._pledge_row(e, day, day))
            if chance(rng, PER_YEAR["high_tech"]):
                rows["high_tech_certification"].append(fs._cert_row(e, day, historic=False))
        ts = at(day, rng)
        for i, (table, table_rows) in enumerate(sorted(rows.items())):
            ds = self.pipe.datasets[table]
            name = f"{ds.name}-{day:%Y%m%d}.{FILE_DATASETS[ds.dept][ds.name]}"
            self.later(ts + i, lambda t, tb=table, n=name, r=table_rows: self.pipe.drop(tb, n, r, t))

    def _market(self, start: dt.date) -> None:
        m, rng = self.market, self.rng
        for e in self.enterprises:
            for row in self.tables.rows[("abnormal_operation", e.uscc)]:
                if not e.distressed and row.get("removed_date") is None and rng.random() < LISTING_REMOVED_PER_MONTH:
                    day = self._day(start)
                    self.later(at(day, rng), lambda t, u=e.uscc, i=row["id"], d=day: self.update(
                        "abnormal_operation", u, {"id": i}, {"removed_date": d, "removal_reason": "已补报年报"}, t))
            if chance(rng, PER_YEAR["equity_pledge"]):
                day = self._day(start)
                self.later(at(day, rng), lambda t, e=e, d=day: self._pledge(e, d, t))
            for row in self.tables.rows[("equity_pledge", e.uscc)]:
                if row.get("status") == "valid" and rng.random() < PLEDGE_CANCELLED_PER_MONTH:
                    day = self._day(start)
                    self.later(at(day, rng), lambda t, u=e.uscc, i=row["id"], d=day: self.update(
                        "equity_pledge", u, {"id": i, "status": "valid"}, {"status": "cancelled", "cancelled_date": d}, t))
            if chance(rng, PER_YEAR["capital_increase"]):
                factor = round(rng.uniform(1.1, 2.0), 2)
                self.later(at(self._day(start), rng), lambda t, u=e.uscc, f=factor: self._capital(u, f, t))
            if chance(rng, PER_YEAR["legal_rep_change"]):
                values = {"legal_rep_name": m.fake.name(), "legal_rep_id_number": make_id_number(m.rng, e.district),
                          "legal_rep_phone": make_mobile(m.rng)}
                self.later(at(self._day(start), rng), lambda t, u=e.uscc, v=values: self.update(
                    "enterprise_registration", u, {}, v, t))

    def _capital(self, uscc: str, factor: float, ts: int) -> None:
        rows = self.tables.find("enterprise_registration", uscc, {"status": "active"})
        if rows:
            self.update("enterprise_registration", uscc, {"status": "active"},
                        {"registered_capital": round(rows[0]["registered_capital"] * factor, 2)}, ts)


# --- scoring -----------------------------------------------------------------------------------------

def _sev(c: Change, minimum: str) -> bool:
    return c.adverse and SEVERITY_RANK[c.severity] >= SEVERITY_RANK[minimum]


POLICIES: dict[str, Callable[[Change], bool]] = {
    "any adverse alert": lambda c: c.adverse,
    "severity >= medium": lambda c: _sev(c, "medium"),
    "severity >= high": lambda c: _sev(c, "high"),
    "severity = critical": lambda c: _sev(c, "critical"),
    "level falls to C or worse": lambda c: c.level_after in "CDE" and c.level_before in "AB",
    "level falls to D or E": lambda c: c.level_after in "DE" and c.level_before not in "DE",
}


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p25": None, "median": None, "p75": None}
    if len(values) == 1:
        return {"p25": values[0], "median": values[0], "p75": values[0]}
    q = statistics.quantiles(values, n=4, method="inclusive")
    return {"p25": round(q[0], 1), "median": round(q[1], 1), "p75": round(q[2], 1)}


def _per_1000(count: float, months: float) -> float | None:
    return round(count / months * 1000, 2) if months else None


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def evaluate(city: City) -> dict[str, Any]:
    """Every figure of the report, from the risk changes the run collected."""
    pipe, plans = city.pipe, city.plans
    t0, end = city.t0_ms, city.end_ms
    months = city.cfg.months
    usccs = [e.uscc for e in city.enterprises]
    healthy = [u for u in usccs if u not in plans]
    distressed = [u for u in usccs if u in plans]
    enforced = {u: p.enforced_ms for u, p in plans.items() if p.enforced_ms is not None and t0 <= p.enforced_ms < end}
    onset_ms = {u: int(dt.datetime(p.onset.year, p.onset.month, p.onset.day, tzinfo=dt.UTC).timestamp() * 1000)
                for u, p in plans.items()}
    healthy_months = len(healthy) * months
    distressed_months = sum(max(0.0, (end - onset_ms[u]) / (30.44 * DAY_MS)) for u in distressed)
    live = {u: [c for c in pipe.changes.get(u, ()) if t0 <= c.ts_ms < end] for u in usccs}

    policies = {}
    for name, test in POLICIES.items():
        # an enterprise's first alert: any for a healthy one; on or after onset for a distressed one (an
        # alert before its onset was raised while it was still healthy, and counts as a false alert)
        first: dict[str, int] = {}
        first_codes: Counter[str] = Counter()  # the code of a distressed enterprise's first alert
        false_alerts = true_alerts = 0
        for u in usccs:
            hits = [c for c in live[u] if test(c)]
            on_path = [c for c in hits if u in plans and c.ts_ms >= onset_ms[u]]
            true_alerts += len(on_path)
            if u not in plans:
                false_alerts += len(hits)
                if hits:
                    first[u] = hits[0].ts_ms
            elif on_path:
                first[u] = on_path[0].ts_ms
                first_codes[on_path[0].codes[0]] += 1
        alerted = set(first)
        leads = [(enforced[u] - first[u]) / DAY_MS for u in enforced if u in first and first[u] < enforced[u]]
        after_onset = [(first[u] - onset_ms[u]) / DAY_MS for u in distressed if u in first]
        policies[name] = {
            "alerted": len(alerted),
            "alerted_healthy": len(alerted - set(plans)),
            "precision_enforced": _share(len(alerted & set(enforced)), len(alerted)),
            "precision_distressed": _share(len(alerted & set(plans)), len(alerted)),
            "alert_precision": _share(true_alerts, sum(1 for u in usccs for c in live[u] if test(c))),
            "recall_before_enforcement": _share(len(leads), len(enforced)),
            "recall_30d_before": _share(sum(1 for x in leads if x >= 30), len(enforced)),
            "lead_days": _quantiles(sorted(leads)),
            "days_after_onset": _quantiles(sorted(after_onset)),
            "false_alerts_per_1000_healthy_months": _per_1000(false_alerts, healthy_months),
            "healthy_alerted_share": _share(len(alerted - set(plans)), len(healthy)),
            "first_codes_distressed": dict(first_codes.most_common()),
        }

    # which codes fire first on the distress path, and how early each code fires before enforcement
    first_code: Counter[str] = Counter()
    code_leads: dict[str, list[float]] = defaultdict(list)
    for u in distressed:  # the first adverse alert after onset (and before enforcement, if any)
        path = [c for c in live[u] if c.adverse and onset_ms[u] <= c.ts_ms < enforced.get(u, end)]
        if path:
            first_code[path[0].codes[0]] += 1
    for u, enf in enforced.items():
        path = [c for c in live[u] if c.adverse and onset_ms[u] <= c.ts_ms < enf]
        seen: dict[str, int] = {}
        for c in path:
            seen.setdefault(c.codes[0], c.ts_ms)
        for code, ts in seen.items():
            code_leads[code].append((enf - ts) / DAY_MS)
    healthy_codes: Counter[str] = Counter()
    distressed_codes: Counter[str] = Counter()
    healthy_cats: Counter[str] = Counter()
    distressed_cats: Counter[str] = Counter()
    for u in usccs:
        for c in live[u]:
            if not c.adverse:
                continue
            if u in plans:
                if c.ts_ms >= onset_ms[u]:
                    distressed_codes[c.codes[0]] += 1
                    distressed_cats[(c.category, c.severity)] += 1
            else:
                healthy_codes[c.codes[0]] += 1
                healthy_cats[(c.category, c.severity)] += 1
    codes = {}
    for code in sorted(set(healthy_codes) | set(distressed_codes) | set(code_leads)):
        codes[code] = {
            "first_on_path": first_code.get(code, 0),
            "before_enforcement_share": _share(len(code_leads.get(code, ())), len(enforced)),
            "lead_days": _quantiles(sorted(code_leads.get(code, ()))),
            "per_1000_healthy_months": _per_1000(healthy_codes[code], healthy_months),
            "per_1000_distressed_months": _per_1000(distressed_codes[code], distressed_months),
        }
    categories = {}
    for cat, sev in sorted(set(healthy_cats) | set(distressed_cats), key=lambda x: (x[0], -SEVERITY_RANK[x[1]])):
        categories[f"{cat}/{sev}"] = {
            "per_1000_healthy_months": _per_1000(healthy_cats[(cat, sev)], healthy_months),
            "per_1000_distressed_months": _per_1000(distressed_cats[(cat, sev)], distressed_months),
        }
    deployment = Counter(c.codes[0] for u in usccs for c in pipe.changes.get(u, ()) if c.ts_ms < t0)
    levels_end = Counter(pipe.profiles[u]["risk_level"] for u in healthy if u in pipe.profiles)
    healthy_level_months = Counter(level for u in healthy for level in city.month_levels[u])
    return {
        "population": {
            "enterprises": len(usccs), "healthy": len(healthy), "distressed": len(distressed),
            "enforced_in_window": len(enforced),
            "enforced_healthy": sum(1 for u in city.enforcements if u not in plans),
            "distressed_not_enforced": len(distressed) - len(enforced),
            "terminal_stage": dict(sorted(Counter(p.terminal for p in plans.values()).items())),
            "healthy_enterprise_months": healthy_months,
            "distressed_enterprise_months_after_onset": round(distressed_months, 1),
        },
        "events": {"total": sum(pipe.events.values()), "by_dataset": dict(sorted(pipe.events.items())),
                   "dead_letters": dict(pipe.dead_letters), "dead_letter_samples": pipe.dead_letter_samples,
                   "risk_changes_live": sum(len(v) for v in live.values()),
                   "risk_changes_before_window": sum(deployment.values())},
        "policies": policies,
        "first_code_on_path": dict(first_code.most_common()),
        "codes": codes,
        "categories": categories,
        "deployment_alerts_by_code": dict(deployment.most_common()),
        "healthy_levels_at_end": dict(sorted(levels_end.items())),
        "healthy_level_share_month_ends": {lv: _share(n, sum(healthy_level_months.values()))
                                           for lv, n in sorted(healthy_level_months.items())},
    }


# --- running ----------------------------------------------------------------------------------------

def simulate(cfg: Config, progress: Callable[[str, int, int], None] | None = None) -> City:
    """Snapshot, then ``cfg.months`` simulated months through the pipeline's pure core."""
    card = Scorecard.load(cfg.scorecard) if cfg.scorecard else DEFAULT_SCORECARD
    city = City(cfg, Pipeline(card))
    city.populate()
    city.snapshot()
    for k in range(cfg.months):
        city.month(k)
        if progress:
            progress("months", k + 1, cfg.months)
    return city


def run(cfg: Config, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Simulate, score; return the report (``evaluate``'s dict plus config and run time)."""
    started = time.monotonic()
    city = simulate(cfg, progress)
    report = evaluate(city)
    report["config"] = {"enterprises": cfg.enterprises, "months": cfg.months, "seed": cfg.seed,
                        "distress_share": cfg.distress_share, "start": cfg.start.isoformat(),
                        "end": city.end.isoformat(), "scorecard": str(cfg.scorecard or "streams/core/scorecard.toml")}
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "–"
    if pct:
        return f"{x * 100:.0f} %"
    return f"{x:g}" if isinstance(x, float) else str(x)


def _days(q: dict[str, float | None]) -> str:
    if q["median"] is None:
        return "–"
    return f"{q['median']:.0f} ({q['p25']:.0f}–{q['p75']:.0f})"


def markdown(report: dict[str, Any]) -> str:
    """The result tables of docs/risk-evaluation.md."""
    pop = report["population"]
    out = [f"Population: {pop['enterprises']} enterprises, {pop['distressed']} on a distress path, "
           f"{pop['enforced_in_window']} of them enforced within the window; "
           f"{pop['healthy_enterprise_months']:,} healthy enterprise-months.", "",
           "| policy | enterprises alerted (healthy) | precision: enforced | precision: distressed | alerts about distress | "
           "recall before enforcement | recall ≥ 30 d before | lead days, median (p25–p75) | days after onset, median | "
           "false alerts / 1,000 healthy ent.-months | healthy ever alerted |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, p in report["policies"].items():
        out.append(f"| {name} | {p['alerted']} ({p['alerted_healthy']}) | {_fmt(p['precision_enforced'], True)} | "
                   f"{_fmt(p['precision_distressed'], True)} | {_fmt(p['alert_precision'], True)} | "
                   f"{_fmt(p['recall_before_enforcement'], True)} | {_fmt(p['recall_30d_before'], True)} | "
                   f"{_days(p['lead_days'])} | {_fmt(p['days_after_onset']['median'])} | "
                   f"{_fmt(p['false_alerts_per_1000_healthy_months'])} | {_fmt(p['healthy_alerted_share'], True)} |")
    out += ["", "The code of a distressed enterprise's first alert under each policy (after onset; top 4):", "",
            "| policy | first alert's code (enterprises) |", "|---|---|"]
    for name, p in report["policies"].items():
        top = ", ".join(f"`{code}` {n}" for code, n in list(p["first_codes_distressed"].items())[:4])
        out.append(f"| {name} | {top or '–'} |")
    out += ["", "Reason codes (the first code of each adverse risk change):", "",
            "| code | first alert after onset (distressed) | fired before enforcement | lead days, median (p25–p75) | "
            "per 1,000 healthy ent.-months | per 1,000 distressed ent.-months |",
            "|---|---:|---:|---:|---:|---:|"]
    codes = sorted(report["codes"].items(),
                   key=lambda kv: (-kv[1]["first_on_path"], -(kv[1]["before_enforcement_share"] or 0), kv[0]))
    for code, c in codes:
        out.append(f"| `{code}` | {c['first_on_path']} | {_fmt(c['before_enforcement_share'], True)} | {_days(c['lead_days'])} | "
                   f"{_fmt(c['per_1000_healthy_months'])} | {_fmt(c['per_1000_distressed_months'])} |")
    out += ["", "Alert categories (adverse only):", "",
            "| category / severity | per 1,000 healthy ent.-months | per 1,000 distressed ent.-months |", "|---|---:|---:|"]
    for name, c in report["categories"].items():
        out.append(f"| {name} | {_fmt(c['per_1000_healthy_months'])} | {_fmt(c['per_1000_distressed_months'])} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    ap = argparse.ArgumentParser(prog="python -m bench.risk_eval", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--enterprises", type=int, default=2000)
    ap.add_argument("--months", type=int, default=24, help="simulated months after the snapshot (default 24)")
    ap.add_argument("--seed", type=int, default=2019)
    ap.add_argument("--distress-share", type=float, default=0.10)
    ap.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1), help="first day of the window")
    ap.add_argument("--scorecard", type=Path, help="evaluate this card instead of streams/core/scorecard.toml")
    ap.add_argument("--out", type=Path, help="JSON results (default bench/results/risk-eval-<date>.json)")
    ap.add_argument("--markdown", type=Path, help="also write the result tables as Markdown")
    args = ap.parse_args(argv)
    cfg = Config(args.enterprises, args.months, args.seed, args.distress_share, args.start, args.scorecard)
    console = Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[note]}"), console=console) as bar:
        task = bar.add_task("snapshot (12 months of history)", total=cfg.months, note="")

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "months":
                bar.update(task, description="simulated months", completed=done, note=f"{done}/{total}")

        report = run(cfg, progress)
    report["machine"] = machine()
    report["command"] = " ".join([".venv/bin/python", "-m", "bench.risk_eval", *(argv if argv is not None else sys.argv[1:])])
    out = args.out or REPO / "bench" / "results" / f"risk-eval-{dt.date.today():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(markdown(report), encoding="utf-8")

    pop = report["population"]
    console.print(f"{pop['enterprises']} enterprises, {pop['distressed']} distressed, {pop['enforced_in_window']} enforced "
                  f"in {cfg.start} … {report['config']['end']}; {report['events']['total']:,} envelopes, "
                  f"{sum(report['events']['dead_letters'].values())} dead letters; {report['seconds']} s")
    table = Table(title="alert policies")
    for col in ("policy", "alerted", "prec. enf.", "prec. distr.", "alerts distr.", "recall", "≥30d",
                "lead days", "false/1k mo"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, p in report["policies"].items():
        table.add_row(name, str(p["alerted"]), _fmt(p["precision_enforced"], True), _fmt(p["precision_distressed"], True),
                      _fmt(p["alert_precision"], True), _fmt(p["recall_before_enforcement"], True),
                      _fmt(p["recall_30d_before"], True), _days(p["lead_days"]), _fmt(p["false_alerts_per_1000_healthy_months"]))
    console.print(table)
    codes = Table(title="reason codes")
    for col in ("code", "first on path", "before enf.", "lead days", "/1k healthy mo", "/1k distressed mo"):
        codes.add_column(col, justify="left" if col == "code" else "right")
    for code, c in sorted(report["codes"].items(), key=lambda kv: -kv[1]["first_on_path"]):
        codes.add_row(code, str(c["first_on_path"]), _fmt(c["before_enforcement_share"], True), _days(c["lead_days"]),
                      _fmt(c["per_1000_healthy_months"]), _fmt(c["per_1000_distressed_months"]))
    console.print(codes)
    console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
