"""市场监管局 (market supervision) department database: schema, seed and live changes.

Tables mirror ``streams/core/departments/market.toml``. A configurable share of enterprises is on a
distress path: listed in the register of abnormal operations (经营异常名录), then suspended,
then revoked (吊销) — the changes that should raise alerts. Shareholders pledge equity (股权出质)
to banks: a few percent of enterprises at any time, more often on the distress path.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extras
from faker import Faker

from connectors.simulator.bulk import BackgroundLoader, pg_copy
from connectors.simulator.identities import (
    CHONGQING_DISTRICTS,
    make_id_number,
    make_mobile,
    make_uscc,
    pick_district,
    pick_industry,
)
from connectors.simulator.misbehave import NONE, Misbehaviour

DDL = """
CREATE TABLE IF NOT EXISTS enterprise_registration (
    uscc                char(18) PRIMARY KEY,
    name                text NOT NULL,
    legal_rep_name      text,
    legal_rep_id_number char(18),
    legal_rep_phone     text,
    district_code       char(6),
    industry_code       text,
    registered_capital  numeric(14, 2),
    established_date    date,
    status              text NOT NULL DEFAULT 'active',
    address             text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS abnormal_operation (
    id              bigserial PRIMARY KEY,
    uscc            char(18) NOT NULL,
    reason_code     text NOT NULL,
    listed_date     date NOT NULL,
    authority       text,
    removed_date    date,
    removal_reason  text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS abnormal_operation_uscc ON abnormal_operation (uscc);
CREATE TABLE IF NOT EXISTS equity_pledge (
    id                  bigserial PRIMARY KEY,
    uscc                char(18) NOT NULL,
    registration_no     text NOT NULL,
    pledgor_type        text NOT NULL,
    pledgor_name        text,
    pledgor_id_number   char(18),
    pledgee             text NOT NULL,
    pledged_amount      numeric(14, 2),
    registration_date   date NOT NULL,
    status              text NOT NULL DEFAULT 'valid',
    cancelled_date      date,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS equity_pledge_uscc ON equity_pledge (uscc);
ALTER TABLE enterprise_registration REPLICA IDENTITY FULL;
ALTER TABLE abnormal_operation REPLICA IDENTITY FULL;
ALTER TABLE equity_pledge REPLICA IDENTITY FULL;
"""

PLEDGEES = ("重庆银行", "重庆农村商业银行", "中国工商银行重庆市分行", "中国建设银行重庆市分行", "招商银行重庆分行",
            "重庆三峡银行", "重庆兴农融资担保集团")

REGISTRATION_COLUMNS = ("uscc", "name", "legal_rep_name", "legal_rep_id_number", "legal_rep_phone", "district_code",
                        "industry_code", "registered_capital", "established_date", "status", "address")
LISTING_COLUMNS = ("uscc", "reason_code", "listed_date", "authority")
PLEDGE_COLUMNS = ("uscc", "registration_no", "pledgor_type", "pledgor_name", "pledgor_id_number", "pledgee",
                  "pledged_amount", "registration_date")

ABNORMAL_REASONS = ("annual_report_missing", "unreachable_address", "false_information", "public_info_missing")
_REASON_WEIGHTS = (6, 3, 1, 1)


@dataclass
class Enterprise:
    uscc: str
    district: str
    distressed: bool
    stage: int = 0  # distress path: 0 healthy, 1 listed abnormal, 2 suspended, 3 revoked


@dataclass
class MarketSimulator:
    """Seeds and then mutates the market department DB, deterministically from ``seed``."""

    dsn: str
    seed: int = 2019
    distress_share: float = 0.05
    enterprises: list[Enterprise] = field(default_factory=list)
    misbehave: Misbehaviour = NONE  # the register's misbehaviour, if the city gives it one (simulator/misbehave.py)

    def __post_init__(self) -> None:
        self.last_seed_rows: dict[str, int] = {}  # rows per table of the last seed_enterprises
        self._path_of: list[Enterprise] | None = None  # the population _path was taken from
        self._path_seen = 0  # enterprises of it looked at
        self._path: list[Enterprise] = []
        self._issued: set[str] = set()
        self.rng = random.Random(self.seed)
        self.fake = Faker("zh_CN")
        self.fake.seed_instance(self.seed)

    def connect(self):
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = False
        return conn

    def create_schema(self) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(DDL)
        conn.close()

    def _registration_row(self, e: Enterprise) -> tuple:
        f, rng = self.fake, self.rng
        district_name = CHONGQING_DISTRICTS[e.district]
        founded = dt.date(2026, 1, 1) - dt.timedelta(days=rng.randint(90, 25 * 365))
        return (
            e.uscc,
            f"重庆{f.company_prefix()}{rng.choice(['科技', '实业', '贸易', '餐饮管理', '汽车配件', '建筑工程', '物流', '食品'])}有限公司",
            f.name(),
            make_id_number(rng, rng.choice([e.district, pick_district(rng)])),
            make_mobile(rng),
            e.district,
            pick_industry(rng),
            round(rng.lognormvariate(5.5, 1.2), 2),  # 10k CNY; median ≈ 245万
            founded,
            "active",
            f"重庆市{district_name}{f.street_name()}{rng.randint(1, 399)}号",
        )

    def seed_enterprises(self, n: int, progress: Callable[[int], None] | None = None, batch: int = 5000) -> list[str]:
        """Insert ``n`` new enterprises (a few already listed as abnormal); return their USCCs."""
        created: list[str] = []
        self.last_seed_rows = dict.fromkeys(("enterprise_registration", "abnormal_operation", "equity_pledge"), 0)
        conn = self.connect()

        def load(rows: list[tuple], listings: list[tuple], pledges: list[tuple]) -> None:
            with conn.cursor() as cur:
                # COPY; an enterprise already registered (a seed run again) is kept, as ON CONFLICT DO NOTHING
                pg_copy(cur, "enterprise_registration", REGISTRATION_COLUMNS, rows)
                pg_copy(cur, "abnormal_operation", LISTING_COLUMNS, listings)
                pg_copy(cur, "equity_pledge", PLEDGE_COLUMNS, pledges)
            conn.commit()
            if progress:
                progress(len(rows))

        try:
            with BackgroundLoader("market") as loader:  # generate the next batch while this one loads
                self._seed_batches(n, batch, created, lambda *tables: loader.submit(functools.partial(load, *tables)))
        finally:
            conn.close()
        return created

    def _seed_batches(self, n: int, batch: int, created: list[str], load: Callable[..., None]) -> None:
        """Make ``n`` enterprises ``batch`` at a time; ``load(registrations, listings, pledges)`` each batch."""
        for start in range(0, n, batch):
            rows, listings, pledges = [], [], []
            for _ in range(min(batch, n - start)):
                e = Enterprise(self._new_uscc(), "", False)
                e.district = e.uscc[2:8]
                e.distressed = self.rng.random() < self.distress_share
                self.enterprises.append(e)
                created.append(e.uscc)
                rows.append(self._registration_row(e))
                if not e.distressed and self.rng.random() < 0.02:
                    listings.append(self._listing_row(e.uscc, dt.date(2025, 6, 30) - dt.timedelta(days=self.rng.randint(0, 700))))
                if self.rng.random() < (0.15 if e.distressed else 0.04):
                    pledges.append(self._pledge_row(e, dt.date(2025, 6, 30) - dt.timedelta(days=self.rng.randint(0, 900))))
            if self.misbehave:  # ``missing``: the register holds half the population
                rows = self.misbehave.seed_tuples("market", "enterprise_registration", REGISTRATION_COLUMNS, rows)
                listings = self.misbehave.seed_tuples("market", "abnormal_operation", LISTING_COLUMNS, listings)
                pledges = self.misbehave.seed_tuples("market", "equity_pledge", PLEDGE_COLUMNS, pledges)
            for table, done in (("enterprise_registration", rows), ("abnormal_operation", listings),
                                ("equity_pledge", pledges)):
                self.last_seed_rows[table] += len(done)
            load(rows, listings, pledges)

    def _new_uscc(self) -> str:
        """A USCC no enterprise of this population has (random codes collide about once in
        20,000 at a million enterprises)."""
        if len(self._issued) < len(self.enterprises):
            self._issued = {e.uscc for e in self.enterprises}
        while True:
            code = make_uscc(self.rng, pick_district(self.rng))
            if code not in self._issued:
                self._issued.add(code)
                return code

    def _listing_row(self, uscc: str, listed: dt.date) -> tuple:
        reason = self.rng.choices(ABNORMAL_REASONS, weights=_REASON_WEIGHTS)[0]
        return (uscc, reason, listed, "重庆市市场监督管理局")

    def _insert_listings(self, cur, rows: list[tuple], today: dt.date | None = None) -> None:
        rows = self._live("abnormal_operation", LISTING_COLUMNS, rows, today)
        if rows:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO abnormal_operation (uscc, reason_code, listed_date, authority) VALUES %s", rows
            )

    def _live(self, table: str, columns: tuple[str, ...], rows: list[tuple], today: dt.date | None) -> list[tuple]:
        """The live inserts the register writes (a misbehaving one: others, or none)."""
        if not self.misbehave:
            return rows
        return [w for r in rows if (w := self.misbehave.live_tuple("market", table, columns, r, today)) is not None]

    def _pledge_row(self, e: Enterprise, registered: dt.date) -> tuple:
        """A shareholder pledges part of their equity: a natural person (ID number) or a company (USCC)."""
        rng = self.rng
        if rng.random() < 0.7:
            pledgor = ("natural_person", self.fake.name(), make_id_number(rng, pick_district(rng)))
        else:
            pledgor = ("enterprise", f"重庆{self.fake.company_prefix()}投资有限公司", make_uscc(rng, pick_district(rng)))
        reg_no = f"渝{e.district}股质登字[{registered.year}]第{rng.randint(1, 99999):05d}号"
        return (e.uscc, reg_no, *pledgor, rng.choice(PLEDGEES), round(rng.lognormvariate(4.5, 1.0), 2), registered)

    def _insert_pledges(self, cur, rows: list[tuple], today: dt.date | None = None) -> None:
        rows = self._live("equity_pledge", PLEDGE_COLUMNS, rows, today)
        if rows:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO equity_pledge (uscc, registration_no, pledgor_type, pledgor_name, pledgor_id_number, pledgee,"
                " pledged_amount, registration_date) VALUES %s",
                rows,
            )

    def load_population(self) -> None:
        """Re-read the enterprises already in the database (to continue changing them after a restart)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT uscc, district_code FROM enterprise_registration ORDER BY uscc")
            rows = cur.fetchall()
        conn.close()
        rng = random.Random(self.seed)
        self.enterprises = [Enterprise(u, d, rng.random() < self.distress_share) for u, d in rows]
        # Continue deterministically but without replaying the draws that made these rows.
        self.rng = random.Random(f"{self.seed}:{len(rows)}")
        self.fake.seed_instance(f"{self.seed}:{len(rows)}")

    # --- live changes ----------------------------------------------------------------------------

    def step(self, changes: int, today: dt.date | None = None) -> dict[str, int]:
        """Commit ``changes`` realistic changes, one transaction each; return counts by kind."""
        today = today or dt.date.today()
        counts: dict[str, int] = {}
        with self.connect() as conn, conn.cursor() as cur:
            for _ in range(changes):
                kind = self._one_change(cur, today)
                conn.commit()
                counts[kind] = counts.get(kind, 0) + 1
        conn.close()
        return counts

    def _on_path(self) -> list[Enterprise]:
        """Distressed enterprises not yet revoked, in population order (what ``_one_change`` draws
        from). Kept between changes — filtering a million enterprises per change limited the
        change rate to ~60/s — and brought up to date with the enterprises appended since;
        ``advance_distress`` takes out the revoked."""
        if self._path_of is not self.enterprises or self._path_seen > len(self.enterprises):
            self._path_of, self._path_seen, self._path = self.enterprises, 0, []
        if self._path_seen < len(self.enterprises):
            self._path.extend(e for e in self.enterprises[self._path_seen:] if e.distressed and e.stage < 3)
            self._path_seen = len(self.enterprises)
        return self._path

    def _one_change(self, cur, today: dt.date) -> str:
        rng = self.rng
        distressed = self._on_path()
        roll = rng.random()
        if distressed and roll < 0.25:
            e = rng.choice(distressed)
            return self.advance_distress(cur, e, today)
        if roll < 0.35:
            (uscc,) = self._insert_new(cur, today)
            return "registered"
        e = rng.choice(self.enterprises)
        if roll < 0.45:
            cur.execute(
                "UPDATE abnormal_operation SET removed_date = %s, removal_reason = %s, updated_at = now()"
                " WHERE uscc = %s AND removed_date IS NULL",
                (today, "已补报年报", e.uscc),
            )
            return "abnormal_removed" if cur.rowcount else "noop"
        if roll < 0.50:
            self._insert_pledges(cur, [self._pledge_row(e, today)], today)
            return "equity_pledged"
        if roll < 0.55:
            cur.execute(
                "UPDATE equity_pledge SET status = 'cancelled', cancelled_date = %s, updated_at = now()"
                " WHERE id = (SELECT min(id) FROM equity_pledge WHERE uscc = %s AND status = 'valid')",
                (today, e.uscc),
            )
            return "equity_pledge_cancelled" if cur.rowcount else "noop"
        if roll < 0.75:
            cur.execute(
                "UPDATE enterprise_registration SET registered_capital = registered_capital * %s, updated_at = now()"
                " WHERE uscc = %s AND status = 'active'",
                (round(rng.uniform(1.1, 2.0), 2), e.uscc),
            )
            return "capital_increase"
        cur.execute(
            "UPDATE enterprise_registration SET legal_rep_name = %s, legal_rep_id_number = %s, legal_rep_phone = %s,"
            " updated_at = now() WHERE uscc = %s",
            (self.fake.name(), make_id_number(rng, e.district), make_mobile(rng), e.uscc),
        )
        return "legal_rep_change"

    def _insert_new(self, cur, today: dt.date | None = None) -> tuple[str]:
        e = Enterprise(self._new_uscc(), "", self.rng.random() < self.distress_share)
        e.district = e.uscc[2:8]
        self.enterprises.append(e)
        for row in self._live("enterprise_registration", REGISTRATION_COLUMNS, [self._registration_row(e)], today):
            cur.execute(
                "INSERT INTO enterprise_registration (uscc, name, legal_rep_name, legal_rep_id_number, legal_rep_phone,"
                " district_code, industry_code, registered_capital, established_date, status, address)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (uscc) DO NOTHING",
                row,
            )
        return (e.uscc,)

    def advance_distress(self, cur, e: Enterprise, today: dt.date) -> str:
        """Move one enterprise a step down the distress path: listed → suspended → revoked."""
        e.stage += 1
        if e.stage == 1:
            self._insert_listings(cur, [self._listing_row(e.uscc, today)], today)
            if self.rng.random() < 0.5:  # shareholders raise money against their equity
                self._insert_pledges(cur, [self._pledge_row(e, today)], today)
            return "abnormal_listed"
        status = "suspended" if e.stage == 2 else "revoked"
        if e.stage >= 3 and self._path_of is self.enterprises:
            self._path[:] = [x for x in self._path if x is not e]
        cur.execute(
            "UPDATE enterprise_registration SET status = %s, updated_at = now() WHERE uscc = %s", (status, e.uscc)
        )
        return status
