# shellcheck shell=bash
# scripts/lib/service.sh — helpers shared by the scripts that run one Java service from Maven
# Central jars in the background (scripts/debezium.sh, scripts/registry.sh): logging, Maven
# fetch of a pom's jars, the pid file, start, readiness wait, stop.
#
# Sourced, never run:  SERVICE_TAG=name; source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"
# SERVICE_TAG is the prefix of log lines: "[name] ...". The functions are safe under
# `set -euo pipefail`; this file sets no shell options of its own.

: "${SERVICE_TAG:?set SERVICE_TAG before sourcing scripts/lib/service.sh}"

# log <text...>: one line "[tag] text" on stderr.
log() { printf '[%s] %s\n' "$SERVICE_TAG" "$*" >&2; }

# die <text...>: "[tag] ERROR: text" on stderr, exit 1.
die() { printf '[%s] ERROR: %s\n' "$SERVICE_TAG" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- Maven ---

# need_java_mvn: die unless java and mvn are on PATH.
need_java_mvn() {
    command -v java >/dev/null || die "java not found (scripts/stack.sh up installs openjdk-17)"
    command -v mvn >/dev/null || die "mvn not found (scripts/stack.sh up installs maven)"
}

# pom_installed <dir> <pom> <glob>: true when <dir> was installed from this very <pom> (its
# .pom.sha256 stamp, see install_dir) and holds a file matching <glob> (relative to <dir>).
pom_installed() {
    [[ -f "$1/.pom.sha256" && "$(cat "$1/.pom.sha256")" == "$(sha256sum "$2" | cut -d' ' -f1)" ]] \
        && compgen -G "$1/$3" >/dev/null
}

# mvn_copy_deps <pom> <outdir> [mvn option...]: copy the runtime dependencies of the manifest
# <pom> into <outdir>; mvn's output, without colour codes and blank lines, goes to stderr.
# Returns mvn's status (the caller dies with its own message).
mvn_copy_deps() {
    local pom="$1" out="$2"
    shift 2
    mvn -q -B -Dstyle.color=never "$@" -f "$pom" dependency:copy-dependencies \
        -DoutputDirectory="$out" -DincludeScope=runtime 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2
}

# install_dir <new> <dir> <pom>: stamp the freshly fetched directory <new> with the sha256 of
# <pom> (what pom_installed checks), then put it in place of <dir>.
install_dir() {
    sha256sum "$3" | cut -d' ' -f1 >"$1/.pom.sha256"
    rm -rf "$2"
    mv "$1" "$2"
}

# ---------------------------------------------------------- processes ---

# pid_alive <pid>: true when the process exists and is no zombie.
pid_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" || true
    [[ -n "$state" && "$state" != Z ]]
}

# service_pid <pid file> <marker>: print the pid in <pid file> when that process is alive and
# its command line contains <marker> (a grep pattern); fail otherwise.
service_pid() {
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(head -n1 "$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
    echo "$pid"
}

# port_free <port> <variable>: die when something listens on 127.0.0.1:<port>; the message
# names the environment <variable> that picks another port.
port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then die "port $1 is in use (set $2)"; fi
}

# spawn <pid file> <output file> <command...>: run <command> in a session of its own, detached
# from the terminal, stdout and stderr appended to <output file>, its pid written to <pid file>
# (and left in $!).
spawn() {
    local pid_file="$1" out="$2"
    shift 2
    setsid "$@" </dev/null >>"$out" 2>&1 &
    echo $! >"$pid_file"
}

# wait_ready <pid> <timeout s> <interval s> <probe> [arg...]: run the command <probe> [arg...]
# every <interval> s until it succeeds (return 0), process <pid> is gone (return 1), or
# <timeout> s have passed (return 2).
wait_ready() {
    local pid="$1" deadline=$((SECONDS + $2)) interval="$3"
    shift 3
    while ((SECONDS < deadline)); do
        pid_alive "$pid" || return 1
        if "$@"; then return 0; fi
        sleep "$interval"
    done
    return 2
}

# service_stop <pid file> <marker> <name> <timeout s>: stop the process of service_pid
# <pid file> <marker> (SIGTERM, then SIGKILL after <timeout> s) and remove <pid file>.
# Idempotent: logs "not running (<name>)" when there is none.
service_stop() {
    local pid_file="$1" name="$3" timeout="$4" pid i
    if ! pid="$(service_pid "$pid_file" "$2")"; then
        rm -f "$pid_file"
        log "not running ($name)"
        return 0
    fi
    log "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 5; i++)); do
        pid_alive "$pid" || { rm -f "$pid_file"; log "stopped"; return 0; }
        sleep 0.2
    done
    log "no clean stop after ${timeout}s: killing pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_file"
}
