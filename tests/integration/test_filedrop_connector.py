"""File-drop connector (ip: CSV + XLSX) against the real Kafka, in a temporary drop folder."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil

import pytest

from connectors.simulator.file_depts import COLUMNS, FileDropSimulator, drop_file
from connectors.simulator.identities import make_uscc, pick_district
from connectors.simulator.market import Enterprise
from streams.codecs.serde import schema_store
from streams.errors import DecodeError
from streams.kafka.dlq import parse_dlq_headers
from streams.settings import SourceSettings
from tests.conftest import wait_for
from tests.harness import RunningConnector as _Running

pytestmark = pytest.mark.integration

TOPICS = ["dept.ip.patent", "dept.ip.trademark", "dept.ip.ip_pledge", "dlq.dept.ip.patent"]


class RunningConnector(_Running):
    def __init__(self, folder, bootstrap: str) -> None:
        super().__init__("ip", str(folder), bootstrap, SourceSettings(poll_interval_s=0.2))


def ours(reader, folder_name: str) -> list[dict]:
    schemas = schema_store()
    out = []
    for m in reader.messages:
        if m.value() is None or m.topic().startswith("dlq."):
            continue
        try:
            _, env = schemas.decode(m.value(), "dept/ip/" + m.topic().rsplit(".", 1)[1])
        except DecodeError:
            continue
        if env["source"]["db"] == folder_name:
            out.append(env)
    return out


def dead_letters(reader, file_names: set[str]) -> list[tuple[dict, dict]]:
    out = []
    for m in reader.messages:
        if m.topic() != "dlq.dept.ip.patent" or m.value() is None:
            continue
        try:
            raw = json.loads(m.value())
        except ValueError:
            continue
        if raw.get("_file") in file_names:
            out.append((raw, parse_dlq_headers(m.headers())))
    return out


def enterprises(n: int, seed: int) -> list[Enterprise]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        uscc = make_uscc(rng, pick_district(rng))
        out.append(Enterprise(uscc, uscc[2:8], distressed=False))
    return out


@pytest.fixture
def drops(tmp_path, unique):
    sim = FileDropSimulator(tmp_path, seed=5, folders={"ip": f"ip_{unique}"})
    return sim, sim.folder("ip")


def _done(folder) -> set[str]:
    return {p.name for p in (folder / "done").iterdir() if not p.name.endswith(".manifest.json")} if (folder / "done").exists() else set()


def test_csv_and_xlsx_once_duplicates_skipped_mismatch_rejected_bad_rows_dead_lettered(drops, kafka_admin, topic_reader):
    sim, folder = drops
    ents = enterprises(80, 3)
    files = [p for p in sim.seed(ents, today=dt.date(2026, 3, 1)) if p.parent == folder]
    patent_csv = next(p for p in files if p.name.startswith("patent-"))
    trademark_xlsx = next(p for p in files if p.name.startswith("trademark-"))
    assert patent_csv.suffix == ".csv" and trademark_xlsx.suffix == ".xlsx"
    assert patent_csv.read_bytes().startswith(b"\xef\xbb\xbf")  # Chinese CSV with BOM
    expected = {p.name: json.loads((folder / (p.name + ".manifest.json")).read_text())["rows"] for p in files}
    reader = topic_reader(TOPICS)
    conn = RunningConnector(folder, kafka_admin)
    try:
        total = sum(expected.values())
        wait_for(lambda: reader.poll() is not None and len(ours(reader, folder.name)) >= total, 60, f"{total} rows of {list(expected)}")
        events = ours(reader, folder.name)
        assert len(events) == total
        by_file = {}
        for e in events:
            by_file[e["source"]["schema"]] = by_file.get(e["source"]["schema"], 0) + 1
        assert by_file == expected
        # the files already there when the source first started are its initial load: a snapshot
        assert {(e["op"], e["source"]["snapshot"]) for e in events} == {("r", "true")}
        assert all(e["before"] is None for e in events)
        tm = next(e for e in events if e["source"]["table"] == "trademark")
        assert isinstance(tm["after"]["application_date"], dt.date)  # XLSX date cells
        pat = next(e for e in events if e["source"]["table"] == "patent")
        assert pat["after"]["inventor_name"] and pat["source"]["position"].split(":")[1].isdigit()
        wait_for(lambda: _done(folder) == set(expected), 20, "processed files moved to done/")

        # 1) the same content again under another name: skipped
        copy = folder / "patent-resend.csv"
        shutil.copyfile(folder / "done" / patent_csv.name, copy)
        shutil.copyfile(folder / "done" / (patent_csv.name + ".manifest.json"), folder / (copy.name + ".manifest.json"))
        # 2) a manifest that does not match: whole file rejected
        bad_manifest = drop_file(folder, f"patent-wrongcount-{folder.name}.csv", "patent", COLUMNS["patent"], [
            {"application_no": "CN202620000001.9", "uscc": ents[0].uscc, "patent_type": "invention", "application_date": "2026-02-01"}])
        m = json.loads((folder / (bad_manifest.name + ".manifest.json")).read_text())
        (folder / (bad_manifest.name + ".manifest.json")).write_text(json.dumps({**m, "rows": 5}))
        # 3) bad rows among good ones: short USCC (line 3) and an unparseable date (line 4)
        good = [{"application_no": f"CN20262000{i:04d}.1", "uscc": ents[i].uscc, "title": "一种火锅底料的制备方法",
                 "patent_type": "invention", "application_date": f"2026-02-0{i + 1}", "inventor_name": "张三"} for i in range(4)]
        good[1]["uscc"] = ents[1].uscc[:17]
        good[2]["application_date"] = "二〇二六年二月"
        mixed = drop_file(folder, f"patent-mixed-{folder.name}.csv", "patent", COLUMNS["patent"], good)

        wait_for(lambda: reader.poll() is not None and len(dead_letters(reader, {mixed.name, bad_manifest.name})) >= 3, 30,
                 "dead letters of the bad rows and of the rejected file")
        dls = dead_letters(reader, {mixed.name, bad_manifest.name})
        rows = sorted((raw["_line"], hdr["error.message"]) for raw, hdr in dls if raw["_file"] == mixed.name)
        assert [line for line, _ in rows] == [3, 4]
        assert rows[0][1].startswith(f"{mixed.name}:3:") and "uscc" in rows[0][1]
        assert rows[1][1].startswith(f"{mixed.name}:4:") and "application_date" in rows[1][1]
        rejected = [hdr["error.message"] for raw, hdr in dls if raw["_file"] == bad_manifest.name]
        assert rejected and "manifest says 5 rows, the file has 1" in rejected[0]
        wait_for(lambda: (folder / "rejected" / (bad_manifest.name + ".error.json")).exists(), 20, "the rejected file quarantined")
        wait_for(lambda: {copy.name, mixed.name} <= _done(folder), 20, "the duplicate and the mixed file moved to done/")
        reader.poll(1.0)
        now = ours(reader, folder.name)
        mixed_rows = [e for e in now if e["source"]["schema"] == mixed.name]
        assert sorted(e["after"]["application_no"] for e in mixed_rows) == [good[0]["application_no"], good[3]["application_no"]]
        assert {(e["op"], e["source"]["snapshot"]) for e in mixed_rows} == {("c", "false")}, "after the load: news"
        assert not [e for e in now if e["source"]["schema"] in (copy.name, bad_manifest.name)]
        assert len(now) == total + 2
    finally:
        conn.stop()
    assert conn.error is None


def test_restart_does_not_reprocess(drops, kafka_admin, topic_reader):
    sim, folder = drops
    files = [p for p in sim.seed(enterprises(40, 4), today=dt.date(2026, 5, 1)) if p.parent == folder]
    total = sum(json.loads((folder / (p.name + ".manifest.json")).read_text())["rows"] for p in files)
    reader = topic_reader(TOPICS)
    first = RunningConnector(folder, kafka_admin)
    wait_for(lambda: reader.poll() is not None and len(ours(reader, folder.name)) >= total
             and len(_done(folder)) == len(files), 60, "the first files")
    first.stop()
    assert first.error is None

    # back in the inbox under new names (e.g. re-sent by the department), plus one new file
    for p in files:
        shutil.copyfile(folder / "done" / p.name, folder / f"{p.name.split('-')[0]}-again-{p.name}")
        shutil.copyfile(folder / "done" / (p.name + ".manifest.json"), folder / f"{p.name.split('-')[0]}-again-{p.name}.manifest.json")
    new = sim.step(30, today=dt.date(2026, 6, 2))
    new_ip = [p for p in new if p.parent == folder]
    new_rows = sum(json.loads((folder / (p.name + ".manifest.json")).read_text())["rows"] for p in new_ip)
    second = RunningConnector(folder, kafka_admin)
    try:
        wait_for(lambda: len(_done(folder)) == 2 * len(files) + len(new_ip), 30, "every file in done/")
        reader.poll(1.0)
        events = ours(reader, folder.name)
        assert len(events) == total + new_rows, "re-sent content must not be processed again"
        assert not [e for e in events if "-again-" in e["source"]["schema"]]
        positions = [e["source"]["position"] for e in events]
        assert len(positions) == len(set(positions))
        assert {e["op"] for e in events if e["source"]["schema"] in {p.name for p in new_ip}} == {"c"}, \
            "the load was completed before the restart: new files are news"
    finally:
        second.stop()
    assert second.error is None


def test_a_symlinked_file_is_quarantined_unread(drops, kafka_admin, topic_reader, tmp_path):
    """The attack of issue 14: a CSV in the drop folder that is a symbolic link to another
    department's file pulled that file's raw rows into this department's dead letters. The link is
    now rejected without being read: its dead letter names the file and the reason only."""
    sim, folder = drops
    secret = tmp_path / "elsewhere" / "patent-secret.csv"
    secret.parent.mkdir()
    ents = enterprises(1, 11)
    real = drop_file(secret.parent, secret.name, "patent", COLUMNS["patent"], [
        {"application_no": "CN202620000099.1", "uscc": ents[0].uscc, "patent_type": "invention",
         "application_date": "2026-02-01", "inventor_name": "王秘密"}])
    link = folder / f"patent-link-{folder.name}.csv"
    folder.mkdir(parents=True, exist_ok=True)
    link.symlink_to(real)
    (folder / (link.name + ".manifest.json")).write_bytes((secret.parent / (real.name + ".manifest.json")).read_bytes())
    reader = topic_reader(TOPICS)
    conn = RunningConnector(folder, kafka_admin)
    try:
        wait_for(lambda: reader.poll() is not None and dead_letters(reader, {link.name}), 30, "the link's dead letter")
        [(raw, hdr)] = dead_letters(reader, {link.name})
        assert "symbolic link" in hdr["error.message"] and raw["_line"] == 0
        assert "王秘密" not in json.dumps(raw, ensure_ascii=False) and "王秘密" not in hdr["error.message"]
        wait_for(lambda: (folder / "rejected" / link.name).is_symlink(), 20, "the link quarantined in rejected/")
        reader.poll(1.0)
        assert not [e for e in ours(reader, folder.name) if e["source"]["schema"] == link.name], "rows read through the link"
    finally:
        conn.stop()
