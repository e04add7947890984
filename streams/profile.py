"""Merge ``EnterpriseEvent``s into ``EnterpriseProfile``s and detect risk-relevant changes.

Pure functions over plain dicts (the Avro records of ``avro/enterprise/profile.avsc`` and
``avro/risk/change.avsc``). The merge agent calls ``merge_event`` once per event in offset order.

Idempotence, two layers:

- a profile remembers the ``enterprise.events`` offset of the last event merged into it
  (``version``). Events of one USCC always come from one partition, so an event whose offset is
  not above ``version`` is a consumer replay and changes nothing;
- it also remembers the highest source position merged per source row (``source_seqs``). An
  upstream replay (the ingest step re-publishing after a crash) arrives at a *new* offset but
  with a source position already seen for its row, and is skipped too — otherwise an old status
  could overwrite a newer one. Positions are compared per row, not per dataset: changes of one
  row share a department-topic partition and stay in order, while two rows of one enterprise
  (two listings) may reach ``enterprise.events`` in either order.

Snapshot reads (``op = 'r'``) build the profile but raise no risk change: an enterprise that was
already revoked before the platform started is a fact, not news.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .risk import DEFAULT_SCORECARD, SEVERITY_RANK, Scorecard

Profile = dict[str, Any]
Event = Mapping[str, Any]

REGISTRATION_FIELDS = {
    # profile field: event attribute
    "name": "name",
    "status": "status",
    "district_code": "district_code",
    "industry_code": "industry_code",
    "established_date": "established_date",
    "legal_rep_pseudonym": "legal_rep_id_number_pseudonym",
    "legal_rep_id_masked": "legal_rep_id_number",
    "legal_rep_name_masked": "legal_rep_name",
    "legal_rep_phone_masked": "legal_rep_phone",
    "address_masked": "address",
}

STATUS_CHANGES = {
    # new status: (category, severity)
    "suspended": ("registration", "high"),
    "moved_out": ("registration", "medium"),
    "revoked": ("registration", "critical"),
    "cancelled": ("registration", "critical"),
}


def new_profile(uscc: str) -> Profile:
    return {
        "uscc": uscc,
        "name": None,
        "status": None,
        "district_code": None,
        "industry_code": None,
        "registered_capital": None,
        "established_date": None,
        "legal_rep_pseudonym": None,
        "legal_rep_id_masked": None,
        "legal_rep_name_masked": None,
        "legal_rep_phone_masked": None,
        "address_masked": None,
        "abnormal_open_ids": [],
        "abnormal_listings_total": 0,
        "risk_score": 0,
        "risk_level": "C",
        "reason_codes": [],
        "source_seqs": {},
        "version": -1,
        "last_event_id": "",
        "last_event_ts_ms": 0,
        "updated_ts_ms": 0,
    }


def _merge_registration(p: Profile, e: Event) -> None:
    if e["op"] == "d":
        return  # a deleted registration row keeps the last known facts
    a = e["attributes"]
    for pf, af in REGISTRATION_FIELDS.items():
        if af in a:
            p[pf] = a[af]
    cap = a.get("registered_capital")
    p["registered_capital"] = float(cap) if cap not in (None, "") else None


def _merge_abnormal(p: Profile, e: Event) -> None:
    a = e["attributes"]
    listing = a.get("id") or ""
    open_ids = [i for i in p["abnormal_open_ids"] if i != listing]
    if e["op"] != "d" and not a.get("removed_date"):
        if listing not in p["abnormal_open_ids"]:
            p["abnormal_listings_total"] += 1
        open_ids.append(listing)
    p["abnormal_open_ids"] = sorted(open_ids)


MERGERS: dict[str, Callable[[Profile, Event], None]] = {
    "market.enterprise_registration": _merge_registration,
    "market.abnormal_operation": _merge_abnormal,
}


def source_row(event: Event) -> str:
    """``<dept>.<dataset>#<row pseudonym>``: the source row an event changed (from its id, see
    ``streams.ingest.event_id``)."""
    return f"{event['dept']}.{event['dataset']}#{event['event_id'].rpartition('#')[2]}"


def is_duplicate(profile: Profile, event: Event, offset: int) -> bool:
    """True if ``event`` was merged before (consumer replay or upstream re-publication)."""
    if offset <= profile["version"]:
        return True
    last_seq = profile["source_seqs"].get(source_row(event))
    return last_seq is not None and event["seq"] <= last_seq


def merge_event(
    profile: Profile | None,
    event: Event,
    offset: int,
    now_ms: int,
    scorecard: Scorecard = DEFAULT_SCORECARD,
) -> tuple[Profile, list[dict[str, Any]]]:
    """Merge one event; return the new profile and the risk changes it caused.

    Returns the profile unchanged and no changes if the event was already merged.
    """
    old = profile or new_profile(event["uscc"])
    if is_duplicate(old, event, offset):
        return old, []
    dataset = f"{event['dept']}.{event['dataset']}"
    new = {
        **old,
        "abnormal_open_ids": list(old["abnormal_open_ids"]),
        "source_seqs": {**old["source_seqs"], source_row(event): event["seq"]},
    }
    merger = MERGERS.get(dataset)
    if merger is not None:
        merger(new, event)
    new["risk_score"], new["risk_level"], new["reason_codes"] = scorecard.score(new)
    new["version"] = offset
    new["last_event_id"] = event["event_id"]
    new["last_event_ts_ms"] = event["event_ts_ms"]
    new["updated_ts_ms"] = now_ms
    changes = [] if event["op"] == "r" else detect_changes(old if profile else None, new, event, now_ms)
    return new, changes


def detect_changes(old: Profile | None, new: Profile, event: Event, now_ms: int) -> list[dict[str, Any]]:
    """Risk changes between two versions of a profile, each with its reason codes."""
    found: list[tuple[str, str, list[str], dict, dict]] = []
    old_status = old["status"] if old else None
    if new["status"] != old_status and old_status is not None:
        if new["status"] in STATUS_CHANGES:
            category, severity = STATUS_CHANGES[new["status"]]
            found.append((category, severity, [f"STATUS_{new['status'].upper()}"],
                          {"status": old_status}, {"status": new["status"]}))
        elif new["status"] == "active":
            found.append(("positive", "info", ["STATUS_RESTORED"], {"status": old_status}, {"status": "active"}))
    old_open = set(old["abnormal_open_ids"]) if old else set()
    new_open = set(new["abnormal_open_ids"])
    if new_open - old_open:
        reason = (event["attributes"].get("reason_code") or "unknown").upper()
        found.append(("registration", "high", ["ABNORMAL_OPERATION_LISTED", f"ABNORMAL_{reason}"],
                      {"abnormal_open": str(len(old_open))}, {"abnormal_open": str(len(new_open))}))
    elif old_open - new_open:
        found.append(("positive", "info", ["ABNORMAL_OPERATION_REMOVED"],
                      {"abnormal_open": str(len(old_open))}, {"abnormal_open": str(len(new_open))}))
    old_level = old["risk_level"] if old else None
    if old_level is not None and new["risk_level"] != old_level:
        move = f"LEVEL_{old_level}_TO_{new['risk_level']}"
        if found:  # one alert per event: the band move explains the primary change
            found[0][2].append(move)
            found[0][3]["risk_level"], found[0][4]["risk_level"] = old_level, new["risk_level"]
        else:
            worse = new["risk_level"] > old_level  # 'A' < 'E'
            found.append(("score_band" if worse else "positive", "medium" if worse else "info",
                          [move, *new["reason_codes"]], {"risk_level": old_level}, {"risk_level": new["risk_level"]}))
    return [
        {
            "change_id": f"{event['event_id']}/{reasons[0]}",
            "uscc": new["uscc"],
            "category": category,
            "severity": severity,
            "reason_codes": reasons,
            "before": before,
            "after": after,
            "score_before": old["risk_score"] if old else new["risk_score"],
            "score_after": new["risk_score"],
            "level_before": old_level or new["risk_level"],
            "level_after": new["risk_level"],
            "source_dataset": f"{event['dept']}.{event['dataset']}",
            "source_position": event["position"],
            "source_seq": event["seq"],
            "event_ts_ms": event["event_ts_ms"],
            "detected_ts_ms": now_ms,
        }
        for category, severity, reasons, before, after in found
    ]


def is_at_least(severity: str, minimum: str) -> bool:
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[minimum]
