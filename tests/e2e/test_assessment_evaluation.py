"""The evaluation that proves the assessment right (issue 15, item 2): the whole simulated city —
14 departments over PostgreSQL logical replication, MariaDB binlog, polling and file drops —
through connectors, worker and sink, with five departments misbehaving on purpose, one of each
kind. The assessment the sink computes must rank exactly those five lowest, each with the reason
that matches what it did.

Time is compressed: the test's assessment configuration is the shipped one with every cadence's
hour read as 0.6 s (a department whose data changes every two days must have changed within 29 s),
so that "silent for days" fits into a minute (0.6 s per hour: a daily cadence is 14 s). Everything else — weights, targets, limits — is the
shipped configuration."""

from __future__ import annotations

import json
import time
import tomllib

import psycopg2
import pytest

from connectors.simulator.city import CitySimulator
from connectors.simulator.postgres_depts import Rates, RowGenerator
from streams.cli.demo import pipeline
from streams.core.assessment import DEFAULT_CONFIG
from streams.core.catalogue import catalogue
from streams.settings import Settings
from tests.conftest import TEST_KEY, wait_for
from tests.harness import IsolatedPipeline, seed_every_dataset, skip_history
from tests.integration.test_city import city_settings  # noqa: F401 — the fixture: this test's own department databases

pytestmark = pytest.mark.e2e

MISBEHAVING = {  # department: (misbehaviour, what its reasons must say)
    "court": ("late", "after their business date"),              # PostgreSQL logical replication
    "tax": ("missing", "of active enterprises covered"),         # PostgreSQL logical replication
    "gas": ("silent", "the department sent nothing"),            # polling
    "ip": ("bad_rows", "规范性"),                                  # file drops
    "power": ("inconsistent", "一致性"),                           # MariaDB binlog
}


def _toml(value) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def compressed_config(path, seconds_per_hour: float) -> None:
    """The shipped assessment.toml with every cadence's hour worth ``seconds_per_hour`` seconds."""
    raw = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    scale = seconds_per_hour / 3600
    raw["cadence"]["default_h"] *= scale
    raw["cadence"]["datasets"] = {k: v * scale for k, v in raw["cadence"]["datasets"].items()}
    lines = []
    for section, body in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{_toml(k)} = {_toml(v)}" for k, v in body.items() if not isinstance(v, dict)]
        for k, v in body.items():
            if isinstance(v, dict):
                lines.append(f"[{section}.{k}]")
                lines += [f"{_toml(kk)} = {_toml(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert tomllib.loads(path.read_text(encoding="utf-8"))["business_dates"] == raw["business_dates"]


def test_the_assessment_ranks_exactly_the_misbehaving_departments_lowest_with_the_right_reasons(
        city_settings, kafka_admin, redis_url, unique, tmp_path, monkeypatch):  # noqa: F811 — the imported fixture
    config = tmp_path / "assessment.toml"
    compressed_config(config, seconds_per_hour=0.6)
    monkeypatch.setenv("YURONG_SOURCE_POLL_INTERVAL_S", "0.3")
    seed = int(unique[:6], 16)
    city = CitySimulator(Settings(), seed=seed, distress_share=0.1,
                         misbehave={dept: kind for dept, (kind, _) in MISBEHAVING.items()})
    # rare events made common enough that 80 enterprises have some of each dataset
    city.groups["postgres"].rows = RowGenerator(seed, Rates(litigation_per_year=0.5, environment_penalty_per_year=0.5))
    city.create()
    # every dataset needs records of its own (a dataset that never sent any is rightly scored 0)
    usccs = seed_every_dataset(city, 80)
    dsns = {d: dsn.get_secret_value() for d, dsn in Settings().source.dsns.items()}
    with psycopg2.connect(dsns["market"]) as pg, pg.cursor() as cur:  # 2 % of enterprises are listed: maybe none of 80
        cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) VALUES (%s, 'unreachable_address', "
                    "CURRENT_DATE - 30)", (usccs[2],))
    pg.close()
    p = IsolatedPipeline(tmp_path, dsns["market"], kafka_admin, redis_url, unique, TEST_KEY,
                         {"YURONG_CLICKHOUSE_BATCH_SECONDS": "0.3", "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.1",
                          "YURONG_ASSESS_CONFIG": str(config), "YURONG_ASSESS_INTERVAL_S": "5"}, label="assess")
    skip_history(kafka_admin, p.app_id, p.sink_group)
    datasets = {ds.qualified for ds in catalogue().by_topic().values()}

    with pipeline(p.env, p.logs, ("connect --all", "worker", f"sink --group {p.sink_group}")) as procs:
        p.procs = procs

        def seen() -> set[str]:
            rows = p.sql("SELECT DISTINCT concat(dept, '.', dataset) FROM enterprise_event WHERE has({u:Array(String)}, uscc)",
                         u=usccs)
            return {r[0] for r in rows or []}
        wait_for(lambda: seen() >= datasets, 180, lambda: f"not in ClickHouse yet: {sorted(datasets - seen())}\n"
                                                           f"{p.logs_tail()}")
        # the live phase: every department keeps changing (the misbehaving ones as they do), about
        # three and a half simulated days
        live_until = time.monotonic() + 50
        while time.monotonic() < live_until:
            city.step(12)
            time.sleep(0.5)
        time.sleep(3)  # the last changes reach ClickHouse
        asked = time.time()

        def assessed():
            rows = p.sql("SELECT dept, score, grade, reasons, toUnixTimestamp64Milli(computed_ts) FROM dept_assessment "
                         "FINAL WHERE day = today() AND dataset = '' ORDER BY score")
            return rows if rows and len(rows) == 14 and all(r[4] / 1000 >= asked for r in rows) else None
        wait_for(assessed, 60, lambda: "an assessment computed after the live phase\n" + p.logs_tail())
        rows = assessed()
        assert rows is not None
    ranking = [(r[0], r[1], r[2]) for r in rows]
    lowest = {r[0] for r in rows[:len(MISBEHAVING)]}
    assert lowest == set(MISBEHAVING), f"the five lowest are not the misbehaving ones: {ranking}"
    for dept, _, _, reasons, _ in rows:
        if dept in MISBEHAVING:
            kind, expected = MISBEHAVING[dept]
            assert any(expected in r for r in reasons), f"{dept} ({kind}) lacks '{expected}': {reasons}"
