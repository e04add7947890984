"""税务局 / 法院 / 生态环境局: the PostgreSQL CDC departments of DESIGN §5 — schema, seed, live changes.

One database per department (``tax``, ``court``, ``environment``) on the department PostgreSQL;
tables mirror ``streams/core/departments/{tax,court,environment}.toml``.

Row generation is pure and deterministic (``RowGenerator``: no I/O, everything drawn from
random generators seeded from ``seed``); ``PostgresDepartmentsSimulator`` only applies what it
produces, with batched inserts.

Dynamics:

- tax: a VAT return every month per enterprise (due on the 15th of the next month, a few
  late), a corporate-income-tax return per quarter, a yearly credit rating (published in April;
  mostly A/B, some M/C/D), rare arrears.
- court: ~2 % of enterprises per year in a civil case (plaintiff or defendant), cases move
  filed → in_trial → closed.
- environment: rare penalties, far more likely for manufacturing and construction.
- enterprises with ``distressed`` set walk the distress path: falling revenue and late,
  under-paid returns → tax arrears → sued by a lender → judgment and enforcement (the legal
  representative as co-debtor) → listed as dishonest debtor (失信被执行人), rating moved to D.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extras
from faker import Faker
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from connectors.simulator.bulk import BackgroundLoader, chunks, pg_copy
from connectors.simulator.identities import (
    CHONGQING_DISTRICTS,
    make_id_number,
    make_mobile,
    pick_district,
    pick_industry,
)
from connectors.simulator.market import Enterprise
from connectors.simulator.misbehave import NONE, Misbehaviour
from connectors.simulator.sampling import PositionSubset

DEPARTMENTS = ("tax", "court", "environment")

DDL = {
    "tax": """
CREATE TABLE IF NOT EXISTS tax_filing (
    id               bigserial PRIMARY KEY,
    uscc             char(18) NOT NULL,
    period           char(7) NOT NULL,
    tax_type         text NOT NULL,
    taxpayer_type    text,
    taxable_revenue  numeric(16, 2),
    tax_payable      numeric(16, 2),
    tax_paid         numeric(16, 2),
    filing_date      date NOT NULL,
    due_date         date,
    late             boolean NOT NULL DEFAULT false,
    filer_name       text,
    filer_phone      text,
    tax_authority    text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (uscc, period, tax_type)
);
CREATE TABLE IF NOT EXISTS tax_credit_rating (
    id             bigserial PRIMARY KEY,
    uscc           char(18) NOT NULL,
    rating_year    integer NOT NULL,
    rating         char(1) NOT NULL,
    score          numeric(5, 1),
    rated_date     date NOT NULL,
    tax_authority  text,
    reason         text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (uscc, rating_year)
);
CREATE TABLE IF NOT EXISTS tax_arrears (
    id                   bigserial PRIMARY KEY,
    uscc                 char(18) NOT NULL,
    tax_type             text NOT NULL,
    amount               numeric(16, 2) NOT NULL,
    late_fee             numeric(16, 2),
    since_date           date NOT NULL,
    cleared_date         date,
    status               text NOT NULL DEFAULT 'outstanding',
    legal_rep_name       text,
    legal_rep_id_number  char(18),
    tax_authority        text,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (uscc, tax_type, since_date)
);
ALTER TABLE tax_filing REPLICA IDENTITY FULL;
ALTER TABLE tax_credit_rating REPLICA IDENTITY FULL;
ALTER TABLE tax_arrears REPLICA IDENTITY FULL;
""",
    "court": """
CREATE TABLE IF NOT EXISTS litigation_case (
    id                 bigserial PRIMARY KEY,
    case_no            text NOT NULL,
    uscc               char(18) NOT NULL,
    role               text NOT NULL,
    cause              text,
    amount             numeric(16, 2),
    court              text,
    counterparty_type  text,
    counterparty_name  text,
    filed_date         date NOT NULL,
    closed_date        date,
    status             text NOT NULL DEFAULT 'filed',
    outcome            text,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (case_no, uscc)
);
CREATE TABLE IF NOT EXISTS enforcement (
    id                         bigserial PRIMARY KEY,
    case_no                    text NOT NULL UNIQUE,
    uscc                       char(18) NOT NULL,
    basis_case_no              text,
    amount                     numeric(16, 2) NOT NULL,
    unperformed_amount         numeric(16, 2),
    court                      text,
    filed_date                 date NOT NULL,
    closed_date                date,
    status                     text NOT NULL DEFAULT 'open',
    executed_person_name       text,
    executed_person_id_number  char(18),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS dishonest_debtor (
    id                   bigserial PRIMARY KEY,
    case_no              text NOT NULL UNIQUE,
    uscc                 char(18) NOT NULL,
    court                text,
    legal_rep_name       text,
    legal_rep_id_number  char(18),
    obligation           text,
    performance          text,
    circumstance         text,
    listed_date          date NOT NULL,
    removed_date         date,
    removal_reason       text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS litigation_case_uscc ON litigation_case (uscc);
CREATE INDEX IF NOT EXISTS enforcement_uscc ON enforcement (uscc);
CREATE INDEX IF NOT EXISTS dishonest_debtor_uscc ON dishonest_debtor (uscc);
ALTER TABLE litigation_case REPLICA IDENTITY FULL;
ALTER TABLE enforcement REPLICA IDENTITY FULL;
ALTER TABLE dishonest_debtor REPLICA IDENTITY FULL;
""",
    "environment": """
CREATE TABLE IF NOT EXISTS environmental_penalty (
    id              bigserial PRIMARY KEY,
    decision_no     text NOT NULL UNIQUE,
    uscc            char(18) NOT NULL,
    violation_type  text NOT NULL,
    legal_basis     text,
    amount          numeric(16, 2) NOT NULL,
    decision_date   date NOT NULL,
    status          text NOT NULL DEFAULT 'issued',
    executed_date   date,
    legal_rep_name  text,
    authority       text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS environmental_penalty_uscc ON environmental_penalty (uscc);
ALTER TABLE environmental_penalty REPLICA IDENTITY FULL;
""",
}

TABLE_DEPT = {
    "tax_filing": "tax", "tax_credit_rating": "tax", "tax_arrears": "tax",
    "litigation_case": "court", "enforcement": "court", "dishonest_debtor": "court",
    "environmental_penalty": "environment",
}

# --- pure helpers: periods, courts, document numbers ---------------------------------------------


def month_start(d: dt.date) -> dt.date:
    return d.replace(day=1)


def add_months(d: dt.date, k: int) -> dt.date:
    """First day of the month ``k`` months after ``d``'s month."""
    m = d.year * 12 + d.month - 1 + k
    return dt.date(m // 12, m % 12 + 1, 1)


@functools.lru_cache(maxsize=1024)  # called for every monthly row
def period_of(d: dt.date) -> str:
    """Tax period ``'YYYY-MM'``."""
    return f"{d:%Y-%m}"


@functools.lru_cache(maxsize=1024)  # called for every monthly row
def filing_due_date(period_month: dt.date) -> dt.date:
    """Returns are due on the 15th of the month after the period (申报期限)."""
    return add_months(period_month, 1).replace(day=15)


def district_short(district: str) -> str:
    """``渝中区`` → ``渝中``, ``石柱土家族自治县`` → ``石柱`` (the form used in document numbers)."""
    name = CHONGQING_DISTRICTS[district]
    for suffix in ("土家族苗族自治县", "苗族土家族自治县", "土家族自治县", "区", "县"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def court_code(district: str) -> str:
    """Code of the basic people's court of a Chongqing district in case numbers: ``500103`` → ``渝0103``."""
    return "渝" + district[2:6]


def court_name(district: str) -> str:
    return f"重庆市{CHONGQING_DISTRICTS[district]}人民法院"


CASE_KINDS = ("民初", "民终", "执", "执恢")
CASE_NO_RE = re.compile(r"^（(\d{4})）渝(\d{4})(民初|民终|执恢|执)([1-9]\d*)号$")


def case_number(year: int, district: str, kind: str, seq: int) -> str:
    """Case number in the 2016 format (法〔2015〕271号): ``（2026）渝0103民初1234号``."""
    if kind not in CASE_KINDS:
        raise ValueError(f"case kind {kind!r} is not one of {CASE_KINDS}")
    if seq < 1:
        raise ValueError("case sequence numbers start at 1")
    return f"（{year}）{court_code(district)}{kind}{seq}号"


PENALTY_NO_RE = re.compile(r"^渝（[^（）]+）环罚〔(\d{4})〕([1-9]\d*)号$")


def penalty_decision_no(year: int, district: str, seq: int) -> str:
    """Environmental penalty decision number: ``渝（九龙坡）环罚〔2026〕25号``."""
    return f"渝（{district_short(district)}）环罚〔{year}〕{seq}号"


@functools.lru_cache(maxsize=1024)  # called for every monthly row
def tax_authority(district: str) -> str:
    return f"国家税务总局重庆市{CHONGQING_DISTRICTS[district]}税务局"


def environment_authority(district: str) -> str:
    return f"重庆市{CHONGQING_DISTRICTS[district]}生态环境局"


# --- realistic vocabularies ----------------------------------------------------------------------

CAUSES = {  # 案由 → (weight, typical amount range in CNY)
    "买卖合同纠纷": (30, (20_000, 800_000)),
    "劳动争议": (15, (5_000, 120_000)),
    "租赁合同纠纷": (10, (10_000, 300_000)),
    "建设工程施工合同纠纷": (8, (100_000, 3_000_000)),
    "金融借款合同纠纷": (8, (200_000, 5_000_000)),
    "民间借贷纠纷": (8, (50_000, 1_000_000)),
    "服务合同纠纷": (8, (10_000, 200_000)),
    "运输合同纠纷": (5, (10_000, 150_000)),
    "侵害商标权纠纷": (4, (20_000, 500_000)),
    "承揽合同纠纷": (4, (20_000, 400_000)),
}
PERSON_CAUSES = ("劳动争议", "民间借贷纠纷", "服务合同纠纷")
LENDERS = ("重庆农村商业银行股份有限公司", "重庆银行股份有限公司", "中国工商银行股份有限公司重庆市分行",
           "中国建设银行股份有限公司重庆市分行", "重庆三峡银行股份有限公司", "招商银行股份有限公司重庆分行")
COUNTERPARTY_FIRMS = ("科技", "实业", "贸易", "建材", "物流", "机械制造", "商贸", "电子")

VIOLATIONS = {  # type → (legal basis, amount range CNY)
    "air_emission_exceeded": ("《中华人民共和国大气污染防治法》第九十九条", (100_000, 1_000_000)),
    "wastewater_discharge": ("《中华人民共和国水污染防治法》第八十三条", (100_000, 1_000_000)),
    "solid_waste": ("《中华人民共和国固体废物污染环境防治法》第一百零二条", (10_000, 200_000)),
    "hazardous_waste": ("《中华人民共和国固体废物污染环境防治法》第一百一十二条", (100_000, 1_000_000)),
    "noise": ("《中华人民共和国噪声污染防治法》第八十七条", (5_000, 100_000)),
    "eia_missing": ("《中华人民共和国环境影响评价法》第三十一条", (50_000, 500_000)),
    "monitoring_falsified": ("《中华人民共和国大气污染防治法》第一百零一条", (100_000, 1_000_000)),
}
# GB/T 4754 门类 → (penalty likelihood factor, violation weights)
INDUSTRY_ENV_RISK = {
    "C": (3.0, {"wastewater_discharge": 4, "air_emission_exceeded": 4, "hazardous_waste": 3, "solid_waste": 2,
                "eia_missing": 2, "monitoring_falsified": 1, "noise": 1}),
    "E": (2.0, {"noise": 4, "air_emission_exceeded": 3, "eia_missing": 2, "solid_waste": 2}),
    "H": (0.8, {"air_emission_exceeded": 3, "noise": 3, "wastewater_discharge": 2}),
    "G": (0.8, {"air_emission_exceeded": 2, "noise": 2}),
    "F": (0.3, {"solid_waste": 2, "noise": 1}),
}
_LOW_ENV_RISK = (0.1, {"noise": 2, "solid_waste": 1})

DISHONEST_CIRCUMSTANCES = ("有履行能力而拒不履行生效法律文书确定义务", "违反财产报告制度", "违反限制消费令",
                           "以虚假诉讼、虚假仲裁或者以隐匿、转移财产等方法规避执行")
RATING_SCORE = {"A": (90, 100), "B": (70, 89.9), "M": (70, 89.9), "C": (40, 69.9), "D": (0, 39.9)}


@dataclass(frozen=True)
class Rates:
    """Yearly probabilities per enterprise (the defaults are the realistic ones; tests raise them)."""

    litigation_per_year: float = 0.02
    environment_penalty_per_year: float = 0.01  # times the industry factor (manufacturing 3×)
    arrears_per_year: float = 0.01
    late_filing: float = 0.03


@dataclass
class Profile:
    """What the simulator knows about one enterprise, drawn once from ``(seed, uscc)``."""

    uscc: str
    district: str
    industry: str
    distressed: bool
    monthly_revenue: float
    taxpayer_type: str
    rep_name: str
    rep_id_number: str
    filer_name: str
    filer_phone: str
    stage: int = 0  # distress path: 0 declining, 1 arrears, 2 sued, 3 enforcement, 4 dishonest debtor
    last_period: dt.date | None = None  # first day of the last month a VAT return was filed for
    decline: int = 0  # months of falling revenue so far


@dataclass(frozen=True)
class Insert:
    table: str
    row: dict[str, Any]


@dataclass(frozen=True)
class Update:
    table: str
    where: dict[str, Any]
    values: dict[str, Any]


Op = Insert | Update


def _money(x: float) -> float:
    return round(x, 2)


class RowGenerator:
    """Deterministic rows and changes of the three departments; no I/O."""

    def __init__(self, seed: int, rates: Rates | None = None) -> None:
        self.seed = seed
        self.rates = rates or Rates()
        self.rng = random.Random(f"postgres_depts:{seed}")
        self.fake = Faker("zh_CN")
        self.fake.seed_instance(f"postgres_depts:{seed}")
        self._person_fake = Faker("zh_CN")
        self.profiles: dict[str, Profile] = {}
        self._case_seq: dict[tuple[int, str, str], int] = {}
        self._penalty_seq: dict[tuple[int, str], int] = {}
        self.pending_cases: list[dict] = []  # litigation rows not yet closed
        self.open_enforcements: list[dict] = []
        self.outstanding_arrears: list[dict] = []
        self._healthy_arrears: list[dict] = []  # those of healthy enterprises, in the same order
        self.issued_penalties: list[dict] = []
        self.case_of: dict[str, dict] = {}  # distress path: uscc → its lender's case / enforcement
        self.rated: set[tuple[str, int]] = set()
        self._index: _StepIndex | None = None  # built by the first step_ops after a seed

    # --- identities -----------------------------------------------------------------------------

    def profile(self, e: Enterprise) -> Profile:
        p = self.profiles.get(e.uscc)
        if p is not None:
            return p
        rng = random.Random(f"{self.seed}:{e.uscc}")
        fake = self._person_fake
        fake.seed_instance(f"{self.seed}:{e.uscc}")  # the same people for the same enterprise and seed
        district = e.district or e.uscc[2:8]
        revenue = rng.lognormvariate(math.log(300_000), 1.0)  # CNY per month, median 30万
        p = Profile(
            uscc=e.uscc, district=district, industry=pick_industry(rng), distressed=e.distressed,
            monthly_revenue=revenue, taxpayer_type="general" if revenue * 12 > 5_000_000 else "small_scale",
            rep_name=fake.name(), rep_id_number=make_id_number(rng, rng.choice([district, district, pick_district(rng)])),
            filer_name=fake.name(), filer_phone=make_mobile(rng),
        )
        self.profiles[e.uscc] = p
        return p

    def _next_case_no(self, year: int, district: str, kind: str) -> str:
        key = (year, district, kind)
        # Courts number cases from 1 each year; start somewhere plausible for the rest of the docket.
        seq = self._case_seq.get(key) or self.rng.randint(80, 1500)
        self._case_seq[key] = seq + self.rng.randint(1, 9)
        return case_number(year, district, kind, seq)

    def _next_penalty_no(self, year: int, district: str) -> str:
        key = (year, district)
        seq = self._penalty_seq.get(key) or self.rng.randint(1, 40)
        self._penalty_seq[key] = seq + self.rng.randint(1, 3)
        return penalty_decision_no(year, district, seq)

    # --- rows -----------------------------------------------------------------------------------

    def revenue(self, p: Profile, month: dt.date) -> float:
        season = 1.0 + 0.08 * math.sin((month.month - 3) / 12 * 2 * math.pi)
        if month.month == 2:
            season *= 0.75  # Spring Festival
        decline = 0.9 ** p.decline if p.distressed else 1.0
        return max(0.0, p.monthly_revenue * season * decline * self.rng.lognormvariate(0, 0.12))

    def filing_rows(self, p: Profile, month: dt.date, filed_on: dt.date | None = None) -> list[dict]:
        """The returns for ``month``: VAT every month, corporate income tax after each quarter."""
        rng = self.rng
        due = filing_due_date(month)
        if filed_on is None:
            late_p = self.rates.late_filing + (0.08 * p.decline if p.distressed else 0.0)
            filed_on = due + dt.timedelta(days=rng.randint(1, 40)) if rng.random() < late_p else \
                add_months(month, 1) + dt.timedelta(days=rng.randint(0, 14))
        revenue = self.revenue(p, month)
        if p.taxpayer_type == "general":
            vat = revenue * rng.uniform(0.02, 0.045)  # 13 % on value added ≈ 2–4.5 % of revenue
        else:
            vat = 0.0 if revenue <= 100_000 else revenue * 0.01  # small-scale: 1 %, exempt up to 10万/month
        under_paid = p.distressed and p.stage >= 1
        rows = [self._filing(p, month, "vat", revenue, vat, under_paid, filed_on, due)]
        if month.month in (3, 6, 9, 12):
            quarter = revenue * 3
            margin = rng.uniform(-0.05, 0.04) if p.distressed else rng.uniform(0.0, 0.12)
            cit = max(0.0, quarter * margin) * 0.05  # 小型微利企业 effective 5 %
            rows.append(self._filing(p, month, "cit", quarter, cit, under_paid, filed_on, due))
        return rows

    def _filing(self, p, month, tax_type, revenue, payable, under_paid, filed_on, due) -> dict:
        paid = payable * self.rng.uniform(0.0, 0.5) if under_paid else payable
        return {
            "uscc": p.uscc, "period": period_of(month), "tax_type": tax_type, "taxpayer_type": p.taxpayer_type,
            "taxable_revenue": _money(revenue), "tax_payable": _money(payable), "tax_paid": _money(paid),
            "filing_date": filed_on, "due_date": due, "late": filed_on > due,
            "filer_name": p.filer_name, "filer_phone": p.filer_phone, "tax_authority": tax_authority(p.district),
        }

    def rating_row(self, p: Profile, year: int, rating: str | None = None) -> dict:
        rng = self.rng
        if rating is None:
            if p.distressed and p.stage >= 4:
                rating = "D"
            elif p.distressed and p.stage >= 1:
                rating = "C"
            else:
                rating = rng.choices("ABMCD", weights=(30, 48, 12, 7, 3))[0]
        lo, hi = RATING_SCORE[rating]
        return {
            "uscc": p.uscc, "rating_year": year, "rating": rating, "score": round(rng.uniform(lo, hi), 1),
            "rated_date": dt.date(year + 1, 4, rng.randint(15, 28)), "tax_authority": "国家税务总局重庆市税务局",
            "reason": "存在欠税且逾期未缴纳" if rating == "D" else None,
        }

    def arrears_row(self, p: Profile, since: dt.date, amount: float | None = None) -> dict:
        amount = amount if amount is not None else self.rng.uniform(5_000, 60_000) * (
            1 + p.monthly_revenue / 1_000_000)
        return {
            "uscc": p.uscc, "tax_type": self.rng.choices(["vat", "cit", "urban_maintenance"], weights=(6, 2, 1))[0],
            "amount": _money(amount), "late_fee": _money(amount * 0.0005 * self.rng.randint(10, 90)),
            "since_date": since, "cleared_date": None, "status": "outstanding",
            "legal_rep_name": p.rep_name, "legal_rep_id_number": p.rep_id_number, "tax_authority": tax_authority(p.district),
        }

    def litigation_row(self, p: Profile, filed: dt.date, role: str | None = None, cause: str | None = None) -> dict:
        rng = self.rng
        cause = cause or rng.choices(list(CAUSES), weights=[w for w, _ in CAUSES.values()])[0]
        role = role or rng.choices(["plaintiff", "defendant", "third_party"], weights=(5, 5, 1))[0]
        lo, hi = CAUSES[cause][1]
        if cause == "金融借款合同纠纷":
            cp_type, cp_name = "enterprise", rng.choice(LENDERS)
        elif cause in PERSON_CAUSES and rng.random() < 0.7:
            cp_type, cp_name = "person", self.fake.name()
        else:
            cp_type = "enterprise"
            cp_name = f"重庆{self.fake.company_prefix()}{rng.choice(COUNTERPARTY_FIRMS)}有限公司"
        return {
            "case_no": self._next_case_no(filed.year, p.district, "民初"), "uscc": p.uscc, "role": role, "cause": cause,
            "amount": _money(math.exp(rng.uniform(math.log(lo), math.log(hi)))), "court": court_name(p.district),
            "counterparty_type": cp_type, "counterparty_name": cp_name, "filed_date": filed, "closed_date": None,
            "status": "filed", "outcome": None,
        }

    def enforcement_row(self, p: Profile, case: dict, filed: dt.date, with_person: bool) -> dict:
        return {
            "case_no": self._next_case_no(filed.year, p.district, "执"), "uscc": p.uscc, "basis_case_no": case["case_no"],
            "amount": case["amount"], "unperformed_amount": case["amount"], "court": court_name(p.district),
            "filed_date": filed, "closed_date": None, "status": "open",
            "executed_person_name": p.rep_name if with_person else None,
            "executed_person_id_number": p.rep_id_number if with_person else None,
        }

    def dishonest_row(self, p: Profile, enforcement: dict, listed: dt.date) -> dict:
        performance = self.rng.choices(["not_performed", "partially_performed"], weights=(4, 1))[0]
        return {
            "case_no": enforcement["case_no"], "uscc": p.uscc, "court": enforcement["court"],
            "legal_rep_name": p.rep_name, "legal_rep_id_number": p.rep_id_number,
            "obligation": f"支付{enforcement['basis_case_no']}判决确定的款项{enforcement['amount']:.2f}元及利息",
            "performance": performance, "circumstance": self.rng.choice(DISHONEST_CIRCUMSTANCES),
            "listed_date": listed, "removed_date": None, "removal_reason": None,
        }

    def penalty_row(self, p: Profile, decided: dt.date) -> dict:
        rng = self.rng
        _, weights = INDUSTRY_ENV_RISK.get(p.industry[0], _LOW_ENV_RISK)
        violation = rng.choices(list(weights), weights=list(weights.values()))[0]
        basis, (lo, hi) = VIOLATIONS[violation]
        return {
            "decision_no": self._next_penalty_no(decided.year, p.district), "uscc": p.uscc, "violation_type": violation,
            "legal_basis": basis, "amount": float(round(rng.uniform(lo, hi), -3)), "decision_date": decided,
            "status": "issued", "executed_date": None, "legal_rep_name": p.rep_name,
            "authority": environment_authority(p.district),
        }

    def penalty_probability(self, p: Profile) -> float:
        factor, _ = INDUSTRY_ENV_RISK.get(p.industry[0], _LOW_ENV_RISK)
        return self.rates.environment_penalty_per_year * factor

    # --- seed -----------------------------------------------------------------------------------

    def seed_rows(self, enterprises: Iterable[Enterprise], today: dt.date) -> dict[str, list[dict]]:
        """Twelve months of history up to the month before ``today``, per table (no ids)."""
        rows: dict[str, list[dict]] = {t: [] for t in TABLE_DEPT}
        self._index = None  # profiles change: step_ops rebuilds its index
        first = add_months(month_start(today), -12)
        rng = self.rng
        for e in enterprises:
            p = self.profile(e)
            target = rng.choices([0, 1, 2, 3, 4], weights=(1, 2, 2, 2, 2))[0] if p.distressed else 0
            stage_month = {s: 3 + 2 * s for s in range(1, 5)}  # arrears month 5, sued 7, enforcement 9, listed 11
            for k in range(12):
                month = add_months(first, k)
                p.stage = max((s for s, m in stage_month.items() if s <= target and m <= k), default=0)
                if p.distressed:
                    p.decline = k
                if p.distressed and p.stage >= 3 and rng.random() < 0.6:
                    continue  # stops filing
                filed = self.filing_rows(p, month)
                if filed[0]["filing_date"] < today:
                    rows["tax_filing"].extend(filed)
                    p.last_period = month
            p.stage = target
            for year in (today.year - 2, today.year - 1):
                if dt.date(year + 1, 4, 28) < today:
                    rows["tax_credit_rating"].append(self.rating_row(p, year))
                    self.rated.add((p.uscc, year))
            if not p.distressed:
                self._seed_healthy_events(p, first, today, rows)
                continue
            when = {s: add_months(first, m) + dt.timedelta(days=rng.randint(0, 27)) for s, m in stage_month.items()}
            if target >= 1:
                arr = self.arrears_row(p, when[1].replace(day=16))
                rows["tax_arrears"].append(arr)
                self._owe(arr)
            if target >= 2:
                case = self.litigation_row(p, when[2], role="defendant", cause="金融借款合同纠纷")
                if target >= 3:
                    case.update(status="closed", outcome="judgment", closed_date=when[3])
                else:
                    case.update(status="in_trial")
                rows["litigation_case"].append(case)
                self.case_of[p.uscc] = case
            if target >= 3:
                enf = self.enforcement_row(p, case, when[3] + dt.timedelta(days=1), with_person=rng.random() < 0.8)
                rows["enforcement"].append(enf)
                self.case_of[p.uscc] = enf
            if target >= 4:
                rows["dishonest_debtor"].append(self.dishonest_row(p, enf, when[4]))
        return rows

    def _seed_healthy_events(self, p: Profile, first: dt.date, today: dt.date, rows: dict[str, list[dict]]) -> None:
        rng = self.rng
        span = (today - first).days

        def some_day() -> dt.date:
            return first + dt.timedelta(days=rng.randint(0, span - 1))

        if rng.random() < self.rates.litigation_per_year:
            case = self.litigation_row(p, some_day())
            if rng.random() < 0.6:
                closed = min(case["filed_date"] + dt.timedelta(days=rng.randint(30, 180)), today - dt.timedelta(days=1))
                case.update(status="closed", closed_date=max(closed, case["filed_date"]),
                            outcome=rng.choices(["judgment", "mediation", "withdrawal", "dismissal"], weights=(4, 4, 2, 1))[0])
            else:
                case["status"] = rng.choice(["filed", "in_trial"])
                self.pending_cases.append(case)
            rows["litigation_case"].append(case)
        if rng.random() < self.penalty_probability(p):
            pen = self.penalty_row(p, some_day())
            if rng.random() < 0.7:
                pen.update(status="executed", executed_date=min(pen["decision_date"] + dt.timedelta(days=rng.randint(10, 60)), today))
            else:
                self.issued_penalties.append(pen)
            rows["environmental_penalty"].append(pen)
        if rng.random() < self.rates.arrears_per_year:
            arr = self.arrears_row(p, some_day(), amount=rng.uniform(2_000, 30_000))
            rows["tax_arrears"].append(arr)
            self._owe(arr)

    # --- live changes ---------------------------------------------------------------------------

    def step_ops(self, today: dt.date) -> tuple[str, list[Op]]:
        """One realistic change (one transaction): ``(kind, operations)``; kind ``noop`` has none.

        The candidates of each kind of change (distressed on their path, not yet filed for last
        month, not yet rated for last year) are kept in a ``_StepIndex`` instead of being
        filtered from every profile per change; the draws are those of the filtered lists.
        Profiles are changed only through this generator (``seed_rows``, ``step_ops``,
        ``advance_distress``), which keep the index in step.
        """
        rng = self.rng
        if not self.profiles:
            return "noop", []
        ix = self._step_index(today)
        assert ix.due is not None and ix.year is not None  # _step_index sets both for today
        profiles = ix.profiles
        roll = rng.random()
        if len(ix.on_path) and roll < 0.15:
            return self.advance_distress(profiles[ix.on_path.pick(rng)], today)
        if roll < 0.65:
            due = ix.due
            if len(ix.waiting):
                p = profiles[ix.waiting.pick(rng)]
                month = add_months(p.last_period, 1) if p.last_period else due
                p.last_period = month
                if p.distressed:
                    p.decline += 1
                self._reindex(p)
                return "filing", [Insert("tax_filing", r) for r in self.filing_rows(p, month, filed_on=today)]
        if today.month >= 4 and roll < 0.70:
            year = ix.year
            if len(ix.unrated):
                p = profiles[ix.unrated.pick(rng)]
                self.rated.add((p.uscc, year))
                self._reindex(p)
                return "rating", [Insert("tax_credit_rating", {**self.rating_row(p, year), "rated_date": today})]
        if roll < 0.74:
            case = self.litigation_row(rng.choice(profiles), today)
            self.pending_cases.append(case)
            return "case_filed", [Insert("litigation_case", case)]
        if roll < 0.82 and self.pending_cases:
            case = rng.choice(self.pending_cases)
            key = {"case_no": case["case_no"], "uscc": case["uscc"]}
            if case["status"] == "filed":
                case["status"] = "in_trial"
                return "case_in_trial", [Update("litigation_case", key, {"status": "in_trial"})]
            self.pending_cases.remove(case)
            outcome = rng.choices(["judgment", "mediation", "withdrawal", "dismissal"], weights=(4, 4, 2, 1))[0]
            return "case_closed", [Update("litigation_case", key,
                                          {"status": "closed", "closed_date": today, "outcome": outcome})]
        if roll < 0.84:  # rare, and mostly manufacturing and construction
            p = rng.choices(profiles, cum_weights=ix.penalty_weights)[0]  # the draw of weights=[…]
            pen = self.penalty_row(p, today)
            self.issued_penalties.append(pen)
            return "environmental_penalty", [Insert("environmental_penalty", pen)]
        if roll < 0.88 and self.issued_penalties:
            pen = self.issued_penalties.pop(rng.randrange(len(self.issued_penalties)))
            return "penalty_executed", [Update("environmental_penalty", {"decision_no": pen["decision_no"]},
                                               {"status": "executed", "executed_date": today})]
        healthy_arrears = self._healthy_arrears  # = [a for a in outstanding_arrears if a's enterprise is healthy]
        if roll < 0.92 and healthy_arrears:
            arr = rng.choice(healthy_arrears)
            _remove_identical(self.outstanding_arrears, arr)
            _remove_identical(healthy_arrears, arr)
            return "arrears_cleared", [Update("tax_arrears", _arrears_key(arr),
                                              {"status": "cleared", "cleared_date": today, "amount": 0.0})]
        p = rng.choice(profiles)
        if not p.distressed and rng.random() < self.rates.arrears_per_year * 10:
            arr = self.arrears_row(p, today, amount=rng.uniform(2_000, 30_000))
            self._owe(arr)
            return "arrears", [Insert("tax_arrears", arr)]
        return "noop", []

    def advance_distress(self, p: Profile, today: dt.date) -> tuple[str, list[Op]]:
        """Move one distressed enterprise a step: arrears → sued → enforcement → dishonest debtor."""
        change = self._advance(p, today)
        self._reindex(p)
        return change

    def _advance(self, p: Profile, today: dt.date) -> tuple[str, list[Op]]:
        p.stage += 1
        if p.stage == 1:
            arr = self.arrears_row(p, today)
            self._owe(arr)
            return "arrears", [Insert("tax_arrears", arr)]
        if p.stage == 2:
            lawsuit = self.litigation_row(p, today, role="defendant", cause="金融借款合同纠纷")
            self.case_of[p.uscc] = lawsuit
            return "sued", [Insert("litigation_case", lawsuit)]
        if p.stage == 3:
            closed = {"status": "closed", "closed_date": today, "outcome": "judgment"}
            case = self.case_of.get(p.uscc)
            ops: list[Op]
            if case is None or "basis_case_no" in case:  # no lender's case yet: judged without one seen
                case = {**self.litigation_row(p, today - dt.timedelta(days=120), role="defendant",
                                              cause="金融借款合同纠纷"), **closed}
                ops = [Insert("litigation_case", case)]
            else:
                case.update(closed)
                ops = [Update("litigation_case", {"case_no": case["case_no"], "uscc": p.uscc}, closed)]
            enforcement = self.enforcement_row(p, case, today, with_person=self.rng.random() < 0.8)
            self.case_of[p.uscc] = enforcement
            return "enforcement", [*ops, Insert("enforcement", enforcement)]
        enf = self.case_of.get(p.uscc)
        if enf is None or "basis_case_no" not in enf:
            p.stage = 2
            return self._advance(p, today)
        ops = [Insert("dishonest_debtor", self.dishonest_row(p, enf, today))]
        if (p.uscc, today.year - 1) in self.rated:
            ops.append(Update("tax_credit_rating", {"uscc": p.uscc, "rating_year": today.year - 1},
                              {"rating": "D", "score": 0.0, "reason": "被列入失信被执行人名单，纳税信用动态调整为D级"}))
        return "dishonest_debtor", ops


    def _owe(self, arr: dict) -> None:
        """Record outstanding arrears (and, for a healthy enterprise, as one that may be cleared)."""
        self.outstanding_arrears.append(arr)
        if not self.profiles[arr["uscc"]].distressed:
            self._healthy_arrears.append(arr)

    # --- the index of candidates -------------------------------------------------------------------

    def _step_index(self, today: dt.date) -> _StepIndex:
        """The index for ``today``: rebuilt after a seed; ``waiting`` each new month, ``unrated`` each new year."""
        ix = self._index
        if ix is None or len(ix.profiles) != len(self.profiles):
            profiles = list(self.profiles.values())
            weights = itertools.accumulate(self.penalty_probability(p) for p in profiles)
            ix = self._index = _StepIndex(profiles, {p.uscc: i for i, p in enumerate(profiles)},
                                          PositionSubset(_on_path(p) for p in profiles), list(weights))
        due = add_months(month_start(today), -1)
        if ix.due != due:
            ix.due, ix.waiting = due, PositionSubset(_waiting(p, due) for p in ix.profiles)
        if ix.year != today.year - 1:
            ix.year = year = today.year - 1
            ix.unrated = PositionSubset((p.uscc, year) not in self.rated for p in ix.profiles)
        return ix

    def _reindex(self, p: Profile) -> None:
        """Bring ``p``'s memberships up to date after a change to it (if an index exists)."""
        ix = self._index
        if ix is None or (i := ix.position.get(p.uscc)) is None:
            return
        ix.on_path.set(i, _on_path(p))
        if ix.due is not None:
            ix.waiting.set(i, _waiting(p, ix.due))
        if ix.year is not None:
            ix.unrated.set(i, (p.uscc, ix.year) not in self.rated)


def _remove_identical(items: list, item: object) -> None:
    """Remove ``item`` itself (by identity: comparing arrears dicts by value is slower and could
    hit an equal twin)."""
    for i, x in enumerate(items):
        if x is item:
            del items[i]
            return
    raise ValueError("not in the list")


def _on_path(p: Profile) -> bool:
    return p.distressed and p.stage < 4


def _waiting(p: Profile, due: dt.date) -> bool:
    """No return filed yet for the month ``due``, and still filing (not past judgment)."""
    return (p.last_period is None or p.last_period < due) and not (p.distressed and p.stage >= 3)


@dataclass
class _StepIndex:
    """``RowGenerator.step_ops``' candidates, positions in ``profiles`` (the profiles in seed order)."""

    profiles: list[Profile]
    position: dict[str, int]  # uscc → position
    on_path: PositionSubset  # distressed, not yet a dishonest debtor
    penalty_weights: list[float]  # cumulative penalty probabilities, for rng.choices(cum_weights=…)
    due: dt.date | None = None  # the month whose returns ``waiting`` lacks
    waiting: PositionSubset = field(default_factory=lambda: PositionSubset(()))
    year: int | None = None  # the year ``unrated`` has no rating for
    unrated: PositionSubset = field(default_factory=lambda: PositionSubset(()))


def _arrears_key(arr: dict) -> dict:
    return {"uscc": arr["uscc"], "tax_type": arr["tax_type"], "since_date": arr["since_date"]}


# --- the databases ----------------------------------------------------------------------------------


class PostgresDepartmentsSimulator:
    """Creates, seeds and changes the ``tax``, ``court`` and ``environment`` databases.

    ``dsn_template`` is formatted with ``db=<dept>``: the default
    ``postgresql://yurong:yurong@127.0.0.1:15432/{db}`` gives databases ``tax``, ``court``,
    ``environment``; a test can use ``.../{db}_t<hex>`` for databases of its own.
    """

    def __init__(self, dsn_template: str, seed: int = 2019, rates: Rates | None = None,
                 departments: Iterable[str] = DEPARTMENTS, databases: dict[str, str] | None = None) -> None:
        self.dsn_template = dsn_template
        self.databases = databases or {}  # dept → database name; default: the department's name
        self.departments = tuple(departments)
        unknown = [d for d in self.departments if d not in DDL]
        if unknown:
            raise ValueError(f"unknown PostgreSQL departments {unknown} (known: {', '.join(DEPARTMENTS)})")
        self.rows = RowGenerator(seed, rates)
        self.misbehave: Misbehaviour = NONE  # the city's department misbehaviours (connectors/simulator/misbehave.py)

    def dsn(self, dept: str) -> str:
        return self.dsn_template.format(db=self.databases.get(dept, dept))

    def database(self, dept: str) -> str:
        return parse_dsn(self.dsn(dept))["dbname"]

    def create(self) -> dict[str, str]:
        """Create each department database if missing, then its tables; return dept → DSN."""
        for dept in self.departments:
            self._create_database(dept)
            conn = psycopg2.connect(self.dsn(dept))
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(DDL[dept])
            finally:
                conn.close()
        return {d: self.dsn(d) for d in self.departments}

    def _create_database(self, dept: str) -> None:
        name = self.database(dept)
        last: Exception | None = None
        for admin_db in ("postgres", "market"):
            try:
                conn = psycopg2.connect(make_dsn(self.dsn(dept), dbname=admin_db), connect_timeout=5)
            except psycopg2.OperationalError as exc:
                last = exc
                continue
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        try:
                            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                        except psycopg2.errors.DuplicateDatabase:
                            pass  # created concurrently
            finally:
                conn.close()
            return
        assert last is not None  # the loop returned, or each admin database refused the connection
        raise last

    def _connections(self) -> dict[str, Any]:
        conns = {}
        try:
            for dept in self.departments:
                conns[dept] = psycopg2.connect(self.dsn(dept))
        except BaseException:
            for c in conns.values():
                c.close()
            raise
        return conns

    def seed(self, enterprises: Iterable[Enterprise], today: dt.date | None = None, chunk: int = 0,
             progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """Insert twelve months of history for ``enterprises``; return rows inserted per table.

        Works through ``chunk`` enterprises at a time (default ``bulk.SEED_CHUNK``: generate,
        ``COPY``, commit), so memory holds one chunk's rows, not the whole history; the rows are those
        ``RowGenerator.seed_rows`` makes for all of them at once. ``progress(k)`` is called after
        each chunk of ``k`` enterprises.
        """
        today = today or dt.date.today()
        conns = self._connections()
        counts = {t: 0 for t, dept in TABLE_DEPT.items() if dept in conns}

        def load(tables: list[tuple[str, list[str], list[tuple]]], k: int) -> None:
            for table, cols, rows in tables:
                with conns[TABLE_DEPT[table]].cursor() as cur:
                    pg_copy(cur, table, cols, rows)
            for conn in conns.values():
                conn.commit()
            if progress:
                progress(k)

        try:
            with BackgroundLoader("postgres") as loader:  # generate the next chunk while this one loads
                for part in chunks(enterprises, chunk):
                    tables = []
                    for table, table_rows in self.rows.seed_rows(part, today).items():
                        table_rows = self.misbehave.seed_rows(TABLE_DEPT[table], table, table_rows)
                        if TABLE_DEPT[table] not in conns or not table_rows:
                            continue
                        cols = list(table_rows[0])
                        tables.append((table, cols, [tuple(r[c] for c in cols) for r in table_rows]))
                        counts[table] += len(table_rows)
                    loader.submit(functools.partial(load, tables, len(part)))
        finally:
            for c in conns.values():
                c.close()
        return counts

    def step(self, n: int, today: dt.date | None = None) -> dict[str, int]:
        """Commit ``n`` realistic changes, one transaction each; return counts by kind."""
        today = today or dt.date.today()
        conns = self._connections()
        counts: dict[str, int] = {}
        try:
            for _ in range(n):
                kind, ops = self.rows.step_ops(today)
                touched = set()
                for op in ops:
                    dept = TABLE_DEPT[op.table]
                    if dept not in conns:
                        continue
                    if isinstance(op, Insert):  # what a misbehaving department writes instead, if anything
                        row = self.misbehave.live_row(dept, op.table, op.row, today)
                        if row is None:
                            continue
                        op = Insert(op.table, row)
                    elif not self.misbehave.writes(dept, op.where.get("uscc")):
                        continue
                    touched.add(dept)
                    with conns[dept].cursor() as cur:
                        if isinstance(op, Insert):
                            _insert_many(cur, op.table, [op.row])
                        else:
                            _update(cur, op)
                for dept in touched:
                    conns[dept].commit()
                counts[kind] = counts.get(kind, 0) + 1
        finally:
            for c in conns.values():
                c.close()
        return counts


def _insert_many(cur, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    query = sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT DO NOTHING").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))
    psycopg2.extras.execute_values(cur, query.as_string(cur), [tuple(r[c] for c in cols) for r in rows])


def _update(cur, op: Update) -> None:
    assignments = sql.SQL(", ").join(
        [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in op.values] + [sql.SQL("updated_at = now()")])
    cond = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in op.where)
    cur.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(sql.Identifier(op.table), assignments, cond),
                [*op.values.values(), *op.where.values()])
