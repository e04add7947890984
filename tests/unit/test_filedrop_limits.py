"""File drops are read defensively (issue 14, item 9): no symbolic links, size and row limits
checked before rows are built (an XLSX zip bomb costs nothing), XML without entity expansion
(openpyxl uses defusedxml), and a rejected file's reason never quotes its content."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import openpyxl
import pytest

from connectors.filedrop import ManifestError, read_limited, read_rows


def _xlsx(rows: list[list]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_a_symbolic_link_is_refused_even_to_a_readable_file(tmp_path: Path):
    other = tmp_path / "other-dept" / "secret.csv"
    other.parent.mkdir()
    other.write_text("name,id_number\n张三,500112198307154238\n")
    link = tmp_path / "water_usage-x.csv"
    os.symlink(other, link)
    with pytest.raises(ManifestError, match="symbolic link") as err:
        read_limited(link, 1 << 20)
    assert "500112" not in str(err.value) and "张三" not in str(err.value)
    assert read_limited(other, 1 << 20).startswith(b"name,")  # a regular file reads


def test_a_file_above_the_size_limit_is_refused_unread(tmp_path: Path):
    big = tmp_path / "water_usage-big.csv"
    big.write_bytes(b"a,b\n" + b"1,2\n" * 1000)
    with pytest.raises(ManifestError, match="more than the limit"):
        read_limited(big, 1000)


def test_row_limits_for_csv_and_xlsx():
    csv_data = b"a,b\n" + b"1,2\n" * 11
    assert len(read_rows("x.csv", csv_data, max_rows=11)) == 11
    with pytest.raises(ManifestError, match="more than 10 data rows"):
        read_rows("x.csv", csv_data, max_rows=10)
    xlsx = _xlsx([["a", "b"]] + [[i, i] for i in range(11)])
    with pytest.raises(ManifestError, match="more than 10 data rows"):
        read_rows("x.xlsx", xlsx, max_rows=10)


def test_an_xlsx_that_expands_beyond_the_limit_is_refused_before_parsing():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b"<a>" + b"0" * 5_000_000 + b"</a>")  # 5 MB of zeros, a few KB zipped
    assert len(buf.getvalue()) < 50_000
    with pytest.raises(ManifestError, match="expands to 5,000,007 bytes"):
        read_rows("x.xlsx", buf.getvalue(), max_bytes=1_000_000)


def test_xml_entities_are_not_expanded_and_the_reason_quotes_nothing():
    data = _xlsx([["name"], ["marker-cell"]])
    src = zipfile.ZipFile(io.BytesIO(data))
    sheet = src.read("xl/worksheets/sheet1.xml")
    assert b"marker-cell" in sheet
    head, _, body = sheet.partition(b"?>")
    entity = b'<!DOCTYPE worksheet [<!ENTITY lol "500112198307154238">]>'
    hostile = head + b"?>" + entity + body.replace(b"marker-cell", b"&lol;&lol;")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for item in src.infolist():
            z.writestr(item, hostile if item.filename == "xl/worksheets/sheet1.xml" else src.read(item.filename))
    with pytest.raises(ManifestError) as err:  # defusedxml refuses the entity; without it the ID would be a cell
        read_rows("x.xlsx", out.getvalue())
    assert "500112" not in str(err.value) and "not a readable XLSX workbook" in str(err.value)


def test_undecodable_text_is_reported_by_offset_not_content():
    with pytest.raises(ManifestError) as err:
        read_rows("x.csv", "a,b\n张三,1\n".encode()[:9] + b"\xff\xfe\x80")
    assert "offset" in str(err.value) and "\\x" not in str(err.value)
