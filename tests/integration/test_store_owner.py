"""The embedded store has one owner, the sink (issue 14, item 8).

- `yurong sql` never opens the store itself: with no sink answering it says so and touches
  nothing (it used to open the store, and run while a sink started it took the folder's lock and
  the sink exited: "Cannot lock file …/status. Another server instance in same directory").
- A sink that finds its store held by another process waits, saying so in its log, and starts
  once the store is free, instead of exiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "YURONG_HOME": str(home), "YURONG_CLICKHOUSE_QUERY_PORT": str(free_port()),
            "YURONG_METRICS_SINK_PORT": str(free_port()), **extra}


def test_yurong_sql_without_a_sink_says_so_and_never_opens_the_store(tmp_path):
    env = _env(tmp_path / "home")
    done = subprocess.run([sys.executable, "-m", "streams.cli", "sql", "SELECT 1"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "start it with `yurong sink`" in done.stderr.replace("\n", " ")
    assert not (tmp_path / "home" / "chdb").exists(), "the analyst path opened the sink's store"


def test_a_sink_waits_for_a_store_another_process_holds(tmp_path, kafka_admin, unique):
    home = tmp_path / "home"
    store = home / "chdb"
    holder = subprocess.Popen([sys.executable, "-c", "import clickhouse_connect, sys, time\n"
                               f"c = clickhouse_connect.get_client(dsn='chdb://{store}')\n"
                               "c.command('SELECT 1'); print('held', flush=True); time.sleep(600)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    env = _env(home, YURONG_CLICKHOUSE_STORE_WAIT_S="120")
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        sink = subprocess.Popen([sys.executable, "-m", "streams.cli", "sink", "--group", f"yurong-sink-owner-{unique}"],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        def waiting_lines() -> int:
            assert sink.poll() is None, "the sink exited instead of waiting\n" + log.read_text(errors="replace")[-2000:]
            return log.read_text(errors="replace").count("is held by another process")
        # it logs every 5 s while it waits: a second line means it is still there, still waiting
        wait_for(lambda: waiting_lines() >= 2, 60, lambda: "the sink's waiting lines\n" + log.read_text(errors="replace")[-2000:])
        assert sink.poll() is None, "the sink exited instead of waiting\n" + log.read_text(errors="replace")[-2000:]
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        port = env["YURONG_CLICKHOUSE_QUERY_PORT"]

        def answers() -> bool:
            assert sink.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/query",
                                                                   data=b'{"sql": "SELECT 1", "principal": "t"}'),
                                            timeout=5) as resp:
                    return resp.status == 200
            except urllib.error.HTTPError:  # the gateway answers (it refuses this bare request): it is serving
                return True
            except OSError:
                return False
        wait_for(answers, 90, lambda: "the sink serving once the store is free\n" + log.read_text(errors="replace")[-2000:])
    finally:
        for p in (holder, sink):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
