"""Query results written out safely: data is data, never a formula or markup.

- CSV (``yurong sql --format csv``): a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
  or a carriage return is a formula to Excel and LibreOffice (``=HYPERLINK(...)`` leaks data when
  the bureau opens the file). Such cells get a leading apostrophe, as OWASP's CSV-injection advice
  says; numbers stay numbers.
- Tables (rich): a cell is a ``Text`` object, so ``[bold]`` or ``a [/] b`` in the data is printed
  as it is instead of being read as console markup (``[/]`` alone crashed the command).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: text starting like a formula is prefixed with ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(values: list[Any]) -> list[Any]:
    return [csv_cell(v) for v in values]


def table_cell(value: Any) -> Text:
    """A table cell that shows ``value`` literally (None as empty)."""
    return Text("" if value is None else str(value))


def result_table(columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table of a query result, every header and cell literal."""
    t = Table()
    for c in columns:
        t.add_column(table_cell(c))
    for row in rows:
        t.add_row(*(table_cell(v) for v in row))
    return t
