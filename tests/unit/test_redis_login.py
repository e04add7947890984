"""Redis logins (DESIGN §8): whose user and password a component uses, and the ACL rules of the
local stack (scripts/stack.sh) and of docker-compose.yml agreeing with each other."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from redis.connection import parse_url

from streams.errors import ConfigError
from streams.settings import Settings
from streams.worker.consent_store import REDIS_CLI, REDIS_WORKER, redis_login, without_credentials

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def secrets(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "redis-secrets"
    d.mkdir()
    (d / "worker.password").write_text("worker-secret\n")
    (d / "cli.password").write_text("cli-secret\n")
    for var in ("YURONG_REDIS_USERNAME", "YURONG_REDIS_PASSWORD", "YURONG_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("YURONG_REDIS_SECRETS_DIR", str(d))
    return d


def test_each_component_logs_in_as_its_own_user_with_its_password_file(secrets):
    for user, password in ((REDIS_WORKER, "worker-secret"), (REDIS_CLI, "cli-secret")):
        login = redis_login(user, Settings())
        assert (login.username, login.password.get_secret_value()) == (user, password)
        assert login.url == "redis://127.0.0.1:16379/0"
        assert password not in repr(login)


def test_the_secrets_dir_defaults_to_the_stack_home(secrets, tmp_path, monkeypatch):
    monkeypatch.delenv("YURONG_REDIS_SECRETS_DIR")
    monkeypatch.setenv("YURONG_HOME", str(tmp_path / "home"))
    assert Settings().redis_secrets_dir == tmp_path / "home" / "secrets" / "redis"


def test_username_and_password_from_the_environment_win(secrets, monkeypatch):
    monkeypatch.setenv("YURONG_REDIS_USERNAME", "worker-b")
    monkeypatch.setenv("YURONG_REDIS_PASSWORD", "from-env")
    login = redis_login(REDIS_WORKER, Settings())
    assert (login.username, login.password.get_secret_value()) == ("worker-b", "from-env")


def test_a_missing_password_file_says_what_to_do(secrets):
    (secrets / "cli.password").unlink()
    with pytest.raises(ConfigError, match=r"no Redis password for ACL user 'cli': set YURONG_REDIS_PASSWORD, "
                                          r"or run `scripts/stack.sh up`.*cli\.password"):
        redis_login(REDIS_CLI, Settings())
    (secrets / "cli.password").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        redis_login(REDIS_CLI, Settings())


def test_credentials_in_the_url_are_not_used_nor_logged(secrets, monkeypatch, caplog):
    monkeypatch.setenv("YURONG_REDIS_URL", "rediss://admin:adm1n-secret@redis.example:6380/2?ssl_cert_reqs=required")
    with caplog.at_level(logging.WARNING):
        login = redis_login(REDIS_WORKER, Settings())
    assert login.url == "rediss://redis.example:6380/2?ssl_cert_reqs=required"
    assert (login.username, login.password.get_secret_value()) == ("worker", "worker-secret")
    assert "carries credentials" in caplog.text and "adm1n-secret" not in caplog.text


def test_the_authenticated_url_round_trips_any_password(secrets, monkeypatch):
    monkeypatch.setenv("YURONG_REDIS_PASSWORD", "p@ss:w/rd?#%")
    monkeypatch.setenv("YURONG_REDIS_URL", "redis://127.0.0.1:26379/3")
    url = redis_login(REDIS_CLI, Settings()).authenticated_url()
    opts = parse_url(url)
    assert (opts["username"], opts["password"], opts["host"], opts["port"], opts["db"]) == (
        "cli", "p@ss:w/rd?#%", "127.0.0.1", 26379, 3)
    assert without_credentials(url) == "redis://127.0.0.1:26379/3"


# ---------------------------------------------------------------- the ACL rules


def stack_rules() -> dict[str, set[str]]:
    """The command lists of scripts/stack.sh (its REDIS_* arrays, evaluated by bash)."""
    text = (REPO / "scripts" / "stack.sh").read_text(encoding="utf-8")
    block = re.search(r"^REDIS_USERS=.*?^REDIS_CLI_CMDS=\(.*?\)$", text, re.S | re.M)
    assert block, "REDIS_USERS … REDIS_CLI_CMDS in scripts/stack.sh"
    out = subprocess.run(["bash", "-c", block.group(0) + '\nprintf "%s\\n" "${REDIS_KEYS[*]}" "${REDIS_BASE_CMDS[*]}" '
                          '"${REDIS_WORKER_CMDS[*]}" "${REDIS_CLI_CMDS[*]}"'], capture_output=True, text=True, check=True)
    keys, base, worker, cli = out.stdout.splitlines()
    return {"keys": set(keys.split()), "worker": set(base.split()) | set(worker.split()),
            "cli": set(base.split()) | set(cli.split())}


def compose_rules() -> dict[str, set[str]]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    script = compose["services"]["redis"]["command"][-1]
    base = re.search(r"^base='([^']*)'", script, re.M).group(1).split()
    found = list(re.finditer(r'^user (\w+) on #\$\$\(h "\$\$REDIS_(\w+)_PASSWORD"\) (.*)$', script, re.M))
    assert all(m.group(2) == m.group(1).upper() for m in found), "each user's hash is of its own password"
    users = {m.group(1): m.group(3).replace("$$base", " ".join(base)).split() for m in found}
    assert set(users) == {"admin", "worker", "cli"}
    assert re.search(r"^user default off ", script, re.M)
    assert users["admin"] == ["~*", "&*", "+@all"]
    return {"keys": {w for w in users["worker"] if w.startswith("~")} | {w for w in users["cli"] if w.startswith("~")},
            "worker": {w for w in users["worker"] if w.startswith("+")},
            "cli": {w for w in users["cli"] if w.startswith("+")}}


def test_the_compose_acl_is_the_stack_acl_without_the_test_key_space():
    stack, compose = stack_rules(), compose_rules()
    assert stack["keys"] == {"~yurong:*", "~yurong-test:*"}
    assert compose["keys"] == {"~yurong:*"}
    for user in ("worker", "cli"):
        # CLIENT SETINFO: the stack adds it when its redis-server knows it (7.2+); compose runs 7.4
        assert compose[user] - {"+client|setinfo"} == stack[user], user
    dangerous = {"+@all", "+@dangerous", "+@admin", "+keys", "+flushall", "+flushdb", "+config", "+eval", "+@scripting"}
    assert not (stack["worker"] | stack["cli"]) & dangerous
