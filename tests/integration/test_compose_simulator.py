"""The compose `simulator` service's command and environment, run for real against the local
stack (issue 15, item 5): no Docker engine here, so the service's settings are taken from
docker-compose.yml as they are, with only the compose network's addresses mapped to the stack
(market-db:5432/market → the stack's PostgreSQL and a database of the test's own, /app → the
repository, /var/lib/yurong → a temporary folder) and the secrets filled in. Nothing else of the
environment is inherited, so a setting compose lacks fails here as it would in the container."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import yaml

from tests.conftest import drop_database, make_database
from tests.unit.test_compose_contract import env_dict, interpolate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_compose_simulator_runs_with_its_settings(pg_admin_dsn, unique, tmp_path):
    svc = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]["simulator"]
    command = svc["command"]
    assert command[0] == "yurong"
    name = f"market_compose{unique}"
    local = make_database(pg_admin_dsn, name)
    try:
        host = local.split("@", 1)[1].split("/", 1)[0]  # 127.0.0.1:<the stack's port>
        user_pw = local.split("://", 1)[1].split("@", 1)[0]
        env = {k: interpolate(v, {"MARKET_DB_PASSWORD": user_pw.split(":", 1)[1]})
               for k, v in env_dict(svc["environment"]).items()}
        for key, value in env.items():
            value = value.replace("@market-db:5432/market", f"@{host}/{name}")
            value = value.replace("/var/lib/yurong", str(tmp_path / "home"))
            env[key] = str(REPO) + value[len("/app"):] if value.startswith("/app/") else value
        assert all("market-db" not in v for v in env.values()), "a compose host the test does not map"
        # the service's own command, with a small population and a bounded run
        done = subprocess.run([sys.executable, "-m", "streams.cli", *command[1:], "--enterprises", "20", "--duration", "3"],
                              env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
                              cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with psycopg2.connect(local) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM enterprise_registration")
            assert cur.fetchone()[0] >= 20
        assert "changes in" in done.stdout
    finally:
        drop_database(pg_admin_dsn, name)
