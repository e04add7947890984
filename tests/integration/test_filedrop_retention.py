"""File-drop retention: the running source deletes originals in done/ older than
YURONG_RETENTION_DROP_DONE_DAYS (real files, real mtimes, the real Kafka for the source's offsets)."""

from __future__ import annotations

import logging
import os
import time

import pytest

from streams.settings import SourceSettings, get_settings
from tests.conftest import wait_for
from tests.harness import RunningConnector

pytestmark = pytest.mark.integration

DAY_S = 86_400


def put(path, age_days: float) -> None:
    path.write_text("uscc,title\n91500000MA5U000000,x\n", encoding="utf-8")
    t = time.time() - age_days * DAY_S
    os.utime(path, (t, t))


def test_the_running_source_purges_done_originals_past_their_retention(tmp_path, unique, kafka_admin, caplog):
    days = get_settings().retention.drop_done_days
    folder = tmp_path / f"ip_{unique}"
    done = folder / "done"
    done.mkdir(parents=True)
    (folder / "rejected").mkdir()
    old = [done / "patent-2025-01.csv", done / "patent-2025-01.csv.manifest.json", done / "trademark-old.xlsx"]
    young = [done / "patent-2026-03.csv", done / "patent-2026-03.csv.manifest.json"]
    for p in old:
        put(p, days + 1)
    for p in young:
        put(p, days - 1)
    kept_rejected = folder / "rejected" / "patent-bad.csv"
    put(kept_rejected, days + 30)  # the operator's to look at: not purged
    (done / "sub").mkdir()  # not a regular file: left alone
    os.utime(done / "sub", (0, 0))

    caplog.set_level(logging.INFO, logger="connectors.filedrop")
    conn = RunningConnector("ip", str(folder), kafka_admin, SourceSettings(poll_interval_s=0.2))
    try:
        wait_for(lambda: not any(p.exists() for p in old), 30, "originals past the retention deleted from done/")
    finally:
        conn.stop()
    assert conn.error is None, conn.error
    assert all(p.exists() for p in young), "originals within the retention are kept"
    assert kept_rejected.exists() and (done / "sub").is_dir()
    logged = [r.getMessage() for r in caplog.records if "retention: deleted" in r.getMessage()]
    assert logged and "patent-2025-01.csv" in logged[0] and "trademark-old.xlsx" in logged[0]
    assert "2 original(s)" in logged[0] and ".manifest.json" not in logged[0].rsplit(":", 1)[1]


def test_purge_done_by_age(tmp_path, unique, kafka_admin):
    """A shorter retention given to the source applies on the next sweep; what it deleted is returned."""
    folder = tmp_path / f"ip_{unique}"
    (folder / "done").mkdir(parents=True)
    a, b = folder / "done" / "patent-a.csv", folder / "done" / "patent-b.csv"
    put(a, 3)
    put(b, 1)
    conn = RunningConnector("ip", str(folder), kafka_admin, SourceSettings(poll_interval_s=0.2))
    try:
        source = conn.source
        source._done_retention_s = 2 * DAY_S  # as if YURONG_RETENTION_DROP_DONE_DAYS=2
        assert source.purge_done() == ["patent-a.csv"]
        assert not a.exists() and b.exists()
        assert source.purge_done(now=time.time() + DAY_S) == ["patent-b.csv"]
    finally:
        conn.stop()
