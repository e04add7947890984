"""`yurong connect --all` runs each department in its own supervised runner; `connect status`
reports where each source stands."""

from __future__ import annotations

import threading

import pytest

from connectors.fleet import Fleet, fleet_status
from connectors.simulator.market import MarketSimulator
from streams.codecs.serde import schema_store
from streams.core.catalogue import Catalogue, catalogue
from streams.settings import Settings
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def test_fleet_runs_the_catalogue_and_status_reports_it(department_db, kafka_admin, monkeypatch):
    MarketSimulator(department_db, seed=5).create_schema()
    MarketSimulator(department_db, seed=5).seed_enterprises(30)
    monkeypatch.setenv("YURONG_SOURCE_MARKET_DSN", department_db)
    monkeypatch.setenv("YURONG_KAFKA_BOOTSTRAP_SERVERS", kafka_admin["bootstrap.servers"])
    settings = Settings()
    only_market = Catalogue({"market": catalogue().department("market")})
    fleet = Fleet(only_market, settings, schema_store())
    t = threading.Thread(target=fleet.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: "market" in fleet.runners and fleet.runners["market"].counts["enterprise_registration"] >= 30,
                 60, "the market snapshot through the fleet")
        db = department_db.rsplit("/", 1)[1]

        def market_status():
            [row] = fleet_status(only_market, settings, schema_store(), sample_s=0.2)
            return row if row.snapshot == "done" else None
        row = wait_for(market_status, 30, "status to show the completed snapshot")
        assert row.source == f"market@{db}" and row.kind == "postgres"
        assert row.records >= 30 and row.position.count("/") == 1
        assert row.lag.split()[0].isdigit(), f"slot lag is reported: {row.lag}"
    finally:
        fleet.stop()
        t.join(30)
    assert not t.is_alive()
