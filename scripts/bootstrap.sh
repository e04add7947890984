#!/usr/bin/env bash
# scripts/bootstrap.sh — install what yurong itself needs on a fresh machine (idempotent):
# a virtualenv in .venv with the project and its test extras, and promtool (Debian's
# `prometheus` package) for the Prometheus rule tests. The services (Kafka, PostgreSQL, Redis)
# are installed and started by scripts/stack.sh.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${YURONG_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

stamp="$VENV/.installed-$(sha1sum "$REPO_ROOT/pyproject.toml" | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    log "creating $VENV and installing yurong with its test extras"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e "$REPO_ROOT[test]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

if ! command -v promtool >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "apt-get install prometheus (for promtool)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        # policy-rc.d keeps the package from starting a Prometheus daemon
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; added_policy=1; fi
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        [[ -n "${added_policy:-}" ]] && rm -f /usr/sbin/policy-rc.d
    else
        log "promtool missing and not root: install Debian's 'prometheus' package for the rule tests"
    fi
fi
