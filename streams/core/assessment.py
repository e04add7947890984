"""数据汇集考核: how well each department shares its data, per dataset and day, as a score 0–100.

The indicators are GB/T 36344-2018's dimensions, measured on what the platform received
(``sinks/assessment.py`` gathers them from ClickHouse; docs/assessment.md explains them for the
bureau's staff):

- 时效性 timeliness — commit → platform lag (p95), the business date → commit delay (median), and
  silence: hours since the dataset's last record (a snapshot delivers the whole state) against its
  cadence;
- 完整性 completeness — the share of a record's fields that are filled, and for the monthly series
  the share of active registered enterprises the dataset covers;
- 规范性 validity — the share of records that pass validation (dead letters by reason);
- 一致性/准确性 consistency — records naming an enterprise the market register does not know, about
  an enterprise after it was deregistered, or dated in the future (records naming a legal
  representative other than the registered one are counted, not yet scored);
- 可访问性 availability — the department connector's heartbeats (up-time) and its lag.

Every sub-score is 100 at its target and 0 at its limit (``assessment.toml``), a dimension is its
worst measured sub-score (a failing check is not averaged away by passing ones), a dataset's score
the weighted mean of its dimensions, a department's the mean of its datasets'. Validity and the
consistency checks look at the day's changes (every record on a day that only brought a
snapshot). Reasons name each sub-score below 100, worst first.
This module is pure: no I/O beyond reading its configuration file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).with_name("assessment.toml")
DIMENSIONS = ("timeliness", "completeness", "validity", "consistency", "availability")
DIMENSION_ZH = {"timeliness": "时效性", "completeness": "完整性", "validity": "规范性",
                "consistency": "一致性", "availability": "可访问性"}
GRADE_VALUE = {"A": 5, "B": 4, "C": 3, "D": 2, "E": 1}


@dataclass(frozen=True)
class AssessmentConfig:
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: Path | None = None) -> AssessmentConfig:
        with open(path or DEFAULT_CONFIG, "rb") as f:
            raw = tomllib.load(f)
        missing = [d for d in DIMENSIONS if d not in raw.get("weights", {})]
        if missing:
            raise ValueError(f"{path or DEFAULT_CONFIG}: [weights] lacks {', '.join(missing)}")
        return cls(raw)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.raw[section]

    def cadence_h(self, dept: str, dataset: str) -> float:
        c = self.raw["cadence"]
        return float(c.get("datasets", {}).get(f"{dept}.{dataset}", c["default_h"]))

    def covers_active(self) -> list[str]:
        return list(self.raw["completeness"].get("covers_active", []))

    def grade(self, score: float) -> str:
        for g, bound in sorted(self.raw["grades"].items(), key=lambda kv: -kv[1]):
            if score >= bound:
                return g
        return "E"


@dataclass
class DatasetMeasures:
    """What one department's dataset delivered on one day (None: not measurable that day)."""

    dept: str
    dataset: str
    events: int = 0
    live_events: int = 0
    lag_p50_s: float | None = None
    lag_p95_s: float | None = None
    delay_p50_days: float | None = None
    silence_h: float | None = None  # hours since its last record (a snapshot's too); None: nothing ever
    dept_silence_h: float | None = None  # hours since the department's newest record of any dataset
    dept_cadence_h: float | None = None  # the shortest cadence of the department's datasets
    fields_filled: float | None = None
    coverage: float | None = None
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # "<kind>:<field>" → count
    unknown_uscc: int = 0
    after_deregistration: int = 0
    future_dates: int = 0
    conflicts: int = 0  # records naming a legal representative other than the register's


@dataclass
class DeptMeasures:
    dept: str
    heartbeats: int = 0
    expected_heartbeats: int = 0
    max_lag: int | None = None


@dataclass
class Assessment:
    day: str
    dept: str
    dataset: str  # "" for the department as a whole
    indicators: dict[str, float]
    dimensions: dict[str, float]
    score: float
    grade: str
    reasons: list[str]


def linear(value: float, target: float, limit: float) -> float:
    """100 at ``target``, 0 at ``limit``, linear between (either direction), clamped."""
    if target == limit:
        return 100.0 if value == target else 0.0
    return max(0.0, min(100.0, 100.0 * (value - limit) / (target - limit)))


def _hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min" if h >= 1 / 60 else f"{h * 3600:.0f} s"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def assess_dataset(m: DatasetMeasures, availability: tuple[float | None, list[str]], cfg: AssessmentConfig,
                   day: str) -> Assessment:
    """Score one dataset on one day; ``availability`` is its department's (score, reasons)."""
    subs: dict[str, list[tuple[float, str]]] = {d: [] for d in DIMENSIONS}
    ind: dict[str, float] = {"events": float(m.events), "live_events": float(m.live_events),
                             "dead_letters": float(m.dead_letters)}
    name = m.dataset
    t, c, v, k = cfg["timeliness"], cfg["completeness"], cfg["validity"], cfg["consistency"]
    if m.lag_p95_s is not None:
        ind["lag_p50_s"], ind["lag_p95_s"] = float(m.lag_p50_s or 0.0), m.lag_p95_s
        subs["timeliness"].append((linear(m.lag_p95_s, t["lag_p95_target_s"], t["lag_p95_limit_s"]),
                                   f"{name} 时效性: commit → platform p95 {m.lag_p95_s:.0f} s "
                                   f"(target {t['lag_p95_target_s']} s)"))
    if m.delay_p50_days is not None:
        ind["delay_p50_days"] = m.delay_p50_days
        subs["timeliness"].append((linear(m.delay_p50_days, t["delay_target_days"], t["delay_limit_days"]),
                                   f"{name} 时效性: records reach the platform {m.delay_p50_days:.0f} days after "
                                   f"their business date (median; target {t['delay_target_days']})"))
    cadence = cfg.cadence_h(m.dept, m.dataset)
    ind["cadence_h"] = cadence
    if m.silence_h is not None:
        ind["silence_h"] = m.silence_h
        subs["timeliness"].append((linear(m.silence_h / cadence, t["silence_target"], t["silence_limit"]),
                                   f"{name} 时效性: nothing new for {_hours(m.silence_h)} (expected within {_hours(cadence)})"))
    else:
        subs["timeliness"].append((0.0, f"{name} 时效性: nothing received (expected within {_hours(cadence)})"))
    if m.dept_silence_h is not None and m.dept_cadence_h:
        dept_cadence = m.dept_cadence_h
        subs["timeliness"].append((linear(m.dept_silence_h / dept_cadence, t["silence_target"], t["silence_limit"]),
                                   f"{m.dept} 时效性: the department sent nothing for {_hours(m.dept_silence_h)} "
                                   f"(it changes within {_hours(dept_cadence)})"))
    if m.fields_filled is not None:
        ind["fields_filled"] = m.fields_filled
        subs["completeness"].append((linear(m.fields_filled, c["fields_target"], c["fields_limit"]),
                                     f"{name} 完整性: {_pct(m.fields_filled)} of fields filled "
                                     f"(target {_pct(c['fields_target'])})"))
    if m.coverage is not None:
        ind["coverage"] = m.coverage
        subs["completeness"].append((linear(m.coverage, c["coverage_target"], c["coverage_limit"]),
                                     f"{name} 完整性: {_pct(m.coverage)} of active enterprises covered "
                                     f"(target {_pct(c['coverage_target'])})"))
    accepted = m.live_events or m.events  # the day's changes; the snapshot on a day with nothing else
    checked = accepted + m.dead_letters
    if checked:
        valid = accepted / checked
        ind["valid_share"] = valid
        top = ", ".join(f"{r} ×{n}" for r, n in sorted(m.dead_letter_reasons.items(), key=lambda kv: -kv[1])[:3])
        subs["validity"].append((linear(valid, v["target"], v["limit"]),
                                 f"{name} 规范性: {_pct(valid)} of records valid (target {_pct(v['target'])})"
                                 + (f"; dead letters: {top}" if top else "")))
    if accepted:
        for key, count, what in (("unknown_uscc_share", m.unknown_uscc, "name an enterprise the market register "
                                                                       "does not know"),
                                 ("after_deregistration_share", m.after_deregistration, "concern an enterprise "
                                                                                       "after its deregistration"),
                                 ("future_date_share", m.future_dates, "carry a date in the future")):
            share = count / accepted
            ind[key] = share
            subs["consistency"].append((linear(share, k["target"], k["limit"]),
                                        f"{name} 一致性: {_pct(share)} of records {what}"))
        # measured, not scored: the simulated departments do not name the register's legal
        # representatives, so the check cannot be evaluated yet (docs/assessment.md)
        ind["conflict_share"] = m.conflicts / accepted
    avail_score, avail_reasons = availability
    dims: dict[str, float] = {}
    for d in DIMENSIONS:
        if d == "availability":
            if avail_score is not None:
                dims[d] = avail_score
            continue
        if subs[d]:
            dims[d] = min(s for s, _ in subs[d])
    weights = cfg["weights"]
    total = sum(weights[d] for d in dims)
    score = sum(weights[d] * dims[d] for d in dims) / total if total else 0.0
    reasons = [r for s, r in sorted((x for d in DIMENSIONS for x in subs[d]), key=lambda sr: sr[0]) if s < 100.0]
    if avail_score is not None and avail_score < 100.0:
        reasons += avail_reasons
    return Assessment(day, m.dept, m.dataset, ind, dims, round(score, 1), cfg.grade(score), reasons)


def assess_availability(d: DeptMeasures | None, cfg: AssessmentConfig) -> tuple[float | None, list[str], dict[str, float]]:
    """A department's up-time score and reasons; (None, …) when nothing was expected of it."""
    if d is None or d.expected_heartbeats <= 0:
        return None, [], {}
    a = cfg["availability"]
    uptime = min(1.0, d.heartbeats / d.expected_heartbeats)
    ind = {"uptime": uptime, **({"max_lag": float(d.max_lag)} if d.max_lag is not None else {})}
    score = linear(uptime, a["uptime_target"], a["uptime_limit"])
    reasons = [f"可访问性: connector up {_pct(uptime)} of the time (target {_pct(a['uptime_target'])})"] if score < 100 else []
    return score, reasons, ind


def assess_day(day: str, datasets: list[DatasetMeasures], depts: dict[str, DeptMeasures], cfg: AssessmentConfig,
               catalogue: dict[str, list[str]]) -> list[Assessment]:
    """Every dataset's and every department's assessment for ``day``. ``catalogue`` is dept →
    datasets: a dataset that delivered nothing still gets its row (silent, uncovered)."""
    by_key = {(m.dept, m.dataset): m for m in datasets}
    out: list[Assessment] = []
    for dept, names in sorted(catalogue.items()):
        for n in names:
            by_key.setdefault((dept, n), DatasetMeasures(dept, n))
        heard = [h for n in names if (h := by_key[(dept, n)].silence_h) is not None]
        cadence = min((cfg.cadence_h(dept, n) for n in names), default=None)
        for n in names:
            by_key[(dept, n)].dept_silence_h = min(heard) if heard else None
            by_key[(dept, n)].dept_cadence_h = cadence
        avail_score, avail_reasons, avail_ind = assess_availability(depts.get(dept), cfg)
        rows = [assess_dataset(by_key[(dept, n)], (avail_score, avail_reasons), cfg, day) for n in sorted(names)]
        out.extend(rows)
        score = sum(r.score for r in rows) / len(rows) if rows else 0.0
        dims = {d: sum(r.dimensions[d] for r in rows if d in r.dimensions) / k
                for d in DIMENSIONS if (k := sum(1 for r in rows if d in r.dimensions))}
        # the worst datasets' reasons first, each once
        reasons = list(dict.fromkeys(x for r in sorted(rows, key=lambda r: r.score) for x in r.reasons))[:8]
        ind = {"datasets": float(len(rows)), **avail_ind}
        out.append(Assessment(day, dept, "", ind, dims, round(score, 1), cfg.grade(score), reasons))
    return out
