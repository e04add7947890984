"""Merge one masked ``EnterpriseEvent`` of any catalogue dataset into a profile's facts.

A profile keeps what lenders need from every department in four maps, filled here and turned
into indicators by ``streams.core.indicators``:

``monthly``     measure → {``YYYY-MM`` or ``YYYY-MM|<sub-key>``: value}
                monthly flows and levels (revenue, headcount, kWh, m³, trade, arrears); a sub-key
                separates rows of one month (tax types, meter accounts) so an update replaces
                exactly its row's value. The newest ``KEEP_MONTHS`` months are kept.
``open_items``  kind → {item: amount}   what is open now: cases as defendant, enforcement,
                dishonest-debtor listings, tax arrears, valid equity and IP pledges.
``dated``       kind → {item: {date, amount}}   one-off dated facts: penalties, late filings,
                bid awards, patents granted, trademarks registered.
``ratings``     name → value   the latest rating or certificate state.

Items are keyed by the event's row pseudonym (``streams.core.ingest.event_id``): stable per source
row, meaningless outside. A delete removes the row's fact; an update replaces it. The merge is
pure and works on the profile dict in place (``merge_event`` hands it a copy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.core.masking import row_token

Profile = dict[str, Any]
Event = Mapping[str, Any]
Attrs = Mapping[str, str | None]

KEEP_MONTHS = 25  # 12-month trends and year-over-year need two years and the current month


def number(a: Attrs, name: str | None) -> float:
    """A numeric attribute (text in the event) as float; missing or empty is 0."""
    if not name:
        return 0.0
    v = a.get(name)
    try:
        return float(v) if v not in (None, "") else 0.0
    except ValueError:
        return 0.0


def item_of(event: Event) -> str:
    """The source row's pseudonym, the last part of the event id (without its key id: ``row_token``)."""
    return row_token(event["event_id"].rpartition("#")[2])


def _attrs(event: Event) -> Attrs:
    """The row as it is now; for a delete, as it was."""
    return event["attributes"] if event["op"] != "d" else (event.get("before") or event["attributes"])


# --- monthly series --------------------------------------------------------------------------

@dataclass(frozen=True)
class Monthly:
    """Rows that report one month each: ``period`` holds ``YYYY-MM`` (or a date in it)."""

    period: str
    measures: Mapping[str, str]  # measure name → attribute
    sub_key: str | None = None  # attribute telling rows of one month apart (tax type, account)
    where: Callable[[Attrs], bool] | None = None  # only rows passing this contribute

    def merge(self, p: Profile, event: Event) -> None:
        a = _attrs(event)
        if self.where is not None and not self.where(a):
            return
        period = (a.get(self.period) or "")[:7]
        if len(period) != 7:
            return
        slot = f"{period}|{a.get(self.sub_key) or ''}" if self.sub_key else period
        before = event.get("before")
        old_slot = None
        if before and self.sub_key is not None and event["op"] == "u":
            old_period = (before.get(self.period) or "")[:7]
            old_slot = f"{old_period}|{before.get(self.sub_key) or ''}"
        for measure, attr in self.measures.items():
            series = dict(p["monthly"].get(measure, {}))
            if old_slot and old_slot != slot:
                series.pop(old_slot, None)  # the row moved to another month or sub-key
            if event["op"] == "d":
                series.pop(slot, None)
            else:
                series[slot] = number(a, attr)
            p["monthly"][measure] = _newest(series)


def _newest(series: dict[str, float]) -> dict[str, float]:
    months = sorted({k[:7] for k in series}, reverse=True)[:KEEP_MONTHS]
    if len(months) < KEEP_MONTHS:
        return series
    oldest = months[-1]
    return {k: v for k, v in series.items() if k[:7] >= oldest}


# --- open items ------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpenItem:
    """A row that is open (counts, with an amount) until its state says otherwise."""

    kind: str
    is_open: Callable[[Attrs], bool]
    amount: str | None = None

    def merge(self, p: Profile, event: Event) -> None:
        items = dict(p["open_items"].get(self.kind, {}))
        a = _attrs(event)
        if event["op"] != "d" and self.is_open(a):
            items[item_of(event)] = number(a, self.amount)
        else:
            items.pop(item_of(event), None)
        p["open_items"][self.kind] = items


# --- dated facts -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Dated:
    """A row that counts as a fact of its date while ``counts`` holds (a penalty not revoked).
    ``group`` names an attribute whose value makes rows one fact (the tax types of one return:
    one late return, not one per tax type)."""

    kind: str
    date: str
    counts: Callable[[Attrs], bool]
    amount: str | None = None
    group: str | None = None

    def merge(self, p: Profile, event: Event) -> None:
        items = dict(p["dated"].get(self.kind, {}))
        a = _attrs(event)
        day = (a.get(self.date) or "")[:10]
        item = f"{self.group}:{a.get(self.group)}" if self.group else item_of(event)
        if event["op"] != "d" and self.counts(a) and len(day) == 10:
            items[item] = {"date": day, "amount": number(a, self.amount)}
        elif not self.group:  # a grouped fact stays while any row of it did count (rows are not tracked)
            items.pop(item, None)
        p["dated"][self.kind] = items


# --- ratings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rating:
    """The latest value of a rating; ``order`` (an attribute such as the rating year) keeps an
    older row's late update from replacing a newer rating."""

    name: str
    value: Callable[[Attrs], str | None]
    order: str | None = None

    def merge(self, p: Profile, event: Event) -> None:
        a = _attrs(event)
        order_key = f"{self.name}#order"
        if event["op"] == "d":
            if not self.order or p["ratings"].get(order_key) == (a.get(self.order) or ""):
                p["ratings"].pop(self.name, None)
                p["ratings"].pop(order_key, None)
            return
        if self.order:
            order = a.get(self.order) or ""
            if order < p["ratings"].get(order_key, ""):
                return
            p["ratings"][order_key] = order
        value = self.value(a)
        if value is None:
            p["ratings"].pop(self.name, None)
        else:
            p["ratings"][self.name] = value


def _field(name: str) -> Callable[[Attrs], str | None]:
    return lambda a: a.get(name)


def _high_tech(a: Attrs) -> str | None:
    return a.get("status")


# Every catalogue dataset but the market registration and abnormal listings (``streams.core.profile``
# merges those into the profile's own fields). A test checks that every dataset has a merge.
DATASET_FACTS: dict[str, tuple[Monthly | OpenItem | Dated | Rating, ...]] = {
    "market.equity_pledge": (OpenItem("market.equity_pledge", lambda a: a.get("status") == "valid", "pledged_amount"),),
    "tax.tax_filing": (
        # revenue from the monthly VAT return only: the quarterly income-tax return restates the
        # quarter's revenue, and summing both would make every quarter-end month look 4× larger
        Monthly("period", {"tax.revenue": "taxable_revenue"}, where=lambda a: a.get("tax_type") == "vat"),
        Monthly("period", {"tax.paid": "tax_paid"}, sub_key="tax_type"),
        Dated("tax.late_filing", "filing_date", lambda a: a.get("late") == "true", "tax_payable", group="period"),
    ),
    "tax.tax_credit_rating": (Rating("tax.credit_rating", _field("rating"), order="rating_year"),),
    "tax.tax_arrears": (OpenItem("tax.arrears", lambda a: a.get("status") == "outstanding", "amount"),),
    "court.litigation_case": (
        OpenItem("court.litigation_defendant", lambda a: a.get("role") == "defendant" and a.get("status") != "closed", "amount"),
    ),
    "court.enforcement": (OpenItem("court.enforcement", lambda a: a.get("status") == "open", "unperformed_amount"),),
    "court.dishonest_debtor": (OpenItem("court.dishonest", lambda a: not a.get("removed_date")),),
    "environment.environmental_penalty": (
        Dated("penalty.environment", "decision_date", lambda a: a.get("status") != "revoked", "amount"),
    ),
    "hrss.social_insurance": (
        Monthly("period", {"hrss.headcount": "insured_headcount", "hrss.arrears": "arrears_amount"}),
    ),
    "housing_fund.housing_fund_contribution": (
        Monthly("period", {"housing_fund.depositors": "depositor_count", "housing_fund.arrears": "arrears_amount"}),
    ),
    "power.electricity_usage": (
        Monthly("period", {"power.kwh": "usage_kwh", "power.arrears": "arrears_amount"}, sub_key="account_no"),
    ),
    "customs.customs_trade": (
        Monthly("period", {"customs.import_usd": "import_value_usd", "customs.export_usd": "export_value_usd"}),
    ),
    "customs.customs_credit": (Rating("customs.credit_rating", _field("credit_rating")),),
    "gas.gas_usage": (Monthly("billing_month", {"gas.m3": "volume_m3", "gas.arrears": "arrears"}, sub_key="account_no"),),
    "procurement.bid_award": (Dated("procurement.award", "award_date", lambda a: a.get("status") != "terminated", "award_amount"),),
    "emergency.safety_penalty": (
        Dated("penalty.safety", "decision_date", lambda a: a.get("status") not in ("revoked", "under_review"), "amount"),
    ),
    "water.water_usage": (Monthly("billing_month", {"water.m3": "volume_m3", "water.arrears": "arrears"}, sub_key="account_no"),),
    "ip.patent": (Dated("ip.patent_granted", "grant_date", lambda a: a.get("legal_status") == "granted"),),
    "ip.trademark": (Dated("ip.trademark_registered", "registration_date", lambda a: a.get("status") == "registered"),),
    "ip.ip_pledge": (OpenItem("ip.pledge", lambda a: a.get("status") == "active", "amount"),),
    "science.high_tech_certification": (Rating("science.high_tech", _high_tech, order="issue_date"),),
}


def merge_facts(p: Profile, event: Event) -> tuple[str, ...]:
    """Merge ``event`` into the facts of ``p`` (in place); return the monthly measures it touched."""
    touched: tuple[str, ...] = ()
    for spec in DATASET_FACTS.get(f"{event['dept']}.{event['dataset']}", ()):
        spec.merge(p, event)
        if isinstance(spec, Monthly):
            touched += tuple(spec.measures)
    return touched
