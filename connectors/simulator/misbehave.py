"""Department misbehaviours on demand (issue 15, item 2): the city simulator's departments sending
late, nothing, bad rows, only part of the population or facts that contradict the register —
what the data-sharing assessment (数据汇集考核) must notice and explain.

``yurong simulate --misbehave tax=late,hrss=silent,water=bad_rows`` or, in Python,
``CitySimulator(settings, misbehave={"tax": "late"})``. Any department of any source kind
(PostgreSQL CDC, MariaDB binlog, polled, file drop; the market register too) can take any kind:

``silent``
    no live changes after seeding: the group's live step generates the department's changes as
    usual (so every other department gets exactly what it would get anyway) and writes none.
``late``
    every live insert's business date — the first ``dates`` field of its dataset in the
    department's mapping (``streams/core/departments/<dept>.toml``) — is 20–40 days before the
    day it is committed. A dataset without ``dates`` (``customs.customs_trade``) is unchanged.
``bad_rows``
    ~30 % of live inserts break validation, one way each, drawn among those the row allows:
    the USCC's check digit broken; a GB 11643 ID number's check digit broken (datasets with an
    ``id_number`` field); a required text field empty (``''``: every source, NOT NULL columns
    included, takes it, and ``required`` refuses it).
``missing``
    the department holds rows for a deterministic ~50 % of the enterprises only (a keyed hash of
    seed, department and USCC): the other half's seed rows are never written, nor their live
    inserts and updates. For the market register this leaves half the population unregistered.
``inconsistent``
    ~30 % of live inserts contradict the register, one way each among those possible: a USCC with
    a valid check digit the register does not know (``identities.make_uscc`` on a fresh RNG);
    the USCC of an enterprise the register shows revoked or cancelled (when there is one: the
    city reads them from the market database before each step); the first ``dates`` field 30–120
    days in the future.

One generic mechanism: a group asks its ``misbehave`` (a :class:`Misbehaviour`; the default
:data:`NONE` does nothing) at its write points — ``seed_rows``/``seed_tuples`` for history,
``live_row``/``live_tuple`` for each live insert or upsert (``None``: do not write it),
``writes(dept, uscc)`` before a live update. The transformations draw from an RNG of their own
per department (from the seed), never from the group's, so the same seed gives the same city and
the same misbehaviour, and the well-behaved departments get exactly the rows they get without any.
Rows are transformed, never updated afterwards: the change a connector reads is the misbehaving
insert itself.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

from connectors.simulator.identities import CHONGQING_DISTRICTS, make_id_number, make_uscc
from streams.core.catalogue import Catalogue, Dataset
from streams.core.identifiers import USCC_ALPHABET, id_check_digit

KINDS = ("silent", "late", "bad_rows", "missing", "inconsistent")
BAD_SHARE = 0.30  # bad_rows: share of live inserts that break validation
INCONSISTENT_SHARE = 0.30  # inconsistent: share of live inserts that contradict the register
LATE_DAYS = (20, 40)  # late: business date this many days before the commit day
FUTURE_DAYS = (30, 120)  # inconsistent: a date this many days after the commit day
DEREGISTERED = ("revoked", "cancelled", "deregistered")  # register statuses of an enterprise that is gone


def parse_plan(spec: str | None) -> dict[str, str]:
    """``"tax=late,hrss=silent"`` → ``{"tax": "late", "hrss": "silent"}``; ``ValueError`` naming
    what is wrong (the department names are checked against the catalogue by :class:`Misbehaviour`)."""
    plan: dict[str, str] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        dept, sep, kind = (x.strip() for x in part.partition("="))
        if not sep or not dept or kind not in KINDS:
            raise ValueError(f"misbehaviour {part!r} must be <dept>=<kind>, kind one of {', '.join(KINDS)}")
        if dept in plan and plan[dept] != kind:
            raise ValueError(f"department {dept!r} given two misbehaviours: {plan[dept]} and {kind}")
        plan[dept] = kind
    return plan


def keeps(seed: int, dept: str, uscc: object) -> bool:
    """Whether a department told to be ``missing`` still holds ``uscc`` (a stable ~50 %; a row
    without a USCC is kept)."""
    if not isinstance(uscc, str):
        return True
    return hashlib.blake2b(f"{seed}:{dept}:{uscc}".encode(), digest_size=8).digest()[0] < 128


class Misbehaviour:
    """The misbehaviours of a city's departments: ``plan`` maps department → kind."""

    def __init__(self, plan: Mapping[str, str] | None = None, seed: int = 2019,
                 catalogue: Catalogue | Callable[[], Catalogue] | None = None) -> None:
        self.plan = dict(plan or {})
        self.seed = seed
        self._catalogue = catalogue
        bad = {d: k for d, k in self.plan.items() if k not in KINDS}
        if bad:
            raise ValueError(f"unknown misbehaviours {bad} (kinds: {', '.join(KINDS)})")
        if self.plan:
            unknown = sorted(set(self.plan) - set(self.catalogue.departments))
            if unknown:
                raise ValueError(f"unknown departments {unknown} (known: {', '.join(sorted(self.catalogue.departments))})")
        self._rngs: dict[str, random.Random] = {}
        self._datasets: dict[tuple[str, str], Dataset | None] = {}
        self.deregistered: list[str] = []  # USCCs the register shows gone; the city refreshes them

    def __bool__(self) -> bool:
        return bool(self.plan)

    def __repr__(self) -> str:
        return f"Misbehaviour({self.plan!r}, seed={self.seed})"

    @cached_property
    def catalogue(self) -> Catalogue:
        source = self._catalogue
        if source is None:
            from streams.core.catalogue import catalogue as load

            return load()
        return source() if callable(source) else source

    def kind(self, dept: str) -> str | None:
        return self.plan.get(dept)

    def silent(self, dept: str) -> bool:
        return self.plan.get(dept) == "silent"

    def keeps(self, dept: str, uscc: str | None) -> bool:
        """False for an enterprise a ``missing`` department does not hold."""
        return self.plan.get(dept) != "missing" or keeps(self.seed, dept, uscc)

    def writes(self, dept: str, uscc: str | None = None) -> bool:
        """Whether a live update of ``dept`` (of ``uscc``'s rows, if given) is written at all."""
        return not self.silent(dept) and self.keeps(dept, uscc)

    # --- seed ----------------------------------------------------------------------------------

    def seed_rows(self, dept: str, table: str, rows: list[dict]) -> list[dict]:
        """The seed rows ``dept`` holds of ``table`` (all but for ``missing``)."""
        if self.plan.get(dept) != "missing":
            return rows
        column = self._uscc_column(dept, table)
        return [r for r in rows if keeps(self.seed, dept, r.get(column))]

    def seed_tuples(self, dept: str, table: str, columns: Sequence[str], rows: list[tuple]) -> list[tuple]:
        """``seed_rows`` for rows as tuples in ``columns`` order."""
        if self.plan.get(dept) != "missing":
            return rows
        i = list(columns).index(self._uscc_column(dept, table))
        return [r for r in rows if keeps(self.seed, dept, r[i])]

    def seed_tables(self, table_dept: Mapping[str, str], columns: Mapping[str, Sequence[str]],
                    tables: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
        """``seed_tuples`` over a group's ``{table: rows}``."""
        if not self.plan:
            return tables
        return {t: self.seed_tuples(table_dept[t], t, columns[t], rows) for t, rows in tables.items()}

    # --- live ----------------------------------------------------------------------------------

    def live_row(self, dept: str, table: str, row: dict, today: dt.date | None = None) -> dict | None:
        """The live insert (or upsert) ``dept`` writes instead of ``row``; ``None``: none at all."""
        kind = self.plan.get(dept)
        if kind is None:
            return row
        if kind == "silent":
            return None
        ds = self._dataset(dept, table)
        if ds is None:
            return row
        if kind == "missing":
            return row if keeps(self.seed, dept, row.get(ds.uscc_column)) else None
        today = today or dt.date.today()
        rng = self._rng(dept)
        if kind == "late":
            return self._dated(ds, row, today - dt.timedelta(days=rng.randint(*LATE_DAYS)))
        if kind == "bad_rows":
            return self._bad(ds, row, rng) if rng.random() < BAD_SHARE else row
        if kind == "inconsistent":
            return self._inconsistent(ds, row, today, rng) if rng.random() < INCONSISTENT_SHARE else row
        return row

    def live_tuple(self, dept: str, table: str, columns: Sequence[str], row: Sequence[Any],
                   today: dt.date | None = None) -> tuple | None:
        """``live_row`` for a row as a tuple in ``columns`` order."""
        if dept not in self.plan:
            return tuple(row)
        out = self.live_row(dept, table, dict(zip(columns, row, strict=True)), today)
        return None if out is None else tuple(out[c] for c in columns)

    def live_rows(self, dept: str, table: str, rows: Iterable[dict], today: dt.date | None = None) -> list[dict]:
        """``live_row`` over ``rows``, without those not written."""
        if dept not in self.plan:
            return list(rows)
        return [r for r in (self.live_row(dept, table, row, today) for row in rows) if r is not None]

    # --- the transformations ----------------------------------------------------------------------

    def _rng(self, dept: str) -> random.Random:
        rng = self._rngs.get(dept)
        if rng is None:
            rng = self._rngs[dept] = random.Random(f"misbehave:{self.seed}:{dept}")
        return rng

    def _dataset(self, dept: str, table: str) -> Dataset | None:
        key = (dept, table)
        if key not in self._datasets:
            datasets = self.catalogue.departments[dept].datasets.values()
            self._datasets[key] = next((d for d in datasets if d.schema_table == table or d.name == table), None)
        return self._datasets[key]

    def _uscc_column(self, dept: str, table: str) -> str:
        ds = self._dataset(dept, table)
        return ds.uscc_column if ds is not None else "uscc"

    @staticmethod
    def _dated(ds: Dataset, row: dict, day: dt.date) -> dict:
        """``row`` with its business date (the dataset's first ``dates`` field) on ``day``, in the
        form the row holds dates (an ISO text in a file row, a date elsewhere)."""
        if not ds.dates or ds.dates[0] not in row:
            return row
        name = ds.dates[0]
        texts = isinstance(row[name], str) or (row[name] is None and any(
            isinstance(row.get(f), str) for f in ds.dates))
        return {**row, name: day.isoformat() if texts else day}

    def _bad(self, ds: Dataset, row: dict, rng: random.Random) -> dict:
        ways: list[Callable[[], dict]] = []
        code = row.get(ds.uscc_column)
        if isinstance(code, str) and len(code) == 18:
            ways.append(lambda: {**row, ds.uscc_column: code[:17] + rng.choice([c for c in USCC_ALPHABET if c != code[17]])})
        for name in ds.id_number_fields:
            when = ds.id_number_when.get(name, {})
            if name in row and all(row.get(o) in v for o, v in when.items()):
                ways.append(_setter(row, name, functools.partial(_broken_id, row.get(name), rng)))
        empty = [f for f in ds.required if isinstance(row.get(f), str) and f not in ds.key and f != ds.uscc_column
                 and f not in ds.periods]  # a month is often char(7): PostgreSQL would pad '' with blanks
        if empty:
            ways.append(lambda: {**row, rng.choice(empty): ""})
        return rng.choice(ways)() if ways else row

    def _inconsistent(self, ds: Dataset, row: dict, today: dt.date, rng: random.Random) -> dict:
        ways: list[Callable[[], dict]] = []
        code = row.get(ds.uscc_column)
        register = (ds.dept, ds.name) == ("market", "enterprise_registration")  # the register cannot contradict itself
        if isinstance(code, str) and not register:
            district = code[2:8] if code[2:8] in CHONGQING_DISTRICTS else "500103"
            ways.append(lambda: {**row, ds.uscc_column: make_uscc(random.Random(rng.random()), district)})
            if self.deregistered:
                ways.append(lambda: {**row, ds.uscc_column: rng.choice(self.deregistered)})
        if ds.dates and ds.dates[0] in row:
            ways.append(lambda: self._dated(ds, row, today + dt.timedelta(days=rng.randint(*FUTURE_DAYS))))
        return rng.choice(ways)() if ways else row


def _setter(row: dict, name: str, value: Callable[[], object]) -> Callable[[], dict]:
    """A way to break ``row``: a copy with ``name`` set to ``value()``."""
    return lambda: {**row, name: value()}


def _broken_id(value: object, rng: random.Random) -> str:
    """An ID number of the right form whose GB 11643 check digit is wrong."""
    number = value if isinstance(value, str) and len(value) == 18 and value[:17].isdigit() else \
        make_id_number(rng, "500103")
    right = id_check_digit(number[:17])
    return number[:17] + rng.choice([c for c in "0123456789X" if c != right])


NONE = Misbehaviour()  # a group's default: every department behaves
