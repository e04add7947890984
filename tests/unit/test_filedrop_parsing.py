"""File-drop parsing and the file simulator's output, without Kafka."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from connectors.filedrop import ManifestError, read_rows, sha256_of
from connectors.polling import Cursor, from_micros, to_micros
from connectors.simulator.file_depts import COLUMNS, FileDropSimulator, csv_bytes, patent_check_digit, xlsx_bytes
from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.market import Enterprise
from streams.core.identifiers import is_valid_uscc


def test_chinese_csv_with_bom_and_line_numbers():
    data = "\ufeffuscc,title\r\n91500103MA5U0X7Y1C,一种火锅底料的制备方法\r\n\r\n91500103MA5U0X7Y1C,\"含,逗号\"\r\n".encode("utf-8")
    rows = read_rows("patent-x.csv", data)
    assert [line for line, _ in rows] == [2, 4]  # blank line skipped, physical line kept
    assert rows[0][1] == {"uscc": "91500103MA5U0X7Y1C", "title": "一种火锅底料的制备方法"}
    assert rows[1][1]["title"] == "含,逗号"


def test_gb18030_csv_fallback_and_empty_cells_are_none():
    rows = read_rows("water_usage-x.csv", "uscc,address\r\nA,重庆市渝中区\r\nB,\r\n".encode("gb18030"))
    assert rows[0][1]["address"] == "重庆市渝中区" and rows[1][1]["address"] is None


def test_extra_fields_are_flagged_and_empty_file_is_an_error():
    rows = read_rows("patent-x.csv", b"a,b\r\n1,2,3\r\n")
    assert rows[0][1]["_extra"] == ["3"]
    with pytest.raises(ManifestError, match="empty"):
        read_rows("patent-x.csv", b"")


def test_xlsx_rows_keep_dates_and_numbers():
    data = xlsx_bytes(["registration_no", "nice_class", "application_date"], [
        {"registration_no": "51234567", "nice_class": 43, "application_date": dt.date(2020, 1, 6)}])
    (line, row), = read_rows("trademark-x.xlsx", data)
    assert line == 2 and row["nice_class"] == 43 and row["application_date"].date() == dt.date(2020, 1, 6)
    with pytest.raises(ManifestError, match="XLSX"):
        read_rows("trademark-x.xlsx", b"not a zip")


def test_simulator_files_match_their_manifests_and_are_deterministic(tmp_path):
    rng = random.Random(1)
    ents = []
    for _ in range(60):
        u = make_uscc(rng, pick_district(rng))
        ents.append(Enterprise(u, u[2:8], False))
    a = FileDropSimulator(tmp_path / "a", seed=3).seed(ents, today=dt.date(2026, 3, 1))
    b = FileDropSimulator(tmp_path / "b", seed=3).seed(ents, today=dt.date(2026, 3, 1))
    assert [p.name for p in a] == [p.name for p in b]
    for p, q in zip(a, b, strict=True):
        manifest = json.loads((p.parent / (p.name + ".manifest.json")).read_text())
        assert manifest["sha256"] == sha256_of(p.read_bytes())
        assert manifest["rows"] == len(read_rows(p.name, p.read_bytes()))
        assert manifest["dataset"] == p.name.split("-")[0]
        if p.suffix == ".csv":
            assert p.read_bytes() == q.read_bytes()
            assert all(is_valid_uscc(r["uscc"]) for _, r in read_rows(p.name, p.read_bytes()))


def test_patent_numbers_and_csv_bytes():
    assert patent_check_digit("201310123456") in "0123456789X"
    assert csv_bytes(COLUMNS["patent"][:2], [{"application_no": "CN1", "uscc": None}]).startswith(b"\xef\xbb\xbf")


def test_polling_cursor_round_trips_with_microseconds():
    ts = dt.datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)
    c = Cursor(ts, (42,))
    assert Cursor.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert from_micros(to_micros(ts)) == ts
