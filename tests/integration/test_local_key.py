"""The local stack provisions the pseudonymisation key, so the README's commands work by hand:
`scripts/stack.sh up` makes it once (0600, in the 0700 secrets folder) and `stack.sh env` exports
it as YURONG_MASKING_KEY_FILE. Without a configured key the worker still refuses to start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from streams.worker.secrets import load_pseudonymizer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_stack_env_exports_a_private_key_file_that_the_worker_loads(settings, kafka_admin, monkeypatch):
    env = subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), "env"], capture_output=True, text=True,
                         timeout=60, env=os.environ.copy())
    assert env.returncode == 0, env.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines() if line.startswith("export "))
    key = Path(exports["YURONG_MASKING_KEY_FILE"])
    assert key == settings.paths.home / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert len(key.read_bytes().strip()) >= 32

    monkeypatch.delenv("YURONG_MASKING_HMAC_KEY", raising=False)
    monkeypatch.setenv("YURONG_MASKING_KEY_FILE", str(key))
    first, again = (load_pseudonymizer(Settings()).pseudonym("id_number", "500112198307154238") for _ in range(2))
    assert first == again  # the same key, read from the file each time

    # a process with neither setting (a deployment that forgot its key) refuses to start
    bare = {k: v for k, v in os.environ.items() if not k.startswith("YURONG_MASKING_")}
    done = subprocess.run([sys.executable, "-c", "from streams.settings import Settings\n"
                           "from streams.worker.secrets import load_pseudonymizer\nload_pseudonymizer(Settings())"],
                          capture_output=True, text=True, env=bare, cwd=REPO, timeout=60)
    assert done.returncode != 0 and "no pseudonymisation key" in done.stderr
    with pytest.raises(ConfigError):
        monkeypatch.delenv("YURONG_MASKING_KEY_FILE")
        load_pseudonymizer(Settings())
