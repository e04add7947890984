#!/usr/bin/env bash
# scripts/stack.sh — the local embedded stack for yurong: Kafka (KRaft, single
# node), Redis, PostgreSQL, MariaDB and Prometheus, running as plain processes on
# 127.0.0.1 with all data under one folder.
#
#   scripts/stack.sh up       install what is missing, start everything (idempotent)
#   scripts/stack.sh down     stop everything cleanly
#   scripts/stack.sh status   one line per service (exit 3 unless all are up)
#   scripts/stack.sh env      `export YURONG_...=` lines for the stack (eval-able)
#
# Environment (defaults in brackets):
#   YURONG_HOME                   [<repo root>/.yurong]  all data, logs, pid files
#   YURONG_KAFKA_PORT             [19092]   SASL_SSL listener (SCRAM-SHA-512), the only one clients reach
#   YURONG_KAFKA_CONTROLLER_PORT  [19093]   KRaft controller listener (SASL_SSL, PLAIN, the admin only)
#   YURONG_REDIS_PORT             [16379]
#   YURONG_PG_PORT                [15432]
#   YURONG_MYSQL_PORT             [13306]   MariaDB (binlog ROW, FULL row metadata)
#   YURONG_PROMETHEUS_PORT        [19090]   Prometheus (Debian's package): the project's rules, 2s scrapes
#   YURONG_PROMETHEUS_ALERT_FOR   []        e.g. 5s: every alert's `for:` in the stack's copy of rules.yml
#                                           (tests; unset: the shipped durations); kept while the stack runs
#   YURONG_KAFKA_HEAP             [-Xmx1g -Xms256m]
#   YURONG_STACK_SERVICES         [kafka redis postgres mariadb prometheus]  the services up/down/status manage
#                                 (e.g. "kafka" for a second, empty broker beside a running stack)
#
# Layout of $YURONG_HOME:
#   run/{kafka,redis,postgres,mariadb,prometheus}.pid   logs/{kafka,kafka.out,redis,postgres,mariadb,prometheus}.log
#   kafka/{libs,config,data}  redis/{redis.conf,users.acl}  pg/{data,run}  mariadb/{my.cnf,data,run}
#   prometheus/ (0700) {prometheus.yml,rules.yml,data,targets/*.json}  (scrape targets: file_sd, see prom_write_config)
#   secrets/ (0700)  kafka/{ca.crt,ca.key,broker.pem,admin.password,admin.properties}
#                    redis/{admin,worker,cli}.password
#
# Redis runs with ACL users (DESIGN §8): `default` is off; `worker` and `cli` may run only the
# commands the code runs for them, on keys yurong:* and yurong-test:*; `admin` (everything) is the
# stack's own. See redis_secrets below.
#
# Kafka runs secured (DESIGN §8): TLS with a local CA generated here, SCRAM-SHA-512 logins,
# KRaft's StandardAuthorizer with no access without an ACL, no topic auto-creation, and one super
# user `admin` whose SCRAM credential is written at format time. After the broker is up,
# `yurong security apply` (as admin) creates the platform's principals, their passwords
# (secrets/kafka/<principal>.password) and the ACL matrix.
#
# Needs root on Debian 12 to apt-get install missing packages (openjdk-17,
# maven, redis-server, postgresql, mariadb-server, prometheus); once they are installed it also runs as an
# ordinary user.
set -euo pipefail
umask 022

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$SCRIPT_DIR")"
KAFKA_SRC="$SCRIPT_DIR/kafka"            # pom.xml + log4j2 configs

YURONG_HOME="${YURONG_HOME:-$REPO_ROOT/.yurong}"
KAFKA_PORT="${YURONG_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${YURONG_KAFKA_CONTROLLER_PORT:-19093}"
REDIS_PORT="${YURONG_REDIS_PORT:-16379}"
PG_PORT="${YURONG_PG_PORT:-15432}"
MYSQL_PORT="${YURONG_MYSQL_PORT:-13306}"
PROMETHEUS_PORT="${YURONG_PROMETHEUS_PORT:-19090}"
PROMETHEUS_ALERT_FOR="${YURONG_PROMETHEUS_ALERT_FOR:-}"
PROM_INTERVAL=2s
KAFKA_HEAP="${YURONG_KAFKA_HEAP:--Xmx1g -Xms256m}"
STACK_SERVICES=" ${YURONG_STACK_SERVICES:-kafka redis postgres mariadb prometheus} "

PG_USER=yurong
PG_PASSWORD=yurong
PG_DB=market
MYSQL_USER=yurong
MYSQL_PASSWORD=yurong

KAFKA_START_TIMEOUT=90
PG_START_TIMEOUT=60
MYSQL_START_TIMEOUT=60
STOP_TIMEOUT=60

# ---------------------------------------------------------------- helpers ---

log()  { printf '[stack] %s\n' "$*" >&2; }
die()  { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# Print the last lines of the given log files (those that exist) to stderr.
# Arguments are path@offset: only bytes from offset on (this run) are shown.
show_logs() {
    local arg f off
    for arg in "$@"; do
        f="${arg%@*}" off="${arg##*@}"
        (($(file_size "$f") > off)) || continue
        printf '%s\n' "----- last 30 lines of $f -----" >&2
        tail -c "+$((off + 1))" "$f" | tail -n 30 >&2
    done
    printf '%s\n' "-----" >&2
}

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if pid $1 is alive and its command line contains $2.
pid_matches() {
    local pid="$1" pattern="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

read_pid() { [[ -f "$1" ]] && head -n1 "$1" 2>/dev/null || true; }

# True if pid $1 exists and is not a zombie (an exited child that nobody has
# reaped yet still answers kill -0).
pid_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" || true
    [[ -n "$state" && "$state" != Z ]]
}

# Wait until pid $1 is gone, up to $2 seconds.
wait_pid_gone() {
    local pid="$1" timeout="$2" i
    for ((i = 0; i < timeout * 5; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.2
    done
    return 1
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Data at rest is the owner's only: data directories 0700, files 0600. The services this script
# starts run with umask 077 (MariaDB with UMASK=0600, its own file-mode setting; PostgreSQL sets
# 077 itself), and `up` takes group and other access off what is already there (secure_modes).
# umask_ok PID: the running process creates files nobody else can read (0 if /proc cannot say).
umask_ok() {
    local m
    m="$(awk '/^Umask:/ {print $2}' "/proc/$1/status" 2>/dev/null || true)"
    [[ -z "$m" ]] || (((8#$m & 8#044) == 8#044))
}

# The mode of a directory the postgres or mysql user must pass through to reach its data (as root:
# 0711, traverse without listing; otherwise the services run as us and need nothing).
traverse_mode() { if is_root; then echo 711; else echo 700; fi; }

# Take group and other access off the stack's data: the data directories (Kafka's log dirs,
# Redis's AOF and RDB, PostgreSQL's and MariaDB's data, the embedded ClickHouse store, the
# file-drop folders) and everything in them, the logs, and the folders above them.
secure_modes() {
    local d
    chmod "$(traverse_mode)" "$YURONG_HOME"
    for d in "$LOG_DIR" "$PG_HOME" "$MY_HOME"; do if [[ -d "$d" ]]; then chmod "$(traverse_mode)" "$d"; fi; done
    for d in "$RUN_DIR" "$KAFKA_HOME" "$KAFKA_HOME/data" "$REDIS_DIR" "$PG_DATA" "$MY_DATA" \
        "$YURONG_HOME/chdb" "$YURONG_HOME/drops" "$PROM_HOME"; do
        if [[ -d "$d" ]]; then chmod -R go-rwx "$d"; fi
    done
    find "$LOG_DIR" -maxdepth 1 -type f -exec chmod go-rwx {} +
}

APT_UPDATED=""
# apt-get install "$@" without letting package scripts start system services
# (we run our own instances; the packaged ones would only waste resources).
apt_install() {
    is_root || die "missing packages ($*) and not root: install them with apt-get first"
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    if [[ -z "$APT_UPDATED" ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    if [[ -n "$added_policy" ]]; then rm -f "$policy"; fi
    [[ $rc -eq 0 ]] || die "apt-get install $* failed (exit $rc)"
}

ensure_dirs() {
    mkdir -p "$YURONG_HOME"
    YURONG_HOME="$(cd "$YURONG_HOME" && pwd)"     # make it absolute
    RUN_DIR="$YURONG_HOME/run"
    LOG_DIR="$YURONG_HOME/logs"
    mkdir -p "$RUN_DIR" "$LOG_DIR"
}

# Set the path variables without creating anything (status/env/down).
set_paths() {
    if [[ -d "$YURONG_HOME" ]]; then
        YURONG_HOME="$(cd "$YURONG_HOME" && pwd)"
    fi
    RUN_DIR="$YURONG_HOME/run"
    LOG_DIR="$YURONG_HOME/logs"
    KAFKA_HOME="$YURONG_HOME/kafka"
    KAFKA_LIBS="$KAFKA_HOME/libs"
    KAFKA_PID="$RUN_DIR/kafka.pid"
    KAFKA_LOG="$LOG_DIR/kafka.log"
    KAFKA_OUT="$LOG_DIR/kafka.out"
    REDIS_DIR="$YURONG_HOME/redis"
    REDIS_PID="$RUN_DIR/redis.pid"
    REDIS_LOG="$LOG_DIR/redis.log"
    REDIS_SECRETS="$YURONG_HOME/secrets/redis"
    PG_HOME="$YURONG_HOME/pg"
    PG_DATA="$PG_HOME/data"
    PG_RUN="$PG_HOME/run"
    PG_PID="$RUN_DIR/postgres.pid"
    PG_LOG="$LOG_DIR/postgres.log"
    MY_HOME="$YURONG_HOME/mariadb"
    MY_DATA="$MY_HOME/data"
    MY_RUN="$MY_HOME/run"
    MY_CNF="$MY_HOME/my.cnf"
    MY_SOCK="$MY_RUN/mariadb.sock"
    MY_SERVER_PID="$MY_RUN/mariadb.pid"     # written by mariadbd itself
    MY_PID="$RUN_DIR/mariadb.pid"
    MY_LOG="$LOG_DIR/mariadb.log"
    PROM_SRC="$REPO_ROOT/monitoring/prometheus"
    PROM_HOME="$YURONG_HOME/prometheus"
    PROM_DATA="$PROM_HOME/data"
    PROM_TARGETS="$PROM_HOME/targets"
    PROM_CONF="$PROM_HOME/prometheus.yml"
    PROM_PID="$RUN_DIR/prometheus.pid"
    PROM_LOG="$LOG_DIR/prometheus.log"
}

# ------------------------------------------------------------------ kafka ---

kafka_java() {   # kafka_java <main class> args...  (CLI tools, quiet logging)
    java -Dlog4j2.configurationFile="$KAFKA_SRC/tools-log4j2.properties" \
        -cp "$KAFKA_LIBS/*" "$@"
}

kafka_running() { pid_matches "$(read_pid "$KAFKA_PID")" 'kafka\.Kafka'; }

kafka_install() {
    if ! command -v java >/dev/null; then apt_install openjdk-17-jre-headless; fi
    if ! command -v mvn >/dev/null; then apt_install maven; fi

    # Re-download when scripts/kafka/pom.xml changes (e.g. a version bump).
    local stamp want
    want="$(sha256sum "$KAFKA_SRC/pom.xml" | cut -d' ' -f1)"
    stamp="$KAFKA_LIBS/.pom.sha256"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    log "kafka: fetching jars from Maven Central (scripts/kafka/pom.xml)"
    local tmp="$KAFKA_LIBS.tmp"
    rm -rf "$tmp"
    mvn -q -B -Dstyle.color=never -f "$KAFKA_SRC/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime 2>&1 \
        | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2 \
        || die "kafka: 'mvn dependency:copy-dependencies' failed"
    compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "kafka: no kafka_2.13 jar after mvn"
    echo "$want" >"$tmp/.pom.sha256"
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
}

# The local CA, the broker's certificate (SAN 127.0.0.1 and localhost) and the admin password,
# made once per YURONG_HOME. Only the owner can read secrets/.
kafka_secrets() {
    KAFKA_SECRETS="$YURONG_HOME/secrets/kafka"
    mkdir -p "$KAFKA_SECRETS"
    chmod 700 "$YURONG_HOME/secrets" "$KAFKA_SECRETS"
    command -v openssl >/dev/null || apt_install openssl
    local ca_key="$KAFKA_SECRETS/ca.key" ca_crt="$KAFKA_SECRETS/ca.crt" pem="$KAFKA_SECRETS/broker.pem"
    if [[ ! -s "$ca_crt" || ! -s "$ca_key" ]]; then
        log "kafka: generating the local CA ($ca_crt)"
        (umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=yurong local CA" \
            -keyout "$ca_key" -out "$ca_crt" 2>/dev/null) || die "kafka: openssl could not make the CA"
        chmod 644 "$ca_crt"   # the CA certificate is public: clients and bank bundles get a copy
        rm -f "$pem"
    fi
    if [[ ! -s "$pem" ]]; then
        log "kafka: issuing the broker certificate"
        local tmp
        tmp="$(mktemp -d)"
        (umask 077 &&
            openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" -keyout "$tmp/key" -out "$tmp/csr" 2>/dev/null &&
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$tmp/ext" &&
            openssl x509 -req -in "$tmp/csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial -days 825 -sha256 \
                -extfile "$tmp/ext" -out "$tmp/crt" 2>/dev/null &&
            openssl pkcs8 -topk8 -nocrypt -in "$tmp/key" -out "$tmp/key8" &&
            cat "$tmp/key8" "$tmp/crt" "$ca_crt" >"$pem") || { rm -rf "$tmp"; die "kafka: openssl could not issue the broker certificate"; }
        rm -rf "$tmp"
    fi
    if [[ ! -s "$KAFKA_SECRETS/admin.password" ]]; then
        (umask 077 && openssl rand -hex 24 >"$KAFKA_SECRETS/admin.password")
    fi
    KAFKA_ADMIN_PASSWORD="$(tr -d '[:space:]' <"$KAFKA_SECRETS/admin.password")"
    # Java client settings of the super user, for the stack's own checks (TopicCommand) and tools.
    (umask 077 && cat >"$KAFKA_SECRETS/admin.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$ca_crt
EOF
    )
}

kafka_write_config() {
    mkdir -p "$KAFKA_HOME/config" "$KAFKA_HOME/data"
    local conf="$KAFKA_HOME/config/server.properties"
    (umask 077 && cat >"$conf" <<EOF
# Generated by scripts/stack.sh — edits are overwritten on every 'up'. Holds the admin password: mode 0600.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL

# TLS: the broker's key and chain as PEM; it trusts the local CA (it is its own client).
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_SECRETS/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$KAFKA_SECRETS/ca.crt
ssl.enabled.protocols=TLSv1.3,TLSv1.2

# Clients log in with SCRAM-SHA-512 (credentials in the metadata log); the controller listener
# takes only the admin, with PLAIN over TLS (SCRAM cannot serve the controller quorum).
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD" user_admin="$KAFKA_ADMIN_PASSWORD";
sasl.mechanism.controller.protocol=PLAIN

# Nobody reaches anything without an ACL; admin is the only super user.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin

log.dirs=$KAFKA_HOME/data
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
# Topics are declared by the principal that owns them (with partitions and retention), never
# created by a stray fetch or produce.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0

offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
    )
    chmod 600 "$conf"
}

# Format the KRaft metadata log once (first start of this YURONG_HOME).
kafka_format() {
    local marker="$KAFKA_HOME/data/.scram-admin"
    if [[ -f "$KAFKA_HOME/data/meta.properties" ]]; then
        [[ -f "$marker" ]] && return 0
        # Formatted by a stack without security: no admin credential in the metadata log.
        log "kafka: the data in $KAFKA_HOME/data predates the secured broker; reformatting (its topics are dropped)"
        rm -rf "$KAFKA_HOME/data" "$KAFKA_HOME/cluster.id"
        mkdir -p "$KAFKA_HOME/data"
    fi
    local cluster_id_file="$KAFKA_HOME/cluster.id" cluster_id
    if [[ ! -s "$cluster_id_file" ]]; then
        kafka_java kafka.tools.StorageTool random-uuid >"$cluster_id_file" \
            || die "kafka: StorageTool random-uuid failed"
    fi
    cluster_id="$(tr -d '[:space:]' <"$cluster_id_file")"
    log "kafka: formatting storage (cluster id $cluster_id)"
    local log_at
    log_at="$KAFKA_OUT@$(file_size "$KAFKA_OUT")"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" \
        -c "$KAFKA_HOME/config/server.properties" --standalone \
        --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]" >>"$KAFKA_OUT" 2>&1 \
        || { show_logs "$log_at"; die "kafka: storage format failed"; }
    touch "$marker"
}

# Launch the broker in the background; kafka_wait checks it comes up.
kafka_start() {
    KAFKA_STARTED=""
    KAFKA_LOG_OFFSETS=("$KAFKA_OUT@$(file_size "$KAFKA_OUT")" "$KAFKA_LOG@$(file_size "$KAFKA_LOG")")
    if kafka_running && [[ ! -f "$KAFKA_HOME/data/.scram-admin" || ! -s "$YURONG_HOME/secrets/kafka/admin.password" ]]; then
        log "kafka: running without TLS and logins (started by an older scripts/stack.sh); restarting it secured"
        kafka_stop
    fi
    if kafka_running && ! umask_ok "$(read_pid "$KAFKA_PID")"; then
        log "kafka: running with a umask that lets others read its data (started by an older scripts/stack.sh); restarting it with umask 077"
        kafka_stop
    fi
    if kafka_running; then
        if port_open "$KAFKA_PORT"; then
            log "kafka: already running (pid $(read_pid "$KAFKA_PID"))"
        else
            log "kafka: already running (pid $(read_pid "$KAFKA_PID")) but not answering yet"
            KAFKA_STARTED=1
        fi
        return 0
    fi
    rm -f "$KAFKA_PID"
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        if port_open "$p"; then die "kafka: port $p is already in use by another process"; fi
    done
    kafka_install
    kafka_secrets
    kafka_write_config
    kafka_format
    KAFKA_LOG_OFFSETS=("$KAFKA_OUT@$(file_size "$KAFKA_OUT")" "$KAFKA_LOG@$(file_size "$KAFKA_LOG")")
    log "kafka: starting on 127.0.0.1:$KAFKA_PORT"
    umask 077   # segments, checkpoints and logs: the owner's only (back to 022 below)
    # shellcheck disable=SC2086  # KAFKA_HEAP is a list of JVM options
    setsid java -server $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_SRC/log4j2.properties" \
        -Dyurong.kafka.log="$KAFKA_LOG" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_HOME/config/server.properties" \
        </dev/null >>"$KAFKA_OUT" 2>&1 &
    echo $! >"$KAFKA_PID"
    umask 022
    KAFKA_STARTED=1
}

kafka_wait() {
    [[ -n "${KAFKA_STARTED:-}" ]] || return 0
    local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kafka_running; then
            show_logs "${KAFKA_LOG_OFFSETS[@]}"
            rm -f "$KAFKA_PID"
            die "kafka: broker process exited during startup"
        fi
        if port_open "$KAFKA_PORT" &&
            timeout 30 java -Dlog4j2.configurationFile="$KAFKA_SRC/tools-log4j2.properties" \
                -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
                --bootstrap-server "127.0.0.1:$KAFKA_PORT" --command-config "$YURONG_HOME/secrets/kafka/admin.properties" \
                --list >/dev/null 2>"$LOG_DIR/kafka-wait.err"; then
            log "kafka: up (pid $(read_pid "$KAFKA_PID"), 127.0.0.1:$KAFKA_PORT)"
            return 0
        fi
        sleep 1
    done
    show_logs "${KAFKA_LOG_OFFSETS[@]}" "$LOG_DIR/kafka-wait.err@0"
    die "kafka: broker did not answer the admin on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s (still running, pid $(read_pid "$KAFKA_PID"); see $KAFKA_LOG)"
}

kafka_stop() {
    local pid
    pid="$(read_pid "$KAFKA_PID")"
    if ! kafka_running; then
        rm -f "$KAFKA_PID"
        log "kafka: not running"
        return 0
    fi
    log "kafka: stopping (pid $pid)"
    kill -TERM "$pid"
    if ! wait_pid_gone "$pid" "$STOP_TIMEOUT"; then
        log "kafka: still alive after ${STOP_TIMEOUT}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 10 || die "kafka: could not stop pid $pid"
    fi
    rm -f "$KAFKA_PID"
}

kafka_status() {
    if kafka_running && port_open "$KAFKA_PORT"; then
        printf '%-9s up    pid %-8s 127.0.0.1:%s (controller :%s)\n' kafka "$(read_pid "$KAFKA_PID")" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
    elif kafka_running; then
        printf '%-9s start pid %-8s 127.0.0.1:%s (process alive, port not answering)\n' kafka "$(read_pid "$KAFKA_PID")" "$KAFKA_PORT"
    else
        printf '%-9s down  %-12s 127.0.0.1:%s\n' kafka - "$KAFKA_PORT"
    fi
}

# ------------------------------------------------------------------ redis ---
# Redis runs with ACL users (DESIGN §8), made once per YURONG_HOME: each user's password in
# secrets/redis/<user>.password (0600), the users in redis/users.acl (0600, SHA-256 hashes only;
# rewritten and re-loaded on every `up`, so a running server gets changed rules too).
#   default  off and without a password: nobody logs in as it, a connection must AUTH as one of
#            the users below. It keeps all rights because Redis replays the append-only file as
#            `default` and re-checks each MULTI/EXEC against its rights (redis/redis#14541, Redis
#            7.x): without them every transaction in the AOF (consents, watchlists, the throttle's
#            script effects) would be dropped at the next start.
#   admin    everything: the stack's own checks and shutdown, the setup and observation of tests
#            and benches
#   worker   the commands ConsentRegistry runs for the worker (streams/worker/consent_store.py)
#   cli      the commands it runs for the CLI (yurong consent|watchlist|bank, the demo)
# worker and cli reach only keys under yurong: (the key prefix, YURONG_REDIS_KEY_PREFIX) and
# yurong-test: (the isolated prefixes of tests and benches), no pub/sub channel, and no command
# outside their lists (no KEYS, FLUSH*, CONFIG, INFO, FUNCTION, MONITOR, ACL, ...).
REDIS_USERS=(admin worker cli)
REDIS_KEYS=('~yurong:*' '~yurong-test:*')
# both: MULTI EXEC DISCARD WATCH UNWATCH (the registry's transactions), PING and SELECT (connection)
REDIS_BASE_CMDS=(+multi +exec +discard +watch +unwatch +ping +select)
# worker: consents and their sets (apply, forget, recipients, rules_of), alert de-duplication
# markers (EXISTS, SET), the throttle (EVALSHA, SCRIPT LOAD after a Redis restart, and what its Lua
# script calls: EXISTS ZSCORE ZREMRANGEBYSCORE ZCARD ZADD PEXPIRE SET XADD)
REDIS_WORKER_CMDS=(+hgetall +hset +sadd +srem +smembers +sismember +del +exists +set +evalsha +script\|load
    +zscore +zremrangebyscore +zcard +zadd +pexpire +xadd)
# cli: consents (grant_by_id, grants_of; SCAN for all_grants), watchlists, bank rules, held-back alerts
# (XREVRANGE; XDEL: `yurong erase` deletes the entries naming the erased enterprise)
REDIS_CLI_CMDS=(+hgetall +hset +sadd +srem +smembers +del +scan +xrevrange +xdel)

redis_running() { pid_matches "$(read_pid "$REDIS_PID")" 'redis-server'; }

# redis-cli as the admin user; the password travels in the environment (REDISCLI_AUTH), never on
# a command line that ps shows.
redis_admin_cli() {
    local pw=""
    [[ -s "$REDIS_SECRETS/admin.password" ]] && pw="$(tr -d '[:space:]' <"$REDIS_SECRETS/admin.password")"
    REDISCLI_AUTH="$pw" redis-cli --user admin -h 127.0.0.1 -p "$REDIS_PORT" "$@"
}

# True if the admin is logged in (redis-cli goes on as `default` when AUTH fails, so ask who we are).
redis_admin_ok() { [[ "$(redis_admin_cli acl whoami 2>/dev/null)" == admin ]]; }

redis_hash() { tr -d '[:space:]' <"$REDIS_SECRETS/$1.password" | sha256sum | cut -d' ' -f1; }

# The users' passwords (made once) and the ACL file with their rules (rewritten every time).
redis_secrets() {
    mkdir -p "$REDIS_SECRETS"
    chmod 700 "$YURONG_HOME/secrets" "$REDIS_SECRETS"
    command -v openssl >/dev/null || apt_install openssl
    local user f
    for user in "${REDIS_USERS[@]}"; do
        f="$REDIS_SECRETS/$user.password"
        if [[ ! -s "$f" ]]; then
            (umask 077 && openssl rand -hex 24 >"$f") || die "redis: openssl could not make the $user password"
        fi
        chmod 600 "$f"
    done
    # CLIENT SETINFO (Redis >= 7.2) is what redis-py sends after logging in; 7.0 does not know it.
    local base=("${REDIS_BASE_CMDS[@]}") ver
    ver="$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p')"
    if [[ -n "$ver" ]] && ((${ver% *} > 7 || (${ver% *} == 7 && ${ver#* } >= 2))); then base+=(+client\|setinfo); fi
    (umask 077 && cat >"$REDIS_DIR/users.acl" <<EOF
user default off resetpass ~* &* +@all
user admin on #$(redis_hash admin) ~* &* +@all
user worker on #$(redis_hash worker) resetchannels ${REDIS_KEYS[*]} -@all ${base[*]} ${REDIS_WORKER_CMDS[*]}
user cli on #$(redis_hash cli) resetchannels ${REDIS_KEYS[*]} -@all ${base[*]} ${REDIS_CLI_CMDS[*]}
EOF
    )
    chmod 600 "$REDIS_DIR/users.acl"
}

redis_start() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server
    fi
    mkdir -p "$REDIS_DIR"
    if redis_running && ! umask_ok "$(read_pid "$REDIS_PID")"; then
        log "redis: running with a umask that lets others read its AOF and RDB files; restarting it with umask 077"
        redis_stop
    fi
    if redis_running; then
        if redis_admin_ok; then
            redis_secrets
            [[ "$(redis_admin_cli acl load 2>&1)" == OK ]] || die "redis: ACL LOAD of $REDIS_DIR/users.acl failed"
            log "redis: already running (pid $(read_pid "$REDIS_PID")); ACL users re-loaded"
            return 0
        fi
        log "redis: running without its ACL users (started by an older scripts/stack.sh); restarting it"
        redis_stop
    fi
    rm -f "$REDIS_PID"
    if port_open "$REDIS_PORT"; then die "redis: port $REDIS_PORT is already in use by another process"; fi
    redis_secrets
    cat >"$REDIS_DIR/redis.conf" <<EOF
# Generated by scripts/stack.sh — edits are overwritten on every 'up'.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_PID
logfile $REDIS_LOG
dir $REDIS_DIR
appendonly yes
appendfilename "appendonly.aof"
save 3600 1 300 100 60 10000
# the ACL users (redis_secrets): nothing without a login
aclfile $REDIS_DIR/users.acl
EOF
    log "redis: starting on 127.0.0.1:$REDIS_PORT"
    local log_at
    log_at="$REDIS_LOG@$(file_size "$REDIS_LOG")"
    (umask 077 && redis-server "$REDIS_DIR/redis.conf") || { show_logs "$log_at"; die "redis: redis-server failed to start"; }
    local i
    for ((i = 0; i < 150; i++)); do
        if redis_admin_ok; then
            log "redis: up (pid $(read_pid "$REDIS_PID"), 127.0.0.1:$REDIS_PORT, ACL users ${REDIS_USERS[*]})"
            return 0
        fi
        sleep 0.2
    done
    show_logs "$log_at"
    die "redis: the admin could not log in on 127.0.0.1:$REDIS_PORT within 30s"
}

redis_stop() {
    local pid
    pid="$(read_pid "$REDIS_PID")"
    if ! redis_running; then
        rm -f "$REDIS_PID"
        log "redis: not running"
        return 0
    fi
    log "redis: stopping (pid $pid)"
    # SHUTDOWN as the admin; a server started without the ACL users gets SIGTERM (it saves too)
    if redis_admin_ok; then
        redis_admin_cli shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if ! wait_pid_gone "$pid" "$STOP_TIMEOUT"; then
        log "redis: still alive after ${STOP_TIMEOUT}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 10 || die "redis: could not stop pid $pid"
    fi
    rm -f "$REDIS_PID"
}

redis_status() {
    if redis_running; then
        printf '%-9s up    pid %-8s 127.0.0.1:%s\n' redis "$(read_pid "$REDIS_PID")" "$REDIS_PORT"
    else
        printf '%-9s down  %-12s 127.0.0.1:%s\n' redis - "$REDIS_PORT"
    fi
}

# --------------------------------------------------------------- postgres ---

# Newest installed server's bin dir, e.g. /usr/lib/postgresql/15/bin.
pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    [[ -n "$d" && -x "$d/pg_ctl" ]] && echo "$d"
}

# Run a command as the postgres OS user (or as ourselves when not root).
as_pg() {
    if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ctl_() { as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" "$@"; }

pg_running() {
    [[ -f "$PG_DATA/postmaster.pid" ]] || return 1
    PG_BIN="${PG_BIN:-$(pg_bindir)}"
    [[ -n "$PG_BIN" ]] || return 1
    pg_ctl_ status >/dev/null 2>&1
}

# As root, the postgres user must be able to reach $PG_HOME: give o+x
# (traverse only, not read) to any parent directory that lacks it.
pg_fix_traverse() {
    is_root || return 0
    local d="$PG_HOME"
    while [[ "$d" != / ]]; do
        d="$(dirname "$d")"
        if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
            log "postgres: chmod o+x $d (so the postgres user can reach its data dir)"
            chmod o+x "$d"
        fi
    done
    runuser -u postgres -- test -x "$PG_HOME" || die "postgres: user postgres cannot reach $PG_HOME"
}

pg_install() {
    PG_BIN="$(pg_bindir || true)"
    if [[ -z "$PG_BIN" ]]; then
        apt_install postgresql
        PG_BIN="$(pg_bindir || true)"
        [[ -n "$PG_BIN" ]] || die "postgres: installed package but no /usr/lib/postgresql/*/bin/pg_ctl"
    fi
    command -v psql >/dev/null || apt_install postgresql-client
}

pg_init() {
    mkdir -p "$PG_HOME" "$PG_RUN"
    chmod "$(traverse_mode)" "$PG_HOME"
    if is_root; then
        pg_fix_traverse
        chown postgres:postgres "$PG_RUN"
        touch "$PG_LOG"
        chown postgres:postgres "$PG_LOG"
    fi
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        log "postgres: initdb $PG_DATA"
        local log_at
        log_at="$PG_LOG@$(file_size "$PG_LOG")"
        mkdir -p "$PG_DATA"
        if is_root; then chown postgres:postgres "$PG_DATA"; fi
        chmod 700 "$PG_DATA"
        as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1 \
            || { show_logs "$log_at"; die "postgres: initdb failed"; }
        # Our settings live in yurong.conf (rewritten on every start).
        echo "include_if_exists = 'yurong.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
        as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# Generated by scripts/stack.sh.
# TYPE  DATABASE     USER      ADDRESS         METHOD
local   all          postgres                  peer
local   all          all                       scram-sha-256
host    all          all       127.0.0.1/32    scram-sha-256
host    replication  yurong    127.0.0.1/32    scram-sha-256
EOF
        PG_FRESH=1
    fi
    as_pg tee "$PG_DATA/yurong.conf" >/dev/null <<EOF
# Generated by scripts/stack.sh — edits are overwritten on every 'up'.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
password_encryption = scram-sha-256
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_slot_wal_keep_size = 2GB
EOF
}

# Create role yurong (superuser, replication) and database market if missing.
pg_bootstrap() {
    local psql=(as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres)
    if [[ "$("${psql[@]}" -Atc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]]; then
        log "postgres: creating role $PG_USER"
        "${psql[@]}" -c "CREATE ROLE $PG_USER WITH LOGIN SUPERUSER REPLICATION PASSWORD '$PG_PASSWORD'"
    fi
    if [[ "$("${psql[@]}" -Atc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
        log "postgres: creating database $PG_DB"
        "${psql[@]}" -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
    fi
}

pg_start() {
    if pg_running; then
        log "postgres: already running (pid $(read_pid "$PG_DATA/postmaster.pid"))"
        read_pid "$PG_DATA/postmaster.pid" >"$PG_PID"
        return 0
    fi
    rm -f "$PG_PID"
    if port_open "$PG_PORT"; then die "postgres: port $PG_PORT is already in use by another process"; fi
    pg_install
    pg_init
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    local log_at
    log_at="$PG_LOG@$(file_size "$PG_LOG")"
    pg_ctl_ -l "$PG_LOG" -w -t "$PG_START_TIMEOUT" start >/dev/null \
        || { show_logs "$log_at"; die "postgres: pg_ctl start failed"; }
    read_pid "$PG_DATA/postmaster.pid" >"$PG_PID"
    pg_bootstrap || { show_logs "$log_at"; die "postgres: creating role/database failed"; }
    PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -Atc 'SELECT 1' >/dev/null \
        || { show_logs "$log_at"; die "postgres: cannot log in as $PG_USER over TCP"; }
    log "postgres: up (pid $(read_pid "$PG_PID"), 127.0.0.1:$PG_PORT, db $PG_DB)"
}

pg_stop() {
    if ! pg_running; then
        rm -f "$PG_PID"
        log "postgres: not running"
        return 0
    fi
    log "postgres: stopping (pid $(read_pid "$PG_DATA/postmaster.pid"))"
    pg_ctl_ stop -m fast -w -t "$STOP_TIMEOUT" >/dev/null || die "postgres: pg_ctl stop failed"
    rm -f "$PG_PID"
}

pg_status() {
    if pg_running; then
        printf '%-9s up    pid %-8s 127.0.0.1:%s (db %s)\n' postgres "$(read_pid "$PG_DATA/postmaster.pid")" "$PG_PORT" "$PG_DB"
    else
        printf '%-9s down  %-12s 127.0.0.1:%s\n' postgres - "$PG_PORT"
    fi
}

# ---------------------------------------------------------------- mariadb ---
# The department databases of the binlog-CDC departments (hrss, housing_fund,
# power, customs): ROW binlog with FULL row metadata so that column names
# travel with every row event (an ALTER cannot mis-map columns).

mariadbd_bin() {
    local b
    for b in /usr/sbin/mariadbd /usr/sbin/mysqld "$(command -v mariadbd 2>/dev/null || true)"; do
        [[ -n "$b" && -x "$b" ]] && { echo "$b"; return 0; }
    done
    return 1
}

# The OS user the server runs as: mysql when we are root, else ourselves.
my_os_user() { if is_root; then echo mysql; else id -un; fi; }

as_my() {
    if is_root; then runuser -u mysql -- "$@"; else "$@"; fi
}

my_running() { pid_matches "$(read_pid "$MY_SERVER_PID")" 'mariadbd\|mysqld'; }

# Admin SQL over the socket, authenticated by unix_socket (root, or the OS user
# that ran mariadb-install-db).
my_sql() {
    mariadb --no-defaults --socket="$MY_SOCK" -u "$(id -un)" -N -B "$@"
}

my_fix_traverse() {
    is_root || return 0
    local d="$MY_HOME"
    while [[ "$d" != / ]]; do
        d="$(dirname "$d")"
        if ! runuser -u mysql -- test -x "$d" 2>/dev/null; then
            log "mariadb: chmod o+x $d (so the mysql user can reach its data dir)"
            chmod o+x "$d"
        fi
    done
    runuser -u mysql -- test -x "$MY_HOME" || die "mariadb: user mysql cannot reach $MY_HOME"
}

my_install() {
    if ! mariadbd_bin >/dev/null || ! command -v mariadb-install-db >/dev/null || ! command -v mariadb >/dev/null; then
        apt_install mariadb-server mariadb-client
    fi
    mariadbd_bin >/dev/null || die "mariadb: installed mariadb-server but found no mariadbd"
    is_root && ! id mysql >/dev/null 2>&1 && die "mariadb: OS user mysql is missing (the mariadb-server package creates it)"
    return 0
}

my_write_config() {
    mkdir -p "$MY_HOME" "$MY_RUN"
    chmod "$(traverse_mode)" "$MY_HOME"
    cat >"$MY_CNF" <<EOF
# Generated by scripts/stack.sh — edits are overwritten on every 'up'.
[mysqld]
user = $(my_os_user)
datadir = $MY_DATA
socket = $MY_SOCK
pid-file = $MY_SERVER_PID
log-error = $MY_LOG
bind-address = 127.0.0.1
port = $MYSQL_PORT
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
innodb_buffer_pool_size = 128M
# binlog for CDC (connectors/mysql.py)
server_id = 1
log_bin = mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
expire_logs_days = 7

[client]
socket = $MY_SOCK
default-character-set = utf8mb4
EOF
    chmod 644 "$MY_CNF"
    if is_root; then
        my_fix_traverse
        chown mysql:mysql "$MY_RUN"
        touch "$MY_LOG"
        chown mysql:mysql "$MY_LOG"
    fi
}

my_init() {
    [[ -d "$MY_DATA/mysql" ]] && return 0
    log "mariadb: mariadb-install-db $MY_DATA"
    local log_at
    log_at="$MY_LOG@$(file_size "$MY_LOG")"
    mkdir -p "$MY_DATA"
    if is_root; then chown mysql:mysql "$MY_DATA"; fi
    chmod 700 "$MY_DATA"
    mariadb-install-db --defaults-file="$MY_CNF" --user="$(my_os_user)" --datadir="$MY_DATA" \
        --auth-root-authentication-method=socket --skip-test-db >>"$MY_LOG" 2>&1 \
        || { show_logs "$log_at"; die "mariadb: mariadb-install-db failed"; }
}

# User yurong (password yurong) for the connector and the simulator: it
# creates the department databases and reads the binlog.
my_bootstrap() {
    local host
    for host in '%' 'localhost'; do
        if [[ "$(my_sql -e "SELECT COUNT(*) FROM mysql.user WHERE user = '$MYSQL_USER' AND host = '$host'")" != 1 ]]; then
            log "mariadb: creating user $MYSQL_USER@$host"
            my_sql -e "CREATE USER '$MYSQL_USER'@'$host' IDENTIFIED BY '$MYSQL_PASSWORD';
                GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'$host';
                GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO '$MYSQL_USER'@'$host';" \
                || return 1
        fi
    done
}

my_start() {
    if my_running && ! umask_ok "$(read_pid "$MY_SERVER_PID")"; then
        log "mariadb: running with a file mode that lets the mysql group read its data; restarting it with UMASK=0600"
        my_stop
    fi
    if my_running; then
        log "mariadb: already running (pid $(read_pid "$MY_SERVER_PID"))"
        read_pid "$MY_SERVER_PID" >"$MY_PID"
        return 0
    fi
    rm -f "$MY_PID"
    if port_open "$MYSQL_PORT"; then die "mariadb: port $MYSQL_PORT is already in use by another process"; fi
    my_install
    my_write_config
    my_init
    rm -f "$MY_SERVER_PID" "$MY_SOCK"
    log "mariadb: starting on 127.0.0.1:$MYSQL_PORT"
    local log_at bin
    log_at="$MY_LOG@$(file_size "$MY_LOG")"
    bin="$(mariadbd_bin)"
    # mariadbd started as root drops to user=mysql itself (my.cnf). Its files get the mode UMASK
    # (default 0660: the mysql group could read them), its directories UMASK_DIR.
    umask 077
    UMASK=0600 UMASK_DIR=0700 setsid "$bin" --defaults-file="$MY_CNF" </dev/null >>"$MY_LOG" 2>&1 &
    umask 022
    local launcher=$! deadline=$((SECONDS + MYSQL_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if [[ -S "$MY_SOCK" ]] && port_open "$MYSQL_PORT" && my_sql -e 'SELECT 1' >/dev/null 2>&1; then
            break
        fi
        if ! pid_alive "$launcher"; then
            show_logs "$log_at"
            die "mariadb: mariadbd exited during startup"
        fi
        sleep 0.3
    done
    ((SECONDS < deadline)) || { show_logs "$log_at"; die "mariadb: no answer on 127.0.0.1:$MYSQL_PORT within ${MYSQL_START_TIMEOUT}s"; }
    read_pid "$MY_SERVER_PID" >"$MY_PID"
    my_bootstrap || { show_logs "$log_at"; die "mariadb: creating user $MYSQL_USER failed"; }
    mariadb --no-defaults -h 127.0.0.1 -P "$MYSQL_PORT" -u "$MYSQL_USER" -p"$MYSQL_PASSWORD" -N -B -e 'SELECT 1' >/dev/null \
        || { show_logs "$log_at"; die "mariadb: cannot log in as $MYSQL_USER over TCP"; }
    log "mariadb: up (pid $(read_pid "$MY_PID"), 127.0.0.1:$MYSQL_PORT)"
}

my_stop() {
    local pid
    pid="$(read_pid "$MY_SERVER_PID")"
    if ! my_running; then
        rm -f "$MY_PID"
        log "mariadb: not running"
        return 0
    fi
    log "mariadb: stopping (pid $pid)"
    kill -TERM "$pid"
    if ! wait_pid_gone "$pid" "$STOP_TIMEOUT"; then
        log "mariadb: still alive after ${STOP_TIMEOUT}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 10 || die "mariadb: could not stop pid $pid"
    fi
    rm -f "$MY_PID"
}

my_status() {
    if my_running && port_open "$MYSQL_PORT"; then
        printf '%-9s up    pid %-8s 127.0.0.1:%s (binlog ROW)\n' mariadb "$(read_pid "$MY_SERVER_PID")" "$MYSQL_PORT"
    elif my_running; then
        printf '%-9s start pid %-8s 127.0.0.1:%s (process alive, port not answering)\n' mariadb "$(read_pid "$MY_SERVER_PID")" "$MYSQL_PORT"
    else
        printf '%-9s down  %-12s 127.0.0.1:%s\n' mariadb - "$MYSQL_PORT"
    fi
}

# ------------------------------------------------------------- prometheus ---
# Debian's `prometheus` package, configured from monitoring/prometheus/: the project's rules.yml
# (every alert's `for:` replaced by YURONG_PROMETHEUS_ALERT_FOR when that is set, so that a test
# stack sees an alert fire in seconds; unset, the shipped durations), a 2 s scrape and evaluation
# interval, and the scrape targets from file_sd files prometheus/targets/*.json: the stack writes
# local.json for the components' ports (streams/settings.py MetricsSettings: 9101-9103, or
# YURONG_METRICS_*_PORT at `up`), a test writes a file of its own for its pipeline. A target
# group's `job` label (yurong-connector, yurong-worker, yurong-sink: the jobs rules.yml and the
# compose prometheus.yml use) replaces the scrape config's job name.

prom_running() { pid_matches "$(read_pid "$PROM_PID")" 'prometheus'; }

prom_install() {
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then apt_install prometheus; fi
    command -v prometheus >/dev/null || die "prometheus: installed the package but found no prometheus binary"
}

# The targets of the components started by hand on this machine (one file_sd file).
prom_local_targets() {
    local tmp
    tmp="$(mktemp "$PROM_TARGETS/.local.XXXXXX")"
    cat >"$tmp" <<JSON
[
  {"targets": ["127.0.0.1:${YURONG_METRICS_CONNECTOR_PORT:-9101}"], "labels": {"job": "yurong-connector", "service": "connector"}},
  {"targets": ["127.0.0.1:${YURONG_METRICS_WORKER_PORT:-9102}"], "labels": {"job": "yurong-worker", "service": "worker"}},
  {"targets": ["127.0.0.1:${YURONG_METRICS_SINK_PORT:-9103}"], "labels": {"job": "yurong-sink", "service": "sink"}}
]
JSON
    mv "$tmp" "$PROM_TARGETS/local.json"
}

prom_write_config() {
    mkdir -p "$PROM_HOME" "$PROM_DATA" "$PROM_TARGETS"
    chmod 700 "$PROM_HOME"
    local rules="$PROM_HOME/rules.yml" note="the shipped for: durations"
    if [[ -n "$PROMETHEUS_ALERT_FOR" ]]; then
        [[ "$PROMETHEUS_ALERT_FOR" =~ ^[0-9]+(ms|s|m|h)$ ]] || die "prometheus: YURONG_PROMETHEUS_ALERT_FOR=$PROMETHEUS_ALERT_FOR is not a duration (e.g. 5s)"
        note="every alert's for: set to $PROMETHEUS_ALERT_FOR by YURONG_PROMETHEUS_ALERT_FOR"
    fi
    {
        printf '# Generated by scripts/stack.sh from monitoring/prometheus/rules.yml (%s).\n' "$note"
        if [[ -n "$PROMETHEUS_ALERT_FOR" ]]; then
            sed -E "s/^([[:space:]]*for:[[:space:]]*)[0-9]+(ms|s|m|h)[[:space:]]*$/\1$PROMETHEUS_ALERT_FOR/" "$PROM_SRC/rules.yml"
        else
            cat "$PROM_SRC/rules.yml"
        fi
    } >"$rules.tmp"
    mv "$rules.tmp" "$rules"
    cat >"$PROM_CONF.tmp" <<YAML
# Generated by scripts/stack.sh — edits are overwritten on every 'up'. The compose deployment's
# configuration is monitoring/prometheus/prometheus.yml (static targets, 15s intervals).
global:
  scrape_interval: $PROM_INTERVAL
  scrape_timeout: $PROM_INTERVAL
  evaluation_interval: $PROM_INTERVAL
  external_labels:
    system: yurong
    stack: local

rule_files:
  - rules.yml

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROMETHEUS_PORT"]

  # connectors, workers and sinks: one file_sd file per set of processes; each target group names
  # its job (yurong-connector, yurong-worker, yurong-sink) and may add labels (e.g. service)
  - job_name: yurong
    metrics_path: /metrics
    file_sd_configs:
      - files: ["$PROM_TARGETS/*.json"]
        refresh_interval: $PROM_INTERVAL
YAML
    mv "$PROM_CONF.tmp" "$PROM_CONF"
    prom_local_targets
    local out
    out="$(promtool check config "$PROM_CONF" 2>&1)" || { printf '%s\n' "$out" >&2; die "prometheus: promtool check config $PROM_CONF failed"; }
}

# Launch Prometheus in the background, or make a running one re-read its configuration and rules
# (SIGHUP); prom_wait checks that it answers.
prom_start() {
    PROM_STARTED=""
    prom_install
    prom_write_config
    if prom_running; then
        kill -HUP "$(read_pid "$PROM_PID")"
        log "prometheus: already running (pid $(read_pid "$PROM_PID")); configuration and rules re-loaded"
        return 0
    fi
    rm -f "$PROM_PID"
    if port_open "$PROMETHEUS_PORT"; then die "prometheus: port $PROMETHEUS_PORT is already in use by another process"; fi
    PROM_LOG_AT="$PROM_LOG@$(file_size "$PROM_LOG")"
    log "prometheus: starting on 127.0.0.1:$PROMETHEUS_PORT"
    umask 077   # the TSDB: the owner's only (back to 022 below)
    setsid prometheus --config.file="$PROM_CONF" --storage.tsdb.path="$PROM_DATA" \
        --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
        </dev/null >>"$PROM_LOG" 2>&1 &
    echo $! >"$PROM_PID"
    umask 022
    PROM_STARTED=1
}

prom_ready() {
    if command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 2>/dev/null
    else
        port_open "$PROMETHEUS_PORT"
    fi
}

prom_wait() {
    [[ -n "${PROM_STARTED:-}" ]] || return 0
    local i
    for ((i = 0; i < 300; i++)); do
        if ! prom_running; then
            show_logs "$PROM_LOG_AT"
            rm -f "$PROM_PID"
            die "prometheus: exited during startup"
        fi
        if prom_ready; then
            log "prometheus: up (pid $(read_pid "$PROM_PID"), http://127.0.0.1:$PROMETHEUS_PORT, targets $PROM_TARGETS/*.json)"
            return 0
        fi
        sleep 0.2
    done
    show_logs "$PROM_LOG_AT"
    die "prometheus: not ready on 127.0.0.1:$PROMETHEUS_PORT within 60s"
}

prom_stop() {
    local pid
    pid="$(read_pid "$PROM_PID")"
    if ! prom_running; then
        rm -f "$PROM_PID"
        log "prometheus: not running"
        return 0
    fi
    log "prometheus: stopping (pid $pid)"
    kill -TERM "$pid"
    if ! wait_pid_gone "$pid" "$STOP_TIMEOUT"; then
        log "prometheus: still alive after ${STOP_TIMEOUT}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 10 || die "prometheus: could not stop pid $pid"
    fi
    rm -f "$PROM_PID"
}

prom_status() {
    local rules=shipped
    [[ -z "$PROMETHEUS_ALERT_FOR" ]] || rules="alerts for: $PROMETHEUS_ALERT_FOR"
    if prom_running && port_open "$PROMETHEUS_PORT"; then
        printf '%-9s up    pid %-8s 127.0.0.1:%s (rules %s)\n' prometheus "$(read_pid "$PROM_PID")" "$PROMETHEUS_PORT" "$rules"
    else
        printf '%-9s down  %-12s 127.0.0.1:%s\n' prometheus - "$PROMETHEUS_PORT"
    fi
}

# --------------------------------------------------------------- security ---

# The platform's principals and ACL matrix (streams/core/access.py), applied as admin. Needs the
# project's virtualenv (scripts/bootstrap.sh); idempotent, so every `up` re-checks the matrix.
security_apply() {
    local yurong="$REPO_ROOT/.venv/bin/yurong"
    if [[ ! -x "$yurong" ]]; then
        log "security: $yurong not installed (run scripts/bootstrap.sh), principals and ACLs NOT applied"
        return 0
    fi
    log "security: applying the Kafka principals and ACLs"
    YURONG_HOME="$YURONG_HOME" YURONG_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT" YURONG_KAFKA_USERNAME=admin \
        YURONG_KAFKA_SECRETS_DIR="$YURONG_HOME/secrets/kafka" "$yurong" security apply >"$LOG_DIR/security.log" 2>&1 \
        || { tail -n 30 "$LOG_DIR/security.log" >&2; die "security: 'yurong security apply' failed (see $LOG_DIR/security.log)"; }
}

# The local stack's SQL principals: an analyst and an auditor, each with a token file (0600) that
# `env` exports (YURONG_ANALYST_TOKEN_FILE is the analyst's), so `yurong sql` works by hand. The
# gateway stores only their scrypt hashes ($YURONG_HOME/secrets/analysts.json).
analyst_tokens() {
    local yurong="$REPO_ROOT/.venv/bin/yurong" name
    [[ -x "$yurong" ]] || { log "sql: $yurong not installed, no local analyst credentials"; return 0; }
    for name in analyst auditor; do
        [[ -s "$YURONG_HOME/secrets/$name.token" ]] && continue
        YURONG_HOME="$YURONG_HOME" "$yurong" analyst add "local-$name" --role "$name" --rotate \
            --token-file "$YURONG_HOME/secrets/$name.token" >>"$LOG_DIR/security.log" 2>&1 \
            || die "sql: could not make the local $name credential (see $LOG_DIR/security.log)"
        log "sql: made the local $name credential ($YURONG_HOME/secrets/$name.token)"
    done
}

# --------------------------------------------------------------- commands ---

# The ports a running stack was started with are recorded in run/ports.env, so
# that status/env/down (and an `up` on a running stack) use the real ones even
# when called without the YURONG_*_PORT variables of the original `up`.
PORTS_FILE_VARS=(KAFKA_PORT KAFKA_CONTROLLER_PORT REDIS_PORT PG_PORT MYSQL_PORT PROMETHEUS_PORT PROMETHEUS_ALERT_FOR)

load_recorded_ports() {
    local f="$RUN_DIR/ports.env" v want
    [[ -f "$f" ]] || return 0
    declare -A requested
    for v in "${PORTS_FILE_VARS[@]}"; do requested[$v]="${!v}"; done
    # shellcheck disable=SC1090
    source "$f"
    for v in "${PORTS_FILE_VARS[@]}"; do
        want="${requested[$v]}"
        local explicit="YURONG_$v"    # only complain about ports asked for explicitly
        if [[ -n "${!explicit:-}" && "$want" != "${!v}" ]]; then
            log "note: stack in $YURONG_HOME runs with $v=${!v} (not $want); using ${!v}"
        fi
    done
}

record_ports() {
    local v
    for v in "${PORTS_FILE_VARS[@]}"; do printf '%s=%s\n' "$v" "${!v}"; done >"$RUN_DIR/ports.env"
}

want() { [[ "$STACK_SERVICES" == *" $1 "* ]]; }

# The local stack's pseudonymisation key (32 random bytes as hex, 0600), made once per
# YURONG_HOME and exported by `env` as YURONG_MASKING_KEY_FILE, so that `yurong worker` works by
# hand on the local stack. A deployment sets its own key; without one the worker refuses to start.
masking_key() {
    local key="$YURONG_HOME/secrets/pseudonym.key"
    mkdir -p "$YURONG_HOME/secrets"
    chmod 700 "$YURONG_HOME/secrets"
    if [[ ! -s "$key" ]]; then
        command -v openssl >/dev/null || apt_install openssl
        (umask 077 && openssl rand -hex 32 >"$key") || die "could not make the pseudonymisation key $key"
        log "masking: made the local pseudonymisation key ($key)"
    fi
    chmod 600 "$key"
}

cmd_up() {
    local t0=$SECONDS
    ensure_dirs
    set_paths
    if kafka_running || redis_running || pg_running || my_running || prom_running; then load_recorded_ports; fi
    record_ports
    masking_key
    analyst_tokens
    if want kafka; then kafka_start; fi      # the JVM boots while redis and postgres start
    if want redis; then redis_start; fi
    if want postgres; then pg_start; fi
    if want mariadb; then my_start; fi
    if want prometheus; then prom_start; fi  # starts in the background, checked after Kafka
    if want kafka; then kafka_wait; security_apply; fi
    if want prometheus; then prom_wait; fi
    secure_modes
    log "stack up in $((SECONDS - t0))s — YURONG_HOME=$YURONG_HOME"
}

cmd_down() {
    set_paths
    [[ -d "$YURONG_HOME" ]] || { log "nothing to stop ($YURONG_HOME does not exist)"; return 0; }
    load_recorded_ports
    if want kafka; then kafka_stop; fi
    if want redis; then redis_stop; fi
    if want postgres; then pg_stop; fi
    if want mariadb; then my_stop; fi
    if want prometheus; then prom_stop; fi
    rm -f "$RUN_DIR/ports.env"
    log "stack down"
}

cmd_status() {
    set_paths
    load_recorded_ports 2>/dev/null
    kafka_status
    redis_status
    pg_status
    my_status
    prom_status
    # Exit 0 only when everything is up (handy: `stack.sh status >/dev/null || stack.sh up`).
    kafka_running && port_open "$KAFKA_PORT" && redis_running && pg_running && my_running || return 3
    if want prometheus; then prom_running || return 3; fi
}

cmd_env() {
    set_paths
    load_recorded_ports
    kafka_running || log "warning: kafka is not running"
    redis_running || log "warning: redis is not running"
    pg_running || log "warning: postgres is not running"
    my_running || log "warning: mariadb is not running"
    prom_running || log "warning: prometheus is not running"
    cat <<EOF
export YURONG_HOME=$YURONG_HOME
export YURONG_KAFKA_PORT=$KAFKA_PORT
export YURONG_KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
export YURONG_REDIS_PORT=$REDIS_PORT
export YURONG_PG_PORT=$PG_PORT
export YURONG_MYSQL_PORT=$MYSQL_PORT
export YURONG_PROMETHEUS_PORT=$PROMETHEUS_PORT
export YURONG_PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT
export YURONG_PROMETHEUS_TARGETS_DIR=$YURONG_HOME/prometheus/targets
export YURONG_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
export YURONG_KAFKA_SECRETS_DIR=$YURONG_HOME/secrets/kafka
export YURONG_MASKING_KEY_FILE=$YURONG_HOME/secrets/pseudonym.key
export YURONG_ANALYST_TOKEN_FILE=$YURONG_HOME/secrets/analyst.token
export YURONG_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export YURONG_REDIS_SECRETS_DIR=$YURONG_HOME/secrets/redis
export YURONG_SOURCE_MARKET_DSN=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
export YURONG_SOURCE_MYSQL_TEMPLATE='mysql://$MYSQL_USER:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT/{db}'
export YURONG_SOURCE_POSTGRES_TEMPLATE='postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/{db}'
EOF
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
