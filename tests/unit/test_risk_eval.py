"""bench/risk_eval.py at a tiny size: the evaluation's invariants, never its figures."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from bench import risk_eval

CFG = risk_eval.Config(enterprises=120, months=13, seed=7, distress_share=0.3, start=dt.date(2025, 1, 1))
# datasets every distress path or every month touches; rare ones (patents, IP pledges, …) may not
# occur in a city this small
ALWAYS = {"market.enterprise_registration", "market.abnormal_operation", "tax.tax_filing", "tax.tax_credit_rating",
          "tax.tax_arrears", "court.litigation_case", "court.enforcement", "hrss.social_insurance",
          "housing_fund.housing_fund_contribution", "power.electricity_usage", "gas.gas_usage", "water.water_usage"}


@pytest.fixture(scope="module")
def city():
    return risk_eval.simulate(CFG)


@pytest.fixture(scope="module")
def report(city):
    return risk_eval.evaluate(city)


def _shares(report):
    for p in report["policies"].values():
        yield from (p[k] for k in ("precision_enforced", "precision_distressed", "alert_precision",
                                   "recall_before_enforcement", "recall_30d_before", "healthy_alerted_share"))
    for c in report["codes"].values():
        yield c["before_enforcement_share"]


def test_every_enforcement_is_on_a_distress_path_after_its_onset(city, report):
    assert city.enforcements, "a city this size has enforcements at this seed"
    assert set(city.enforcements) <= set(city.plans)
    for uscc, ts in city.enforcements.items():
        plan = city.plans[uscc]
        assert plan.terminal >= 3
        assert risk_eval.utc(ts).date() >= plan.onset
    assert report["population"]["enforced_healthy"] == 0
    pop = report["population"]
    assert pop["healthy"] + pop["distressed"] == pop["enterprises"] == CFG.enterprises
    assert pop["enforced_in_window"] + pop["distressed_not_enforced"] == pop["distressed"]


def test_every_row_is_accepted_and_builds_a_profile(city, report):
    assert report["events"]["dead_letters"] == {}, report["events"]["dead_letter_samples"]
    assert ALWAYS <= set(report["events"]["by_dataset"])
    assert set(city.pipe.profiles) == {e.uscc for e in city.enterprises}


def test_alerts_happen_inside_the_window_and_metrics_are_shares(city, report):
    assert report["events"]["risk_changes_live"] > 0
    assert report["policies"]["severity >= high"]["alerted"] > 0
    for changes in city.pipe.changes.values():
        assert all(c.ts_ms < city.end_ms for c in changes)
    for share in _shares(report):
        assert share is None or 0.0 <= share <= 1.0
    for p in report["policies"].values():
        assert p["false_alerts_per_1000_healthy_months"] >= 0
        assert p["alerted_healthy"] <= p["alerted"]
        assert p["recall_30d_before"] is None or p["recall_30d_before"] <= p["recall_before_enforcement"]
        lead = p["lead_days"]
        if lead["median"] is not None:
            assert 0 < lead["p25"] <= lead["median"] <= lead["p75"]


def test_snapshot_reads_raise_nothing_and_the_report_is_json(report):
    # only the file departments' history drops (op 'c', no snapshot mode) can alert before the window
    assert report["deployment_alerts_by_code"].keys() <= {"PATENT_GRANTED", "TRADEMARK_REGISTERED",
                                                          "HIGH_TECH_CERTIFIED", "IP_PLEDGED"}
    json.dumps(report)
    assert "| policy |" in risk_eval.markdown({**report})
