"""Decoded Avro records → ClickHouse rows (column order of ``sinks.clickhouse.TABLES``). Pure."""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.core.masking import find_pii_in_text
from streams.kafka.dlq import parse_dlq_headers


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text[:10]) if text else None


def profile_row(p: dict[str, Any]) -> list[Any]:
    return [
        p["uscc"], p["name"], p["status"], p["district_code"], p["industry_code"], p["registered_capital"],
        _date(p["established_date"]), p["legal_rep_pseudonym"], p["legal_rep_id_masked"], p["legal_rep_name_masked"],
        p["legal_rep_phone_masked"], p["address_masked"], len(p["abnormal_open_ids"]), p["abnormal_listings_total"],
        p["indicators"], {k: v for k, v in p["ratings"].items() if "#" not in k}, p["risk_score"], p["risk_level"],
        p["reason_codes"], [(f["code"], f["points"], f["value"]) for f in p["score_factors"]], p["version"],
        p["last_event_id"], p["last_event_ts_ms"], p["updated_ts_ms"],
    ]


def event_row(e: dict[str, Any]) -> list[Any]:
    return [
        e["event_id"], e["uscc"], e["dept"], e["dataset"], e["op"], e["attributes"], e["before"] or {},
        e["source_topic"], e["source_partition"], e["source_offset"], e["position"], e["seq"], e["snapshot"],
        e["event_ts_ms"], e["ingest_ts_ms"],
    ]


def change_row(c: dict[str, Any]) -> list[Any]:
    return [
        c["change_id"], c["uscc"], c["category"], c["severity"], c["reason_codes"], c["before"], c["after"],
        c["score_before"], c["score_after"], c["level_before"], c["level_after"], c["source_dataset"],
        c["source_position"], c["source_seq"], c["event_ts_ms"], c["detected_ts_ms"],
    ]


def alert_row(a: dict[str, Any], topic: str, partition: int, offset: int) -> list[Any]:
    return [
        a["alert_id"], a["bank_id"], a["consent_id"], a["change_id"], a["uscc"], a["category"], a["severity"],
        a["reason_codes"], topic, partition, offset, a["event_ts_ms"], a["detected_ts_ms"], a["published_ts_ms"],
    ]


def heartbeat_row(h: dict[str, Any]) -> list[Any]:
    """A connector heartbeat (``connect/heartbeat``): the assessment's availability."""
    return [h["source"], h["dept"], h["kind"], h["position"], h["snapshotting"], h["events"], h["lag"], h["ts_ms"]]


def _clean_text(text: str) -> str:
    """``text`` unless the last-line PII detector finds a raw ID, phone or card number in it: a
    dead letter's headers come from any producer (an older worker, a department's own tools), and
    ``dlq_event`` is an analyst table."""
    hit = find_pii_in_text(text)
    return f"<withheld: the text carried a raw {hit}>" if hit else text


def dlq_row(topic: str, partition: int, offset: int, headers, value: bytes | None) -> list[Any]:
    """The ``dlq_event`` row of a dead letter: its provenance and error, never its bytes (they stay
    on the restricted ``dlq.*`` topic), the free-text headers checked for raw PII first."""
    h = parse_dlq_headers(headers)
    return [
        topic, partition, offset, h.get("topic", topic.removeprefix("dlq.")), int(h.get("partition") or -1),
        int(h.get("offset") or -1), h.get("component", ""), h.get("error.kind", ""), _clean_text(h.get("error.class", "")),
        _clean_text(h.get("error.field", "")), _clean_text(h.get("error.message", "")), len(value or b""),
        int(h.get("ts_ms") or 0),
    ]
