"""The MariaDB departments: 人力社保局 (hrss), 公积金中心 (housing_fund), 国网电力 (power), 海关 (customs).

Tables mirror ``streams/core/departments/{hrss,housing_fund,power,customs}.toml``. Every row carries
the enterprise's USCC. Twelve months of history per enterprise, then monthly rows and corrections.
Dynamics: insured headcount 3–300 (lognormal), electricity with summer and winter peaks and a
Spring Festival dip, and enterprises on a distress path (``Enterprise.distressed``) whose
headcount and power use fall while their social insurance, housing fund and power arrears grow.
Deterministic from ``seed`` (and the ``today`` given).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pymysql
from faker import Faker

from connectors.mysql import parse_dsn
from connectors.simulator.bulk import mysql_load, mysql_local_infile, seed_in_chunks
from connectors.simulator.identities import CHONGQING_DISTRICTS, UniqueCodes, make_mobile
from connectors.simulator.market import Enterprise
from connectors.simulator.misbehave import NONE, Misbehaviour

DEPARTMENTS = ("hrss", "housing_fund", "power", "customs")
TABLE_DEPT = {"social_insurance": "hrss", "housing_fund_contribution": "housing_fund", "electricity_usage": "power",
              "customs_trade": "customs", "customs_credit": "customs"}

DDL: dict[str, list[str]] = {
    "hrss": ["""
CREATE TABLE IF NOT EXISTS social_insurance (
    uscc               CHAR(18)      NOT NULL,
    period             CHAR(7)       NOT NULL,
    unit_name          VARCHAR(200),
    insured_headcount  INT           NOT NULL,
    new_insured        INT,
    terminated_insured INT,
    contribution_base  DECIMAL(14,2),
    payable_amount     DECIMAL(14,2),
    paid_amount        DECIMAL(14,2),
    arrears_amount     DECIMAL(14,2),
    arrears_months     INT,
    payment_status     VARCHAR(16)   NOT NULL,
    paid_date          DATE,
    contact_name       VARCHAR(50),
    contact_phone      VARCHAR(20),
    agency             VARCHAR(100),
    updated_at         DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (uscc, period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""],
    "housing_fund": ["""
CREATE TABLE IF NOT EXISTS housing_fund_contribution (
    uscc               CHAR(18)      NOT NULL,
    period             CHAR(7)       NOT NULL,
    unit_account_no    VARCHAR(20),
    depositor_count    INT           NOT NULL,
    deposit_base_total DECIMAL(14,2),
    contribution_rate  DECIMAL(4,3),
    payable_amount     DECIMAL(14,2),
    paid_amount        DECIMAL(14,2),
    arrears_amount     DECIMAL(14,2),
    status             VARCHAR(16)   NOT NULL,
    paid_date          DATE,
    handler_name       VARCHAR(50),
    updated_at         DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (uscc, period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""],
    "power": ["""
CREATE TABLE IF NOT EXISTS electricity_usage (
    account_no      VARCHAR(16)   NOT NULL,
    period          CHAR(7)       NOT NULL,
    uscc            CHAR(18)      NOT NULL,
    tariff_category VARCHAR(24),
    voltage_level   VARCHAR(8),
    usage_kwh       DECIMAL(14,1) NOT NULL,
    peak_kwh        DECIMAL(14,1),
    valley_kwh      DECIMAL(14,1),
    amount          DECIMAL(14,2),
    paid_amount     DECIMAL(14,2),
    arrears_amount  DECIMAL(14,2),
    payment_status  VARCHAR(16)   NOT NULL,
    meter_read_date DATE,
    supply_address  VARCHAR(200),
    updated_at      DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (account_no, period),
    KEY electricity_usage_uscc (uscc)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""],
    "customs": ["""
CREATE TABLE IF NOT EXISTS customs_trade (
    uscc                CHAR(18)    NOT NULL,
    period              CHAR(7)     NOT NULL,
    customs_code        CHAR(10)    NOT NULL,
    import_value_usd    DECIMAL(16,2),
    export_value_usd    DECIMAL(16,2),
    import_declarations INT,
    export_declarations INT,
    main_hs_code        CHAR(4),
    main_partner        CHAR(2),
    trade_mode          VARCHAR(24),
    updated_at          DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (uscc, period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""", """
CREATE TABLE IF NOT EXISTS customs_credit (
    uscc            CHAR(18)     NOT NULL PRIMARY KEY,
    customs_code    CHAR(10)     NOT NULL,
    credit_rating   VARCHAR(24)  NOT NULL,
    previous_rating VARCHAR(24),
    rating_date     DATE         NOT NULL,
    valid_until     DATE,
    reason          VARCHAR(200),
    customs_office  VARCHAR(50),
    updated_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""],
}

SI_AGENCIES = ("重庆市社会保险事务中心", "重庆市渝中区社会保险事务中心", "重庆市九龙坡区社会保险事务中心", "重庆市渝北区社会保险事务中心")
SI_RATE = 0.365  # pension 16+8, medical 8+2, unemployment 0.5+0.5, injury ≈0.5 (% of base)
HS_HEADINGS = ("8708", "8471", "8517", "8542", "6204", "9403", "0805", "2106", "8479", "3926")
PARTNERS = ("US", "DE", "JP", "KR", "VN", "SG", "TH", "MY", "NL", "GB")
CUSTOMS_OFFICES = ("重庆海关", "两路寸滩海关", "西永海关", "重庆江北机场海关", "万州海关")
RATINGS = ("advanced_certified", "general_certified", "registered", "dishonest")


@functools.lru_cache(maxsize=4096)  # a few dozen distinct periods, called for every monthly row
def month_add(period: str, months: int) -> str:
    y, m = (int(x) for x in period.split("-"))
    total = y * 12 + (m - 1) + months
    return f"{total // 12:04d}-{total % 12 + 1:02d}"


def period_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def seasonal_power_factor(month: int) -> float:
    """Electricity demand relative to the yearly mean: air-conditioning peaks in July–August and
    heating in December–January (a 6-month cosine), and the Spring Festival stop in February."""
    f = 1.0 + 0.22 * math.cos(2 * math.pi * (month - 7.5) / 6)
    return f * (0.7 if month == 2 else 1.0)


@dataclass
class _Profile:
    """What the departments know about one enterprise, drawn once from the seed."""

    e: Enterprise
    headcount: int
    wage_base: float
    manufacturing: bool
    account_nos: list[str]
    housing_fund: bool
    hf_rate: float
    customs_code: str | None
    trade_scale: float
    contact_name: str
    contact_phone: str
    handler_name: str
    address: str
    unit_name: str


@dataclass
class MonthState:
    """What carries over from one month of an enterprise to the next (``month_rows``)."""

    headcount: int
    si_arrears_months: int = 0
    power_arrears: float = 0.0  # carried across the enterprise's meter accounts, as billed


class MySqlDepartmentsSimulator:
    """Creates, seeds and then changes the four MariaDB department databases."""

    def __init__(self, dsn_template: str, seed: int, databases: dict[str, str] | None = None) -> None:
        self.dsn_template = dsn_template
        self._seed = seed
        self.databases = {d: (databases or {}).get(d, d) for d in DEPARTMENTS}
        self.rng = random.Random(seed)
        self.fake = Faker("zh_CN")
        self.fake.seed_instance(seed)
        self._profile_fake = Faker("zh_CN")  # re-seeded per enterprise: building a Faker costs ~2 ms
        self.profiles: dict[str, _Profile] = {}
        self._sorted_usccs: list[str] = []  # sorted(self.profiles), kept for step
        self._accounts, self._customs_codes = UniqueCodes(), UniqueCodes()  # power accounts, customs codes
        self.last_period: str | None = None
        self.misbehave: Misbehaviour = NONE  # the city's department misbehaviours (connectors/simulator/misbehave.py)

    # --- connections ---------------------------------------------------------------------------

    def dsn(self, dept: str) -> str:
        return self.dsn_template.format(db=self.databases[dept])

    def connect(self, dept: str, local_infile: bool = False):
        settings, db = parse_dsn(self.dsn(dept))
        return pymysql.connect(**settings, database=db, autocommit=False, local_infile=local_infile)

    def create(self) -> None:
        """Create the department databases (if missing) and their tables."""
        settings, _ = parse_dsn(self.dsn(DEPARTMENTS[0]))
        admin = pymysql.connect(**settings, autocommit=True)
        try:
            with admin.cursor() as cur:
                for dept in DEPARTMENTS:
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.databases[dept]}` CHARACTER SET utf8mb4")
        finally:
            admin.close()
        for dept in DEPARTMENTS:
            conn = self.connect(dept)
            try:
                with conn.cursor() as cur:
                    for ddl in DDL[dept]:
                        cur.execute(ddl)
                conn.commit()
            finally:
                conn.close()

    # --- population ------------------------------------------------------------------------------

    def _profile(self, e: Enterprise) -> _Profile:
        rng = random.Random(f"{self._seed}:{e.uscc}")
        fake = self._profile_fake
        fake.seed_instance(f"{self._seed}:{e.uscc}")
        headcount = max(3, min(300, int(rng.lognormvariate(math.log(22), 0.9))))
        district = e.district if e.district in CHONGQING_DISTRICTS else e.uscc[2:8]
        n_accounts = 2 if rng.random() < 0.1 else 1
        trades = rng.random() < 0.15
        return _Profile(
            e=e,
            headcount=headcount,
            wage_base=round(rng.uniform(4200, 9800), -1),
            manufacturing=rng.random() < 0.3,
            account_nos=[self._accounts.draw_digits(rng, "50", 8, suffix=str(i)) for i in range(n_accounts)],
            housing_fund=rng.random() < 0.6,
            hf_rate=rng.choice((0.05, 0.07, 0.08, 0.10, 0.12)),
            customs_code=self._customs_codes.draw(lambda: f"50{rng.randint(0, 99_999_999):08d}") if trades else None,
            trade_scale=rng.lognormvariate(math.log(120_000), 1.0),
            contact_name=fake.name(),
            contact_phone=make_mobile(rng),
            handler_name=fake.name(),
            address=f"重庆市{CHONGQING_DISTRICTS.get(district, '渝中区')}{fake.street_name()}{rng.randint(1, 399)}号",
            unit_name=f"重庆{fake.company_prefix()}{rng.choice(['科技', '实业', '贸易', '物流', '食品'])}有限公司",
        )

    @staticmethod
    def _distress(p: _Profile, months_before_end: int) -> float:
        """0 for healthy enterprises; for distressed ones it rises over the last six months to 1."""
        if not p.e.distressed:
            return 0.0
        return max(0.0, min(1.0, (6 - months_before_end) / 6))

    def seed(self, enterprises: Iterable[Enterprise], today: dt.date | None = None, chunk: int = 0,
             progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """Twelve months of history (the months before ``today``) for ``enterprises``; row counts per table.

        Works through ``chunk`` enterprises at a time (default ``bulk.SEED_CHUNK``: generate,
        ``LOAD DATA LOCAL INFILE``, commit), so memory holds one chunk's rows, not the whole
        history; the rows are those ``seed_rows`` makes for all of them at once (loaded in USCC
        order).
        ``progress(k)`` is called after each chunk of ``k`` enterprises.
        """
        today = today or dt.date.today()
        counts = dict.fromkeys(self.COLUMNS, 0)
        conns: dict[str, Any] = {}

        # Rows depend only on (seed, uscc) (but for an account number redrawn after a collision,
        # which depends on who drew it first), so enterprises go in USCC order: each chunk's rows then
        # follow the last chunk's in the (uscc, period) primary keys, and InnoDB appends instead
        # of touching random pages of tables far larger than its buffer pool.
        ordered = sorted(enterprises, key=lambda e: e.uscc)
        try:
            for dept in DEPARTMENTS:
                conns[dept] = self.connect(dept, local_infile=True)
            bulk = mysql_local_infile(conns[DEPARTMENTS[0]])

            def insert(conn, table: str, rows: list[tuple]) -> None:
                if bulk:
                    mysql_load(conn, table, self.COLUMNS[table], rows)
                else:  # the server refuses LOAD DATA LOCAL: multi-row INSERTs (slower)
                    self._upsert(conn, table, rows)

            seed_in_chunks("mysql", ordered, chunk,
                           lambda part: self.misbehave.seed_tables(TABLE_DEPT, self.COLUMNS, self.seed_rows(part, today)),
                           conns, TABLE_DEPT, insert, counts, progress)
        finally:
            for conn in conns.values():
                conn.close()
        return counts

    def seed_rows(self, enterprises: Iterable[Enterprise], today: dt.date) -> dict[str, list[tuple]]:
        """The rows ``seed`` inserts, per table (tuples in ``COLUMNS`` order); pure, no I/O."""
        end = month_add(period_of(today), -1)
        periods = [month_add(end, -i) for i in range(11, -1, -1)]
        self.last_period = end
        rows: dict[str, list[tuple]] = {t: [] for t in ("social_insurance", "housing_fund_contribution",
                                                         "electricity_usage", "customs_trade", "customs_credit")}
        for e in enterprises:
            p = self.profiles.get(e.uscc) or self._profile(e)
            self.profiles[e.uscc] = p
            rng = random.Random(f"{self._seed}:{e.uscc}:history")
            state = MonthState(p.headcount)
            for i, period in enumerate(periods):
                for table, row in self.month_rows(p, period, self._distress(p, len(periods) - 1 - i), state, rng):
                    rows[table].append(row)
            if p.customs_code:
                rows["customs_credit"].append(self._credit_row(p, today, rng))
        return rows

    def month_rows(self, p: _Profile, period: str, d: float, state: MonthState,
                   rng: random.Random) -> list[tuple[str, tuple]]:
        """One month of one enterprise, ``(table, row)`` each: social insurance, housing fund,
        electricity per account, customs trade. ``d`` is the distress level (0 healthy … 1);
        ``state`` carries headcount and arrears from month to month. Pure, no I/O."""
        out: list[tuple[str, tuple]] = []
        prev = state.headcount
        if d:
            state.headcount = max(1, int(state.headcount * (1 - 0.12 * d * rng.uniform(0.5, 1.5))))
        else:
            state.headcount = max(3, min(300, state.headcount + rng.choice((-1, 0, 0, 0, 1, 1))))
        si, state.si_arrears_months = self._si_row(p, period, state.headcount, prev, d, state.si_arrears_months, rng)
        out.append(("social_insurance", si))
        if p.housing_fund:
            out.append(("housing_fund_contribution", self._hf_row(p, period, state.headcount, d, rng)))
        for acc in p.account_nos:
            row, state.power_arrears = self._power_row(p, acc, period, state.headcount, d, state.power_arrears, rng)
            out.append(("electricity_usage", row))
        if p.customs_code:
            out.append(("customs_trade", self._trade_row(p, period, d, rng)))
        return out

    # --- rows --------------------------------------------------------------------------------------

    COLUMNS = {
        "social_insurance": ("uscc", "period", "unit_name", "insured_headcount", "new_insured", "terminated_insured",
                             "contribution_base", "payable_amount", "paid_amount", "arrears_amount", "arrears_months",
                             "payment_status", "paid_date", "contact_name", "contact_phone", "agency"),
        "housing_fund_contribution": ("uscc", "period", "unit_account_no", "depositor_count", "deposit_base_total",
                                      "contribution_rate", "payable_amount", "paid_amount", "arrears_amount", "status",
                                      "paid_date", "handler_name"),
        "electricity_usage": ("account_no", "period", "uscc", "tariff_category", "voltage_level", "usage_kwh", "peak_kwh",
                              "valley_kwh", "amount", "paid_amount", "arrears_amount", "payment_status",
                              "meter_read_date", "supply_address"),
        "customs_trade": ("uscc", "period", "customs_code", "import_value_usd", "export_value_usd", "import_declarations",
                          "export_declarations", "main_hs_code", "main_partner", "trade_mode"),
        "customs_credit": ("uscc", "customs_code", "credit_rating", "previous_rating", "rating_date", "valid_until",
                           "reason", "customs_office"),
    }

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _pay_day(period: str, day: int) -> dt.date:
        nxt = month_add(period, 1)
        return dt.date(int(nxt[:4]), int(nxt[5:]), day)

    def _si_row(self, p: _Profile, period, headcount, prev, d, arrears_months, rng) -> tuple[tuple, int]:
        base = round(headcount * p.wage_base, 2)
        payable = round(base * SI_RATE, 2)
        if d > 0.3:
            paid = round(payable * max(0.0, 1 - d * rng.uniform(0.6, 1.0)), 2)
        else:
            paid = payable
        arrears = round(payable - paid, 2)
        arrears_months = arrears_months + 1 if arrears > 0 else 0
        status = "paid" if arrears == 0 else ("arrears" if paid == 0 else "partial")
        return ((p.e.uscc, period, p.unit_name, headcount, max(0, headcount - prev), max(0, prev - headcount), base, payable,
                 paid, arrears, arrears_months, status, self._pay_day(period, rng.randint(5, 15)) if paid else None,
                 p.contact_name, p.contact_phone, rng.choice(SI_AGENCIES)), arrears_months)

    def _hf_row(self, p: _Profile, period, headcount, d, rng) -> tuple:
        depositors = max(1, int(headcount * 0.8))
        base = round(depositors * p.wage_base, 2)
        payable = round(base * p.hf_rate * 2, 2)  # unit and personal share
        paid = payable if d <= 0.5 else round(payable * rng.uniform(0, 0.5), 2)
        arrears = round(payable - paid, 2)
        status = "normal" if arrears == 0 else "arrears"
        return (p.e.uscc, period, f"HF{p.e.uscc[8:16]}", depositors, base, p.hf_rate, payable, paid, arrears, status,
                self._pay_day(period, rng.randint(5, 20)) if paid else None, p.handler_name)

    def _power_row(self, p: _Profile, account, period, headcount, d, arrears, rng) -> tuple[tuple, float]:
        per_head = 420 if p.manufacturing else 90
        usage = round(headcount * per_head * seasonal_power_factor(int(period[5:])) * rng.uniform(0.9, 1.1)
                      * (1 - 0.6 * d), 1)
        tariff = "large_industrial" if p.manufacturing and headcount > 80 else (
            "general_industrial" if p.manufacturing else "commercial")
        voltage = "10kV" if tariff == "large_industrial" else ("380V" if p.manufacturing or headcount > 20 else "220V")
        amount = round(usage * (0.58 if tariff == "large_industrial" else 0.68), 2)
        paid = amount if d < 0.4 else round(amount * rng.uniform(0.0, 0.6), 2)
        arrears = round(arrears + amount - paid, 2)
        status = "paid" if arrears == 0 else ("overdue" if paid == 0 else "partial")
        peak = round(usage * rng.uniform(0.3, 0.4), 1)
        valley = round(usage * rng.uniform(0.2, 0.3), 1)
        return ((account, period, p.e.uscc, tariff, voltage, usage, peak, valley, amount, paid, arrears, status,
                 self._pay_day(period, 1) - dt.timedelta(days=rng.randint(1, 4)), p.address), arrears)

    def _trade_row(self, p: _Profile, period, d, rng) -> tuple:
        scale = p.trade_scale * (1 - 0.7 * d) * rng.uniform(0.6, 1.4)
        exports = round(scale * rng.uniform(0.5, 1.0), 2)
        imports = round(scale * rng.uniform(0.1, 0.6), 2)
        return (p.e.uscc, period, p.customs_code, imports, exports, max(0, int(imports / 40_000)),
                max(1, int(exports / 30_000)), rng.choice(HS_HEADINGS), rng.choice(PARTNERS),
                rng.choices(("general", "processing", "cross_border_ecommerce"), weights=(7, 2, 1))[0])

    def _credit_row(self, p: _Profile, today: dt.date, rng) -> tuple:
        if p.e.distressed and rng.random() < 0.3:
            rating, reason = "dishonest", "拖欠应缴税款或罚没款项"
        else:
            rating = rng.choices(RATINGS[:3], weights=(8, 10, 82))[0]
            reason = {"advanced_certified": "通过高级认证", "general_certified": "通过一般认证"}.get(rating, "注册登记")
        rated = today - dt.timedelta(days=rng.randint(30, 900))
        valid = rated + dt.timedelta(days=3 * 365) if rating in ("advanced_certified", "general_certified") else None
        return (p.e.uscc, p.customs_code, rating, None, rated, valid, reason, rng.choice(CUSTOMS_OFFICES))

    def _upsert(self, conn, table: str, rows: list[tuple]) -> None:
        """``INSERT … ON DUPLICATE KEY UPDATE`` (PyMySQL sends one multi-row statement); the caller commits."""
        if not rows:
            return
        cols = self.COLUMNS[table]
        key_cols = {"electricity_usage": ("account_no", "period"), "customs_credit": ("uscc",)}.get(table, ("uscc", "period"))
        updates = ", ".join(f"{c} = VALUES({c})" for c in cols if c not in key_cols)
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
               f" ON DUPLICATE KEY UPDATE {updates}")
        with conn.cursor() as cur:
            cur.executemany(sql, rows)

    # --- live changes ----------------------------------------------------------------------------

    def step(self, n: int, today: dt.date | None = None) -> dict[str, int]:
        """Commit ``n`` realistic changes (one transaction each): new monthly rows, payments of
        arrears, corrections, distress getting worse, customs rating decisions. Counts by kind."""
        today = today or dt.date.today()
        if not self.profiles:
            raise RuntimeError("seed(enterprises) first: the simulator changes the enterprises it seeded")
        period = month_add(period_of(today), -1)
        counts: dict[str, int] = {}
        if len(self._sorted_usccs) != len(self.profiles):  # sorting a million codes per call costs a second
            self._sorted_usccs = sorted(self.profiles)
        usccs = self._sorted_usccs
        conns: dict[str, Any] = {}  # one connection per department for the whole step (a connect costs ~25 ms)

        def conn(dept: str):
            if dept not in conns:
                conns[dept] = self.connect(dept)
            return conns[dept]

        try:
            for _ in range(n):
                p = self.profiles[self.rng.choice(usccs)]
                kind = self._one_change(p, period, today, conn)
                counts[kind] = counts.get(kind, 0) + 1
        finally:
            for c in conns.values():
                c.close()
        return counts

    def _one_change(self, p: _Profile, period: str, today: dt.date, conn: Callable[[str], Any]) -> str:
        """One change of ``p``, committed per department database; ``conn(dept)`` gives the connection."""
        rng = self.rng
        roll = rng.random()
        d = 1.0 if p.e.distressed else 0.0

        def upsert(dept: str, table: str, row: tuple) -> None:
            written = self.misbehave.live_tuple(dept, table, self.COLUMNS[table], row, today)
            if written is not None:
                self._upsert(conn(dept), table, [written])
                conn(dept).commit()

        if roll < 0.4:  # the month's filings (upsert: a re-run replaces them)
            head = max(1, int(p.headcount * (0.8 if d else 1.0)))
            row, _ = self._si_row(p, period, head, p.headcount, d, 0, rng)
            upsert("hrss", "social_insurance", row)
            if p.housing_fund:
                upsert("housing_fund", "housing_fund_contribution", self._hf_row(p, period, head, d, rng))
            return "monthly_filing"
        if roll < 0.6:
            acc = rng.choice(p.account_nos)
            row, _ = self._power_row(p, acc, period, p.headcount, d, 0.0, rng)
            upsert("power", "electricity_usage", row)
            return "power_bill"
        if roll < 0.8:  # a correction: arrears paid (healthy) or grown (distressed)
            if not self.misbehave.writes("hrss", p.e.uscc):
                return "si_arrears_grown" if d else "si_arrears_paid"
            with conn("hrss").cursor() as cur:
                if d:
                    cur.execute("UPDATE social_insurance SET arrears_amount = arrears_amount + payable_amount * 0.2,"
                                " arrears_months = arrears_months + 1, payment_status = 'arrears'"
                                " WHERE uscc = %s ORDER BY period DESC LIMIT 1", (p.e.uscc,))
                else:
                    cur.execute("UPDATE social_insurance SET paid_amount = payable_amount, arrears_amount = 0,"
                                " arrears_months = 0, payment_status = 'paid', paid_date = %s"
                                " WHERE uscc = %s AND arrears_amount > 0", (today, p.e.uscc))
            conn("hrss").commit()
            return "si_arrears_grown" if d else "si_arrears_paid"
        if p.customs_code and roll < 0.9:
            new = "dishonest" if d else rng.choice(RATINGS[:3])
            if not self.misbehave.writes("customs", p.e.uscc):
                return "customs_rating"
            with conn("customs").cursor() as cur:
                cur.execute("UPDATE customs_credit SET previous_rating = credit_rating, credit_rating = %s,"
                            " rating_date = %s, reason = %s WHERE uscc = %s AND credit_rating <> %s",
                            (new, today, "信用等级调整", p.e.uscc, new))
            conn("customs").commit()
            return "customs_rating"
        if p.customs_code:
            upsert("customs", "customs_trade", self._trade_row(p, period, d, rng))
            return "customs_trade"
        return "noop"

    def rows(self, dept: str, sql: str, args: Any = None) -> list[tuple]:
        """Run a query against one department database (for tests and the demo)."""
        conn = self.connect(dept)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()
