#!/usr/bin/env bash
# scripts/test.sh — the README's test command: install, check the import layers (import-linter),
# lint (ruff) and types (mypy), start the local stack, run every test (unit, integration against
# the real Kafka/PostgreSQL/Redis/chDB, e2e). Extra arguments go
# to pytest, e.g. `scripts/test.sh tests/unit -x`.
#
# The tests get a stack of their own (.yurong-test/, ports 2xxxx), so their records never land in
# the topics and tables that `make demo` and a developer's pipeline use.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/bootstrap.sh
# The layering, lint and types first: seconds, and a broken contract fails before the stack starts.
echo "[test] lint-imports, ruff, mypy" >&2
.venv/bin/lint-imports --no-cache
.venv/bin/ruff check .
.venv/bin/mypy
export YURONG_HOME="${YURONG_TEST_HOME:-$REPO_ROOT/.yurong-test}"
export YURONG_KAFKA_PORT="${YURONG_TEST_KAFKA_PORT:-29092}" YURONG_KAFKA_CONTROLLER_PORT="${YURONG_TEST_KAFKA_CONTROLLER_PORT:-29093}"
export YURONG_PG_PORT="${YURONG_TEST_PG_PORT:-25432}" YURONG_REDIS_PORT="${YURONG_TEST_REDIS_PORT:-26379}"
export YURONG_MYSQL_PORT="${YURONG_TEST_MYSQL_PORT:-23306}"
# the test stack's Prometheus fires an alert 5 s after its condition holds (tests/e2e/test_prometheus_live.py)
export YURONG_PROMETHEUS_PORT="${YURONG_TEST_PROMETHEUS_PORT:-29090}"
export YURONG_PROMETHEUS_ALERT_FOR="${YURONG_TEST_PROMETHEUS_ALERT_FOR:-5s}"
bash scripts/stack.sh up
eval "$(bash scripts/stack.sh env)"
export CI="${CI:-}"
exec .venv/bin/python -m pytest "${@:-tests}"
