"""Pseudonyms carry the id of the key that made them (issue 14, item 6): ``p1_<32 hex>``. The key
and its id load together (a key file ``p2:<key>``, or a key alone with ``YURONG_MASKING_KEY_ID``,
default ``p1``); profiles merged before key ids keep recognising their rows; and no person's
pseudonym reaches a bank, which is why there is no per-bank pseudonym."""

from __future__ import annotations

import hmac
import json
import re

import pydantic
import pytest

from streams.core.catalogue import catalogue
from streams.core.masking import PSEUDONYM, Pseudonymizer, find_pii_in_text, row_token
from streams.core.profile import merge_event
from streams.errors import ConfigError
from streams.settings import REPO_ROOT, Settings
from streams.worker.secrets import generate_key_file, load_pseudonymizer

KEY = b"k" * 32
ID_NUMBER = "34052419800101001X"
FORMAT = re.compile(r"p[0-9]+_[0-9a-f]{32}")


def test_a_pseudonym_names_its_key():
    p1 = Pseudonymizer(KEY).pseudonym("id_number", ID_NUMBER)
    assert FORMAT.fullmatch(p1) and p1.startswith("p1_")
    p2 = Pseudonymizer(b"n" * 32, "p2").pseudonym("id_number", ID_NUMBER)
    assert p2.startswith("p2_") and p2[3:] != p1[3:]
    # the old form (no key id) was the same HMAC: p_<hex> of the first key is p1_<hex>
    legacy = "p_" + hmac.digest(KEY, f"id_number:{ID_NUMBER}".encode(), "sha256").hex()[:32]
    assert legacy[2:] == p1[3:]
    assert PSEUDONYM.fullmatch(legacy) and PSEUDONYM.fullmatch(p1) and PSEUDONYM.fullmatch(p2)


@pytest.mark.parametrize("key_id", ["", "p", "P1", "q1", "p1_", "p-1", "p1 "])
def test_a_key_id_is_p_and_a_number(key_id):
    with pytest.raises(ConfigError, match="key id"):
        Pseudonymizer(KEY, key_id)


def test_the_detector_skips_pseudonyms_of_any_key():
    # a pseudonym whose hex holds a mobile-like digit run is not a phone number, whatever its key id
    hexes = "c" + "13812345678" + "d" * 20
    for key_id in ("p", "p1", "p2", "p17"):
        assert find_pii_in_text(f"{key_id}_{hexes}") is None
    assert find_pii_in_text(f"x1_{hexes}") == "phone", "only our own form is skipped"
    # the profile's short row keys: <dataset>#p_<14 hex> (streams.core.profile.source_row)
    assert find_pii_in_text("social_insurance#p_13791214736a82") is None
    assert find_pii_in_text("social_insurance#p_13791214736a8") == "phone", "13 hex is not our form"


def _load(monkeypatch, tmp_path, content: bytes | None = None, key_id: str | None = None, env_key: str | None = None):
    for var in ("YURONG_MASKING_HMAC_KEY", "YURONG_MASKING_KEY_FILE", "YURONG_MASKING_KEY_ID"):
        monkeypatch.delenv(var, raising=False)
    if content is not None:
        (path := tmp_path / "pseudonym.key").write_bytes(content)
        monkeypatch.setenv("YURONG_MASKING_KEY_FILE", str(path))
    if key_id is not None:
        monkeypatch.setenv("YURONG_MASKING_KEY_ID", key_id)
    if env_key is not None:
        monkeypatch.setenv("YURONG_MASKING_HMAC_KEY", env_key)
    return load_pseudonymizer(Settings())


def test_a_key_file_of_the_key_alone_is_key_p1(monkeypatch, tmp_path):
    """What scripts/stack.sh (openssl rand -hex 32) and the demo wrote before key ids."""
    hex_key = "ab" * 32
    p = _load(monkeypatch, tmp_path, (hex_key + "\n").encode())
    assert p.key_id == "p1"
    assert p.pseudonym("id_number", ID_NUMBER) == Pseudonymizer(hex_key.encode()).pseudonym("id_number", ID_NUMBER)
    assert _load(monkeypatch, tmp_path, hex_key.encode(), key_id="p3").key_id == "p3"


def test_a_key_file_carries_its_id(monkeypatch, tmp_path):
    hex_key = "cd" * 32
    p = _load(monkeypatch, tmp_path, f"p2:{hex_key}\n".encode())
    assert p.key_id == "p2"
    assert p.pseudonym("phone", "13812345678") == Pseudonymizer(hex_key.encode(), "p2").pseudonym("phone", "13812345678")
    assert _load(monkeypatch, tmp_path, f"p2:{hex_key}".encode(), key_id="p2").key_id == "p2"
    with pytest.raises(ConfigError, match="p2 but YURONG_MASKING_KEY_ID says p1"):
        _load(monkeypatch, tmp_path, f"p2:{hex_key}".encode(), key_id="p1")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        _load(monkeypatch, tmp_path, b"p2:short")


def test_a_key_in_the_environment_takes_an_id_too(monkeypatch, tmp_path):
    assert _load(monkeypatch, tmp_path, env_key="e" * 40).key_id == "p1"
    assert _load(monkeypatch, tmp_path, env_key="p4:" + "e" * 40).key_id == "p4"


def test_a_malformed_key_id_setting_is_refused(monkeypatch):
    monkeypatch.setenv("YURONG_MASKING_KEY_ID", "key1")
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_a_generated_key_file_names_its_id_and_stays_private(monkeypatch, tmp_path):
    path = generate_key_file(tmp_path / "secrets" / "pseudonym.key")
    assert re.fullmatch(r"p1:[0-9a-f]{64}\n", path.read_text())
    assert path.stat().st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0
    monkeypatch.delenv("YURONG_MASKING_HMAC_KEY", raising=False)
    monkeypatch.delenv("YURONG_MASKING_KEY_ID", raising=False)
    monkeypatch.setenv("YURONG_MASKING_KEY_FILE", str(path))
    assert load_pseudonymizer(Settings()).key_id == "p1"
    assert "p1" in repr(load_pseudonymizer(Settings())) and path.read_text()[3:30] not in repr(load_pseudonymizer(Settings()))


# --- profiles merged before key ids -------------------------------------------------------------

USCC = "91110000600037341L"
HEX = "0123456789abcdef" * 2


def _arrears(seq: int, status: str, token: str) -> dict:
    attributes = {"id": "7", "uscc": USCC, "status": status, "amount": "1000.0", "tax_type": "vat",
                  "legal_rep_name": "张*", "legal_rep_id_number": "3405**********001X"}
    return {"event_id": f"tax.tax_arrears@0/{seq:X}#{token}", "uscc": USCC, "dept": "tax", "dataset": "tax_arrears",
            "op": "u", "attributes": attributes, "before": None, "position": f"0/{seq:X}", "seq": seq,
            "event_ts_ms": 1_709_294_400_000 + seq}


def test_row_token_drops_the_key_id():
    assert row_token(f"p1_{HEX}") == row_token(f"p2_{HEX}") == row_token(f"p_{HEX}") == f"p_{HEX}"
    assert row_token(USCC) == USCC and row_token(f"p1_{HEX}x") == f"p1_{HEX}x"


def test_a_profile_merged_before_key_ids_knows_its_rows():
    """A row merged when row pseudonyms were ``p_<hex>``: the same change again with ``p1_<hex>``
    is a replay, and the row's next change replaces its open item instead of adding a second."""
    before, _ = merge_event(None, _arrears(100, "outstanding", f"p_{HEX}"), offset=0, now_ms=1)
    assert list(before["open_items"]["tax.arrears"]) == [f"p_{HEX}"]
    again, changes = merge_event(before, _arrears(100, "outstanding", f"p1_{HEX}"), offset=1, now_ms=2)
    assert changes == [] and again["version"] == before["version"], "a replay across the upgrade"
    paid, _ = merge_event(before, _arrears(101, "paid", f"p1_{HEX}"), offset=2, now_ms=3)
    assert paid["open_items"]["tax.arrears"] == {}, "the row's arrears are paid, not counted twice"
    assert list(paid["source_seqs"].values()) == [101]


# --- what reaches a bank ---------------------------------------------------------------------------

def test_no_row_key_is_a_personal_field():
    """Event ids (and so the change and alert ids a bank receives) end with the pseudonym of the
    source row's key; that is a person's pseudonym only if a key field is personal data."""
    for ds in catalogue().by_topic().values():
        personal = {r.field for r in ds.masking.rules}
        assert not personal & set(ds.key), f"{ds.qualified}: a row key field is personal data"


def test_an_alert_carries_no_persons_pseudonym():
    """A bank's alert: its schema has no pseudonym field, and an alert built from a change of an
    enterprise whose legal representative has a pseudonym holds no pseudonym but the row token of
    its ids. Per-bank pseudonyms would have nothing to replace, so there are none."""
    fields = {f["name"] for f in json.loads((REPO_ROOT / "avro" / "risk" / "alert.avsc").read_text())["fields"]}
    assert not [f for f in fields if "pseudonym" in f or "legal_rep" in f]
    person = Pseudonymizer(KEY).pseudonym("id_number", ID_NUMBER)
    row = Pseudonymizer(KEY).pseudonym("row_key", "market.enterprise_registration:" + USCC)
    reg = {"uscc": USCC, "name": "重庆某某科技有限公司", "status": "active", "district_code": "500103",
           "industry_code": "I6513", "registered_capital": "500.0", "established_date": "2015-06-01",
           "legal_rep_id_number": "3405**********001X", "legal_rep_id_number_pseudonym": person,
           "legal_rep_name": "张**", "legal_rep_phone": "138****5678", "address": "重庆市渝中区"}

    def event(seq: int, op: str, status: str) -> dict:
        return {"event_id": f"market.enterprise_registration@0/{seq:X}#{row}", "uscc": USCC, "dept": "market",
                "dataset": "enterprise_registration", "op": op, "attributes": {**reg, "status": status}, "before": None,
                "position": f"0/{seq:X}", "seq": seq, "event_ts_ms": 1_709_294_400_000 + seq}

    profile, _ = merge_event(None, event(100, "r", "active"), offset=0, now_ms=1)
    assert profile["legal_rep_pseudonym"] == person
    _, changes = merge_event(profile, event(101, "u", "revoked"), offset=1, now_ms=2)
    assert changes
    for change in changes:
        alert = {"alert_id": f"b0001/{change['change_id']}", "bank_id": "b0001", "consent_id": "c1", **change,
                 "published_ts_ms": 3}
        text = json.dumps(alert, ensure_ascii=False)
        assert person not in text and person[3:] not in text
        assert {m.group(0) for m in PSEUDONYM.finditer(text)} == {row}

