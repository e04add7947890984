"""scripts/bootstrap.sh's promtool install, run with stubs: exit status and policy-rc.d handling.

The script runs with a PATH of stubs and symlinks only (no promtool, a stub `id` that says
root, a stub `apt-get` that logs its calls), a virtualenv folder whose stamp already exists
(so nothing is pip-installed) and YURONG_POLICY_RC_D pointing into a temp dir. No network,
no root needed, nothing outside tmp_path is touched.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "bootstrap.sh"
BASH = shutil.which("bash")
# the external commands the script needs when the venv stamp exists (all else is builtin)
REAL_TOOLS = ("dirname", "sha1sum", "cut", "chmod", "rm")
ORIGINAL_POLICY = "#!/bin/sh\n# the image's own policy\nexit 101\n"

APT_GET_STUB = """#!/bin/sh
# logs each call and whether the policy file is there, fails `install` if APT_STUB_FAIL is set
if [ -e "$YURONG_POLICY_RC_D" ]; then policy=present; else policy=absent; fi
echo "$* | policy=$policy" >> "$APT_STUB_LOG"
if [ "$1" = install ] && [ -n "${APT_STUB_FAIL:-}" ]; then exit 100; fi
exit 0
"""
ID_STUB = """#!/bin/sh
if [ "$1" = -u ]; then echo 0; else echo 'uid=0(root) gid=0(root) groups=0(root)'; fi
"""

pytestmark = pytest.mark.skipif(
    BASH is None or any(shutil.which(t) is None for t in REAL_TOOLS),
    reason="needs bash and coreutils",
)


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_bootstrap(
    tmp_path: Path, *, policy_exists: bool, apt_fails: bool = False, script: Path = SCRIPT
) -> tuple[subprocess.CompletedProcess[str], Path, list[str]]:
    """Runs `bash script` in the stub environment; returns the result, the policy path, apt calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in REAL_TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    _write_exe(bin_dir / "apt-get", APT_GET_STUB)
    _write_exe(bin_dir / "id", ID_STUB)

    venv = tmp_path / "venv"
    venv.mkdir()
    digest = hashlib.sha1((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    (venv / f".installed-{digest}").touch()

    policy = tmp_path / "policy-rc.d"
    if policy_exists:
        _write_exe(policy, ORIGINAL_POLICY)
    apt_log = tmp_path / "apt-get.log"

    env = {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "YURONG_VENV": str(venv),
        "YURONG_POLICY_RC_D": str(policy),
        "PYTHON": "/nonexistent/python3",  # a pip install would fail loudly
        "APT_STUB_LOG": str(apt_log),
    }
    if apt_fails:
        env["APT_STUB_FAIL"] = "1"
    result = subprocess.run(
        [BASH, str(script)],  # type: ignore[list-item]
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    calls = apt_log.read_text().splitlines() if apt_log.exists() else []
    return result, policy, calls


def _install_calls(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("install ") and " prometheus " in f"{c} "]


def test_existing_policy_file_exits_zero_and_is_kept(tmp_path: Path) -> None:
    result, policy, calls = run_bootstrap(tmp_path, policy_exists=True)
    assert result.returncode == 0, result.stderr
    assert calls and calls[0].startswith("update ")
    assert len(_install_calls(calls)) == 1, calls
    assert policy.read_text() == ORIGINAL_POLICY


def test_added_policy_file_is_in_place_during_install_and_removed_after(tmp_path: Path) -> None:
    result, policy, calls = run_bootstrap(tmp_path, policy_exists=False)
    assert result.returncode == 0, result.stderr
    installs = _install_calls(calls)
    assert len(installs) == 1, calls
    assert installs[0].endswith("policy=present")  # the daemon start was blocked
    assert not policy.exists()


def test_failed_install_exits_nonzero_and_removes_added_policy_file(tmp_path: Path) -> None:
    result, policy, calls = run_bootstrap(tmp_path, policy_exists=False, apt_fails=True)
    assert result.returncode != 0
    assert len(_install_calls(calls)) == 1, calls
    assert not policy.exists()
