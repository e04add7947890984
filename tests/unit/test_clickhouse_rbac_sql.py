"""The ClickHouse server's users, roles, profiles and quota (sinks/clickhouse/server/rbac.sql, applied
by init-rbac.sh) and how docker-compose.yml wires them (docs/security.md, "ClickHouse users and
roles (server mode)").

No ClickHouse server runs here, so the SQL is checked with the ClickHouse engine of chDB: the SQL
stream init-rbac.sh would send (``INIT_RBAC_DRY_RUN=1``, dummy passwords: the ``SET param_…``
lines, then rbac.sql) is split into statements; the SET lines are executed, so the passwords are
substituted into the CREATE USER statements as the server would do it, and every other statement
must parse with ``EXPLAIN AST``. chDB parses all the kinds used: CREATE DATABASE, CREATE SETTINGS
PROFILE, CREATE ROLE, GRANT (privileges and roles), CREATE USER (with a query parameter as the
password), SET DEFAULT ROLE, CREATE QUOTA. It does not execute them: clickhouse-local (chDB) has
only a read-only users.xml storage, so CREATE USER / ROLE fail there with
ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND. What the statements grant is therefore read from
ClickHouse's own rendering of each (``formatQuery``: one canonical spelling of every privilege,
grantee and setting), parsed into (privilege, database, table) per grantee, not from the file's
text.

chDB runs in a child process: one chDB engine per process, and other tests of the same pytest run
open their own.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from sinks.clickhouse.writer import TABLES, schema_statements

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "sinks" / "clickhouse" / "server"
INIT = SERVER / "init-rbac.sh"
RBAC = SERVER / "rbac.sql"
COMPOSE = REPO / "docker-compose.yml"

DUMMY = {
    "CLICKHOUSE_SINK_PASSWORD": "dummy-sink-Pw.0123456789",
    "CLICKHOUSE_ANALYST_GW_PASSWORD": "dummy-analyst-Pw_0123456789",
    "CLICKHOUSE_AUDITOR_GW_PASSWORD": "dummy-auditor-Pw~0123456789",
    "CLICKHOUSE_OPERATOR_GW_PASSWORD": "dummy-operator-Pw-0123456789",
}
USERS = {  # login: (password variable, query parameter, role, settings profile)
    "yurong_analyst_gw": ("CLICKHOUSE_ANALYST_GW_PASSWORD", "analyst_gw_password", "yurong_analyst", "yurong_readonly"),
    "yurong_auditor_gw": ("CLICKHOUSE_AUDITOR_GW_PASSWORD", "auditor_gw_password", "yurong_auditor", "yurong_readonly"),
    "yurong_operator_gw": ("CLICKHOUSE_OPERATOR_GW_PASSWORD", "operator_gw_password", "yurong_operator", "yurong_readonly"),
}
# the contract's query limits: setting -> value (each also the constraint's MAX)
LIMITS = {
    "max_execution_time": 60,
    "max_memory_usage": 2_000_000_000,
    "max_rows_to_read": 500_000_000,
    "max_bytes_to_read": 50_000_000_000,
    "max_result_rows": 100_000,
    "max_result_bytes": 200_000_000,
    "max_threads": 2,
}
# the privileges a write to or a rewrite of the audit would need
AUDIT_TAMPERING = ("ALTER", "DROP", "TRUNCATE", "OPTIMIZE", "ALTER DELETE", "ALTER UPDATE", "ALTER TTL",
                   "ALTER MODIFY TTL", "ALTER MATERIALIZE TTL", "ALTER DROP PARTITION", "ALL")

# run in a child process: {"sql": [...]} on stdin -> one result per statement on stdout
_CHDB_CHILD = r"""
import json, sys
from chdb import session
s = session.Session()
out = []
for stmt in json.load(sys.stdin):
    r = {"stmt": stmt}
    try:
        if stmt.upper().startswith("SET PARAM_"):
            s.query(stmt, "TabSeparatedRaw")
            r["ast"] = ""
        else:
            r["ast"] = str(s.query("EXPLAIN AST " + stmt, "TabSeparatedRaw"))
            # a literal, not a query parameter: parameters given with a query replace the session's
            literal = "'" + stmt.replace("\\", "\\\\").replace("'", "\\'") + "'"
            r["formatted"] = str(s.query("SELECT formatQuery(" + literal + ")", "TabSeparatedRaw")).strip()
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        r["error"] = str(e)
    out.append(r)
json.dump(out, sys.stdout)
"""


def run_init(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "INIT_RBAC_DRY_RUN": "1"}
    return subprocess.run(["sh", str(INIT)], env={**base, **env, **extra}, capture_output=True, text=True, timeout=30)


def split_statements(sql: str) -> list[str]:
    """Statements of an SQL stream: ``--`` comment lines dropped, a statement ends with ';' at the end
    of a line (as in rbac.sql and the SET lines)."""
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [" ".join(s.split()) for s in re.split(r";[ \t]*$", text, flags=re.MULTILINE) if s.strip()]


@pytest.fixture(scope="module")
def stream() -> str:
    done = run_init(DUMMY)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def parsed(stream: str) -> list[dict[str, Any]]:
    stmts = split_statements(stream)
    done = subprocess.run([sys.executable, "-c", _CHDB_CHILD], input=json.dumps(stmts), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


# ---------------------------------------------------------------- a model of the grants


@dataclass
class Access:
    grants: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)  # grantee -> (privilege, db, table)
    roles: dict[str, set[str]] = field(default_factory=dict)  # user -> roles granted
    default_roles: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # name -> formatted CREATE USER
    profiles: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # profile -> setting -> parts
    quotas: dict[str, str] = field(default_factory=dict)
    ast: dict[str, str] = field(default_factory=dict)  # user -> EXPLAIN AST of its CREATE USER


def _top_level_split(text: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def _unquote(name: str) -> str:
    return name.replace("`", "")


def _parse_grant(formatted: str, access: Access) -> None:
    body = formatted.removeprefix("GRANT ")
    assert " WITH GRANT OPTION" not in body and " WITH ADMIN OPTION" not in body, formatted
    what, to = body.rsplit(" TO ", 1)
    grantees = [_unquote(g) for g in _top_level_split(to)]
    if " ON " not in what:  # a role grant
        for user in grantees:
            access.roles.setdefault(user, set()).update(_unquote(r) for r in _top_level_split(what))
        return
    pending: list[str] = []
    for element in _top_level_split(what):
        if " ON " in element:
            privilege, target = element.rsplit(" ON ", 1)
            pending.append(privilege)
            db, table = (_unquote(p) for p in target.split(".", 1))
            for user in grantees:
                access.grants.setdefault(user, set()).update((p.strip(), db, table) for p in pending)
            pending = []
        else:
            pending.append(element)
    assert not pending, formatted


def _parse_profile(formatted: str, access: Access) -> None:
    m = re.match(r"CREATE SETTINGS PROFILE OR REPLACE (\S+) SETTINGS (.*)$", formatted)
    assert m, formatted
    settings: dict[str, dict[str, str]] = {}
    for element in _top_level_split(m.group(2)):
        e = re.fullmatch(r"(\w+)(?: = (\S+))?(?: MIN (\S+))?(?: MAX (\S+))?(?: (CONST|READONLY|WRITABLE|CHANGEABLE_IN_READONLY))?",
                         element)
        assert e, element
        settings[e.group(1)] = {k: v for k, v in zip(("value", "min", "max", "kind"), e.groups()[1:], strict=True) if v}
    access.profiles[_unquote(m.group(1))] = settings


@pytest.fixture(scope="module")
def access(parsed: list[dict[str, Any]]) -> Access:
    acc = Access()
    for r in parsed:
        f = r.get("formatted", "")
        if f.startswith("GRANT "):
            _parse_grant(f, acc)
        elif f.startswith("CREATE SETTINGS PROFILE"):
            _parse_profile(f, acc)
        elif f.startswith("CREATE USER"):
            name = _unquote(f.split()[4])
            acc.users[name] = f
            acc.ast[name] = r["ast"]
        elif f.startswith("SET DEFAULT ROLE"):
            m = re.fullmatch(r"SET DEFAULT ROLE (\S+) TO (\S+)", f)
            assert m, f
            acc.default_roles[_unquote(m.group(2))] = _unquote(m.group(1))
        elif f.startswith("CREATE QUOTA"):
            acc.quotas[_unquote(f.split()[4])] = f
    return acc


def analytic_objects() -> set[str]:
    """Every table and view schema.sql makes in the yurong database (the analysts' SQL audit moves
    to yurong_audit, so a ``sql_audit`` in yurong is not one of them)."""
    names = set()
    for stmt in schema_statements():
        m = re.match(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS ([\w.]+)", stmt)
        if m and "." not in m.group(1) and m.group(1) != "sql_audit":
            names.add(m.group(1))
    return names


# ---------------------------------------------------------------- the statements parse


def test_every_statement_of_the_stream_parses_in_the_clickhouse_engine(parsed: list[dict[str, Any]]) -> None:
    errors = [(r["stmt"][:80], r["error"]) for r in parsed if "error" in r]
    assert not errors
    kinds = {r["ast"].split(" ", 1)[0].split("\n", 1)[0] for r in parsed if r["ast"]}
    assert {"CreateQuery", "CreateSettingsProfileQuery", "CreateRoleQuery", "GrantQuery", "CreateUserQuery",
            "SetRoleQuery", "CreateQuotaQuery"} <= kinds


def test_the_stream_is_the_set_lines_then_rbac_sql(stream: str) -> None:
    lines = stream.splitlines()
    sets = [line for line in lines if line.startswith("SET param_")]
    assert lines[: len(sets)] == sets and len(sets) == 4
    assert "\n".join(lines[len(sets):]) == RBAC.read_text(encoding="utf-8").rstrip("\n")


def test_passwords_are_query_parameters_substituted_by_the_engine(access: Access) -> None:
    rbac = RBAC.read_text(encoding="utf-8")
    assert "IDENTIFIED BY '" not in rbac and not re.search(r"IDENTIFIED WITH \w+ BY '", rbac), "a literal password"
    logins = {"yurong_sink": ("CLICKHOUSE_SINK_PASSWORD", "sink_password")} | {u: v[:2] for u, v in USERS.items()}
    assert set(access.users) == set(logins)
    for user, (var, param) in logins.items():
        assert f"IDENTIFIED WITH sha256_password BY {{{param}:String}}" in access.users[user]
        # after `SET param_…` the engine put the password from the environment into the statement
        assert f"Literal '{DUMMY[var]}'" in access.ast[user]


def test_the_servers_masking_rule_hides_every_password_of_the_stream(stream: str) -> None:
    """The SET lines reach the server as queries: its query_masking_rules (an RE2 pattern, the same
    for Python's re here) must hide each password from its logs and system.query_log."""
    rules = ElementTree.parse(SERVER / "config.d" / "yurong-access.xml").getroot().findall("./query_masking_rules/rule")
    masked = stream
    for rule in rules:
        masked = re.sub(rule.findtext("regexp", ""), rule.findtext("replace", "").replace("\\1", r"\g<1>"), masked)
    for password in DUMMY.values():
        assert password in stream and password not in masked
    assert masked.count("'[hidden]'") == len(DUMMY)


# ---------------------------------------------------------------- who may do what


def test_the_analyst_role_reads_every_analytic_table_and_view_and_nothing_else(access: Access) -> None:
    grants = access.grants["yurong_analyst"]
    assert {p for p, _, _ in grants} == {"SELECT"}
    assert {db for _, db, _ in grants} == {"yurong"}
    tables = {t for _, _, t in grants}
    assert "*" not in tables  # named one by one: a table added later is not readable by default
    assert set(TABLES) - {"sql_audit"} <= tables
    assert {"dlq_event", "enterprise_profile_as_of", "related_party", "enterprise_related"} <= tables
    assert analytic_objects() == tables


def test_the_auditor_role_reads_the_audit_and_the_alert_deliveries_only(access: Access) -> None:
    assert access.grants["yurong_auditor"] == {("SELECT", "yurong_audit", "sql_audit"), ("SELECT", "yurong", "alert_delivery")}


def test_the_operator_role_reads_and_erases_in_yurong_and_nothing_in_the_audit(access: Access) -> None:
    # the erasure runs on the sink's own login, for a caller the gateway verified as an operator
    assert access.grants["yurong_operator"] == {("SELECT", "yurong", "*")}


def test_the_sink_writes_yurong_and_only_appends_to_the_audit(access: Access) -> None:
    grants = access.grants["yurong_sink"]
    audit = {(p, t) for p, db, t in grants if db == "yurong_audit"}
    assert audit == {("CREATE DATABASE", "*"), ("CREATE TABLE", "sql_audit"), ("INSERT", "sql_audit"),
                     ("SELECT(chain, seq, hash, ts, principal, action, outcome, rows_read, elapsed_ms)", "sql_audit")}
    for privilege, _ in audit:
        assert privilege not in AUDIT_TAMPERING and not privilege.startswith(("ALTER", "DROP", "TRUNCATE"))
    assert {(p, db, t) for p, db, t in grants if db == "yurong"} == {
        (p, "yurong", "*") for p in ("CREATE DATABASE", "CREATE TABLE", "CREATE VIEW", "ALTER", "INSERT", "SELECT")}
    assert {(p, t) for p, db, t in grants if db == "system"} == {("SELECT", "tables")}  # the stored TTLs
    assert {db for _, db, _ in grants} == {"yurong", "yurong_audit", "system"}
    assert "yurong_sink" not in access.roles


def test_nothing_is_granted_on_every_database_or_to_default(access: Access) -> None:
    for grantee, grants in access.grants.items():
        assert grantee != "default"
        assert all(db != "*" for _, db, _ in grants), grantee
        assert all(p != "ALL" for p, _, _ in grants), grantee
    assert not {"yurong_analyst", "yurong_auditor", "yurong_operator"} & set(access.users)


def test_each_gateway_login_holds_only_its_role_and_its_profile(access: Access) -> None:
    for user, (_, _, role, profile) in USERS.items():
        assert access.roles[user] == {role}
        assert access.default_roles[user] == role
        # privileges only through the role; the analysts' login also reads the function catalogue,
        # which the gateway's sandbox allows from (an analyst's query cannot name system tables)
        own = {("SELECT", "system", "functions")} if user == "yurong_analyst_gw" else set()
        assert access.grants.get(user, set()) == own
        assert f"SETTINGS PROFILE `{profile}`" in access.users[user] or f"SETTINGS PROFILE {profile}" in access.users[user]


def test_the_readonly_profile_cannot_be_changed_or_raised(access: Access) -> None:
    profile = access.profiles["yurong_readonly"]
    assert profile["readonly"] == {"value": "1", "kind": "CONST"}
    _assert_limits(profile)


def _assert_limits(profile: dict[str, dict[str, str]]) -> None:
    for setting, value in LIMITS.items():
        parts = profile[setting]
        # lowered, never raised, never 0 (= unlimited)
        assert int(parts["value"]) == value and int(parts["max"]) == value and int(parts["min"]) >= 1, setting
        assert parts.get("kind") in (None, "CONST"), setting


def test_the_analysts_quota_is_keyed_by_user(access: Access) -> None:
    quota = access.quotas["yurong_analyst_quota"]
    m = re.search(r"KEYED BY (.+?) FOR (.+) TO (\S+)$", quota)
    assert m, quota
    assert "user_name" in m.group(1) and m.group(3) == "yurong_analyst_gw"
    for limit in ("queries", "read_rows", "execution_time"):
        assert re.search(rf"\b{limit} = \d+", m.group(2)), limit


# ---------------------------------------------------------------- init-rbac.sh


@pytest.mark.parametrize("bad", ["CHANGE-ME-clickhouse-sink-password", "short-pw", "has'quote-0123456789",
                                 "has space 0123456789", "percent%40-0123456789"])
def test_init_refuses_a_password_that_is_not_url_safe_or_a_placeholder(bad: str) -> None:
    done = run_init({**DUMMY, "CLICKHOUSE_SINK_PASSWORD": bad})
    assert done.returncode != 0 and "CLICKHOUSE_SINK_PASSWORD" in done.stderr and not done.stdout.strip()
    assert bad not in done.stderr


def test_init_refuses_a_missing_password() -> None:
    env = {k: v for k, v in DUMMY.items() if k != "CLICKHOUSE_AUDITOR_GW_PASSWORD"}
    done = run_init(env)
    assert done.returncode != 0 and "CLICKHOUSE_AUDITOR_GW_PASSWORD" in done.stderr


def test_init_reads_a_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "analyst.pw"
    secret.write_text("from-a-file-Pw.0123456789\n")
    env = {k: v for k, v in DUMMY.items() if k != "CLICKHOUSE_ANALYST_GW_PASSWORD"}
    done = run_init(env, CLICKHOUSE_ANALYST_GW_PASSWORD_FILE=str(secret))
    assert done.returncode == 0, done.stderr
    assert "SET param_analyst_gw_password = 'from-a-file-Pw.0123456789';" in done.stdout.splitlines()


def test_init_refuses_to_run_as_default() -> None:
    env = {**DUMMY, "CLICKHOUSE_USER": "default", "CLICKHOUSE_PASSWORD": "admin-Pw-0123456789"}
    done = run_init(env, INIT_RBAC_DRY_RUN="0")
    assert done.returncode != 0 and "CLICKHOUSE_USER" in done.stderr


def test_the_init_script_is_executable_so_the_image_runs_it_rather_than_sourcing_it() -> None:
    assert INIT.stat().st_mode & stat.S_IXUSR
    listed = subprocess.run(["git", "ls-files", "-s", str(INIT.relative_to(REPO))], cwd=REPO, capture_output=True,
                            text=True, check=False).stdout
    assert not listed or listed.startswith("100755"), listed


# ---------------------------------------------------------------- docker-compose.yml


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def _interpolate(value: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        return env[m.group(1)]
    return re.sub(r"\$\{(\w+):\?[^}]*\}", sub, value)


def test_compose_mounts_the_init_files_into_the_clickhouse_service() -> None:
    ch = _compose()["services"]["clickhouse"]
    mounts = {target.removesuffix(":ro"): source for source, target in (v.split(":", 1) for v in ch["volumes"])}
    assert mounts["/docker-entrypoint-initdb.d/init-rbac.sh"] == "./sinks/clickhouse/server/init-rbac.sh"
    # rbac.sql outside the init folder: the image would run it there without the passwords
    assert mounts[ch["environment"]["INIT_RBAC_SQL"]] == "./sinks/clickhouse/server/rbac.sql"
    assert not any(t.startswith("/docker-entrypoint-initdb.d/") and t.endswith(".sql") for t in mounts)
    assert mounts["/etc/clickhouse-server/config.d/yurong-access.xml"] == "./sinks/clickhouse/server/config.d/yurong-access.xml"
    for source in mounts.values():
        if source.startswith("./"):
            assert (REPO / source).is_file(), source
    env = ch["environment"]
    assert env["CLICKHOUSE_USER"] not in ("", "default")
    assert env["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_ADMIN_PASSWORD:?")
    assert str(env["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"]) == "1"
    assert str(env["CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS"]) == "1"
    for var in DUMMY:
        assert env[var] == f"${{{var}:?set {var} in .env}}"


def test_the_sink_gets_its_own_login_and_the_gateway_logins_never_the_admin() -> None:
    services = _compose()["services"]
    sink = services["sink"]["environment"]
    env = {**DUMMY, "CLICKHOUSE_ADMIN_PASSWORD": "admin-secret-0123456789"}
    dsn = _interpolate(sink["YURONG_CLICKHOUSE_DSN"], env)
    assert dsn == f"http://yurong_sink:{DUMMY['CLICKHOUSE_SINK_PASSWORD']}@clickhouse:8123/yurong"
    role_dsns = json.loads(_interpolate(sink["YURONG_CLICKHOUSE_ROLE_DSNS"], env))
    assert role_dsns == {
        role: f"http://yurong_{role}_gw:{DUMMY[f'CLICKHOUSE_{role.upper()}_GW_PASSWORD']}@clickhouse:8123/yurong"
        for role in ("analyst", "auditor", "operator")}
    admin_user = services["clickhouse"]["environment"]["CLICKHOUSE_USER"]
    for name, service in services.items():
        text = json.dumps(service.get("environment", {}))
        if name == "clickhouse":
            continue
        assert "CLICKHOUSE_ADMIN_PASSWORD" not in text and admin_user not in text, name
        assert "default:" not in text and "//default" not in text, name
        if name != "sink":
            # only the sink talks to ClickHouse
            assert "CLICKHOUSE" not in text, name


def test_env_example_names_every_clickhouse_secret_compose_needs() -> None:
    needed = set(re.findall(r"\$\{(CLICKHOUSE_\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    example = set(re.findall(r"^(CLICKHOUSE_\w+)=CHANGE-ME", (REPO / ".env.example").read_text(encoding="utf-8"), re.MULTILINE))
    assert needed == example == {"CLICKHOUSE_ADMIN_PASSWORD", *DUMMY}
