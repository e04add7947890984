#!/usr/bin/env bash
# scripts/registry.sh — a schema registry for Debezium's Avro converter: Apicurio Registry
# 2.6.13.Final (in-memory H2 storage) run from the Quarkus application Apicurio publishes on Maven
# Central (scripts/registry/pom.xml), plus Apicurio's Kafka Connect AvroConverter and its jars
# (scripts/registry/converter-pom.xml) laid out as a Connect plugin directory.
#
#   scripts/registry.sh run      fetch if missing, start the registry, wait until /health/ready
#                                answers UP (idempotent: a running instance is kept)
#   scripts/registry.sh stop     stop it (idempotent); schemas are in memory and go with it
#   scripts/registry.sh status   exit 0 when running and ready, 3 otherwise
#   scripts/registry.sh install  only fetch: registry app + converter plugin
#
# Environment (defaults in brackets):
#   YURONG_HOME                  [<repo root>/.yurong]  state under $YURONG_HOME/registry/
#   YURONG_REGISTRY_PORT         [18081]   HTTP port on 127.0.0.1
#   YURONG_REGISTRY_NAME         [registry-<port>]  instance: pid/log under registry/<name>/
#   YURONG_REGISTRY_HEAP         [-Xmx384m -Xms64m]
#   YURONG_REGISTRY_START_TIMEOUT [90]     seconds
#
# Layout:
#   $YURONG_HOME/registry/app/                  apicurio-registry-app-*-runner.jar + lib/
#   $YURONG_HOME/registry/connect-plugins/apicurio-converter/*.jar
#                                               → Kafka Connect worker: plugin.path=$YURONG_HOME/registry/connect-plugins
#   $YURONG_HOME/registry/<name>/{registry.pid,registry.log}
#
# Kafka Connect / Debezium settings for Avro (worker or connector properties):
#   key.converter=io.apicurio.registry.utils.converter.AvroConverter
#   value.converter=io.apicurio.registry.utils.converter.AvroConverter
#   {key,value}.converter.apicurio.registry.url=http://127.0.0.1:<port>/apis/registry/v2
#   {key,value}.converter.apicurio.registry.auto-register=true
#   {key,value}.converter.apicurio.registry.find-latest=true
# Wire format then: magic byte 0 + 8-byte big-endian globalId + Avro binary
# (streams/codecs/avro_registry.py decodes it, fetching the schema from /ids/globalIds/<id>).
# With {value}.converter.apicurio.registry.as-confluent=true (+ use-id=contentId) it is
# Confluent's: 0 + 4-byte contentId; Apicurio also serves the Confluent API at /apis/ccompat/v6.
set -euo pipefail
umask 022
SERVICE_TAG=registry
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
SRC="$SCRIPT_DIR/registry"

YURONG_HOME="${YURONG_HOME:-$REPO_ROOT/.yurong}"
PORT="${YURONG_REGISTRY_PORT:-18081}"
NAME="${YURONG_REGISTRY_NAME:-registry-$PORT}"
HEAP="${YURONG_REGISTRY_HEAP:--Xmx384m -Xms64m}"
START_TIMEOUT="${YURONG_REGISTRY_START_TIMEOUT:-90}"
STOP_TIMEOUT=20

[[ "$NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "YURONG_REGISTRY_NAME must be [A-Za-z0-9_.-]+"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "YURONG_REGISTRY_PORT must be a number"

mkdir -p "$YURONG_HOME"
YURONG_HOME="$(cd "$YURONG_HOME" && pwd)"
BASE="$YURONG_HOME/registry"
APP="$BASE/app"
PLUGINS="$BASE/connect-plugins"
CONVERTER="$PLUGINS/apicurio-converter"
INST="$BASE/$NAME"
PID_FILE="$INST/registry.pid"
LOG_FILE="$INST/registry.log"
URL="http://127.0.0.1:$PORT"
# In the command line of this instance's registry JVM; the trailing space ends the path.
PID_MARKER="-Dyurong.registry=$INST "

running_pid() { service_pid "$PID_FILE" "$PID_MARKER"; }   # the pid of this instance's registry JVM, if alive

mvn_fetch() {   # mvn_fetch <pom> <outdir>: copy-dependencies of a manifest pom, Central only
    mvn_copy_deps "$1" "$2" -s "$SRC/settings.xml" || die "'mvn dependency:copy-dependencies -f $1' failed"
}

install() {
    need_java_mvn
    mkdir -p "$BASE"
    if ! pom_installed "$APP" "$SRC/pom.xml" "*-runner.jar"; then
        log "fetching Apicurio Registry from Maven Central (scripts/registry/pom.xml)"
        local tmp="$APP.tmp.$$"
        rm -rf "$tmp"
        mvn_fetch "$SRC/pom.xml" "$tmp/dl"
        local tgz
        tgz="$(compgen -G "$tmp/dl/apicurio-registry-app-*-all.tar.gz" | head -n1)" || die "no apicurio-registry-app tarball after mvn"
        tar -xzf "$tgz" -C "$tmp" || die "cannot unpack $tgz"
        rm -rf "$tmp/dl"
        compgen -G "$tmp/*-runner.jar" >/dev/null || die "no *-runner.jar in $tgz"
        install_dir "$tmp" "$APP" "$SRC/pom.xml"
    fi
    if ! pom_installed "$CONVERTER" "$SRC/converter-pom.xml" "apicurio-registry-utils-converter-*.jar"; then
        log "fetching Apicurio's Kafka Connect AvroConverter from Maven Central (scripts/registry/converter-pom.xml)"
        local tmp="$CONVERTER.tmp.$$"
        rm -rf "$tmp"
        mkdir -p "$PLUGINS"
        mvn_fetch "$SRC/converter-pom.xml" "$tmp"
        compgen -G "$tmp/apicurio-registry-utils-converter-*.jar" >/dev/null || die "no apicurio-registry-utils-converter jar after mvn"
        install_dir "$tmp" "$CONVERTER" "$SRC/converter-pom.xml"
    fi
}

ready() {
    curl -fsS --max-time 3 "$URL/health/ready" 2>/dev/null | grep -q '"status" *: *"UP"'
}

run() {
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid $pid, $URL)"
        return 0
    fi
    install
    mkdir -p "$INST"
    port_free "$PORT" YURONG_REGISTRY_PORT
    local jar
    jar="$(compgen -G "$APP/*-runner.jar" | head -n1)"
    log "starting Apicurio Registry on $URL (in-memory storage)"
    : >>"$LOG_FILE"
    # The trailing space in -Dyurong.registry=… is the marker running_pid looks for (PID_MARKER).
    # shellcheck disable=SC2086  # HEAP is a list of JVM options
    spawn "$PID_FILE" "$LOG_FILE" java $HEAP -Djava.awt.headless=true -Dyurong.registry="$INST" \
        -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$PORT" \
        -Dquarkus.http.access-log.enabled=false -Dregistry.ui.features.readOnly=true \
        -jar "$jar"
    pid=$!
    local rc=0
    wait_ready "$pid" "$START_TIMEOUT" 0.3 ready || rc=$?
    case "$rc" in
        0) log "up (pid $pid, $URL/apis/registry/v2, Confluent API $URL/apis/ccompat/v6)"; return 0 ;;
        1)
            grep -v '^[[:space:]]*at ' "$LOG_FILE" | tail -n 30 >&2 || true
            rm -f "$PID_FILE"
            die "registry exited during startup (log: $LOG_FILE)" ;;
    esac
    tail -n 30 "$LOG_FILE" >&2 || true
    stop
    die "registry not ready after ${START_TIMEOUT}s"
}

stop() { service_stop "$PID_FILE" "$PID_MARKER" "$NAME" "$STOP_TIMEOUT"; }

status() {
    local pid
    if pid="$(running_pid)" && ready; then
        echo "registry $NAME: running (pid $pid) $URL"
        return 0
    fi
    echo "registry $NAME: stopped"
    return 3
}

case "${1:-}" in
    run) run ;;
    stop) stop ;;
    status) status ;;
    install) install ;;
    *) echo "usage: $0 run|stop|status|install" >&2; exit 2 ;;
esac
