"""Profile merge: registration facts, status changes, abnormal-operation listings, replay safety."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.profile import merge_event

PROPERTY = settings(max_examples=200, deadline=None)
USCC = "91110000600037341L"
NOW = 1_709_300_000_000


def registration_event(seq: int, status: str = "active", op: str = "u", **attrs):
    attributes = {
        "uscc": USCC, "name": "重庆某某科技有限公司", "status": status, "district_code": "500103",
        "industry_code": "I6513", "registered_capital": "500.0", "established_date": "2015-06-01",
        "legal_rep_id_number": "3405**********001X", "legal_rep_id_number_pseudonym": "p_" + "a" * 32,
        "legal_rep_name": "张**", "legal_rep_phone": "138****5678", "address": "重庆市渝中区",
    }
    attributes.update(attrs)
    return _event("enterprise_registration", seq, op, attributes, USCC)


def listing_event(seq: int, listing: str, op: str = "c", removed: bool = False, reason: str = "unreachable_address"):
    attributes = {
        "id": listing, "uscc": USCC, "reason_code": reason, "listed_date": "2024-02-01",
        "removed_date": "2024-03-01" if removed else None,
    }
    return _event("abnormal_operation", seq, op, attributes, listing)


def _event(dataset: str, seq: int, op: str, attributes: dict, key: str):
    return {
        "event_id": f"market.{dataset}@0/{seq:X}#{key}", "uscc": USCC, "dept": "market", "dataset": dataset, "op": op,
        "attributes": attributes, "before": None, "position": f"0/{seq:X}", "seq": seq, "event_ts_ms": 1_709_294_400_000 + seq,
    }


def test_snapshot_builds_the_profile_without_risk_changes():
    profile, changes = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    assert changes == []
    assert profile["uscc"] == USCC
    assert profile["name"] == "重庆某某科技有限公司"
    assert profile["status"] == "active"
    assert profile["registered_capital"] == 500.0
    assert profile["established_date"] == "2015-06-01"
    assert profile["legal_rep_pseudonym"] == "p_" + "a" * 32
    assert profile["legal_rep_id_masked"] == "3405**********001X"
    assert profile["legal_rep_name_masked"] == "张**"
    assert profile["legal_rep_phone_masked"] == "138****5678"
    assert profile["address_masked"] == "重庆市渝中区"
    assert (profile["risk_score"], profile["risk_level"], profile["reason_codes"]) == (850, "A", [])
    assert (profile["version"], profile["last_event_id"], profile["updated_ts_ms"]) == \
        (0, f"market.enterprise_registration@0/64#{USCC}", NOW)


def test_snapshot_of_an_already_revoked_enterprise_is_a_fact_not_news():
    profile, changes = merge_event(None, registration_event(100, status="revoked", op="r"), offset=0, now_ms=NOW)
    assert changes == []
    assert profile["risk_level"] == "E" and profile["reason_codes"] == ["STATUS_REVOKED"]


@pytest.mark.parametrize(
    "status, severity, score, level",
    [("revoked", "critical", 100, "E"), ("cancelled", "critical", 50, "E"), ("suspended", "high", 550, "C"),
     ("moved_out", "medium", 750, "B")],
)
def test_status_change_raises_one_registration_change_explaining_the_band_drop(status, severity, score, level):
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    event = registration_event(200, status=status)
    new, changes = merge_event(profile, event, offset=1, now_ms=NOW + 1)
    assert (new["status"], new["risk_score"], new["risk_level"]) == (status, score, level)
    assert [c["category"] for c in changes] == ["registration"]  # one alert per event
    reg = changes[0]
    assert reg["severity"] == severity
    assert reg["reason_codes"] == [f"STATUS_{status.upper()}", f"LEVEL_A_TO_{level}"]
    assert (reg["before"], reg["after"]) == ({"status": "active", "risk_level": "A"}, {"status": status, "risk_level": level})
    assert reg["change_id"] == f"{event['event_id']}/STATUS_{status.upper()}"
    assert (reg["score_before"], reg["score_after"], reg["level_before"], reg["level_after"]) == (850, score, "A", level)
    assert (reg["source_dataset"], reg["source_seq"], reg["detected_ts_ms"]) == ("market.enterprise_registration", 200, NOW + 1)


def test_restored_status_is_a_positive_change():
    profile, _ = merge_event(None, registration_event(100, status="suspended", op="r"), offset=0, now_ms=NOW)
    new, changes = merge_event(profile, registration_event(200, status="active"), offset=1, now_ms=NOW)
    assert new["risk_level"] == "A"
    assert [c["reason_codes"] for c in changes] == [["STATUS_RESTORED", "LEVEL_C_TO_A"]]
    assert all(c["category"] == "positive" and c["severity"] == "info" for c in changes)


def test_a_band_move_without_another_change_is_a_score_band_change():
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    listed, _ = merge_event(profile, listing_event(200, "1"), offset=1, now_ms=NOW)
    # A second listing while one is open: no new "listed" transition in the open set's
    # emptiness, but the score drops a band.
    twice, changes = merge_event(listed, listing_event(300, "2"), offset=2, now_ms=NOW)
    assert (listed["risk_level"], twice["risk_level"]) == ("B", "C")
    assert changes[0]["reason_codes"][:3] == ["ABNORMAL_OPERATION_LISTED", "ABNORMAL_UNREACHABLE_ADDRESS", "LEVEL_B_TO_C"]


def test_upstream_replay_at_a_new_offset_changes_nothing():
    """The ingest step re-publishes after a crash: same event, new enterprise.events offset."""
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    suspended, _ = merge_event(profile, registration_event(200, status="suspended"), offset=1, now_ms=NOW)
    revoked, _ = merge_event(suspended, registration_event(300, status="revoked"), offset=2, now_ms=NOW)
    for offset, replay in ((3, registration_event(200, status="suspended")), (4, registration_event(300, status="revoked"))):
        again, changes = merge_event(revoked, replay, offset=offset, now_ms=NOW)
        assert again == revoked and changes == []


def test_unchanged_status_raises_nothing():
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    _, changes = merge_event(profile, registration_event(200, name="新名称"), offset=1, now_ms=NOW)
    assert changes == []


def test_abnormal_listing_added_and_removed():
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    listed, changes = merge_event(profile, listing_event(200, "42"), offset=1, now_ms=NOW)
    assert listed["abnormal_open_ids"] == ["42"] and listed["abnormal_listings_total"] == 1
    assert (listed["risk_score"], listed["risk_level"]) == (730, "B")
    [listing] = changes
    assert listing["category"] == "registration" and listing["severity"] == "high"
    assert listing["reason_codes"] == ["ABNORMAL_OPERATION_LISTED", "ABNORMAL_UNREACHABLE_ADDRESS", "LEVEL_A_TO_B"]
    assert listing["after"] == {"abnormal_open": "1", "risk_level": "B"}

    # An update of the same open listing is not a new listing.
    same, changes = merge_event(listed, listing_event(250, "42", op="u"), offset=2, now_ms=NOW)
    assert same["abnormal_listings_total"] == 1 and changes == []

    removed, changes = merge_event(same, listing_event(300, "42", op="u", removed=True), offset=3, now_ms=NOW)
    assert removed["abnormal_open_ids"] == [] and removed["abnormal_listings_total"] == 1
    assert removed["risk_level"] == "A"
    assert [c["reason_codes"] for c in changes] == [["ABNORMAL_OPERATION_REMOVED", "LEVEL_B_TO_A"]]
    assert all(c["category"] == "positive" for c in changes)


def test_deleted_listing_is_no_longer_open():
    profile, _ = merge_event(None, listing_event(200, "42"), offset=0, now_ms=NOW)
    new, changes = merge_event(profile, listing_event(300, "42", op="d"), offset=1, now_ms=NOW)
    assert new["abnormal_open_ids"] == []
    assert changes[0]["reason_codes"] == ["ABNORMAL_OPERATION_REMOVED", "LEVEL_B_TO_A"]


def test_deleted_registration_keeps_the_last_known_facts():
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    new, changes = merge_event(profile, registration_event(200, status="revoked", op="d"), offset=1, now_ms=NOW)
    assert new["status"] == "active" and changes == []


@pytest.mark.parametrize("offset", [5, 4, 0])
def test_replayed_offset_changes_nothing(offset):
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=5, now_ms=NOW)
    again, changes = merge_event(profile, registration_event(200, status="revoked"), offset=offset, now_ms=NOW + 99)
    assert again == profile and changes == []
    assert again["status"] == "active"


# --- replay property ---------------------------------------------------------------------------

STATUSES = ("active", "suspended", "revoked", "cancelled", "moved_out")
LISTINGS = ("1", "2", "3", "4")
REASONS = ("annual_report_missing", "unreachable_address", "false_information", "public_info_missing")

event_specs = st.one_of(
    st.tuples(st.just("status"), st.sampled_from(STATUSES), st.sampled_from(["u", "u", "c", "r", "d"])),
    st.tuples(st.just("listing"), st.sampled_from(LISTINGS), st.sampled_from(["c", "u", "d"]), st.booleans(), st.sampled_from(REASONS)),
)


def build_events(specs, gaps):
    events, offset = [], 0
    for i, (spec, gap) in enumerate(zip(specs, gaps, strict=True)):
        offset += gap
        seq = 1000 + i
        if spec[0] == "status":
            e = registration_event(seq, status=spec[1], op=spec[2])
        else:
            e = listing_event(seq, spec[1], op=spec[2], removed=spec[3], reason=spec[4])
        events.append((offset, e))
    return events


def run(events, profile=None):
    changes = []
    for offset, e in events:
        profile, found = merge_event(profile, e, offset, now_ms=NOW + offset)
        changes.extend(found)
    return profile, changes


@PROPERTY
@given(
    data=st.data(),
    specs=st.lists(event_specs, min_size=1, max_size=25),
)
def test_redelivery_after_a_crash_gives_the_same_profile_and_no_duplicate_changes(data, specs):
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=len(specs), max_size=len(specs)))
    events = build_events(specs, gaps)
    once, changes_once = run(events)

    # Crash after `done` events; the consumer restarts from an earlier committed position.
    done = data.draw(st.integers(0, len(events)))
    restart = data.draw(st.integers(0, done))
    partial, changes_before_crash = run(events[:done])
    after, changes_after_restart = run(events[restart:], partial)
    assert after == once
    assert changes_before_crash + changes_after_restart == changes_once

    # Replaying any prefix of an already merged sequence changes nothing.
    prefix = data.draw(st.integers(0, len(events)))
    replayed, replay_changes = run(events[:prefix], once)
    assert replayed == once and replay_changes == []


@PROPERTY
@given(specs=st.lists(event_specs, min_size=1, max_size=25))
def test_profile_invariants_hold_for_any_sequence(specs):
    profile, changes = run(build_events(specs, [1] * len(specs)))
    assert 0 <= profile["risk_score"] <= 1000
    assert profile["abnormal_open_ids"] == sorted(set(profile["abnormal_open_ids"]))
    assert len(profile["abnormal_open_ids"]) <= profile["abnormal_listings_total"]
    assert len({c["change_id"] for c in changes}) == len(changes)


def test_two_rows_of_one_enterprise_may_arrive_in_either_order():
    """Listings 1 and 2 sit on different department-topic partitions; the later commit can reach
    enterprise.events first. Neither may be mistaken for a replay."""
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    later_first, _ = merge_event(profile, listing_event(300, "2"), offset=1, now_ms=NOW)
    both, changes = merge_event(later_first, listing_event(200, "1"), offset=2, now_ms=NOW)
    assert both["abnormal_open_ids"] == ["1", "2"] and both["abnormal_listings_total"] == 2
    assert changes, "the earlier listing is news too"


# --- bounded replay memory ---------------------------------------------------------------------

def listings(n: int, first_seq: int = 1000):
    """``n`` listings of one enterprise, one new source row each, in commit order."""
    return [(i + 1, listing_event(first_seq + i, str(i))) for i in range(n)]


def test_only_the_most_recently_changed_rows_are_remembered(monkeypatch):
    monkeypatch.setattr("streams.core.profile.SOURCE_ROWS_KEPT", 3)
    profile, _ = run(listings(5))
    assert list(profile["source_seqs"].values()) == [1002, 1003, 1004], "the oldest rows are forgotten, newest last"
    # a row changed again moves to the end: the next new row evicts the least recently changed one
    profile, _ = merge_event(profile, listing_event(1010, "2", op="u", removed=True), offset=6, now_ms=NOW)
    profile, _ = merge_event(profile, listing_event(1011, "5"), offset=7, now_ms=NOW)
    assert list(profile["source_seqs"].values()) == [1004, 1010, 1011]


def test_a_replay_of_a_remembered_row_changes_nothing_after_eviction_of_others(monkeypatch):
    monkeypatch.setattr("streams.core.profile.SOURCE_ROWS_KEPT", 3)
    events = listings(6)
    profile, _ = run(events)
    for offset, (_, e) in enumerate(events[-3:], start=10):
        again, changes = merge_event(profile, e, offset=offset, now_ms=NOW)
        assert again is profile and changes == []


def test_a_forgotten_row_replayed_merges_to_the_same_facts(monkeypatch):
    """The documented price of the bound: a row forgotten since is merged again — its latest
    version sets what it already set."""
    monkeypatch.setattr("streams.core.profile.SOURCE_ROWS_KEPT", 2)
    events = listings(4)
    profile, _ = run(events)
    again, _ = merge_event(profile, events[0][1], offset=99, now_ms=NOW)
    bookkeeping = {"version", "last_event_id", "last_event_ts_ms", "updated_ts_ms", "source_seqs"}
    assert {k: v for k, v in again.items() if k not in bookkeeping} == \
           {k: v for k, v in profile.items() if k not in bookkeeping}


def test_the_order_of_remembered_rows_survives_the_avro_table(monkeypatch):
    """The table stores profiles as Avro: eviction after a restore must still drop the least
    recently changed row, so the map's order has to come back as it was written."""
    from streams.codecs.serde import schema_store

    monkeypatch.setattr("streams.core.profile.SOURCE_ROWS_KEPT", 4)
    schemas = schema_store()
    profile = None
    for offset, e in listings(4, first_seq=2000)[::-1]:  # rows arrive newest-id first: order ≠ key order
        profile, _ = merge_event(profile, e, offset=5 - offset, now_ms=NOW)
        _, profile = schemas.decode(schemas.encode("enterprise/profile", profile), "enterprise/profile")
    assert list(profile["source_seqs"].values()) == [2003, 2002, 2001, 2000]
    profile, _ = merge_event(profile, listing_event(2010, "9"), offset=10, now_ms=NOW)
    assert list(profile["source_seqs"].values()) == [2002, 2001, 2000, 2010]


def test_a_legacy_row_key_is_replaced_by_the_short_one():
    profile, _ = merge_event(None, registration_event(100, op="r"), offset=0, now_ms=NOW)
    e = registration_event(200, status="suspended")
    legacy = f"market.enterprise_registration#{USCC}"
    profile = {**profile, "source_seqs": {legacy: 150}}
    merged, _ = merge_event(profile, e, offset=1, now_ms=NOW)
    assert legacy not in merged["source_seqs"] and list(merged["source_seqs"].values()) == [200]


@PROPERTY
@given(specs=st.lists(event_specs, min_size=1, max_size=40), kept=st.integers(1, 6))
def test_replay_memory_never_exceeds_its_bound(specs, kept):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("streams.core.profile.SOURCE_ROWS_KEPT", kept)
        profile, _ = run(build_events(specs, [1] * len(specs)))
    assert 1 <= len(profile["source_seqs"]) <= kept
