#!/usr/bin/env bash
# scripts/bootstrap.sh — install what yurong itself needs on a fresh machine (idempotent):
# a virtualenv in .venv with the project and its test, sim and dev extras, and promtool
# (Debian's `prometheus` package) for the Prometheus rule tests. The services (Kafka,
# PostgreSQL, Redis) are installed and started by scripts/stack.sh.
#
# Environment (the overrides exist for tests/unit/test_bootstrap.py):
#   YURONG_VENV         the virtualenv (default: <repo>/.venv); nothing is installed into it
#                       while its stamp .installed-<sha1 of pyproject.toml, 12 hex> exists
#   PYTHON              the interpreter that creates the virtualenv (default: python3)
#   YURONG_POLICY_RC_D  the policy-rc.d file that keeps apt from starting a Prometheus daemon
#                       (default: /usr/sbin/policy-rc.d); created only if absent, and then
#                       removed again on exit, even if apt-get fails
# promtool, apt-get and the root check (`id -u`) are looked up on PATH, so a test can run the
# script with a PATH of stubs that lacks promtool.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${YURONG_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
POLICY_RC_D="${YURONG_POLICY_RC_D:-/usr/sbin/policy-rc.d}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

stamp="$VENV/.installed-$(sha1sum "$REPO_ROOT/pyproject.toml" | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    log "creating $VENV and installing yurong with its test, sim and dev extras"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e "$REPO_ROOT[test,sim,dev]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

added_policy=""
remove_added_policy() {
    if [[ -n "$added_policy" ]]; then
        rm -f "$POLICY_RC_D"
        added_policy=""
    fi
}

if ! command -v promtool >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "apt-get install prometheus (for promtool)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        # policy-rc.d keeps the package from starting a Prometheus daemon; one we add is
        # removed on any exit (an INT/TERM exits, so the EXIT trap runs then too)
        if [[ ! -e "$POLICY_RC_D" ]]; then
            trap remove_added_policy EXIT
            trap 'exit 130' INT
            trap 'exit 143' TERM
            added_policy=1
            printf '#!/bin/sh\nexit 101\n' > "$POLICY_RC_D"
            chmod +x "$POLICY_RC_D"
        fi
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        remove_added_policy
    else
        log "promtool missing and not root: install Debian's 'prometheus' package for the rule tests"
    fi
fi
exit 0
