#!/usr/bin/env bash
# scripts/test.sh — the README's test command: install, start the local stack, run every test
# (unit, integration against the real Kafka/PostgreSQL/Redis/chDB, e2e). Extra arguments go
# to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
bash scripts/bootstrap.sh
bash scripts/stack.sh up
export CI="${CI:-}"
exec .venv/bin/python -m pytest "${@:-tests}"
