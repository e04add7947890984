"""``yurong assess``: the data-sharing assessment (数据汇集考核) as a report for the bureau.

Reads ``dept_assessment`` through the SQL gateway (the sink computes it: ``sinks/assessment.py``):
one day (``--date``, default today, live) or a month (``--month``: per department the mean of its
daily scores, its worst day and its most frequent reasons). Output as a table, CSV (formula cells
neutralised) or XLSX (``--out``).
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from streams.cli.output import csv_row
from streams.core.assessment import DIMENSION_ZH, DIMENSIONS, AssessmentConfig
from streams.core.catalogue import catalogue
from streams.settings import get_settings

Query = Callable[[str, dict[str, str]], dict]

DAY_SQL = ("SELECT dept, dataset, score, grade, dimensions, indicators, reasons, live, computed_ts "
           "FROM dept_assessment FINAL WHERE day = {d:Date} ORDER BY dept, dataset")

HEADER = ["部门 department", "score", "grade", *[f"{DIMENSION_ZH[d]} {d}" for d in DIMENSIONS], "reasons"]


def _dept_name(dept: str) -> str:
    deps = catalogue().departments
    return f"{deps[dept].name_zh} {dept}" if dept in deps else dept


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.0f}"


def day_report(query: Query, day: dt.date, datasets: bool = False) -> list[dict[str, Any]]:
    """The department rows (and with ``datasets`` their datasets') of one day."""
    out = query(DAY_SQL, {"d": day.isoformat()})
    rows = [dict(zip(out["columns"], r, strict=True)) for r in out["rows"]]
    return [r for r in rows if datasets or r["dataset"] == ""]


def month_report(query: Query, month: str, console: Console) -> list[dict[str, Any]]:
    """Per department over the month's assessed days: mean score, worst day, frequent reasons."""
    year, mon = (int(x) for x in month.split("-"))
    days = [dt.date(year, mon, d) for d in range(1, calendar.monthrange(year, mon)[1] + 1)]
    days = [d for d in days if d <= dt.datetime.now(dt.UTC).date()]
    per_dept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reading {month}", total=len(days))
        for d in days:
            for r in day_report(query, d):
                per_dept[r["dept"]].append({**r, "day": d.isoformat()})
            progress.advance(task)
    cfg = AssessmentConfig.load(get_settings().assess.config)  # the grades the sink uses
    report = []
    for dept, rows in sorted(per_dept.items()):
        score = sum(r["score"] for r in rows) / len(rows)
        dims = {d: sum(r["dimensions"][d] for r in rows if d in r["dimensions"]) / n
                for d in DIMENSIONS if (n := sum(1 for r in rows if d in r["dimensions"]))}
        worst = min(rows, key=lambda r: r["score"])
        reasons = [f"{why} ({n} days)" for why, n in Counter(x for r in rows for x in r["reasons"]).most_common(5)]
        report.append({"dept": dept, "dataset": "", "score": round(score, 1), "grade": cfg.grade(score),
                       "dimensions": dims, "reasons": [f"worst day {worst['day']}: {worst['score']:.0f}", *reasons],
                       "days": len(rows)})
    return report


def cells(r: dict[str, Any]) -> list[str]:
    label = _dept_name(r["dept"]) + (f" / {r['dataset']}" if r.get("dataset") else "")
    return [label, _fmt(r["score"]), r["grade"], *[_fmt(r["dimensions"].get(d)) for d in DIMENSIONS],
            "; ".join(r["reasons"])]


def table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(*HEADER, title=title)
    for r in sorted(rows, key=lambda r: (r["score"], r["dept"], r.get("dataset", ""))):
        t.add_row(*(Text(c) for c in cells(r)))  # data is never markup
    return t


def write_csv(rows: list[dict[str, Any]], out: Path | None) -> None:
    f = open(out, "w", newline="", encoding="utf-8-sig") if out else sys.stdout
    try:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(csv_row(cells(r)) for r in sorted(rows, key=lambda r: (r["score"], r["dept"])))
    finally:
        if out:
            f.close()


def write_xlsx(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "数据汇集考核"
    ws.append([title])
    ws["A1"].font = Font(bold=True)
    ws.append(HEADER)
    for r in sorted(rows, key=lambda r: (r["score"], r["dept"])):
        c = csv_row(cells(r))  # a text cell starting with '=' would be a formula to openpyxl too
        ws.append([c[0], float(r["score"]), c[2], *[r["dimensions"].get(d) for d in DIMENSIONS], c[-1]])
    for col, width in zip("ABCDEFGHI", (28, 8, 6, 10, 10, 10, 10, 10, 120), strict=True):
        ws.column_dimensions[col].width = width
    wb.save(out)
