"""Explainable scorecard: profile → score 0-1000 (higher is safer), level A-E, reason codes.

Every point taken off is tied to a reason code, so a lender sees *why* a score moved. The
weights live in ``Scorecard`` and can be overridden per deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LEVELS = (("A", 800), ("B", 650), ("C", 500), ("D", 300), ("E", 0))
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


@dataclass(frozen=True)
class Scorecard:
    """Points per factor. ``base`` is the score of an enterprise with no adverse factor."""

    base: int = 850
    status_penalty: Mapping[str, int] = field(
        default_factory=lambda: {"suspended": 300, "moved_out": 100, "revoked": 750, "cancelled": 800}
    )
    abnormal_listing_penalty: int = 120
    abnormal_listing_cap: int = 3

    def score(self, profile: Mapping[str, Any]) -> tuple[int, str, list[str]]:
        """``(score, level, reason codes)`` of a profile."""
        points = self.base
        reasons: list[str] = []
        status = profile.get("status")
        if status in self.status_penalty:
            points -= self.status_penalty[status]
            reasons.append(f"STATUS_{status.upper()}")
        open_listings = len(profile.get("abnormal_open_ids") or ())
        if open_listings:
            points -= self.abnormal_listing_penalty * min(open_listings, self.abnormal_listing_cap)
            reasons.append("ABNORMAL_OPERATION_LISTED")
        score = max(0, min(1000, points))
        return score, level_of(score), reasons


def level_of(score: int) -> str:
    return next(level for level, floor in LEVELS if score >= floor)


DEFAULT_SCORECARD = Scorecard()
