#!/usr/bin/env bash
# scripts/debezium.sh — run a real Debezium connector in Kafka Connect *standalone* against a
# department database, writing to Debezium's topics on the local Kafka. Two sources:
#
#   YURONG_DEBEZIUM_SOURCE=postgres (default)  PostgresConnector 3.6.1.Final (Maven Central
#       io.debezium:debezium-connector-postgres, scripts/debezium/pom.xml) on a PostgreSQL
#       database → topics <prefix>.<schema>.<table>
#   YURONG_DEBEZIUM_SOURCE=mariadb             MariaDbConnector 3.5.0.Final (Maven Central
#       io.debezium:debezium-connector-mariadb, scripts/debezium/pom-mariadb.xml; 3.5.0 is the
#       newest release there, see the pom) on one MariaDB database → topics <prefix>.<db>.<table>
#
# Each source has its own lib folder (the two Debezium versions must not share a classpath).
# Used by the interop tests of issue 3 (tests/integration/test_debezium_interop.py,
# tests/integration/test_debezium_mariadb_interop.py) and bench/connector_bench.py.
#
#   scripts/debezium.sh run      fetch the jars if missing, start Connect, wait until the
#                                connector task is RUNNING (idempotent: a running instance is kept)
#   scripts/debezium.sh stop     stop the instance (idempotent); PostgreSQL: the slot stays, drop it
#                                yourself; MariaDB: the schema-history topic and <prefix>.transaction
#                                stay, delete them yourself
#   scripts/debezium.sh status   exit 0 when running, 3 otherwise; prints the connector status
#   scripts/debezium.sh install  only fetch the jars (of the selected source)
#
# Environment (defaults in brackets):
#   YURONG_DEBEZIUM_SOURCE              [postgres] postgres | mariadb
#   YURONG_HOME                         [<repo root>/.yurong]
#   YURONG_KAFKA_PORT                   [19092]
#   YURONG_DEBEZIUM_DBNAME              [market (postgres), hrss (mariadb)]  the database
#   YURONG_DEBEZIUM_NAME                [debezium-<dbname> (postgres), debezium-mariadb-<dbname>]
#                                       instance: state under $YURONG_HOME/debezium/<name>/
#                                       (offsets, config, log, pid)
#   YURONG_DEBEZIUM_TOPIC_PREFIX        [debezium] topic.prefix → debezium.public.<table> (postgres),
#                                       debezium.<dbname>.<table> (mariadb)
#   YURONG_DEBEZIUM_TABLES              table.include.list [postgres:
#                                       the three market tables;
#                                       mariadb: empty = every table of the database]
#   YURONG_DEBEZIUM_REST_PORT           [18083]    Connect REST listener on 127.0.0.1
#   YURONG_DEBEZIUM_HEAP                [-Xmx512m -Xms128m]
#  PostgreSQL only (user/password yurong/yurong):
#   YURONG_PG_PORT                      [15432]
#   YURONG_DEBEZIUM_SLOT                [debezium_<dbname>]  replication slot (cluster-wide!)
#   YURONG_DEBEZIUM_PUBLICATION         [debezium_<dbname>]
#  MariaDB only (user/password yurong/yurong; scripts/stack.sh grants it REPLICATION SLAVE,
#  REPLICATION CLIENT and RELOAD, and runs the server with log_bin, binlog_format=ROW):
#   YURONG_MYSQL_PORT                   [13306]
#   YURONG_DEBEZIUM_SERVER_ID           [derived from the instance name]  database.server.id: the
#                                       replica id of the binlog dump connection, unique per reader
#   YURONG_DEBEZIUM_HISTORY_TOPIC       [debezium-history.<name>]  schema-history topic (Kafka,
#                                       one partition, created by Debezium)
#
# Connector settings that matter to yurong's ingest (streams/codecs/debezium.py):
#   snapshot.mode=initial, JsonConverter with schemas.enable=true, tombstones.on.delete=true,
#   decimal.handling.mode=double (numeric/DECIMAL → JSON number instead of base64 bytes + scale).
#   PostgreSQL: plugin.name=pgoutput, time.precision.mode=adaptive (date → io.debezium.time.Date
#   days, timestamptz → io.debezium.time.ZonedTimestamp ISO string).
#   MariaDB: time.precision.mode=adaptive_time_microseconds (DATE → io.debezium.time.Date,
#   DATETIME(0-3) → io.debezium.time.Timestamp epoch ms, DATETIME(4-6) → MicroTimestamp,
#   TIMESTAMP → ZonedTimestamp), include.schema.changes=false (no DDL topic), the schema history
#   keeps only the captured database's DDL, provide.transaction.metadata=true: every change record
#   carries a transaction block whose total_order gives the change's exact place in its
#   transaction (streams/codecs/debezium.py then reports the same position and seq as yurong's
#   connector, 0-1-42#3); Debezium also writes BEGIN/END records to the topic
#   <prefix>.transaction, which the worker does not read (it is no dataset topic) — delete it
#   with the data topics.
set -euo pipefail
umask 022
SERVICE_TAG=debezium
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
DBZ_SRC="$SCRIPT_DIR/debezium"

SOURCE="${YURONG_DEBEZIUM_SOURCE:-postgres}"
YURONG_HOME="${YURONG_HOME:-$REPO_ROOT/.yurong}"
KAFKA_PORT="${YURONG_KAFKA_PORT:-19092}"
PG_PORT="${YURONG_PG_PORT:-15432}"
MYSQL_PORT="${YURONG_MYSQL_PORT:-13306}"
case "$SOURCE" in
    postgres) DEFAULT_DB=market; DEFAULT_TABLES=public.enterprise_registration,public.abnormal_operation,public.equity_pledge ;;
    mariadb) DEFAULT_DB=hrss; DEFAULT_TABLES= ;;
    *) printf '[debezium] ERROR: YURONG_DEBEZIUM_SOURCE must be postgres or mariadb, not %s\n' "$SOURCE" >&2; exit 2 ;;
esac
DBNAME="${YURONG_DEBEZIUM_DBNAME:-$DEFAULT_DB}"
SAFE_DB="$(printf '%s' "$DBNAME" | tr -c 'a-zA-Z0-9_' '_' | tr 'A-Z' 'a-z')"
if [[ "$SOURCE" == postgres ]]; then
    NAME="${YURONG_DEBEZIUM_NAME:-debezium-$SAFE_DB}"
else
    NAME="${YURONG_DEBEZIUM_NAME:-debezium-mariadb-$SAFE_DB}"
fi
TOPIC_PREFIX="${YURONG_DEBEZIUM_TOPIC_PREFIX:-debezium}"
TABLES="${YURONG_DEBEZIUM_TABLES-$DEFAULT_TABLES}"
SLOT="${YURONG_DEBEZIUM_SLOT:-debezium_$SAFE_DB}"
PUBLICATION="${YURONG_DEBEZIUM_PUBLICATION:-debezium_$SAFE_DB}"
HISTORY_TOPIC="${YURONG_DEBEZIUM_HISTORY_TOPIC:-debezium-history.$NAME}"
# A stable replica server id per instance, away from the server's own id (1) and distinct per
# name (MariaDB drops an older dump connection that registers with the same id).
SERVER_ID="${YURONG_DEBEZIUM_SERVER_ID:-$((5000 + $(printf '%s' "$NAME" | cksum | cut -d' ' -f1) % 1000000000))}"
REST_PORT="${YURONG_DEBEZIUM_REST_PORT:-18083}"
HEAP="${YURONG_DEBEZIUM_HEAP:--Xmx512m -Xms128m}"
START_TIMEOUT="${YURONG_DEBEZIUM_START_TIMEOUT:-120}"
STOP_TIMEOUT=30

[[ "$NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "YURONG_DEBEZIUM_NAME must be [A-Za-z0-9_.-]+"
[[ "$SERVER_ID" =~ ^[0-9]+$ ]] || die "YURONG_DEBEZIUM_SERVER_ID must be a number"

mkdir -p "$YURONG_HOME"
YURONG_HOME="$(cd "$YURONG_HOME" && pwd)"
if [[ "$SOURCE" == postgres ]]; then
    POM="$DBZ_SRC/pom.xml"
    LIBS="$YURONG_HOME/debezium/libs"
    CONNECTOR_JAR=debezium-connector-postgres
    CONNECTOR_CLASS=io.debezium.connector.postgresql.PostgresConnector
else
    POM="$DBZ_SRC/pom-mariadb.xml"
    LIBS="$YURONG_HOME/debezium/libs-mariadb"
    CONNECTOR_JAR=debezium-connector-mariadb
    CONNECTOR_CLASS=io.debezium.connector.mariadb.MariaDbConnector
fi
INST="$YURONG_HOME/debezium/$NAME"
PID_FILE="$INST/connect.pid"
LOG_FILE="$INST/connect.log"
OUT_FILE="$INST/connect.out"
CONNECTOR="yurong-$NAME"
PID_MARKER="ConnectStandalone $INST/"   # in the command line of this instance's Connect JVM

running_pid() { service_pid "$PID_FILE" "$PID_MARKER"; }   # the pid of this instance's Connect JVM, if alive

install() {
    need_java_mvn
    pom_installed "$LIBS" "$POM" "$CONNECTOR_JAR-*.jar" && return 0
    log "fetching Debezium ($SOURCE) + Kafka Connect jars from Maven Central (scripts/debezium/$(basename "$POM"))"
    local tmp="$LIBS.tmp.$$"
    rm -rf "$tmp"
    mvn_copy_deps "$POM" "$tmp" || die "'mvn dependency:copy-dependencies' failed"
    compgen -G "$tmp/$CONNECTOR_JAR-*.jar" >/dev/null || die "no $CONNECTOR_JAR jar after mvn"
    install_dir "$tmp" "$LIBS" "$POM"
}

# The Kafka login of Kafka Connect (SASL_SSL, SCRAM-SHA-512): worker, its admin (topic creation),
# the connector's producer and the schema history's clients. On the local stack it is the super
# user (a department's Debezium is outside the platform; a deployment gives it a principal that
# owns its topic prefix). Printed into files readable by the owner only.
kafka_client_props() {   # kafka_client_props <prefix>: the login settings, each key prefixed
    local p="$1" user="${YURONG_DEBEZIUM_KAFKA_USERNAME:-admin}" secrets="${YURONG_KAFKA_SECRETS_DIR:-$YURONG_HOME/secrets/kafka}"
    local password
    password="$(tr -d '[:space:]' <"$secrets/$user.password")" || die "no Kafka password file $secrets/$user.password"
    cat <<CFG
${p}security.protocol=SASL_SSL
${p}sasl.mechanism=SCRAM-SHA-512
${p}sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$user" password="$password";
${p}ssl.truststore.type=PEM
${p}ssl.truststore.location=$secrets/ca.crt
CFG
}

write_config() {
    mkdir -p "$INST"
    umask 077
    cat >"$INST/worker.properties" <<CFG
# Generated by scripts/debezium.sh — overwritten on every run.
bootstrap.servers=127.0.0.1:$KAFKA_PORT
$(kafka_client_props "")
$(kafka_client_props producer.)
$(kafka_client_props consumer.)
$(kafka_client_props admin.)
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
offset.storage.file.filename=$INST/connect.offsets
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:$REST_PORT
plugin.discovery=only_scan
CFG
    if [[ "$SOURCE" == postgres ]]; then
        cat >"$INST/connector.properties" <<CFG
# Generated by scripts/debezium.sh — overwritten on every run.
name=$CONNECTOR
connector.class=$CONNECTOR_CLASS
tasks.max=1
plugin.name=pgoutput
slot.name=$SLOT
publication.name=$PUBLICATION
publication.autocreate.mode=filtered
database.hostname=127.0.0.1
database.port=$PG_PORT
database.user=yurong
database.password=yurong
database.dbname=$DBNAME
topic.prefix=$TOPIC_PREFIX
snapshot.mode=initial
decimal.handling.mode=double
time.precision.mode=adaptive
tombstones.on.delete=true
topic.creation.default.partitions=1
topic.creation.default.replication.factor=1
CFG
    else
        # MariaDB: one database (database.include.list); the binlog is read as replica $SERVER_ID.
        # The schema history (DDL of the captured tables, needed to decode row events after a
        # restart) lives in a Kafka topic of its own. Transaction metadata gives every change its
        # index in the transaction (transaction.total_order): exact positions/seqs in yurong.
        cat >"$INST/connector.properties" <<CFG
# Generated by scripts/debezium.sh — overwritten on every run.
name=$CONNECTOR
connector.class=$CONNECTOR_CLASS
tasks.max=1
database.hostname=127.0.0.1
database.port=$MYSQL_PORT
database.user=yurong
database.password=yurong
database.server.id=$SERVER_ID
database.ssl.mode=disable
database.include.list=$DBNAME
topic.prefix=$TOPIC_PREFIX
schema.history.internal.kafka.bootstrap.servers=127.0.0.1:$KAFKA_PORT
schema.history.internal.kafka.topic=$HISTORY_TOPIC
$(kafka_client_props schema.history.internal.producer.)
$(kafka_client_props schema.history.internal.consumer.)
schema.history.internal.store.only.captured.databases.ddl=true
schema.history.internal.store.only.captured.tables.ddl=true
include.schema.changes=false
snapshot.mode=initial
decimal.handling.mode=double
time.precision.mode=adaptive_time_microseconds
tombstones.on.delete=true
provide.transaction.metadata=true
topic.creation.default.partitions=1
topic.creation.default.replication.factor=1
CFG
    fi
    if [[ -n "$TABLES" ]]; then echo "table.include.list=$TABLES" >>"$INST/connector.properties"; fi
}

connector_state() {   # RUNNING / FAILED / ... of the task (empty while REST is not up)
    curl -fsS --max-time 5 "http://127.0.0.1:$REST_PORT/connectors/$CONNECTOR/status" 2>/dev/null \
        | python3 -c 'import json,sys
s=json.load(sys.stdin); t=s.get("tasks") or [{}]
print(s["connector"]["state"] if s["connector"]["state"]!="RUNNING" else t[0].get("state","NO_TASK"))' 2>/dev/null || true
}

CONNECTOR_STATE=""   # the state connector_running saw last

connector_running() {   # probe for wait_ready: true once the task is RUNNING; FAILED: stop and die
    CONNECTOR_STATE="$(connector_state)"
    case "$CONNECTOR_STATE" in
        RUNNING) return 0 ;;
        FAILED)
            curl -fsS "http://127.0.0.1:$REST_PORT/connectors/$CONNECTOR/status" >&2 || true
            stop; die "connector $CONNECTOR FAILED (log: $LOG_FILE)" ;;
    esac
    return 1
}

run() {
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid $pid, connector $CONNECTOR, $SOURCE db $DBNAME)"
        return 0
    fi
    install
    write_config
    port_free "$REST_PORT" YURONG_DEBEZIUM_REST_PORT
    if [[ "$SOURCE" == postgres ]]; then
        log "starting Kafka Connect standalone + Debezium PostgresConnector on db $DBNAME (slot $SLOT, prefix $TOPIC_PREFIX)"
    else
        log "starting Kafka Connect standalone + Debezium MariaDbConnector on db $DBNAME (server id $SERVER_ID, prefix $TOPIC_PREFIX, history $HISTORY_TOPIC)"
    fi
    : >>"$LOG_FILE"
    # shellcheck disable=SC2086  # HEAP is a list of JVM options
    spawn "$PID_FILE" "$OUT_FILE" java $HEAP -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$DBZ_SRC/log4j2.properties" -Dyurong.debezium.log="$LOG_FILE" \
        -cp "$LIBS/*" org.apache.kafka.connect.cli.ConnectStandalone \
        "$INST/worker.properties" "$INST/connector.properties"
    pid=$!
    local rc=0
    wait_ready "$pid" "$START_TIMEOUT" 1 connector_running || rc=$?
    case "$rc" in
        0) log "up (pid $pid, REST 127.0.0.1:$REST_PORT, connector $CONNECTOR RUNNING)"; return 0 ;;
        1)
            tail -n 40 "$OUT_FILE" "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "Kafka Connect exited during startup" ;;
    esac
    tail -n 40 "$LOG_FILE" >&2 || true
    stop
    die "connector not RUNNING after ${START_TIMEOUT}s (last state '${CONNECTOR_STATE}')"
}

stop() { service_stop "$PID_FILE" "$PID_MARKER" "$NAME" "$STOP_TIMEOUT"; }

status() {
    local pid
    if pid="$(running_pid)"; then
        echo "debezium $NAME: running (pid $pid) connector ${CONNECTOR}: $(connector_state)"
        return 0
    fi
    echo "debezium $NAME: stopped"
    return 3
}

case "${1:-}" in
    run) run ;;
    stop) stop ;;
    status) status ;;
    install) install ;;
    *) echo "usage: [YURONG_DEBEZIUM_SOURCE=postgres|mariadb] $0 run|stop|status|install" >&2; exit 2 ;;
esac
