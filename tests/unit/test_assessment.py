"""The assessment's scoring, as pure logic: sub-scores, dimensions, weights, grades, reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.assessment import (
    DIMENSIONS,
    AssessmentConfig,
    DatasetMeasures,
    DeptMeasures,
    assess_dataset,
    assess_day,
    linear,
)

CFG = AssessmentConfig.load()


def healthy(dept: str = "tax", dataset: str = "tax_filing", **kw) -> DatasetMeasures:
    base = dict(events=1000, live_events=200, lag_p50_s=1.0, lag_p95_s=3.0, delay_p50_days=1.0, silence_h=0.5,
                fields_filled=0.97, coverage=0.99)
    return DatasetMeasures(dept, dataset, **{**base, **kw})


def test_a_healthy_dataset_scores_100_with_no_reasons():
    a = assess_dataset(healthy(), (100.0, []), CFG, "2026-12-07")
    assert (a.score, a.grade, a.reasons) == (100.0, "A", [])
    assert set(a.dimensions) == set(DIMENSIONS)


@pytest.mark.parametrize(("change", "dimension", "reason"), [
    ({"lag_p95_s": 3600.0}, "timeliness", "commit → platform p95 3600 s"),
    ({"delay_p50_days": 30.0}, "timeliness", "30 days after their business date"),
    ({"silence_h": 3 * 744.0}, "timeliness", "nothing new for 2232.0 h (expected within 48.0 h)"),
    ({"coverage": 0.5}, "completeness", "50% of active enterprises covered"),
    ({"fields_filled": 0.5}, "completeness", "50% of fields filled"),
    # validity and consistency count the day's changes (200 of the 1000 records)
    ({"dead_letters": 86, "dead_letter_reasons": {"validation:legal_rep_id_number": 86}}, "validity",
     "70% of records valid (target 99%); dead letters: validation:legal_rep_id_number ×86"),
    ({"unknown_uscc": 60}, "consistency", "30% of records name an enterprise the market register does not know"),
    ({"future_dates": 60}, "consistency", "30% of records carry a date in the future"),
])
def test_each_misbehaviour_lowers_its_dimension_and_says_why(change, dimension, reason):
    a = assess_dataset(healthy(**change), (100.0, []), CFG, "2026-12-07")
    assert a.dimensions[dimension] < 100
    assert all(a.dimensions[d] == 100 for d in DIMENSIONS if d != dimension)
    assert a.score < 100 and any(reason in r for r in a.reasons), a.reasons


def test_nothing_received_is_a_reason_and_no_measured_dimension_is_invented():
    a = assess_dataset(DatasetMeasures("ip", "patent"), (None, []), CFG, "2026-12-07")
    assert a.dimensions == {"timeliness": 0.0}
    assert a.score == 0.0 and a.grade == "E"
    assert a.reasons == ["patent 时效性: nothing received (expected within 168.0 h)"]


def test_a_department_is_the_mean_of_its_datasets_and_a_down_connector_shows():
    rows = assess_day("2026-12-07", [healthy("tax", "tax_filing"), healthy("tax", "tax_credit_rating", coverage=None),
                                     healthy("tax", "tax_arrears", coverage=None)],
                      {"tax": DeptMeasures("tax", heartbeats=50, expected_heartbeats=100)}, CFG,
                      {"tax": ["tax_filing", "tax_credit_rating", "tax_arrears"]})
    dept = next(r for r in rows if r.dataset == "")
    assert dept.dimensions["availability"] == 0.0  # up half the time: at the limit
    assert "可访问性: connector up 50% of the time (target 99%)" in dept.reasons
    assert dept.score == pytest.approx(sum(r.score for r in rows if r.dataset) / 3, abs=0.1)


def test_a_department_that_sends_nothing_loses_timeliness_on_every_dataset():
    names = ["tax_filing", "tax_credit_rating"]
    quiet = assess_day("2026-12-07", [healthy("tax", n, silence_h=150.0, coverage=None) for n in names], {}, CFG,
                       {"tax": names})
    talking = assess_day("2026-12-07", [healthy("tax", "tax_filing", silence_h=1.0, coverage=None),
                                        healthy("tax", "tax_credit_rating", silence_h=150.0, coverage=None)], {}, CFG,
                         {"tax": names})
    q, t = (next(r for r in rows if r.dataset == "") for rows in (quiet, talking))
    assert "tax 时效性: the department sent nothing for 150.0 h (it changes within 48.0 h)" in q.reasons
    assert not any("the department sent nothing" in x for x in t.reasons)  # a rare dataset may rest; the department did not
    assert q.score < t.score


def test_conflicting_legal_representatives_are_counted_not_scored():
    a = assess_dataset(healthy(conflicts=20), (100.0, []), CFG, "2026-12-07")
    assert a.indicators["conflict_share"] == 0.1 and a.score == 100.0


def test_a_dimension_is_its_worst_check():
    a = assess_dataset(healthy(future_dates=60), (100.0, []), CFG, "2026-12-07")
    assert a.dimensions["consistency"] == 0.0  # 30 % in the future fails the dimension, the two passing checks do not lift it


def test_grades_follow_the_configured_bands():
    assert [CFG.grade(s) for s in (100, 90, 89.9, 80, 70, 60, 59.9, 0)] == ["A", "A", "B", "B", "C", "D", "E", "E"]


@given(st.floats(-1e6, 1e6), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3))
def test_a_sub_score_stays_within_0_and_100(value, target, limit):
    assert 0.0 <= linear(value, target, limit) <= 100.0


def test_a_configuration_without_every_weight_is_refused(tmp_path):
    bad = tmp_path / "a.toml"
    bad.write_text("[weights]\ntimeliness = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="completeness"):
        AssessmentConfig.load(bad)
