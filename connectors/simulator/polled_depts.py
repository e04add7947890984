"""Departments read by polling (``connectors/polling.py``): 燃气集团, 公共资源交易中心, 应急管理局.

Each gets its own PostgreSQL database (default names ``gas``, ``procurement``, ``emergency``;
override with ``databases``) with tables that carry ``created_at``/``updated_at`` — the only
change tracking the polling connector relies on. Deterministic from ``seed``.

Dynamics: gas bills monthly with a winter peak (hot-pot restaurants and heating) and arrears for
distressed enterprises; procurement awards are rare and go awarded → contracted; safety
penalties are rare, several times likelier for distressed enterprises, and get paid.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable
from typing import Any

import psycopg2
import psycopg2.extras
from faker import Faker
from psycopg2 import sql

from connectors.simulator.bulk import pg_copy, seed_in_chunks
from connectors.simulator.identities import CHONGQING_DISTRICTS, UniqueCodes, make_mobile
from connectors.simulator.market import Enterprise
from connectors.simulator.misbehave import NONE, Misbehaviour

DDL = {
    "gas": """
CREATE TABLE IF NOT EXISTS gas_usage (
    id              bigserial PRIMARY KEY,
    uscc            char(18) NOT NULL,
    account_no      text NOT NULL,
    billing_month   date NOT NULL,
    customer_type   text NOT NULL,
    volume_m3       numeric(12, 2) NOT NULL,
    amount          numeric(12, 2) NOT NULL,
    arrears         numeric(12, 2) NOT NULL DEFAULT 0,
    payment_status  text NOT NULL,
    contact_name    text,
    contact_phone   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_no, billing_month)
);
CREATE INDEX IF NOT EXISTS gas_usage_cursor ON gas_usage (updated_at, id);
CREATE INDEX IF NOT EXISTS gas_usage_uscc ON gas_usage (uscc);
""",
    "procurement": """
CREATE TABLE IF NOT EXISTS bid_award (
    id              bigserial PRIMARY KEY,
    uscc            char(18) NOT NULL,
    project_code    text NOT NULL UNIQUE,
    project_name    text NOT NULL,
    purchaser       text NOT NULL,
    category        text NOT NULL,
    method          text NOT NULL,
    award_amount    numeric(16, 2) NOT NULL,
    award_date      date NOT NULL,
    contract_date   date,
    status          text NOT NULL DEFAULT 'awarded',
    contact_name    text,
    contact_phone   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bid_award_cursor ON bid_award (updated_at, id);
CREATE INDEX IF NOT EXISTS bid_award_awarded ON bid_award (id) WHERE status = 'awarded';
""",
    "emergency": """
CREATE TABLE IF NOT EXISTS safety_penalty (
    id                  bigserial PRIMARY KEY,
    uscc                char(18) NOT NULL,
    decision_no         text NOT NULL UNIQUE,
    penalty_type        text NOT NULL,
    amount              numeric(14, 2) NOT NULL DEFAULT 0,
    decision_date       date NOT NULL,
    reason              text,
    legal_basis         text,
    status              text NOT NULL DEFAULT 'effective',
    responsible_person  text,
    authority           text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS safety_penalty_cursor ON safety_penalty (updated_at, id);
CREATE INDEX IF NOT EXISTS safety_penalty_unpaid_fine ON safety_penalty (id)
    WHERE status = 'effective' AND penalty_type = 'fine';
""",
}

# Chongqing: cold damp winters, hot-pot all year but more in winter.
GAS_SEASON = {1: 1.45, 2: 1.35, 3: 1.1, 4: 0.95, 5: 0.85, 6: 0.8, 7: 0.8, 8: 0.8, 9: 0.85, 10: 0.95, 11: 1.1, 12: 1.4}
GAS_PRICE = {"industrial": 2.86, "commercial": 3.41, "public_service": 3.05}  # CNY/m³, non-residential tariffs

PURCHASERS = ["重庆市{d}教育委员会", "重庆市{d}卫生健康委员会", "重庆市{d}城市管理局", "重庆市{d}交通局",
              "重庆市{d}人民医院", "重庆市{d}住房和城乡建设委员会"]
PROJECTS = {
    "goods": ["办公设备采购项目", "智慧路灯采购项目", "医疗设备采购项目", "课桌椅采购项目", "监控设备采购项目"],
    "engineering": ["道路维修工程", "学校运动场改造工程", "污水管网改造工程", "老旧小区改造工程"],
    "services": ["物业管理服务项目", "信息系统运维服务项目", "保洁服务项目", "食堂托管服务项目"],
}
METHODS = ["open_tender", "invited_tender", "competitive_negotiation", "competitive_consultation", "single_source", "inquiry"]
_METHOD_WEIGHTS = [10, 1, 3, 4, 1, 3]

VIOLATIONS = [
    ("未按规定开展安全生产教育和培训", "《安全生产法》第九十七条"),
    ("未建立事故隐患排查治理制度", "《安全生产法》第一百零一条"),
    ("特种作业人员未持证上岗", "《安全生产法》第九十七条"),
    ("未如实记录安全生产教育和培训情况", "《安全生产法》第九十七条"),
    ("危险物品储存不符合国家标准", "《危险化学品安全管理条例》第八十条"),
    ("未按规定设置安全警示标志", "《安全生产法》第九十九条"),
    ("生产经营场所安全出口不符合要求", "《安全生产法》第一百零五条"),
]
PENALTY_TYPES = ["warning", "fine", "confiscation", "suspension", "license_revoked"]
_PENALTY_WEIGHTS = [25, 65, 3, 6, 1]

DEPTS = ("gas", "procurement", "emergency")
_TABLE_DEPT = {"gas_usage": "gas", "bid_award": "procurement", "safety_penalty": "emergency"}


class PolledDepartmentsSimulator:
    """Creates, seeds and mutates the gas / procurement / emergency databases."""

    def __init__(self, dsn_template: str, seed: int = 2019, databases: dict[str, str] | None = None) -> None:
        self.dsn_template = dsn_template
        self._seed = seed
        self.databases = {d: d for d in DEPTS} | (databases or {})
        self.rng = random.Random(f"polled:{seed}")
        self.fake = Faker("zh_CN")
        self.fake.seed_instance(seed)
        self.enterprises: list[Enterprise] = []
        self.gas_accounts: dict[str, tuple[str, str]] = {}  # uscc → (account_no, customer_type)
        self.gas_base: dict[str, float] = {}  # uscc → typical monthly m³
        self._serial = 0
        self._accounts = UniqueCodes()  # gas accounts
        self._candidates_key: tuple[int, int] | None = None
        self._cached: tuple[list[str], dict[str, Enterprise], list[Enterprise]] = ([], {}, [])
        self.misbehave: Misbehaviour = NONE  # the city's department misbehaviours (connectors/simulator/misbehave.py)

    def dsn(self, dept: str) -> str:
        return self.dsn_template.format(db=self.databases[dept])

    def connect(self, dept: str):
        return psycopg2.connect(self.dsn(dept))

    def create_databases(self) -> None:
        """Create the three databases (if missing) and their tables."""
        admin = psycopg2.connect(self.dsn_template.format(db="postgres"))
        admin.autocommit = True
        with admin.cursor() as cur:
            for dept in DEPTS:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.databases[dept],))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.databases[dept])))
        admin.close()
        for dept in DEPTS:
            with self.connect(dept) as conn, conn.cursor() as cur:
                cur.execute(DDL[dept])
            conn.close()

    # --- seed ------------------------------------------------------------------------------------

    def seed(self, enterprises: Iterable[Enterprise], today: dt.date | None = None, chunk: int = 0,
             progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """History for ``enterprises``: 6 months of gas bills for ~35 % of them, past awards, past penalties.

        Works through ``chunk`` enterprises at a time (default ``bulk.SEED_CHUNK``: generate,
        ``COPY``, commit); the rows are those ``seed_rows`` makes for all of them at once.
        ``progress(k)`` is called after each chunk of ``k`` enterprises.
        """
        today = today or dt.date.today()
        counts = dict.fromkeys(self._COLUMNS, 0)
        conns: dict[str, Any] = {}

        def insert(conn, table: str, rows: list[tuple]) -> None:
            with conn.cursor() as cur:
                pg_copy(cur, table, self._COLUMNS[table], rows)

        try:
            for dept in DEPTS:
                conns[dept] = self.connect(dept)
            seed_in_chunks("polling", enterprises, chunk,
                           lambda part: self.misbehave.seed_tables(_TABLE_DEPT, self._COLUMNS, self.seed_rows(part, today)),
                           conns, _TABLE_DEPT, insert, counts, progress)
        finally:
            for conn in conns.values():
                conn.close()
        return counts

    def seed_rows(self, enterprises: Iterable[Enterprise], today: dt.date) -> dict[str, list[tuple]]:
        """The rows ``seed`` inserts, per table (tuples in ``_COLUMNS`` order); no I/O. Registers
        the enterprises and their gas accounts for the live changes."""
        new = list(enterprises)
        self.enterprises.extend(new)
        rng = self.rng
        gas_rows, awards, penalties = [], [], []
        for e in new:
            if rng.random() < 0.35:
                ctype = rng.choices(list(GAS_PRICE), weights=[3, 6, 1])[0]
                account = self._accounts.draw_digits(rng, f"RQ{e.district}", 8)
                self.gas_accounts[e.uscc] = (account, ctype)
                self.gas_base[e.uscc] = round(rng.lognormvariate(7.0 if ctype == "industrial" else 6.2, 0.7), 1)
                for back in range(6, 0, -1):
                    gas_rows.append(self._gas_row(e, _month_start(today, -back), settled=True))
            for _ in range(_poisson(rng, 0.12)):
                awards.append(self._award_row(e, today - dt.timedelta(days=rng.randint(30, 900)), contracted=True))
            for _ in range(_poisson(rng, 0.25 if e.distressed else 0.03)):
                penalties.append(self._penalty_row(e, today - dt.timedelta(days=rng.randint(20, 700)), settled=True))
        return {"gas_usage": gas_rows, "bid_award": awards, "safety_penalty": penalties}

    # --- live changes -------------------------------------------------------------------------------

    def step(self, n: int, today: dt.date | None = None) -> dict[str, int]:
        """Commit ``n`` changes, one transaction each; return counts by kind."""
        today = today or dt.date.today()
        counts: dict[str, int] = {}
        conns = {d: self.connect(d) for d in DEPTS}
        try:
            for _ in range(n):
                dept, kind = self._one_change(conns, today)
                conns[dept].commit()
                counts[kind] = counts.get(kind, 0) + 1
        finally:
            for c in conns.values():
                c.close()
        return counts

    def _one_change(self, conns, today: dt.date) -> tuple[str, str]:
        rng = self.rng
        roll = rng.random()
        with_gas, by_uscc, distressed = self._candidates()
        if roll < 0.55 and with_gas:
            uscc = rng.choice(with_gas)
            e = by_uscc[uscc]
            with conns["gas"].cursor() as cur:
                if rng.random() < 0.6:
                    row = self.misbehave.live_tuple("gas", "gas_usage", self._COLUMNS["gas_usage"],
                                                    self._gas_row(e, _month_start(today, 0), settled=False), today)
                    if row is None:  # a misbehaving department writes nothing
                        return "gas", "gas_bill"
                    cur.execute(
                        "INSERT INTO gas_usage (uscc, account_no, billing_month, customer_type, volume_m3, amount, arrears,"
                        " payment_status, contact_name, contact_phone) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                        " ON CONFLICT (account_no, billing_month) DO UPDATE SET volume_m3 = EXCLUDED.volume_m3,"
                        " amount = EXCLUDED.amount, arrears = EXCLUDED.arrears, updated_at = now()",
                        row)
                    return "gas", "gas_bill"
                paid = 0.0 if e.distressed and rng.random() < 0.7 else 1.0
                if not self.misbehave.writes("gas", uscc):
                    return "gas", "gas_payment" if paid else "gas_unpaid"
                cur.execute(
                    "UPDATE gas_usage SET arrears = round(arrears * %s, 2),"
                    " payment_status = CASE WHEN %s = 0 THEN 'paid' ELSE payment_status END, updated_at = now()"
                    " WHERE id = (SELECT max(id) FROM gas_usage WHERE uscc = %s)",
                    (1.0 - paid, 1.0 - paid, uscc))
                return "gas", "gas_payment" if paid else "gas_unpaid"
        if roll < 0.75:
            e = rng.choice(self.enterprises)
            with conns["procurement"].cursor() as cur:
                if rng.random() < 0.5 and self.misbehave.writes("procurement"):
                    cur.execute(
                        "UPDATE bid_award SET status = 'contracted', contract_date = %s, updated_at = now()"
                        " WHERE id = (SELECT min(id) FROM bid_award WHERE status = 'awarded')", (today,))
                    if cur.rowcount:
                        return "procurement", "award_contracted"
                self._insert_rows(cur, "bid_award", [self._award_row(e, today, contracted=False)], today)
                return "procurement", "bid_award"
        e = rng.choice(distressed) if distressed and rng.random() < 0.6 else rng.choice(self.enterprises)
        with conns["emergency"].cursor() as cur:
            if rng.random() < 0.3 and self.misbehave.writes("emergency"):
                cur.execute(
                    "UPDATE safety_penalty SET status = 'paid', updated_at = now()"
                    " WHERE id = (SELECT min(id) FROM safety_penalty WHERE status = 'effective' AND penalty_type = 'fine')")
                if cur.rowcount:
                    return "emergency", "penalty_paid"
            self._insert_rows(cur, "safety_penalty", [self._penalty_row(e, today, settled=False)], today)
            return "emergency", "safety_penalty"

    def _candidates(self) -> tuple[list[str], dict[str, Enterprise], list[Enterprise]]:
        """Enterprises with a gas account, enterprises by USCC, distressed enterprises: kept between
        changes (rebuilding them per change costs ~0.1 s at a million enterprises) and rebuilt
        when a seed has added enterprises or accounts."""
        key = (len(self.enterprises), len(self.gas_accounts))
        if self._candidates_key != key:
            self._candidates_key = key
            self._cached = (list(self.gas_accounts), {e.uscc: e for e in self.enterprises},
                            [e for e in self.enterprises if e.distressed])
        return self._cached

    # --- rows ---------------------------------------------------------------------------------------

    def _gas_row(self, e: Enterprise, month: dt.date, settled: bool) -> tuple:
        rng = self.rng
        account, ctype = self.gas_accounts[e.uscc]
        volume = round(self.gas_base[e.uscc] * GAS_SEASON[month.month] * rng.uniform(0.85, 1.15), 2)
        if e.distressed:
            volume = round(volume * rng.uniform(0.3, 0.8), 2)  # activity falls on the distress path
        amount = round(volume * GAS_PRICE[ctype], 2)
        if e.distressed and rng.random() < 0.6:
            arrears, status = amount, "unpaid"
        elif not settled:
            arrears, status = amount, "unpaid"
        else:
            arrears, status = 0.0, "paid"
        return (e.uscc, account, month, ctype, volume, amount, arrears, status, self.fake.name(), make_mobile(rng))

    def _award_row(self, e: Enterprise, day: dt.date, contracted: bool) -> tuple:
        rng = self.rng
        self._serial += 1
        category = rng.choices(list(PROJECTS), weights=[5, 2, 4])[0]
        district = CHONGQING_DISTRICTS.get(e.district, "渝中区")
        amount = round(rng.lognormvariate(12.5 if category == "engineering" else 11.5, 1.0), 2)
        code = f"CQGP{day.year}-{self._seed % 1000:03d}{self._serial:06d}"
        return (e.uscc, code, f"{district}{rng.choice(PROJECTS[category])}", rng.choice(PURCHASERS).format(d=district),
                category, rng.choices(METHODS, weights=_METHOD_WEIGHTS)[0], amount, day,
                day + dt.timedelta(days=rng.randint(7, 30)) if contracted else None,
                "contracted" if contracted else "awarded", self.fake.name(), make_mobile(rng))

    def _penalty_row(self, e: Enterprise, day: dt.date, settled: bool) -> tuple:
        rng = self.rng
        self._serial += 1
        ptype = rng.choices(PENALTY_TYPES, weights=_PENALTY_WEIGHTS)[0]
        if e.distressed and ptype == "warning":
            ptype = "fine"
        amount = 0.0 if ptype == "warning" else float(rng.choice([5000, 10000, 20000, 30000, 50000, 100000]))
        reason, basis = rng.choice(VIOLATIONS)
        district = CHONGQING_DISTRICTS.get(e.district, "渝中区")
        status = "paid" if settled and ptype == "fine" else "effective"
        return (e.uscc, f"渝{district[:2]}应急罚〔{day.year}〕{self._seed % 100:02d}{self._serial:05d}号", ptype, amount, day,
                reason, basis, status, self.fake.name(), f"重庆市{district}应急管理局")

    _COLUMNS = {
        "gas_usage": ("uscc", "account_no", "billing_month", "customer_type", "volume_m3", "amount", "arrears",
                      "payment_status", "contact_name", "contact_phone"),
        "bid_award": ("uscc", "project_code", "project_name", "purchaser", "category", "method", "award_amount",
                      "award_date", "contract_date", "status", "contact_name", "contact_phone"),
        "safety_penalty": ("uscc", "decision_no", "penalty_type", "amount", "decision_date", "reason", "legal_basis",
                           "status", "responsible_person", "authority"),
    }

    def _insert_rows(self, cur, table: str, rows: list[tuple], today: dt.date) -> None:
        """Live inserts (what a misbehaving department writes instead, if anything)."""
        dept, columns = _TABLE_DEPT[table], self._COLUMNS[table]
        rows = [w for r in rows if (w := self.misbehave.live_tuple(dept, table, columns, r, today)) is not None]
        if rows:
            query = sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT DO NOTHING").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, self._COLUMNS[table])))
            psycopg2.extras.execute_values(cur, query.as_string(cur), rows)


def _month_start(today: dt.date, months: int) -> dt.date:
    """First day of the month ``months`` away from ``today``'s month."""
    idx = today.year * 12 + today.month - 1 + months
    return dt.date(idx // 12, idx % 12 + 1, 1)


def _poisson(rng: random.Random, lam: float) -> int:
    """Small-λ Poisson draw (Knuth)."""
    limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
