"""Prometheus metrics shared by connector, worker and sink; each process serves ``/metrics``.

Labels carry topic, table, stage and error kind only — never a USCC, a person or a value.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

EVENTS_IN = Counter("yurong_events_in_total", "Records read", ["component", "topic"])
EVENTS_OUT = Counter("yurong_events_out_total", "Records written", ["component", "topic"])
DLQ = Counter("yurong_dlq_total", "Records sent to a dead-letter topic", ["component", "topic", "kind"])
E2E_LATENCY = Histogram(
    "yurong_e2e_latency_seconds",
    "Source commit → stage reached (profile_written, alert_published, event_written)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
SINK_ROWS = Counter("yurong_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
SINK_BATCH_SECONDS = Histogram("yurong_sink_batch_seconds", "Time to write and commit one sink batch", buckets=LATENCY_BUCKETS)
STREAM_REREADS = Counter("yurong_stream_rereads_total",
                         "Partitions sought back to their committed offset because Faust dropped fetched records "
                         "without handling them (streams/worker/faust_fixes/liveness.py)", ["topic"])
ALERTS = Counter("yurong_alerts_total", "Alerts published per bank", ["bank_id", "category", "severity"])
ALERTS_BLOCKED = Counter("yurong_alerts_blocked_total", "Risk changes with no consented recipient", ["category"])
ALERTS_THROTTLED = Counter("yurong_alerts_throttled_total",
                           "Alerts held back by the throttle per bank, enterprise and category (recorded per bank in Redis)",
                           ["bank_id", "category"])
SQL_REQUESTS = Counter("yurong_sql_requests_total", "Requests to the analysts' SQL gateway by role and outcome "
                       "(ok, refused, failed, quota, unauthenticated, forbidden, rejected)", ["role", "outcome"])
SQL_AUDIT_SEQ = Gauge("yurong_sql_audit_seq", "Sequence number of the newest row of this gateway's SQL audit chain "
                      "(note it with the hash logged beside it to check later that no newest row was removed)", ["chain"])
CONNECTOR_FLUSHED_LSN = Gauge("yurong_connector_flushed_position", "Source position acknowledged to the source", ["source"])
CONNECTOR_LAG_BYTES = Gauge("yurong_connector_slot_lag_bytes", "WAL retained by the replication slot", ["source"])
CONNECTOR_LAG_TRANSACTIONS = Gauge("yurong_connector_lag_transactions",
                                   "Binlog transactions after the acknowledged GTID (MariaDB/MySQL sources)", ["source"])
CONNECTOR_SNAPSHOT_ROWS = Counter("yurong_connector_snapshot_rows_total", "Rows read by initial snapshots", ["source", "table"])
CONNECTOR_HEARTBEAT = Gauge("yurong_connector_heartbeat_timestamp_seconds",
                            "When the connector last wrote its heartbeat to connect.<dept>.heartbeats (unix time)", ["source"])
CONNECTOR_SNAPSHOT_PROGRESS = Gauge("yurong_connector_snapshot_progress_ratio",
                                    "Share of the running snapshot already sent (0..1; 1 when none runs)", ["source"])

# 数据汇集考核: the departments' data-sharing assessment, set by the sink for the live day
ASSESSMENT_SCORE = Gauge("yurong_dept_assessment_score", "0..100 score of the department's data sharing, live day", ["dept"])
ASSESSMENT_INDICATOR = Gauge("yurong_dept_assessment_indicator",
                             "0..100 per dimension: timeliness, completeness, validity, consistency, availability",
                             ["dept", "dimension"])
ASSESSMENT_GRADE = Gauge("yurong_dept_assessment_grade", "A=5 … E=1", ["dept"])


def serve(port: int, component: str, addr: str = "127.0.0.1") -> None:
    """Start the ``/metrics`` endpoint on ``port`` (0 disables)."""
    if port:
        start_http_server(port, addr=addr)
        log.info("%s metrics on :%d/metrics", component, port)
