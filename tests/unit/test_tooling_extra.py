"""The simulator's dependencies (Faker) are an extra: a worker, connector or sink never loads them,
and ``yurong simulate`` without the extra says how to install it."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from streams.cli import main
from tests.conftest import TEST_KEY

RUNTIME_MODULES = ("streams.worker.agents", "streams.cli", "connectors.fleet", "connectors.sources", "sinks.runner",
                   "sinks.query_server")


def test_no_runtime_module_loads_faker():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in RUNTIME_MODULES)
            + "loaded = sorted(m for m in sys.modules if m == 'faker' or m.startswith('faker.'))\n"
            + "assert not loaded, loaded\n")
    env = {"PATH": "/usr/bin:/bin", "YURONG_MASKING_HMAC_KEY": TEST_KEY}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_simulate_without_the_extra_names_it(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("connectors.simulator") or m.split(".")[0] == "faker"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "faker", None)  # `import faker` now fails as if not installed
    result = CliRunner().invoke(main, ["simulate", "-n", "1"])
    assert result.exit_code == 2
    assert "[sim] extra" in result.output
