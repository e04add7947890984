"""The whole city: every catalogue department over one population of enterprises.

The market-supervision register (市场监管局) is the population: it creates the enterprises
(USCC, district, distress path); every other department's simulator fills its own database or
drop folder for those enterprises — PostgreSQL CDC departments, MariaDB binlog departments,
polled databases and file drops — and then keeps changing them. Deterministic from one seed.

``misbehave={"tax": "late", "hrss": "silent", …}`` makes departments misbehave (late, silent,
bad_rows, missing, inconsistent): ``connectors/simulator/misbehave.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from connectors.simulator.market import Enterprise, MarketSimulator
from connectors.simulator.misbehave import DEREGISTERED, Misbehaviour
from streams.settings import Settings


class DepartmentSimulator(Protocol):
    """What ``CitySimulator`` needs of a department group."""

    def seed(self, enterprises: list[Enterprise], today: dt.date | None = None, *,
             progress: Callable[[int], None] | None = None):
        """Give ``enterprises`` their history; ``progress(k)`` as each chunk of ``k`` is done.
        Returns rows per table (databases) or the files dropped."""

    def step(self, n: int, today: dt.date | None = None):
        """About ``n`` live changes."""


@dataclass(frozen=True)
class GroupSeed:
    """What seeding one group took: wall-clock seconds and rows written per dataset."""

    seconds: float
    rows: dict[str, int]


def _rows_of(result: dict[str, int] | list[Path]) -> dict[str, int]:
    """Rows per dataset from a group's ``seed`` result (a file group returns its files: read the manifests)."""
    if isinstance(result, dict):
        return dict(result)
    rows: dict[str, int] = {}
    for path in result:
        path = Path(path)
        # a running file-drop connector may already have moved the file and its manifest on
        for where in (path.parent, path.parent / "done", path.parent / "rejected"):
            try:
                manifest = json.loads((where / f"{path.name}.manifest.json").read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue
            rows[manifest["dataset"]] = rows.get(manifest["dataset"], 0) + manifest["rows"]
            break
    return rows


def _create_postgres_database(dsn: str) -> None:
    """CREATE DATABASE for ``dsn``'s database unless it exists (through the ``postgres`` database)."""
    name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
    admin = psycopg2.connect(psycopg2.extensions.make_dsn(dsn, dbname="postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        admin.close()


class CitySimulator:
    """Market register plus every department group; ``kinds`` limits which groups run;
    ``misbehave`` maps departments to misbehaviours (``connectors/simulator/misbehave.py``)."""

    GROUPS = ("postgres", "mysql", "polling", "file")

    def __init__(self, settings: Settings, seed: int = 2019, distress_share: float = 0.05,
                 kinds: tuple[str, ...] = GROUPS, misbehave: Mapping[str, str] | Misbehaviour | None = None) -> None:
        src = settings.source
        self.misbehave = misbehave if isinstance(misbehave, Misbehaviour) else Misbehaviour(misbehave, seed)
        self.market = MarketSimulator(src.dsn("market", "postgres"), seed=seed, distress_share=distress_share,
                                      misbehave=self.misbehave)
        self.groups: dict[str, DepartmentSimulator] = {}
        self.seeded: dict[str, GroupSeed] = {}  # the last seed: seconds and rows per dataset, per group
        pg_template = src.postgres_template.get_secret_value()

        def databases(depts, kind: str) -> dict[str, str]:
            """The database each department's connector will read (settings decide, not the simulator)."""
            return {d: src.dsn(d, kind).rsplit("/", 1)[1].split("?")[0] for d in depts}

        if "postgres" in kinds:
            from connectors.simulator.postgres_depts import DEPARTMENTS as PG_DEPTS
            from connectors.simulator.postgres_depts import PostgresDepartmentsSimulator

            self.groups["postgres"] = PostgresDepartmentsSimulator(pg_template, seed=seed,
                                                                   databases=databases(PG_DEPTS, "postgres"))
        if "mysql" in kinds:
            from connectors.simulator.mysql_depts import DEPARTMENTS as MYSQL_DEPTS
            from connectors.simulator.mysql_depts import MySqlDepartmentsSimulator

            self.groups["mysql"] = MySqlDepartmentsSimulator(src.mysql_template.get_secret_value(), seed=seed,
                                                             databases=databases(MYSQL_DEPTS, "mysql"))
        if "polling" in kinds:
            from connectors.simulator.polled_depts import DEPTS as POLLED_DEPTS
            from connectors.simulator.polled_depts import PolledDepartmentsSimulator

            self.groups["polling"] = PolledDepartmentsSimulator(pg_template, seed=seed,
                                                                databases=databases(POLLED_DEPTS, "polling"))
        if "file" in kinds:
            from connectors.simulator.file_depts import FileDropSimulator

            self.groups["file"] = FileDropSimulator(settings.drop_dir, seed=seed)
        for group in self.groups.values():
            group.misbehave = self.misbehave  # type: ignore[attr-defined]  # every group has one

    def create(self) -> None:
        """Create every department database and table that is missing."""
        _create_postgres_database(self.market.dsn)
        self.market.create_schema()
        for group in self.groups.values():
            create = getattr(group, "create", None) or getattr(group, "create_databases", None)
            if create is not None:
                create()

    def seed(self, n: int, progress: Callable[[str, int], None] | None = None,
             today: dt.date | None = None) -> list[str]:
        """Register ``n`` new enterprises and give every department its history of them.

        The register comes first, then each group in turn; every group works through the new
        enterprises a chunk at a time, so memory does not grow with its history.
        ``progress(group, k)`` is called as each group finishes ``k`` more enterprises.
        """
        today = today or dt.date.today()  # one day for every group, even across midnight
        self.seeded = {}
        before = len(self.market.enterprises)
        started = time.perf_counter()
        created = self.market.seed_enterprises(n, progress=(lambda k: progress("market", k)) if progress else None)
        self.seeded["market"] = GroupSeed(time.perf_counter() - started, dict(self.market.last_seed_rows))
        fresh = self.market.enterprises[before:]
        for name, group in self.groups.items():
            started = time.perf_counter()
            report = (lambda k, name=name: progress(name, k)) if progress else None
            result = group.seed(fresh, today=today, progress=report)
            self.seeded[name] = GroupSeed(time.perf_counter() - started, _rows_of(result))
        return created

    def load_population(self) -> None:
        self.market.load_population()

    def deregistered(self) -> list[str]:
        """USCCs the market register shows revoked or cancelled, in USCC order."""
        with psycopg2.connect(self.market.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT uscc FROM enterprise_registration WHERE status = ANY(%s) ORDER BY uscc", (list(DEREGISTERED),))
            rows = [r[0] for r in cur.fetchall()]
        conn.close()
        return rows

    def step(self, n: int, today: dt.date | None = None) -> dict[str, int]:
        """About ``n`` changes spread over the departments (the register gets a share too);
        changes per kind (for a file group: records per dataset)."""
        counts: dict[str, int] = {}
        share = max(1, n // (len(self.groups) + 1))
        if "inconsistent" in self.misbehave.plan.values():
            self.misbehave.deregistered = self.deregistered()
        if not self.misbehave.silent("market"):
            for kind, c in self.market.step(share, today).items():
                counts[f"market.{kind}"] = c
        for name, group in self.groups.items():
            result = group.step(share, today)
            if isinstance(result, dict):
                for kind, c in result.items():
                    counts[f"{name}.{kind}"] = counts.get(f"{name}.{kind}", 0) + c
            else:  # a file group returns the files it dropped: count their records, per dataset
                for dataset, rows in _rows_of(result or []).items():
                    counts[f"{name}.{dataset}"] = counts.get(f"{name}.{dataset}", 0) + rows
        return counts
