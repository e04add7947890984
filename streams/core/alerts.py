"""The alert catalogue (DESIGN §7): what change between two versions of a profile is news.

``detect_changes(old, new, event)`` compares the profile before and after one merged event and
returns risk changes, each with a category, a severity, reason codes and the before/after
values that explain it (profile indicators, ratings or masked registration fields — no raw
personal data exists at this stage). Categories:

    registration      status changes, abnormal-operation listings
    judicial          new case as defendant, enforcement, dishonest-debtor listing
    penalty           environmental and work-safety penalties
    tax               arrears, credit-rating downgrades, late filings, falling revenue
    social_insurance  social-insurance and housing-fund arrears, falling headcount
    utilities         electricity/gas/water arrears, falling electricity use
    collateral        equity and IP pledges
    customs_ip        customs credit downgrades
    score_band        the scorecard level got worse with no other change explaining it
    positive          the reverse of the above: arrears cleared, case closed, listing removed,
                      rating up, status restored, certification, bid won, patent granted

Snapshot reads never raise changes (``streams.core.profile``); one event may raise several, and a
level move is attached to the first change it explains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Profile = Mapping[str, Any]
Found = tuple[str, str, list[str], dict[str, str], dict[str, str]]  # category, severity, reasons, before, after

STATUS_CHANGES = {
    # new status: (category, severity)
    "suspended": ("registration", "high"),
    "moved_out": ("registration", "medium"),
    "revoked": ("registration", "critical"),
    "cancelled": ("registration", "critical"),
}


@dataclass(frozen=True)
class CountRule:
    """An indicator that counts something bad (open cases, penalties): up is news, down is good news."""

    indicator: str
    category: str
    severity: str
    code: str
    relief_code: str | None = None  # the count went down: a positive change with this code

    def check(self, old: Profile, new: Profile) -> Found | None:
        before, after = _ind(old, self.indicator), _ind(new, self.indicator)
        if after > before:
            return self.category, self.severity, [self.code], {self.indicator: _fmt(before)}, {self.indicator: _fmt(after)}
        if after < before and self.relief_code:
            return "positive", "info", [self.relief_code], {self.indicator: _fmt(before)}, {self.indicator: _fmt(after)}
        return None


@dataclass(frozen=True)
class ThresholdRule:
    """An indicator crossing a threshold (arrears from 0 to owing, a trend falling below −30%)."""

    indicator: str
    category: str
    severity: str
    code: str
    above: float | None = None  # news when it rises above this
    below: float | None = None  # news when it falls below this
    relief_code: str | None = None  # it crossed back

    def _bad(self, value: float | None) -> bool:
        if value is None:
            return False
        return (self.above is not None and value > self.above) or (self.below is not None and value < self.below)

    def check(self, old: Profile, new: Profile) -> Found | None:
        before, after = (old.get("indicators") or {}).get(self.indicator), (new.get("indicators") or {}).get(self.indicator)
        if before is None and self.below is not None:
            return None  # a trend seen for the first time is no move
        was, now = self._bad(before), self._bad(after)
        if was == now:
            return None
        if now:
            return self.category, self.severity, [self.code], {self.indicator: _fmt(before)}, {self.indicator: _fmt(after)}
        if not self.relief_code:
            return None
        return "positive", "info", [self.relief_code], {self.indicator: _fmt(before)}, {self.indicator: _fmt(after)}


@dataclass(frozen=True)
class RatingRule:
    """A rating moving along its scale (best first): down is news by the new value's severity."""

    rating: str
    category: str
    scale: tuple[str, ...]
    severity: Mapping[str, str]  # new value → severity of a downgrade to it
    code: str  # prefix: <code>_DOWNGRADE / <code>_UPGRADE

    def check(self, old: Profile, new: Profile) -> Found | None:
        before, after = (old.get("ratings") or {}).get(self.rating), (new.get("ratings") or {}).get(self.rating)
        if before == after or after not in self.scale:
            return None
        values = {self.rating: before or ""}, {self.rating: after}
        if before not in self.scale or self.scale.index(after) > self.scale.index(before):
            severity = self.severity.get(after)
            if severity is None:
                return None  # a first rating that is not bad is no news
            return self.category, severity, [f"{self.code}_DOWNGRADE", f"{self.code}_{after.upper()}"], *values
        return "positive", "info", [f"{self.code}_UPGRADE", f"{self.code}_{after.upper()}"], *values


def _ind(profile: Profile, name: str) -> float:
    return (profile.get("indicators") or {}).get(name) or 0.0


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


RULES: tuple[CountRule | ThresholdRule | RatingRule, ...] = (
    CountRule("court.dishonest.open", "judicial", "critical", "DISHONEST_DEBTOR_LISTED", "DISHONEST_DEBTOR_REMOVED"),
    CountRule("court.enforcement.open", "judicial", "high", "ENFORCEMENT_FILED", "ENFORCEMENT_CLOSED"),
    CountRule("court.litigation_defendant.open", "judicial", "medium", "LITIGATION_AS_DEFENDANT", "LITIGATION_CLOSED"),
    CountRule("penalty.environment.total", "penalty", "high", "ENVIRONMENTAL_PENALTY"),
    CountRule("penalty.safety.total", "penalty", "high", "SAFETY_PENALTY"),
    CountRule("tax.arrears.open", "tax", "high", "TAX_ARREARS", "TAX_ARREARS_CLEARED"),
    CountRule("tax.late_filing.total", "tax", "low", "TAX_LATE_FILING"),
    RatingRule("tax.credit_rating", "tax", ("A", "B", "M", "C", "D"), {"C": "high", "D": "critical"}, "TAX_RATING"),
    ThresholdRule("tax.revenue.trend_6m", "tax", "medium", "TAX_REVENUE_FALLING", below=-0.3),
    ThresholdRule("hrss.arrears.last", "social_insurance", "high", "SOCIAL_INSURANCE_ARREARS", above=0,
                  relief_code="SOCIAL_INSURANCE_ARREARS_CLEARED"),
    ThresholdRule("hrss.headcount.trend_6m", "social_insurance", "medium", "HEADCOUNT_FALLING", below=-0.2),
    ThresholdRule("housing_fund.arrears.last", "social_insurance", "medium", "HOUSING_FUND_ARREARS", above=0,
                  relief_code="HOUSING_FUND_ARREARS_CLEARED"),
    ThresholdRule("power.arrears.last", "utilities", "medium", "POWER_ARREARS", above=0, relief_code="POWER_ARREARS_CLEARED"),
    ThresholdRule("power.kwh.yoy", "utilities", "medium", "POWER_USE_FALLING", below=-0.3),
    # a gas or water bill is "outstanding" from the day it is issued: news only when the bill
    # before is unpaid too (as the scorecard's factors)
    ThresholdRule("gas.arrears.months", "utilities", "low", "GAS_ARREARS", above=1),
    ThresholdRule("water.arrears.months", "utilities", "low", "WATER_ARREARS", above=1),
    CountRule("market.equity_pledge.open", "collateral", "medium", "EQUITY_PLEDGED", "EQUITY_PLEDGE_RELEASED"),
    CountRule("ip.pledge.open", "collateral", "medium", "IP_PLEDGED", "IP_PLEDGE_RELEASED"),
    RatingRule("customs.credit_rating", "customs_ip", ("advanced_certified", "general_certified", "registered", "dishonest"),
               {"dishonest": "high"}, "CUSTOMS_RATING"),
)

POSITIVE_COUNTS = (
    ("procurement.award.total", "BID_WON"),
    ("ip.patent_granted.total", "PATENT_GRANTED"),
    ("ip.trademark_registered.total", "TRADEMARK_REGISTERED"),
)


def _status(old: Profile, new: Profile) -> Found | None:
    before, after = old.get("status"), new.get("status")
    if after == before or before is None:
        return None
    if after in STATUS_CHANGES:
        category, severity = STATUS_CHANGES[after]
        return category, severity, [f"STATUS_{after.upper()}"], {"status": before}, {"status": after}
    if after == "active":
        return "positive", "info", ["STATUS_RESTORED"], {"status": before}, {"status": "active"}
    return None


def _abnormal(old: Profile, new: Profile, event: Mapping[str, Any]) -> Found | None:
    """A new listing in 经营异常名录 (with its reason), or the last open one removed."""
    before, after = set(old.get("abnormal_open_ids") or ()), set(new.get("abnormal_open_ids") or ())
    values = {"abnormal_open": str(len(before))}, {"abnormal_open": str(len(after))}
    if after - before:
        reason = (event["attributes"].get("reason_code") or "unknown").upper()
        return "registration", "high", ["ABNORMAL_OPERATION_LISTED", f"ABNORMAL_{reason}"], *values
    if before - after:
        return "positive", "info", ["ABNORMAL_OPERATION_REMOVED"], *values
    return None


def _positive(old: Profile, new: Profile) -> list[Found]:
    out: list[Found] = []
    for indicator, code in POSITIVE_COUNTS:
        before, after = _ind(old, indicator), _ind(new, indicator)
        if after > before:
            out.append(("positive", "info", [code], {indicator: _fmt(before)}, {indicator: _fmt(after)}))
    tech_before, tech_after = (old.get("ratings") or {}).get("science.high_tech"), (new.get("ratings") or {}).get("science.high_tech")
    if tech_after == "valid" and tech_before != "valid":
        out.append(("positive", "info", ["HIGH_TECH_CERTIFIED"], {"science.high_tech": tech_before or ""},
                    {"science.high_tech": "valid"}))
    elif tech_before == "valid" and tech_after in ("expired", "revoked"):
        out.append(("customs_ip", "low", [f"HIGH_TECH_{tech_after.upper()}"], {"science.high_tech": "valid"},
                    {"science.high_tech": tech_after}))
    return out


def detect_changes(old: Profile | None, new: Profile, event: Mapping[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """Risk changes between two versions of a profile (``old`` None: the enterprise is new)."""
    base = old if old is not None else {}  # an enterprise first seen through, say, an enforcement: that is news
    found: list[Found] = [hit for hit in (_status(base, new), _abnormal(base, new, event)) if hit]
    for rule in RULES:
        hit = rule.check(base, new)
        if hit:
            found.append(hit)
    found.extend(_positive(base, new))
    old_level = old["risk_level"] if old else None
    if old_level is not None and new["risk_level"] != old_level:
        move = f"LEVEL_{old_level}_TO_{new['risk_level']}"
        if found:  # the band move is explained by the first change
            found[0][2].append(move)
            found[0][3]["risk_level"], found[0][4]["risk_level"] = old_level, new["risk_level"]
        else:
            worse = new["risk_level"] > old_level  # 'A' < 'E'
            found.append(("score_band" if worse else "positive", "medium" if worse else "info",
                          [move, *new["reason_codes"]], {"risk_level": old_level}, {"risk_level": new["risk_level"]}))
    return [
        {
            "change_id": f"{event['event_id']}/{reasons[0]}",
            "uscc": new["uscc"],
            "category": category,
            "severity": severity,
            "reason_codes": reasons,
            "before": before,
            "after": after,
            "score_before": old["risk_score"] if old else new["risk_score"],
            "score_after": new["risk_score"],
            "level_before": old_level or new["risk_level"],
            "level_after": new["risk_level"],
            "source_dataset": f"{event['dept']}.{event['dataset']}",
            "source_position": event["position"],
            "source_seq": event["seq"],
            "event_ts_ms": event["event_ts_ms"],
            "detected_ts_ms": now_ms,
        }
        for category, severity, reasons, before, after in found
    ]
