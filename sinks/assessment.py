"""数据汇集考核 in the store: gather each department's indicators from ClickHouse, score them
(``streams.core.assessment``), keep the result in ``dept_assessment`` and on the sink's /metrics.

The sink runs ``Assessor`` in a thread: every ``YURONG_ASSESS_INTERVAL_S`` it assesses today so
far (the live rows, ``live = true``), and once a day has ended it assesses that day for good.
``dept_assessment`` keeps every computation (ReplacingMergeTree by ``computed_ts``: ``FINAL``
gives the latest per day, department and dataset), so the history stays.

All values go through query parameters; the queries read ``enterprise_event`` (what arrived,
when, how complete), ``dlq_event`` (what was refused, why), ``connector_heartbeat`` (whether the
department's connector was up) and the market register (``enterprise_registration`` events).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from monitoring.metrics import ASSESSMENT_GRADE, ASSESSMENT_INDICATOR, ASSESSMENT_SCORE
from sinks.clickhouse import ClickHouseWriter
from streams.core.assessment import (
    DIMENSIONS,
    GRADE_VALUE,
    Assessment,
    AssessmentConfig,
    DatasetMeasures,
    DeptMeasures,
    assess_day,
)
from streams.core.catalogue import Catalogue, catalogue
from streams.settings import Settings

log = logging.getLogger(__name__)

DEREGISTERED = ["revoked", "cancelled"]
COLUMNS = ("day", "dept", "dataset", "score", "grade", "dimensions", "indicators", "reasons", "live", "computed_ts")

# per (dept, dataset) on one day: volume, lag, delay, completeness and the consistency checks
DATASET_SQL = """
WITH register AS (
    SELECT uscc, argMax(attributes['status'], (event_ts, seq)) AS status, max(event_ts) AS changed,
        argMax(ifNull(attributes['legal_rep_id_number_pseudonym'], ''), (event_ts, seq)) AS legal_rep
    FROM enterprise_event
    WHERE dataset = 'enterprise_registration' AND event_ts < {end:DateTime64(3, 'UTC')}
    GROUP BY uscc
),
events AS (
    SELECT e.dept AS dept, e.dataset AS dataset, e.op AS op, e.event_ts AS event_ts, e.ingest_ts AS ingest_ts,
        e.attributes AS attributes, e.uscc AS uscc, r.uscc = '' AS unknown, r.status AS status, r.changed AS changed,
        parseDateTime64BestEffortOrNull(e.attributes[arrayElement({bd_fields:Array(String)},
            indexOf({bd_keys:Array(String)}, concat(e.dept, '.', e.dataset)))], 3, 'UTC') AS business_date,
        e.op != 'r' AS live,
        -- the legal representative another department names (by pseudonym) is not the register's
        ifNull(e.attributes['legal_rep_id_number_pseudonym'], '') AS rep,
        e.dataset != 'enterprise_registration' AND rep != '' AND r.legal_rep != '' AND rep != r.legal_rep AS conflict
    FROM enterprise_event AS e FINAL
    LEFT JOIN register AS r ON r.uscc = e.uscc
    WHERE e.event_ts >= {start:DateTime64(3, 'UTC')} AND e.event_ts < {end:DateTime64(3, 'UTC')}
)
SELECT dept, dataset, count() AS events, countIf(live) AS live_events,
    quantileIf(0.5)(toFloat64(dateDiff('millisecond', event_ts, ingest_ts)) / 1000, live) AS lag_p50,
    quantileIf(0.95)(toFloat64(dateDiff('millisecond', event_ts, ingest_ts)) / 1000, live) AS lag_p95,
    quantileIf(0.5)(toFloat64(dateDiff('second', business_date, event_ts)) / 86400,
                    op = 'c' AND business_date IS NOT NULL) AS delay_p50,
    avg(arrayCount(v -> v IS NOT NULL AND v != '', mapValues(attributes)) / greatest(length(mapValues(attributes)), 1))
        AS filled,
    -- the cross-department checks, over the day's changes and over every record (for a snapshot-only day)
    countIf(live AND dept != 'market' AND unknown) AS unknown_live, countIf(dept != 'market' AND unknown) AS unknown_all,
    countIf(live AND has({activity:Array(String)}, concat(dept, '.', dataset))
            AND has({dereg:Array(String)}, status) AND event_ts > changed + toIntervalDay({grace:UInt32})) AS after_dereg,
    countIf(live AND business_date > event_ts + INTERVAL 1 DAY) AS future_live,
    countIf(business_date > event_ts + INTERVAL 1 DAY) AS future_all,
    countIf(live AND conflict) AS conflict_live, countIf(conflict) AS conflict_all
FROM events
GROUP BY dept, dataset
"""

SILENCE_SQL = """
SELECT dept, dataset, max(event_ts) FROM enterprise_event
WHERE event_ts < {end:DateTime64(3, 'UTC')} GROUP BY dept, dataset
"""

COVERAGE_SQL = """
WITH active AS (
    SELECT uscc FROM (
        SELECT uscc, argMax(attributes['status'], (event_ts, seq)) AS status FROM enterprise_event
        WHERE dataset = 'enterprise_registration' AND event_ts < {end:DateTime64(3, 'UTC')} GROUP BY uscc)
    WHERE status = 'active'
)
SELECT dept, dataset, uniqExact(uscc), (SELECT count() FROM active) FROM enterprise_event
WHERE has({covered:Array(String)}, concat(dept, '.', dataset)) AND uscc IN active
  AND event_ts >= {from:DateTime64(3, 'UTC')} AND event_ts < {end:DateTime64(3, 'UTC')}
GROUP BY dept, dataset
"""

DLQ_SQL = """
SELECT source_topic, error_kind, error_field, count() FROM dlq_event
WHERE dead_lettered_ts >= {start:DateTime64(3, 'UTC')} AND dead_lettered_ts < {end:DateTime64(3, 'UTC')}
  AND startsWith(source_topic, 'dept.')
GROUP BY source_topic, error_kind, error_field
"""

HEARTBEAT_SQL = """
SELECT dept, count(), max(lag), min(ts) FROM connector_heartbeat FINAL
WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')}
GROUP BY dept
"""


def _num(x: Any) -> float | None:
    if x is None:
        return None
    f = float(x)
    return None if math.isnan(f) else f


def _ts(x: Any) -> float:
    if isinstance(x, dt.datetime):
        return (x if x.tzinfo else x.replace(tzinfo=dt.UTC)).timestamp()
    return float(x)


class Measurer:
    """Runs the indicator queries for one day through ``query(sql, parameters) -> rows``."""

    def __init__(self, query: Callable[[str, dict[str, Any]], list[Any]], catalogue: Catalogue, cfg: AssessmentConfig,
                 heartbeat_interval_s: float) -> None:
        self.query = query
        self.cfg = cfg
        self.heartbeat_interval_s = heartbeat_interval_s
        self.datasets = {d: sorted(dep.datasets) for d, dep in catalogue.departments.items()}
        self.business_dates = {k: v for k, v in cfg.raw.get("business_dates", {}).items()
                               if k.partition(".")[2] in self.datasets.get(k.partition(".")[0], [])}

    def measure(self, day: dt.date, now: float) -> tuple[list[DatasetMeasures], dict[str, DeptMeasures]]:
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        end = start + dt.timedelta(days=1)
        until = min(end.timestamp(), now)
        p: dict[str, Any] = {"start": start, "end": end}
        measures: dict[tuple[str, str], DatasetMeasures] = {}

        def m(dept: str, dataset: str) -> DatasetMeasures:
            return measures.setdefault((dept, dataset), DatasetMeasures(dept, dataset))

        activity = self.cfg.covers_active() + list(self.cfg["consistency"].get("activity_datasets", []))
        for row in self.query(DATASET_SQL, {**p, "bd_keys": list(self.business_dates),
                                            "bd_fields": list(self.business_dates.values()),
                                            "activity": activity, "dereg": DEREGISTERED,
                                            "grace": int(self.cfg["consistency"].get("deregistration_grace_days", 0))}):
            dept, dataset, events, live, lag50, lag95, delay, filled, unknown_live, unknown_all, after, future_live, \
                future_all, conflict_live, conflict_all = row
            x = m(dept, dataset)
            x.events, x.live_events = int(events), int(live)
            x.lag_p50_s, x.lag_p95_s, x.delay_p50_days = _num(lag50), _num(lag95), _num(delay)
            x.fields_filled = _num(filled)
            changes = x.live_events > 0  # the day's changes; every record on a snapshot-only day
            x.unknown_uscc = int(unknown_live if changes else unknown_all)
            x.future_dates = int(future_live if changes else future_all)
            x.after_deregistration = int(after)
            x.conflicts = int(conflict_live if changes else conflict_all)
        for dept, dataset, last in self.query(SILENCE_SQL, {"end": end}):
            m(dept, dataset).silence_h = max(0.0, (until - _ts(last)) / 3600)
        window = dt.timedelta(days=int(self.cfg["completeness"]["coverage_window_days"]))
        for dept, dataset, covered, active in self.query(COVERAGE_SQL, {"end": end, "from": end - window,
                                                                       "covered": self.cfg.covers_active()}):
            m(dept, dataset).coverage = int(covered) / int(active) if int(active) else None
        for key in self.cfg.covers_active():  # a monthly series with no record at all covers nobody
            dept, _, dataset = key.partition(".")
            if dataset in self.datasets.get(dept, []) and m(dept, dataset).coverage is None:
                m(dept, dataset).coverage = 0.0
        for topic, kind, fld, n in self.query(DLQ_SQL, p):
            _, dept, dataset = (str(topic).split(".", 2) + ["", ""])[:3]
            x = m(dept, dataset)
            x.dead_letters += int(n)
            reason = f"{kind}:{fld}" if fld else str(kind)
            x.dead_letter_reasons[reason] = x.dead_letter_reasons.get(reason, 0) + int(n)
        depts: dict[str, DeptMeasures] = {}
        hb = self.query(HEARTBEAT_SQL, p)
        if hb:
            up_since = min(_ts(r[3]) for r in hb)  # the platform's first heartbeat of the day
            expected = int(max(0.0, until - up_since) // self.heartbeat_interval_s)
            for dept, n, lag, _ in hb:
                depts[dept] = DeptMeasures(dept, int(n), expected, None if lag is None else int(lag))
            for dept in self.datasets:  # a department with no heartbeat at all was down all day
                depts.setdefault(dept, DeptMeasures(dept, 0, expected))
        known = {(d, n) for d, names in self.datasets.items() for n in names}
        return [x for k, x in measures.items() if k in known], depts


def to_rows(assessments: list[Assessment], live: bool, computed: dt.datetime) -> list[list[Any]]:
    return [[dt.date.fromisoformat(a.day), a.dept, a.dataset, a.score, a.grade, a.dimensions, a.indicators, a.reasons,
             live, computed] for a in assessments]


class Assessor:
    """Assesses today every ``interval_s`` and each finished day once; writes ``dept_assessment``."""

    def __init__(self, measurer: Measurer, write: Callable[[list[list[Any]], str], None], cfg: AssessmentConfig,
                 interval_s: float) -> None:
        self.measurer = measurer
        self.write = write
        self.cfg = cfg
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self._final: set[dt.date] = set()
        self._lock = threading.Lock()
        self.closers: list[Callable[[], None]] = []

    def close(self) -> None:
        self.stopping.set()
        for close in self.closers:
            close()

    def assess(self, day: dt.date, now: float | None = None) -> list[Assessment]:
        """Assess ``day`` now and store it (live while the day lasts)."""
        now = time.time() if now is None else now
        with self._lock:
            datasets, depts = self.measurer.measure(day, now)
            result = assess_day(day.isoformat(), datasets, depts, self.cfg, self.measurer.datasets)
            today = dt.datetime.fromtimestamp(now, dt.UTC).date()
            computed = dt.datetime.fromtimestamp(now, dt.UTC)
            self.write(to_rows(result, day >= today, computed), f"assess-{day}-{int(now * 1000)}")
        if day == today:
            for a in result:
                if a.dataset == "":
                    ASSESSMENT_SCORE.labels(a.dept).set(a.score)
                    ASSESSMENT_GRADE.labels(a.dept).set(GRADE_VALUE[a.grade])
                    for d in DIMENSIONS:
                        if d in a.dimensions:
                            ASSESSMENT_INDICATOR.labels(a.dept, d).set(a.dimensions[d])
        return result

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        yesterday = today - dt.timedelta(days=1)
        if yesterday not in self._final:  # the day that just ended, once, for good
            self.assess(yesterday, now)
            self._final.add(yesterday)
        self.assess(today, now)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:  # the assessment must never stop the sink; retried next tick
                log.exception("the data-sharing assessment failed; retrying in %.0f s", self.interval_s)
            self.stopping.wait(self.interval_s)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="assessor", daemon=True)
        t.start()
        return t



def open_assessor(settings: Settings, writer: ClickHouseWriter) -> Assessor:
    """The sink's assessor: its own reading session (one engine thread: the inserts keep the rest),
    the sink's writer for ``dept_assessment``."""
    import clickhouse_connect

    reader = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    reader.database = settings.clickhouse.database
    if settings.clickhouse.is_embedded:
        reader.command("USE {db:Identifier}", parameters={"db": settings.clickhouse.database})
        reader.command("SET max_threads = 1")
    lock = threading.Lock()

    def query(sql: str, parameters: dict[str, Any]) -> list[Any]:
        with lock:
            return list(reader.query(sql, parameters=parameters).result_rows)

    cfg = AssessmentConfig.load(settings.assess.config)
    measurer = Measurer(query, catalogue(), cfg, settings.source.heartbeat_interval_s)
    assessor = Assessor(measurer, lambda rows, token: writer.write("dept_assessment", rows, token), cfg,
                        settings.assess.interval_s)
    assessor.closers.append(reader.close)
    return assessor
