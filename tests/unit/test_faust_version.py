"""The worker runs only on the faust-streaming version its Faust fixes were written for."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

import pytest
from click.testing import CliRunner

import streams.worker.faust_fixes as faust_fixes
from streams.cli import main
from streams.errors import ConfigError
from streams.settings import REPO_ROOT


def test_the_pin_the_installed_version_and_the_fixes_agree():
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = [d.split("#")[0].strip() for d in deps if d.startswith("faust-streaming")]
    assert pins == [f"faust-streaming=={faust_fixes.FAUST_VERSION}"]
    assert version("faust-streaming") == faust_fixes.FAUST_VERSION
    faust_fixes.check_version()  # the installed one passes


@pytest.mark.parametrize("installed", ["0.15.2", "0.16.0", "not installed"])
def test_another_version_is_refused_naming_both(installed):
    with pytest.raises(ConfigError) as err:
        faust_fixes.check_version(installed)
    assert installed in str(err.value) and f"faust-streaming=={faust_fixes.FAUST_VERSION}" in str(err.value)


def test_the_worker_command_refuses_to_start_on_another_version(monkeypatch):
    monkeypatch.setattr(faust_fixes, "version", lambda _name: "0.16.0")
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == 2
    assert "faust-streaming 0.16.0 is installed" in result.output
