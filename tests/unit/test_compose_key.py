"""docker-compose.yml gives the pseudonymisation key to the worker as a file (issue 14, item 6):
the compose secret ``pseudonym_key`` mounted at ``/run/secrets/pseudonym_key`` and named by
``YURONG_MASKING_KEY_FILE``; no service's environment carries the key itself."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
KEY_VARIABLES = ("YURONG_MASKING_HMAC_KEY",)


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _secret_names(svc: dict) -> list[str]:
    return [s if isinstance(s, str) else s["source"] for s in svc.get("secrets") or []]


def test_no_service_environment_carries_the_key():
    compose = _compose()
    for name, svc in compose["services"].items():
        env = _env(svc)
        assert not [k for k in env if k in KEY_VARIABLES], f"{name}: the key must not be an environment variable"
        assert "env_file" not in svc, f"{name}: an env_file could bring the key in"
    for anchor, block in compose.items():  # the shared x-… blocks too
        if anchor.startswith("x-") and isinstance(block, dict):
            assert not set(block) & set(KEY_VARIABLES), anchor
    text = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    assert "MASKING_HMAC_KEY" not in text


def test_only_the_worker_gets_the_key_as_a_file():
    compose = _compose()
    assert compose["secrets"]["pseudonym_key"]["file"].endswith("pseudonym.key}")
    holders = {name for name, svc in compose["services"].items() if "pseudonym_key" in _secret_names(svc)}
    assert holders == {"worker"}
    worker = compose["services"]["worker"]
    assert _env(worker)["YURONG_MASKING_KEY_FILE"] == "/run/secrets/pseudonym_key"
    for name, svc in compose["services"].items():
        if name != "worker":
            assert "YURONG_MASKING_KEY_FILE" not in _env(svc), f"{name} does not mask: no key"


def test_the_key_file_stays_out_of_git():
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert "/secrets/" in ignored or "secrets/" in ignored
