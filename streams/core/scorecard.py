"""Explainable scorecard: profile → score 0-1000 (higher is safer), level A-E, reason codes.

The card is data (``streams/core/scorecard.toml``, or the file ``YURONG_RISK_SCORECARD`` names):
a base score, level floors and factors. Every point added or taken off belongs to a factor with
a reason code, and ``Scorecard.explain`` returns them with the value that triggered each, so a
lender sees *why* a score moved. ``docs/risk-scorecard.md`` documents the default card.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import ConfigError

DEFAULT_CARD = Path(__file__).with_name("scorecard.toml")
LEVEL_NAMES = ("A", "B", "C", "D", "E")
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


@dataclass(frozen=True)
class Factor:
    """One line of the card: a test on the profile and the points it is worth."""

    code: str
    points: int
    indicator: str | None = None  # with above / below
    rating: str | None = None  # with equals
    field: str | None = None  # with equals
    above: float | None = None
    below: float | None = None
    equals: tuple[str, ...] = ()
    per_unit: bool = False
    cap: int = 1

    def applies(self, profile: Mapping[str, Any]) -> tuple[int, str] | None:
        """``(points, value as text)`` if the factor applies to ``profile``, else None."""
        if self.indicator is not None:
            value = (profile.get("indicators") or {}).get(self.indicator)
            if value is None or math.isnan(value):
                return None
            hit = (self.above is not None and value > self.above) or (self.below is not None and value < self.below)
            if not hit:
                return None
            units = min(max(int(value), 1), self.cap) if self.per_unit else 1
            return self.points * units, f"{value:g}"
        text = (profile.get("ratings") or {}).get(self.rating) if self.rating else profile.get(self.field or "")
        return (self.points, str(text)) if text is not None and str(text) in self.equals else None


@dataclass(frozen=True)
class Scorecard:
    base: int = 850
    levels: tuple[tuple[str, int], ...] = (("A", 800), ("B", 650), ("C", 500), ("D", 300), ("E", 0))
    factors: tuple[Factor, ...] = field(default_factory=tuple)

    def explain(self, profile: Mapping[str, Any]) -> tuple[int, str, list[dict[str, Any]]]:
        """``(score, level, factors that applied)``; each factor as ``{code, points, value}``,
        adverse ones first (largest penalty first), then positive ones."""
        applied: list[dict[str, Any]] = []
        for f in self.factors:
            hit = f.applies(profile)
            if hit is not None:
                applied.append({"code": f.code, "points": hit[0], "value": hit[1]})
        applied.sort(key=lambda a: (a["points"] >= 0, -abs(a["points"]), a["code"]))
        score = max(0, min(1000, self.base + sum(a["points"] for a in applied)))
        return score, self.level_of(score), applied

    def score(self, profile: Mapping[str, Any]) -> tuple[int, str, list[str]]:
        """``(score, level, reason codes)`` of a profile."""
        score, level, applied = self.explain(profile)
        return score, level, [a["code"] for a in applied]

    def level_of(self, score: int) -> str:
        return next(level for level, floor in self.levels if score >= floor)

    @classmethod
    def load(cls, path: Path = DEFAULT_CARD) -> Scorecard:
        """Read and check a card; a mistake is a ``ConfigError`` naming the file and the factor."""
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"scorecard {path}: {exc}") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "scorecard") -> Scorecard:
        levels = raw.get("levels") or {}
        if sorted(levels) != list(LEVEL_NAMES) or levels.get("E") != 0:
            raise ConfigError(f"{where}: [levels] must give floors for A..E, with E = 0")
        floors = [levels[n] for n in LEVEL_NAMES]
        if floors != sorted(floors, reverse=True):
            raise ConfigError(f"{where}: level floors must fall from A to E: {levels}")
        factors, seen = [], set()
        for i, spec in enumerate(raw.get("factors") or ()):
            factors.append(_factor(spec, f"{where}: factor {i + 1} ({spec.get('code', '?')})"))
            if factors[-1].code in seen:
                raise ConfigError(f"{where}: factor code {factors[-1].code} appears twice")
            seen.add(factors[-1].code)
        base = raw.get("base")
        if not isinstance(base, int) or not 0 <= base <= 1000:
            raise ConfigError(f"{where}: base must be an integer 0..1000")
        return cls(base=base, levels=tuple((n, levels[n]) for n in LEVEL_NAMES), factors=tuple(factors))


def _factor(spec: Mapping[str, Any], where: str) -> Factor:
    known = {"code", "points", "indicator", "rating", "field", "above", "below", "equals", "per_unit", "cap"}
    unknown = set(spec) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    if not isinstance(spec.get("code"), str) or not isinstance(spec.get("points"), int):
        raise ConfigError(f"{where}: needs a code (text) and points (integer)")
    subjects = [k for k in ("indicator", "rating", "field") if k in spec]
    if len(subjects) != 1:
        raise ConfigError(f"{where}: name exactly one of indicator, rating, field")
    if subjects == ["indicator"]:
        if ("above" in spec) == ("below" in spec):
            raise ConfigError(f"{where}: an indicator factor needs exactly one of above, below")
    elif not spec.get("equals"):
        raise ConfigError(f"{where}: a {subjects[0]} factor needs equals = [values]")
    return Factor(
        code=spec["code"], points=spec["points"], indicator=spec.get("indicator"), rating=spec.get("rating"),
        field=spec.get("field"), above=spec.get("above"), below=spec.get("below"),
        equals=tuple(str(v) for v in spec.get("equals") or ()), per_unit=bool(spec.get("per_unit", False)),
        cap=int(spec.get("cap", 1)),
    )


def level_of(score: int) -> str:
    return DEFAULT_SCORECARD.level_of(score)


DEFAULT_SCORECARD = Scorecard.load()
