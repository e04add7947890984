"""The erase request, marker and confirmation of streams/core/erasure.py, and how the merge and
the sink's row mapping treat a marker."""

from __future__ import annotations

import pytest

from streams.codecs.serde import schema_store
from streams.core.erasure import (
    BadRequest,
    erase_applied,
    erase_marker,
    erase_request,
    is_erase_marker,
    replayed_marker,
)
from streams.core.masking import assert_no_pii
from streams.core.profile import merge_event, new_profile

USCC = "91110000600037341L"
RID = "0123456789abcdef0123456789abcdef"


def test_a_marker_is_an_enterprise_event_with_nothing_but_the_uscc():
    schemas = schema_store()
    request = erase_request(RID, USCC, "operator", 1_709_294_400_000)
    marker = erase_marker(request, "control.erasures", 3, 17, 1_709_294_400_500)
    _, back = schemas.decode(schemas.encode("enterprise/event", marker), "enterprise/event")
    assert back == marker and is_erase_marker(back)
    assert back["op"] == "erase" and back["uscc"] == USCC and back["attributes"] == {"request_id": RID}
    assert back["before"] is None and back["event_ts_ms"] == 1_709_294_400_000
    assert_no_pii(back, "erase marker")
    applied = erase_applied(back, "yurong-worker", 1, 99, True, 1_709_294_401_000)
    assert schemas.decode(schemas.encode("control/erasure_applied", applied))[1] == applied
    assert applied["request_id"] == RID and applied["events_offset"] == 99


@pytest.mark.parametrize("bad", [{"request_id": "x" * 32}, {"request_id": RID[:-1]}, {"uscc": "91110000600037341X"}])
def test_a_malformed_request_is_refused(bad):
    request = {"request_id": RID, "uscc": USCC, "requested_by": "operator", "requested_ts_ms": 1, **bad}
    with pytest.raises(BadRequest):
        erase_request(request["request_id"], request["uscc"], "operator", 1)


def test_a_marker_merged_before_a_newer_profile_is_a_replay():
    p = {**new_profile(USCC), "version": 120}
    assert replayed_marker(p, 100)       # the profile was built after the marker at 100: leave it
    assert replayed_marker(p, 120)
    assert not replayed_marker(p, 121)   # a profile from before the marker: drop it
    assert not replayed_marker(None, 5)  # nothing held: tombstone and confirm again (harmless)


def test_the_merge_never_folds_a_marker_into_a_profile():
    marker = erase_marker(erase_request(RID, USCC, "operator", 1), "control.erasures", 0, 1, 2)
    with pytest.raises(ValueError, match="erase marker"):
        merge_event(new_profile(USCC), marker, 10, 3)
