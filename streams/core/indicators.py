"""Derived indicators of a profile: numbers a scorecard, an alert rule or an analyst can use.

Computed from the facts (``streams.core.facts``) after every merge, into ``profile["indicators"]``
(name → float). Names are ``<fact>.<indicator>``:

Monthly series (sub-keys summed per month; ``M`` = the newest month the department reported):
  ``<series>.last``       value of month M
  ``<series>.trend_3m``   mean of the 3 months up to M ÷ mean of the 3 before − 1 (also ``_6m``,
                          ``_12m``); months without a report are left out of the means; absent
                          when either window is empty or the earlier mean is 0
  ``<series>.yoy``        M ÷ the same month a year before − 1 (absent without that month)
  Trends and YoY compare like for like: only sub-keys reporting in both periods count.
  ``<series>.months``     consecutive months up to M with a value > 0 (arrears series only)
Open items:   ``<kind>.open`` (count), ``<kind>.amount`` (sum)
Dated facts:  ``<kind>.total``, ``<kind>.12m`` (count in the 365 days up to the as-of day) and
              ``<kind>.amount_12m``
Registration: ``market.abnormal.open`` (open listings of 经营异常名录)

The as-of day is the day of the profile's newest source event, so indicators depend on the data
alone (a replay computes the same values).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

ARREARS_SERIES = ("hrss.arrears", "housing_fund.arrears", "power.arrears", "gas.arrears", "water.arrears")
TREND_WINDOWS = (3, 6, 12)


@lru_cache(maxsize=4096)
def _month_index(period: str) -> int:
    """Months since year 0 of ``YYYY-MM`` (or ``YYYY-MM|sub-key``)."""
    return int(period[:4]) * 12 + int(period[5:7]) - 1


def _by_sub_key(series: Mapping[str, float]) -> dict[str, dict[int, float]]:
    """Sub-key (``""`` without one) → month index → value."""
    out: dict[str, dict[int, float]] = {}
    for slot, value in series.items():
        try:
            m = _month_index(slot)
        except ValueError:
            continue
        out.setdefault(slot[8:], {})[m] = value
    return out


def monthly_totals(series: Mapping[str, float]) -> dict[int, float]:
    """Month index → value summed over sub-keys."""
    out: dict[int, float] = {}
    for months in _by_sub_key(series).values():
        for m, value in months.items():
            out[m] = out.get(m, 0.0) + value
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _change(recent: float | None, prior: float | None) -> float | None:
    """``recent / prior − 1``; None without a meaningful base (nothing before, or about zero)."""
    if recent is None or prior is None or prior < 1e-6:
        return None
    return round(recent / prior - 1, 6)


def series_indicators(name: str, series: Mapping[str, float]) -> dict[str, float]:
    """Indicators of one monthly series. Trends and year-over-year compare like for like: only
    sub-keys (meters, accounts) that reported in both periods compared count, so a meter read
    later than the others, or one added during the year, is no change in use."""
    subs = _by_sub_key(series)
    if not subs:
        return {}
    latest = max(max(months) for months in subs.values())
    out = {f"{name}.last": sum(months.get(latest, 0.0) for months in subs.values())}
    for w in TREND_WINDOWS:
        recent = prior = 0.0
        compared = False
        for months in subs.values():
            r = _mean([months[m] for m in range(latest - w + 1, latest + 1) if m in months])
            p = _mean([months[m] for m in range(latest - 2 * w + 1, latest - w + 1) if m in months])
            if r is not None and p is not None:
                recent, prior, compared = recent + r, prior + p, True
        change = _change(recent, prior) if compared else None
        if change is not None:
            out[f"{name}.trend_{w}m"] = change
    both = [months for months in subs.values() if latest in months and latest - 12 in months]
    if both:
        change = _change(sum(m[latest] for m in both), sum(m[latest - 12] for m in both))
        if change is not None:
            out[f"{name}.yoy"] = change
    if name in ARREARS_SERIES:
        totals = monthly_totals(series)
        run, m = 0, latest
        while totals.get(m, 0) > 0:
            run, m = run + 1, m - 1
        out[f"{name}.months"] = float(run)
    return out


def as_of_day(profile: Mapping[str, Any]) -> dt.date:
    ts = profile.get("last_event_ts_ms") or 0
    return dt.datetime.fromtimestamp(ts / 1000, dt.UTC).date()


def derive(profile: Mapping[str, Any], changed_series: Iterable[str] | None = None) -> dict[str, float]:
    """Every indicator of ``profile`` (see the module doc).

    With ``changed_series`` (the monthly measures the last event touched) only those series are
    recomputed; the others' indicators are taken from ``profile["indicators"]`` — a series'
    indicators depend on that series alone. Open items and dated facts are always recomputed
    (cheap, and the 12-month windows move with the as-of day)."""
    monthly = profile.get("monthly", {})
    out: dict[str, float] = {}
    if changed_series is None:
        redo = set(monthly)
    else:
        redo = set(changed_series)
        out.update((k, v) for k, v in (profile.get("indicators") or {}).items()
                   if k.rpartition(".")[0] in monthly and k.rpartition(".")[0] not in redo)
    for name in redo:
        if name in monthly:
            out.update(series_indicators(name, monthly[name]))
    for kind, items in profile.get("open_items", {}).items():
        out[f"{kind}.open"] = float(len(items))
        out[f"{kind}.amount"] = round(sum(items.values()), 2)
    since = (as_of_day(profile) - dt.timedelta(days=365)).isoformat()
    for kind, items in profile.get("dated", {}).items():
        recent = [i for i in items.values() if i["date"] > since]
        out[f"{kind}.total"] = float(len(items))
        out[f"{kind}.12m"] = float(len(recent))
        out[f"{kind}.amount_12m"] = round(sum(i["amount"] for i in recent), 2)
    out["market.abnormal.open"] = float(len(profile.get("abnormal_open_ids") or ()))
    return out
