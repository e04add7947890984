"""Redis ACL users on the stack's Redis (DESIGN §8, scripts/stack.sh ``redis_secrets``).

Nobody gets in without a login; the worker and the CLI log in as their own users and can do
exactly what ``ConsentRegistry`` does for them, under the key prefix, and nothing else: no key
outside ``yurong:*`` (and the tests' ``yurong-test:*``), no dangerous command. Every
``ConsentRegistry`` method runs here as the user whose code calls it, so a command added to the
registry without its ACL rule fails here.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from connectors.simulator.identities import distinct_usccs
from streams.core.consent import BankRules, new_grant
from streams.settings import Settings, get_settings
from streams.worker.consent_store import (
    REDIS_ADMIN,
    REDIS_CLI,
    REDIS_WORKER,
    ConsentRegistry,
    RedisLogin,
    redis_login,
    without_credentials,
)
from tests.conftest import free_port, wait_for
from tests.harness import redis_admin_url, stack_redis_acl

pytestmark = pytest.mark.integration

DAY = 86_400_000
RECORDED = {"recorded_by": "consent", "evidence_ref": "auth-letter:acl/0001"}


@pytest.fixture
def prefix(redis_url, unique, monkeypatch) -> Iterator[str]:
    """The test's key prefix (in the tests' key space), set for the components' settings."""
    p = f"yurong-test:acl{unique}:"
    monkeypatch.setenv("YURONG_REDIS_KEY_PREFIX", p)
    yield p
    r = redis.from_url(redis_url)
    keys = list(r.scan_iter(match=f"{p}*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def run_as(component: str, body: Callable[[ConsentRegistry], Awaitable]):
    """``await body(registry)`` with the registry the component builds (its own ACL user, the
    settings' key prefix)."""
    async def go():
        reg = ConsentRegistry.for_component(component, Settings())
        try:
            return await body(reg)
        finally:
            await reg.close()

    return asyncio.run(go())


def raw(user: str, settings: Settings) -> redis.Redis:
    """A plain client logged in as ``user``."""
    login = redis_login(user, settings)
    return redis.from_url(login.url, username=login.username, password=login.password.get_secret_value())


def now_ms() -> int:
    return int(time.time() * 1000)


def usccs_for(unique: str, n: int) -> list[str]:
    return distinct_usccs(random.Random(f"acl-{unique}"), n, "500103")


def banks_for(unique: str, n: int) -> list[str]:
    return sorted(f"b{k:04d}" for k in random.Random(f"acl-banks-{unique}").sample(range(1, 10_000), n))


def refused(redis_url: str, user: str, client: redis.Redis, *command: str) -> None:
    """``command`` is refused to ``user`` (NOPERM). ACL DRYRUN as the admin first: a command
    wrongly allowed (FLUSHALL!) fails the test without being run on the shared Redis."""
    verdict = redis.from_url(redis_url, decode_responses=True).execute_command("ACL", "DRYRUN", user, *command)
    assert verdict != "OK", f"{user} may run {command}"
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


# ---------------------------------------------------------------- logging in


def test_without_a_login_nothing_is_allowed(redis_url, settings):
    url = without_credentials(redis_url)
    with pytest.raises(redis.exceptions.AuthenticationError, match="NOAUTH|[Aa]uthenticat"):
        redis.from_url(url).ping()
    # the default user is off: no password opens it
    with pytest.raises(redis.exceptions.AuthenticationError, match="WRONGPASS|invalid username-password"):
        redis.from_url(url, username="default", password="anything").ping()


@pytest.mark.parametrize("user", [REDIS_WORKER, REDIS_CLI, REDIS_ADMIN])
def test_a_wrong_password_is_refused(redis_url, settings, user):
    good = redis_login(user, settings)
    bad = RedisLogin(good.url, user, SecretStr(good.password.get_secret_value() + "x"))
    with pytest.raises(redis.exceptions.AuthenticationError, match="WRONGPASS|invalid username-password"):
        redis.from_url(bad.authenticated_url()).ping()
    assert redis.from_url(good.authenticated_url()).ping()


def test_the_components_log_in_as_their_own_users(redis_url, settings):
    for user in (REDIS_WORKER, REDIS_CLI):
        login = redis_login(user, settings)
        assert login.username == user
        assert "@" not in login.url, "the settings' URL carries no credentials"
    admin = redis.from_url(redis_url, decode_responses=True)
    assert admin.execute_command("ACL", "WHOAMI") == "admin"
    # the ACL file as loaded: nothing for the default user, the key patterns of worker and cli
    rules = {line.split()[1]: line for line in admin.acl_list()}
    assert rules["default"].startswith("user default off") and "nopass" not in rules["default"]
    assert "#" not in rules["default"], "the default user has no password"
    for user in (REDIS_WORKER, REDIS_CLI):
        assert " ~yurong:* ~yurong-test:* " in rules[user] and "resetchannels -@all " in rules[user], rules[user]


# ---------------------------------------------------------------- the worker


def test_the_worker_does_what_the_registry_does_for_it(prefix, redis_url):
    (bank,), codes = banks_for(prefix, 1), usccs_for(prefix, 3)
    now = now_ms()
    g = new_grant(bank, codes[0], "post-loan monitoring", now + DAY, now_ms=now, **RECORDED)  # active at `now`
    change = {"change_id": "c1", "uscc": codes[0], "category": "judicial", "severity": "high", "reason_codes": ["J1"],
              "detected_ts_ms": now}
    redis.from_url(redis_url).script_flush()  # so the throttle loads its script (SCRIPT LOAD) as the worker

    async def body(reg: ConsentRegistry):
        assert await reg.apply(g) is True                       # consent_sync: a consent.grants record
        assert await reg.apply(g) is False
        other = await reg.grant(bank, codes[1], "credit review", now + DAY, **RECORDED)
        assert await reg.watch(bank, codes) == 3
        assert await reg.recipients(codes[0], "judicial", now) == {bank: g.consent_id}
        await reg.set_rules(bank, BankRules(categories=("judicial",)))
        assert (await reg.rules_of([bank]))[bank] is not None
        assert await reg.admit("a1", bank, change, now, max_alerts=1, window_ms=60_000) == 1
        assert await reg.admit("a2", bank, {**change, "change_id": "c2"}, now, max_alerts=1, window_ms=60_000) == 0
        assert await reg.admit("a2", bank, {**change, "change_id": "c2"}, now, max_alerts=1, window_ms=60_000) == -1
        assert await reg.already_delivered("a1") is False
        await reg.mark_delivered("a1")
        assert await reg.already_delivered("a1") is True
        assert await reg.forget(other.consent_id) is True
        assert await reg.revoke(bank, codes[0], recorded_by="consent") == [g.consent_id]

    run_as(REDIS_WORKER, body)
    assert redis.from_url(redis_url).exists(f"{prefix}throttled:{bank}")  # the held-back alert (XADD)


def test_the_worker_is_refused_outside_its_keys_and_commands(prefix, redis_url, settings):
    r = raw(REDIS_WORKER, settings)
    assert r.ping()
    r.set(f"{prefix}alert:sent:x", "1", ex=60)
    for key in ("other:alert:sent:x", "yurongx:consent:1", "yurong-testx", "consent:1"):
        refused(redis_url, REDIS_WORKER, r, "SET", key, "1")
        refused(redis_url, REDIS_WORKER, r, "HGETALL", key)
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("INFO",),
                    ("ACL", "LIST"), ("MONITOR",), ("SHUTDOWN",), ("FUNCTION", "FLUSH"),
                    ("SCRIPT", "FLUSH"), ("EVAL", "return 1", "0"), ("PUBLISH", "c", "m"), ("CLIENT", "LIST"),
                    ("SWAPDB", "0", "1"), ("SCAN", "0"), ("XREVRANGE", f"{prefix}throttled:b", "+", "-"),
                    ("XDEL", f"{prefix}throttled:b", "0-1")):
        refused(redis_url, REDIS_WORKER, r, *command)
    # a Lua script runs with the caller's rights: no way around the key patterns through EVALSHA
    sha = r.script_load("return redis.call('GET', KEYS[1])")
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.evalsha(sha, 1, "other:x")


def test_a_registry_outside_the_prefix_is_refused(redis_url, unique, monkeypatch):
    monkeypatch.setenv("YURONG_REDIS_KEY_PREFIX", f"elsewhere{unique}:")
    (bank,), (code,) = banks_for(unique, 1), usccs_for(unique, 1)
    for component in (REDIS_WORKER, REDIS_CLI):
        with pytest.raises(redis.exceptions.NoPermissionError):
            run_as(component, lambda reg: reg.watch(bank, [code]))
    assert not list(redis.from_url(redis_url).scan_iter(match=f"elsewhere{unique}:*"))


# ---------------------------------------------------------------- the CLI


def test_the_cli_does_what_the_registry_does_for_it(prefix, redis_url, settings):
    (bank,), codes = banks_for(prefix, 1), usccs_for(prefix, 4)
    now = now_ms()
    held = {"change_id": "c9", "uscc": codes[0], "category": "tax", "severity": "low", "reason_codes": []}

    async def as_worker(reg: ConsentRegistry):  # what the CLI reads: a consent and a held-back alert
        await reg.admit("h0", bank, held, now, max_alerts=0, window_ms=60_000)
        return await reg.grant(bank, codes[0], "post-loan monitoring", now + DAY, **RECORDED)

    g = run_as(REDIS_WORKER, as_worker)

    async def body(reg: ConsentRegistry):
        assert await reg.grant_by_id(g.consent_id) == g
        assert await reg.grants_of(codes[0]) == [g]
        assert [x.consent_id for x in await reg.all_grants(bank)] == [g.consent_id]   # SCAN
        assert await reg.watch(bank, codes[:2]) == 2
        assert await reg.unwatch(bank, codes[:1]) == 1
        assert await reg.replace_watchlist(bank, codes[2:]) == (2, 1)
        assert await reg.watchlist(bank) == sorted(codes[2:])
        rules = BankRules(categories=("tax",))
        await reg.set_rules(bank, rules)
        assert await reg.rules(bank) == rules
        await reg.clear_rules(bank)
        assert await reg.rules(bank) is None
        assert [r["alert_id"] for r in await reg.throttled(bank)] == ["h0"]   # XREVRANGE

    run_as(REDIS_CLI, body)
    # `yurong erase`: the held-back entries naming the erased enterprise (XDEL), inside the key space only
    r = raw(REDIS_CLI, settings)
    [(entry_id, _)] = r.xrevrange(f"{prefix}throttled:{bank}")
    assert r.xdel(f"{prefix}throttled:{bank}", entry_id) == 1
    refused(redis_url, REDIS_CLI, r, "XDEL", f"other:throttled:{bank}", entry_id)


def test_the_cli_is_refused_what_only_the_worker_does(prefix, redis_url, settings):
    (bank,), (code,) = banks_for(prefix, 1), usccs_for(prefix, 1)
    change = {"change_id": "c1", "uscc": code, "category": "tax", "severity": "low"}
    with pytest.raises(redis.exceptions.NoPermissionError):   # the throttle (EVALSHA)
        run_as(REDIS_CLI, lambda reg: reg.admit("a1", bank, change, now_ms(), max_alerts=1, window_ms=1000))
    with pytest.raises(redis.exceptions.NoPermissionError):   # delivery markers (SET)
        run_as(REDIS_CLI, lambda reg: reg.mark_delivered("a1"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        run_as(REDIS_CLI, lambda reg: reg.already_delivered("a1"))
    r = raw(REDIS_CLI, settings)
    assert r.ping()
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"), ("INFO",),
                    ("ACL", "LIST"), ("SHUTDOWN",), ("HGETALL", "other:x"), ("DEL", "yurong"),
                    ("SCRIPT", "LOAD", "return 1"), ("EVAL", "return 1", "0"), ("SET", f"{prefix}alert:sent:x", "1")):
        refused(redis_url, REDIS_CLI, r, *command)


def test_the_yurong_cli_logs_in_as_cli(prefix, redis_url, unique, monkeypatch):
    from streams.cli import main

    (bank,), (code,) = banks_for(prefix, 1), usccs_for(prefix, 1)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(main, ["watchlist", "add", "--bank", bank, code])
        assert out.exit_code == 0, out.output
        assert redis.from_url(redis_url).smembers(f"{prefix}watchlist:{bank}") == {code.encode()}
        # the same command outside the key space the cli user may reach: refused
        monkeypatch.setenv("YURONG_REDIS_KEY_PREFIX", f"elsewhere{unique}:")
        get_settings.cache_clear()
        out = CliRunner().invoke(main, ["watchlist", "add", "--bank", bank, code])
        assert out.exit_code != 0
        assert isinstance(out.exception, redis.exceptions.NoPermissionError), out.output
    finally:
        get_settings.cache_clear()


# ---------------------------------------------------------------- persistence


def test_the_users_transactions_survive_a_crash(tmp_path, redis_url, prefix):
    """A redis-server with the stack's ACL file and an fsynced append-only file, killed and
    started again: what the worker wrote in MULTI/EXEC (a consent, the throttle's script effects)
    is replayed. Redis re-checks a replayed EXEC against the rights of ``default`` (redis/redis#14541),
    so a ``default`` without rights would drop every transaction here."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server (scripts/stack.sh installs it)"
    port, folder = free_port(), tmp_path / "redis"
    folder.mkdir()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "yes",
           "--appendfsync", "always", "--logfile", str(folder / "redis.log"), "--aclfile", str(stack_redis_acl())]
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.from_url(redis_admin_url(url), socket_connect_timeout=0.5)

    def up() -> bool:
        try:
            return bool(admin.ping())
        except redis.exceptions.ConnectionError:
            return False

    worker = redis_login(REDIS_WORKER)
    (bank,), (code,) = banks_for(prefix, 1), usccs_for(prefix, 1)
    change = {"change_id": "c1", "uscc": code, "category": "tax", "severity": "low"}

    async def write():
        reg = ConsentRegistry(RedisLogin(url, worker.username, worker.password).client(), prefix)
        try:
            g = await reg.grant(bank, code, "post-loan monitoring", now_ms() + DAY, **RECORDED)
            assert await reg.admit("a0", bank, change, now_ms(), max_alerts=0, window_ms=60_000) == 0
            return g
        finally:
            await reg.close()

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(up, 30, "the test's redis-server")
        g = asyncio.run(write())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(up, 30, "the test's redis-server after the crash")
        assert admin.hgetall(f"{prefix}consent:{g.consent_id}"), (folder / "redis.log").read_text()
        assert admin.smembers(f"{prefix}consents:uscc:{code}") == {g.consent_id.encode()}
        assert admin.xlen(f"{prefix}throttled:{bank}") == 1
        assert "NOPERM" not in (folder / "redis.log").read_text()
    finally:
        proc.kill()
        proc.wait(10)
