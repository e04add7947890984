"""Departments that deliver files (``connectors/filedrop.py``): 水务 (water), 知识产权局 (ip), 科技局 (science).

``FileDropSimulator(root_folder, seed)`` writes into ``<root>/<dept>/`` exactly what the departments
send: ``<dataset>-<tag>.csv`` (UTF-8 with BOM, as Excel exports it) or ``.xlsx`` (trademarks), each
followed by its ``<file>.manifest.json`` {dataset, rows, sha256}. Files are written under a
hidden temporary name and renamed, and the manifest comes last, so the connector never sees a
half-written file. Deterministic from ``seed`` (file modification times aside).

Dynamics: monthly water bills with a summer peak and arrears for distressed enterprises; most
SMEs hold no patent, a quarter hold a few (utility models dominate), fewer hold trademarks;
patent/trademark pledges are rare; about one in twelve enterprises is a certified high-tech
enterprise (certificates run three years).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from faker import Faker

from connectors.simulator.bulk import chunks
from connectors.simulator.identities import CHONGQING_DISTRICTS, UniqueCodes, make_mobile
from connectors.simulator.market import Enterprise
from connectors.simulator.misbehave import NONE, Misbehaviour

DATASETS = {
    "water": {"water_usage": "csv"},
    "ip": {"patent": "csv", "trademark": "xlsx", "ip_pledge": "csv"},
    "science": {"high_tech_certification": "csv"},
}
COLUMNS = {
    "water_usage": ["account_no", "billing_month", "uscc", "volume_m3", "amount", "arrears", "payment_status",
                    "contact_phone", "address"],
    "patent": ["application_no", "uscc", "title", "patent_type", "application_date", "grant_date", "legal_status",
               "inventor_name"],
    "trademark": ["registration_no", "uscc", "mark_name", "nice_class", "application_date", "registration_date",
                  "expiry_date", "status"],
    "ip_pledge": ["pledge_no", "uscc", "ip_type", "ip_no", "pledgee", "amount", "registration_date", "start_date",
                  "end_date", "status", "contact_name", "contact_phone"],
    "high_tech_certification": ["certificate_no", "uscc", "enterprise_name", "technical_field", "issue_date",
                                "expiry_date", "status", "rd_expense_ratio", "contact_name", "contact_phone"],
}
WATER_SEASON = {1: 0.85, 2: 0.8, 3: 0.9, 4: 0.95, 5: 1.05, 6: 1.15, 7: 1.3, 8: 1.35, 9: 1.15, 10: 1.0, 11: 0.9, 12: 0.85}
WATER_PRICE = 4.65  # CNY/m³, Chongqing non-residential water + sewage
PATENT_TYPES = {"invention": ("1", 25), "utility_model": ("2", 55), "design": ("3", 20)}
PATENT_TITLES = ["一种汽车座椅调节装置", "一种火锅底料的制备方法", "一种智能物流分拣系统", "一种电路板散热结构",
                 "一种建筑模板支撑装置", "包装盒（火锅底料）", "一种数据采集终端", "一种金属构件焊接夹具"]
NICE_CLASSES = [9, 35, 42, 43, 30, 29, 12, 7, 37, 39]
BANKS = ["重庆农村商业银行", "重庆银行", "重庆三峡银行", "中国工商银行重庆市分行", "中国建设银行重庆市分行", "招商银行重庆分行"]
TECH_FIELDS = ["electronic_information", "biomedicine", "aerospace", "new_materials", "high_tech_services", "new_energy",
               "resources_environment", "advanced_manufacturing"]
_TECH_WEIGHTS = [30, 8, 1, 10, 20, 6, 5, 20]
# Rows per seed file: a department exports a large register in parts (and the connector reads a
# file at once), so a city of a million enterprises drops several files per dataset.
MAX_FILE_ROWS = 100_000


def patent_check_digit(first12: str) -> str:
    """Check character of a CNIPA application number (weights 2-9 cycling, mod 11, 10 → X)."""
    weights = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    c = sum(int(d) * w for d, w in zip(first12, weights, strict=True)) % 11
    return "X" if c == 10 else str(c)


def write_manifest(path: Path, dataset: str, rows: int) -> Path:
    """Write ``<file>.manifest.json`` for ``path`` (call after the file is complete)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    manifest = Path(str(path) + ".manifest.json")
    tmp = manifest.with_name("." + manifest.name + ".tmp")
    tmp.write_text(json.dumps({"dataset": dataset, "rows": rows, "sha256": digest.hexdigest()}), encoding="utf-8")
    os.replace(tmp, manifest)
    return manifest


def _csv_record(columns: list[str], row: dict) -> dict:
    return {k: ("" if row.get(k) is None else row[k]) for k in columns}


def csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow(_csv_record(columns, r))
    return buf.getvalue().encode("utf-8-sig")


def xlsx_bytes(columns: list[str], rows: list[dict]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.worksheets[0]  # the new workbook's one (active) sheet
    ws.append(columns)
    for r in rows:
        ws.append([r.get(k) for k in columns])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


class DataFileWriter:
    """One data file written row by row under a hidden temporary name in ``folder`` (the
    connector ignores names starting with a dot), in the bytes ``csv_bytes``/``xlsx_bytes``
    give for the same rows (XLSX: the same cells). ``publish`` renames it and writes the manifest."""

    def __init__(self, folder: Path, dataset: str, ext: str, columns: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dataset}-", suffix=f".{ext}.tmp", dir=folder)
        os.close(fd)
        self.tmp, self.dataset, self.ext, self.columns, self.rows = Path(tmp), dataset, ext, columns, 0
        if ext == "xlsx":
            import openpyxl

            self._book = openpyxl.Workbook(write_only=True)  # streams rows to disk: memory stays flat
            self._sheet = self._book.create_sheet()
            self._sheet.append(columns)
        else:
            self._file = open(self.tmp, "w", encoding="utf-8-sig", newline="")
            self._csv = csv.DictWriter(self._file, fieldnames=columns, lineterminator="\r\n")
            self._csv.writeheader()

    def write(self, rows: Iterable[dict]) -> None:
        for r in rows:
            if self.ext == "xlsx":
                self._sheet.append([r.get(k) for k in self.columns])
            else:
                self._csv.writerow(_csv_record(self.columns, r))
            self.rows += 1

    def close(self) -> None:
        if self.ext == "xlsx":
            self._book.save(self.tmp)
        else:
            self._file.close()

    def publish(self, path: Path) -> Path:
        """Move the closed file to ``path`` and write its manifest (the connector takes it then)."""
        os.replace(self.tmp, path)
        write_manifest(path, self.dataset, self.rows)
        return path

    def discard(self) -> None:
        if self.ext != "xlsx":
            self._file.close()
        self.tmp.unlink(missing_ok=True)


def drop_file(folder: Path, name: str, dataset: str, columns: list[str], rows: list[dict]) -> Path:
    """Write one data file (CSV or XLSX by ``name``) and then its manifest; return the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = xlsx_bytes(columns, rows) if name.endswith(".xlsx") else csv_bytes(columns, rows)
    path = folder / name
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    write_manifest(path, dataset, len(rows))
    return path


class FileDropSimulator:
    def __init__(self, root_folder: str | Path, seed: int = 2019, folders: dict[str, str] | None = None) -> None:
        self.root = Path(root_folder)
        self.folders = {d: d for d in DATASETS} | (folders or {})
        self._seed = seed
        self.rng = random.Random(f"files:{seed}")
        self.fake = Faker("zh_CN")
        self.fake.seed_instance(seed)
        self.enterprises: list[Enterprise] = []
        self.water_accounts: dict[str, str] = {}
        self.water_base: dict[str, float] = {}
        self.ip_held: dict[str, list[tuple[str, str]]] = {}  # uscc → [(ip_type, number)]
        # live bills of enterprises that pay, by (account, month): paid in a later drop
        self._unpaid: dict[tuple[str, str], dict] = {}
        self._serial = 0
        self._codes = {kind: UniqueCodes() for kind in ("water", "patent", "trademark", "certificate")}
        self._candidates_key: tuple[int, int] | None = None
        self._cached: tuple[dict[str, Enterprise], list[str]] = ({}, [])
        self._ip_holders: list[str] = []  # sorted(self.ip_held), kept for step
        self.misbehave: Misbehaviour = NONE  # the city's department misbehaviours (connectors/simulator/misbehave.py)

    def folder(self, dept: str) -> Path:
        return self.root / self.folders[dept]

    # --- seed -------------------------------------------------------------------------------------

    def seed(self, enterprises: Iterable[Enterprise], today: dt.date | None = None, chunk: int = 0,
             progress: Callable[[int], None] | None = None) -> list[Path]:
        """History files for ``enterprises``: 3 months of water bills, IP holdings, certificates.

        One file per month of water bills and one per other dataset, split into parts of at most
        ``MAX_FILE_ROWS`` rows. Rows are made ``chunk`` enterprises at a time (default
        ``bulk.SEED_CHUNK``) and streamed into hidden files, which are published (renamed,
        manifest written) at the end in a fixed order: water by month, patents, trademarks,
        pledges, certificates. ``progress(k)`` is called after each chunk of ``k`` enterprises.
        """
        today = today or dt.date.today()
        parts: dict[tuple[str, str, str], list[DataFileWriter]] = {}  # (dept, dataset, tag) → its files

        def write(dept: str, dataset: str, tag: str, rows: list[dict]) -> None:
            rows = self.misbehave.seed_rows(dept, dataset, rows)
            files = parts.setdefault((dept, dataset, tag), [])
            while rows:
                if not files or files[-1].rows >= MAX_FILE_ROWS:
                    files.append(DataFileWriter(self.folder(dept), dataset, DATASETS[dept][dataset], COLUMNS[dataset]))
                room = MAX_FILE_ROWS - files[-1].rows
                files[-1].write(rows[:room])
                rows = rows[room:]

        try:
            for part in chunks(enterprises, chunk):
                rows = self.seed_rows(part, today)
                water_by_month: dict[str, list[dict]] = {}
                for row in rows["water_usage"]:
                    water_by_month.setdefault(row["billing_month"], []).append(row)
                for month, mrows in water_by_month.items():
                    write("water", "water_usage", f"{dt.date.fromisoformat(month):%Y%m}-seed", mrows)
                for ds in ("patent", "trademark", "ip_pledge"):
                    write("ip", ds, "seed", rows[ds])
                write("science", "high_tech_certification", "seed", rows["high_tech_certification"])
                if progress:
                    progress(len(part))
            for files in parts.values():
                for f in files:
                    f.close()
        except BaseException:
            for files in parts.values():
                for f in files:
                    f.discard()
            raise
        order = {"water_usage": 0, "patent": 1, "trademark": 2, "ip_pledge": 3, "high_tech_certification": 4}
        paths = []
        for dept, dataset, tag in sorted(parts, key=lambda k: (order[k[1]], k[2])):
            for f in parts[(dept, dataset, tag)]:
                self._serial += 1
                paths.append(f.publish(self.folder(dept) / f"{dataset}-{tag}-{self._serial:04d}.{f.ext}"))
        return paths

    def seed_rows(self, enterprises: Iterable[Enterprise], today: dt.date) -> dict[str, list[dict]]:
        """The rows of the history files ``seed`` drops, per dataset; no I/O. Registers the
        enterprises, their water accounts and IP holdings for the live drops."""
        new = list(enterprises)
        self.enterprises.extend(new)
        rng = self.rng
        rows: dict[str, list[dict]] = {ds: [] for ds in COLUMNS}
        for e in new:
            if rng.random() < 0.7:
                self.water_accounts[e.uscc] = self._codes["water"].draw_digits(rng, f"SW{e.district}", 7)
                self.water_base[e.uscc] = round(rng.lognormvariate(5.0, 0.8), 1)
                for back in range(3, 0, -1):
                    rows["water_usage"].append(self._water_row(e, _month_start(today, -back), settled=True))
            if rng.random() < 0.25:
                for _ in range(1 + min(int(rng.expovariate(0.4)), 20)):
                    rows["patent"].append(self._patent_row(e, today - dt.timedelta(days=rng.randint(60, 3000)), today))
            if rng.random() < 0.15:
                for _ in range(rng.randint(1, 4)):
                    rows["trademark"].append(self._trademark_row(e, today - dt.timedelta(days=rng.randint(300, 4000)), today))
            if self.ip_held.get(e.uscc) and rng.random() < 0.12:
                rows["ip_pledge"].append(self._pledge_row(e, today - dt.timedelta(days=rng.randint(10, 700)), today))
            if rng.random() < 0.08:
                rows["high_tech_certification"].append(self._cert_row(e, today, historic=True))
        return rows

    # --- live drops ---------------------------------------------------------------------------------

    def step(self, n: int, today: dt.date | None = None) -> list[Path]:
        """Drop new files holding about ``n`` records in all: this month's water bills, new patents,
        trademarks, pledges and certificates. A bill is issued unpaid; an enterprise that pays
        (not a distressed one, and not always) pays it in a later drop — the same row again with
        ``payment_status = paid`` and no arrears."""
        today = today or dt.date.today()
        rng = self.rng
        rows: dict[str, list[dict]] = {ds: [] for ds in COLUMNS}
        month = _month_start(today, 0)
        by_uscc, with_water = self._candidates()
        for key in [k for k in self._unpaid if rng.random() < 0.5]:
            rows["water_usage"].append({**self._unpaid.pop(key), "arrears": 0.0, "payment_status": "paid"})
        for _ in range(n):
            roll = rng.random()
            e = rng.choice(self.enterprises)
            if roll < 0.6 and self.water_accounts:
                e = by_uscc[rng.choice(with_water)]
                bill = self._water_row(e, month, settled=False)
                rows["water_usage"].append(bill)
                if not e.distressed:
                    self._unpaid[(bill["account_no"], bill["billing_month"])] = bill
            elif roll < 0.8:
                rows["patent"].append(self._patent_row(e, today - dt.timedelta(days=rng.randint(0, 30)), today))
            elif roll < 0.9:
                rows["trademark"].append(self._trademark_row(e, today - dt.timedelta(days=rng.randint(0, 30)), today))
            elif roll < 0.95 and self.ip_held:
                if len(self._ip_holders) != len(self.ip_held):  # new holders come with granted patents
                    self._ip_holders = sorted(self.ip_held)
                e = by_uscc[rng.choice(self._ip_holders)]
                rows["ip_pledge"].append(self._pledge_row(e, today, today))
            else:
                rows["high_tech_certification"].append(self._cert_row(e, today, historic=False))
        # one water bill per account and month in a file
        rows["water_usage"] = list({(r["account_no"], r["billing_month"]): r for r in rows["water_usage"]}.values())
        paths = []
        tag = f"{today:%Y%m%d}"
        for dept, datasets in DATASETS.items():
            for ds in datasets:
                written = self.misbehave.live_rows(dept, ds, rows[ds], today)  # a misbehaving department's
                if written:
                    paths.append(self._drop(dept, ds, tag, written))
        return paths

    def _candidates(self) -> tuple[dict[str, Enterprise], list[str]]:
        """Enterprises by USCC and the sorted USCCs with a water account, kept between steps
        (rebuilt when a seed has added enterprises or accounts): sorting 700,000 accounts per
        water bill made a step at a million enterprises take seconds."""
        key = (len(self.enterprises), len(self.water_accounts))
        if self._candidates_key != key:
            self._candidates_key = key
            self._cached = ({x.uscc: x for x in self.enterprises}, sorted(self.water_accounts))
        return self._cached

    def _drop(self, dept: str, dataset: str, tag: str, rows: list[dict]) -> Path:
        self._serial += 1
        ext = DATASETS[dept][dataset]
        return drop_file(self.folder(dept), f"{dataset}-{tag}-{self._serial:04d}.{ext}", dataset, COLUMNS[dataset], rows)

    # --- rows ---------------------------------------------------------------------------------------

    def _water_row(self, e: Enterprise, month: dt.date, settled: bool) -> dict:
        rng = self.rng
        volume = round(self.water_base[e.uscc] * WATER_SEASON[month.month] * rng.uniform(0.85, 1.15), 1)
        if e.distressed:
            volume = round(volume * rng.uniform(0.3, 0.8), 1)
        amount = round(volume * WATER_PRICE, 2)
        if e.distressed and rng.random() < 0.6:
            arrears, status = amount, "unpaid"
        elif settled:
            arrears, status = 0.0, "paid"
        else:
            arrears, status = amount, "unpaid"
        district = CHONGQING_DISTRICTS.get(e.district, "渝中区")
        return {"account_no": self.water_accounts[e.uscc], "billing_month": month.isoformat(), "uscc": e.uscc,
                "volume_m3": volume, "amount": amount, "arrears": arrears, "payment_status": status,
                "contact_phone": make_mobile(rng), "address": f"重庆市{district}{self.fake.street_name()}{rng.randint(1, 399)}号"}

    def _patent_row(self, e: Enterprise, applied: dt.date, today: dt.date) -> dict:
        rng = self.rng
        ptype = rng.choices(list(PATENT_TYPES), weights=[w for _, w in PATENT_TYPES.values()])[0]
        first12 = self._codes["patent"].draw(
            lambda: f"{applied.year}{PATENT_TYPES[ptype][0]}{rng.randint(0, 9_999_999):07d}")
        number = f"CN{first12}.{patent_check_digit(first12)}"
        exam_days = {"invention": 800, "utility_model": 200, "design": 150}[ptype]
        granted = applied + dt.timedelta(days=int(exam_days * rng.uniform(0.7, 1.5)))
        if granted > today:
            status, grant = "pending", None
        else:
            status, grant = rng.choices(["granted", "lapsed", "transferred"], weights=[85, 12, 3])[0], granted
        if status == "granted":
            self.ip_held.setdefault(e.uscc, []).append(("patent", number))
        return {"application_no": number, "uscc": e.uscc, "title": rng.choice(PATENT_TITLES), "patent_type": ptype,
                "application_date": applied.isoformat(), "grant_date": grant.isoformat() if grant else None,
                "legal_status": status, "inventor_name": self.fake.name()}

    def _trademark_row(self, e: Enterprise, applied: dt.date, today: dt.date) -> dict:
        rng = self.rng
        number = self._codes["trademark"].draw(lambda: str(rng.randint(10_000_000, 79_999_999)))
        registered = applied + dt.timedelta(days=rng.randint(240, 400))
        if registered > today:
            status, reg, expiry = "applied", None, None
        else:
            reg, expiry = registered, registered + dt.timedelta(days=3652)
            status = "expired" if expiry < today else rng.choices(["registered", "cancelled", "transferred"], weights=[92, 5, 3])[0]
        if status == "registered":
            self.ip_held.setdefault(e.uscc, []).append(("trademark", number))
        return {"registration_no": number, "uscc": e.uscc, "mark_name": self.fake.word() + rng.choice(["", "坊", "源", "星"]),
                "nice_class": rng.choice(NICE_CLASSES), "application_date": applied,
                "registration_date": reg, "expiry_date": expiry, "status": status}  # XLSX: real date cells

    def _pledge_row(self, e: Enterprise, registered: dt.date, today: dt.date) -> dict:
        rng = self.rng
        self._serial += 1
        ip_type, ip_no = rng.choice(self.ip_held[e.uscc])
        end = registered + dt.timedelta(days=rng.choice([365, 730, 1095]))
        status = "released" if end < today else "active"
        return {"pledge_no": f"Y{registered.year}500{self._seed % 1000:03d}{self._serial:05d}", "uscc": e.uscc,
                "ip_type": ip_type, "ip_no": ip_no, "pledgee": rng.choice(BANKS),
                "amount": round(rng.lognormvariate(5.5, 0.8), 1), "registration_date": registered.isoformat(),
                "start_date": registered.isoformat(), "end_date": end.isoformat(), "status": status,
                "contact_name": self.fake.name(), "contact_phone": make_mobile(rng)}

    def _cert_row(self, e: Enterprise, today: dt.date, historic: bool) -> dict:
        rng = self.rng
        year = today.year - rng.randint(0, 4) if historic else today.year
        issued = min(dt.date(year, rng.choice([11, 12]), rng.randint(1, 28)), today)
        expiry = issued + dt.timedelta(days=3 * 365 - 1)
        status = "expired" if expiry < today else ("revoked" if e.distressed and rng.random() < 0.3 else "valid")
        number = self._codes["certificate"].draw(lambda: f"GR{year}51{rng.randint(0, 999_999):06d}")
        return {"certificate_no": number, "uscc": e.uscc,
                "enterprise_name": f"重庆{self.fake.company_prefix()}科技有限公司",
                "technical_field": rng.choices(TECH_FIELDS, weights=_TECH_WEIGHTS)[0],
                "issue_date": issued.isoformat(), "expiry_date": expiry.isoformat(), "status": status,
                "rd_expense_ratio": round(rng.uniform(3.0, 15.0), 1), "contact_name": self.fake.name(),
                "contact_phone": make_mobile(rng)}


def _month_start(today: dt.date, months: int) -> dt.date:
    idx = today.year * 12 + today.month - 1 + months
    return dt.date(idx // 12, idx % 12 + 1, 1)
