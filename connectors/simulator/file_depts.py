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
from collections.abc import Iterable
from pathlib import Path

from faker import Faker

from .identities import CHONGQING_DISTRICTS, make_mobile
from .market import Enterprise

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


def patent_check_digit(first12: str) -> str:
    """Check character of a CNIPA application number (weights 2-9 cycling, mod 11, 10 → X)."""
    weights = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    c = sum(int(d) * w for d, w in zip(first12, weights)) % 11
    return "X" if c == 10 else str(c)


def write_manifest(path: Path, dataset: str, rows: int) -> Path:
    """Write ``<file>.manifest.json`` for ``path`` (call after the file is complete)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = Path(str(path) + ".manifest.json")
    tmp = manifest.with_name("." + manifest.name + ".tmp")
    tmp.write_text(json.dumps({"dataset": dataset, "rows": rows, "sha256": digest}), encoding="utf-8")
    os.replace(tmp, manifest)
    return manifest


def csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return buf.getvalue().encode("utf-8-sig")


def xlsx_bytes(columns: list[str], rows: list[dict]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(columns)
    for r in rows:
        ws.append([r.get(k) for k in columns])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


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
        self._serial = 0

    def folder(self, dept: str) -> Path:
        return self.root / self.folders[dept]

    # --- seed -------------------------------------------------------------------------------------

    def seed(self, enterprises: Iterable[Enterprise], today: dt.date | None = None) -> list[Path]:
        """History files for ``enterprises``: 3 months of water bills, IP holdings, certificates."""
        rows = self.seed_rows(enterprises, today or dt.date.today())
        water_by_month: dict[str, list[dict]] = {}
        for row in rows["water_usage"]:
            water_by_month.setdefault(row["billing_month"], []).append(row)
        paths = []
        for month, mrows in sorted(water_by_month.items()):
            paths.append(self._drop("water", "water_usage", f"{dt.date.fromisoformat(month):%Y%m}-seed", mrows))
        for ds in ("patent", "trademark", "ip_pledge"):
            if rows[ds]:
                paths.append(self._drop("ip", ds, "seed", rows[ds]))
        if rows["high_tech_certification"]:
            paths.append(self._drop("science", "high_tech_certification", "seed", rows["high_tech_certification"]))
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
                self.water_accounts[e.uscc] = f"SW{e.district}{rng.randint(0, 9_999_999):07d}"
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
        trademarks, pledges and certificates."""
        today = today or dt.date.today()
        rng = self.rng
        rows: dict[str, list[dict]] = {ds: [] for ds in COLUMNS}
        month = _month_start(today, 0)
        by_uscc = {x.uscc: x for x in self.enterprises}
        for _ in range(n):
            roll = rng.random()
            e = rng.choice(self.enterprises)
            if roll < 0.6 and self.water_accounts:
                e = by_uscc[rng.choice(sorted(self.water_accounts))]
                rows["water_usage"].append(self._water_row(e, month, settled=False))
            elif roll < 0.8:
                rows["patent"].append(self._patent_row(e, today - dt.timedelta(days=rng.randint(0, 30)), today))
            elif roll < 0.9:
                rows["trademark"].append(self._trademark_row(e, today - dt.timedelta(days=rng.randint(0, 30)), today))
            elif roll < 0.95 and self.ip_held:
                e = by_uscc[rng.choice(sorted(self.ip_held))]
                rows["ip_pledge"].append(self._pledge_row(e, today, today))
            else:
                rows["high_tech_certification"].append(self._cert_row(e, today, historic=False))
        # one water bill per account and month in a file
        rows["water_usage"] = list({(r["account_no"], r["billing_month"]): r for r in rows["water_usage"]}.values())
        paths = []
        tag = f"{today:%Y%m%d}"
        for dept, datasets in DATASETS.items():
            for ds in datasets:
                if rows[ds]:
                    paths.append(self._drop(dept, ds, tag, rows[ds]))
        return paths

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
        first12 = f"{applied.year}{PATENT_TYPES[ptype][0]}{rng.randint(0, 9_999_999):07d}"
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
        number = str(rng.randint(10_000_000, 79_999_999))
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
        return {"certificate_no": f"GR{year}51{rng.randint(0, 999_999):06d}", "uscc": e.uscc,
                "enterprise_name": f"重庆{self.fake.company_prefix()}科技有限公司",
                "technical_field": rng.choices(TECH_FIELDS, weights=_TECH_WEIGHTS)[0],
                "issue_date": issued.isoformat(), "expiry_date": expiry.isoformat(), "status": status,
                "rd_expense_ratio": round(rng.uniform(3.0, 15.0), 1), "contact_name": self.fake.name(),
                "contact_phone": make_mobile(rng)}


def _month_start(today: dt.date, months: int) -> dt.date:
    idx = today.year * 12 + today.month - 1 + months
    return dt.date(idx // 12, idx % 12 + 1, 1)
