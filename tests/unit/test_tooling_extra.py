"""What each runtime process loads: the simulator's dependencies (Faker) are an extra that no worker,
connector or sink loads (``yurong simulate`` without it says how to install it), and the worker
loads no database driver or ClickHouse client."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from streams.cli import main
from tests.conftest import TEST_KEY

RUNTIME_MODULES = ("streams.worker.agents", "streams.cli", "connectors.fleet", "connectors.sources", "sinks.runner",
                   "sinks.analyst")


def _loaded_after(modules: tuple[str, ...], roots: tuple[str, ...]) -> list[str]:
    """Top-level packages of ``roots`` loaded by importing ``modules`` in a fresh interpreter."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(roots)!r})))\n")
    env = {"PATH": "/usr/bin:/bin", "YURONG_MASKING_HMAC_KEY": TEST_KEY,
           "YURONG_KAFKA_SECRETS_DIR": os.environ["YURONG_KAFKA_SECRETS_DIR"]}  # the worker's app logs in on import
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_no_runtime_module_loads_faker():
    assert _loaded_after(RUNTIME_MODULES, ("faker",)) == []


def test_the_worker_loads_no_database_driver_or_clickhouse_client():
    drivers = ("pymysql", "pymysqlreplication", "psycopg2", "clickhouse_connect", "chdb", "connectors", "sinks")
    assert _loaded_after(("streams.worker.agents",), drivers) == []
    assert _loaded_after(("connectors.fleet",), drivers) != []  # the probe sees what a module loads


def test_simulate_without_the_extra_names_it(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("connectors.simulator") or m.split(".")[0] == "faker"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "faker", None)  # `import faker` now fails as if not installed
    result = CliRunner().invoke(main, ["simulate", "-n", "1"])
    assert result.exit_code == 2
    assert "[sim] extra" in result.output
