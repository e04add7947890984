"""The only code that touches Faust's or aiokafka's internals, written against faust-streaming
0.15.3 (``FAUST_VERSION``); the worker refuses to start on another version (:func:`check_version`)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from streams.errors import ConfigError

FAUST_VERSION = "0.15.3"


def check_version(installed: str | None = None) -> None:
    """Refuse to run the fixes on a Faust they were not written for: each one replaces or wraps
    a private method of that version, and on another version it could silently do nothing or
    break at-least-once delivery."""
    if installed is None:
        try:
            installed = version("faust-streaming")
        except PackageNotFoundError:
            installed = "not installed"
    if installed != FAUST_VERSION:
        raise ConfigError(
            f"faust-streaming {installed} is installed, but the worker's Faust fixes "
            f"(streams/worker/faust_fixes/) are written against faust-streaming=={FAUST_VERSION}: "
            f"install that version (pip install 'faust-streaming=={FAUST_VERSION}') or port the fixes "
            "and their tests to the new one first")
