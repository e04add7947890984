#!/bin/sh
# Provisions yurong's ClickHouse users, roles, settings profiles and quota (rbac.sql next to this
# file; docs/security.md, "ClickHouse users and roles (server mode)").
#
# docker-compose.yml mounts it as /docker-entrypoint-initdb.d/init-rbac.sh of the official
# clickhouse/clickhouse-server image, which runs it (executable: as a child process) while the
# server listens on 127.0.0.1 only; CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS=1 makes that happen at every
# start, so a password changed in .env reaches the server at the next `up` and drift is repaired.
# By hand on a running server: docker compose exec clickhouse /docker-entrypoint-initdb.d/init-rbac.sh
#
# Needs: CLICKHOUSE_USER and CLICKHOUSE_PASSWORD (the image's administrator, with access
# management; never `default`), and a password for each login below, from the variable itself or
# from the file its *_FILE variable names (e.g. a Docker secret):
#   CLICKHOUSE_SINK_PASSWORD          yurong_sink
#   CLICKHOUSE_ANALYST_GW_PASSWORD    yurong_analyst_gw
#   CLICKHOUSE_AUDITOR_GW_PASSWORD    yurong_auditor_gw
#   CLICKHOUSE_OPERATOR_GW_PASSWORD   yurong_operator_gw
# Every password is at least 16 characters of A-Z a-z 0-9 . _ ~ - (they go into DSNs and JSON
# unescaped; `python -c "import secrets; print(secrets.token_urlsafe(32))"`), and a CHANGE-ME
# placeholder of .env.example is refused.
# Optional: INIT_RBAC_SQL (default: rbac.sql next to this script, or /opt/yurong/clickhouse/rbac.sql),
# INIT_RBAC_HOST (127.0.0.1), INIT_RBAC_PORT (9000).
#
# The passwords reach the server as query parameters: `SET param_<name> = '<password>'` lines on
# the client's standard input ahead of rbac.sql; the administrator's password goes through a client
# configuration file (mode 0600, removed on exit). None is on a command line; nothing printed holds
# one, except in the dry run. The server logs the SET lines like any query: the query_masking_rules
# of config.d/yurong-access.xml (mounted by docker-compose.yml) replace their values with '[hidden]'.
#
# INIT_RBAC_DRY_RUN=1: print the exact SQL stream that would be sent (SET lines with the passwords
# given, then rbac.sql) and connect to nothing; for tests with dummy passwords
# (tests/unit/test_clickhouse_rbac_sql.py). It needs no administrator.
set -eu

die() { echo "init-rbac: $*" >&2; exit 1; }

here="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${INIT_RBAC_SQL:-}" ]; then
    sql="$INIT_RBAC_SQL"
elif [ -f "$here/rbac.sql" ]; then
    sql="$here/rbac.sql"
else
    sql=/opt/yurong/clickhouse/rbac.sql
fi
[ -r "$sql" ] || die "cannot read $sql (INIT_RBAC_SQL)"

# query parameter of rbac.sql = variable holding the password
PASSWORDS="sink_password=CLICKHOUSE_SINK_PASSWORD analyst_gw_password=CLICKHOUSE_ANALYST_GW_PASSWORD \
auditor_gw_password=CLICKHOUSE_AUDITOR_GW_PASSWORD operator_gw_password=CLICKHOUSE_OPERATOR_GW_PASSWORD"

# the value of variable $1, or the first line of the file named by ${1}_FILE
secret() {
    eval "value=\${$1:-}"
    eval "file=\${$1_FILE:-}"
    if [ -z "$value" ] && [ -n "$file" ]; then
        [ -r "$file" ] || die "$1_FILE: cannot read $file"
        IFS= read -r value <"$file" || [ -n "$value" ] || die "$1_FILE: $file is empty"
    fi
    [ -n "$value" ] || die "$1 (or $1_FILE) is not set"
    check_password "$1" "$value"
    printf '%s' "$value"
}

check_password() {
    case "$2" in
        CHANGE-ME*) die "$1 is still the .env.example placeholder" ;;
        *[!A-Za-z0-9._~-]*) die "$1: use only A-Z a-z 0-9 . _ ~ - (e.g. secrets.token_urlsafe(32))" ;;
    esac
    [ "${#2}" -ge 16 ] || die "$1: at least 16 characters"
}

# the SQL stream: one SET param_ line per password, then rbac.sql
stream() {
    for pair in $PASSWORDS; do
        param="${pair%%=*}"
        pw="$(secret "${pair#*=}")" || exit 1
        printf "SET param_%s = '%s';\n" "$param" "$pw"
    done
    cat "$sql"
}

if [ "${INIT_RBAC_DRY_RUN:-}" = 1 ]; then
    stream
    exit 0
fi

admin="${CLICKHOUSE_USER:-}"
case "$admin" in
    ''|default) die "CLICKHOUSE_USER must name the administrator (not default)" ;;
esac
[ -n "${CLICKHOUSE_PASSWORD:-}" ] || die "CLICKHOUSE_PASSWORD (the administrator's) is not set"
check_password CLICKHOUSE_PASSWORD "$CLICKHOUSE_PASSWORD"

umask 077
conf="$(mktemp)"
trap 'rm -f "$conf"' EXIT INT TERM
printf '<config>\n  <user>%s</user>\n  <password>%s</password>\n</config>\n' "$admin" "$CLICKHOUSE_PASSWORD" >"$conf"
client() {
    clickhouse-client --config-file "$conf" --host "${INIT_RBAC_HOST:-127.0.0.1}" --port "${INIT_RBAC_PORT:-9000}" "$@"
}

stream_file="$(mktemp)"
trap 'rm -f "$conf" "$stream_file"' EXIT INT TERM
stream >"$stream_file"
client --multiquery <"$stream_file"
rm -f "$stream_file"

# the image removes the password-less `default` user when CLICKHOUSE_USER names another; make sure
if [ "$(client --query "SELECT count() FROM system.users WHERE name = 'default'")" != 0 ]; then
    die "the user 'default' exists: set CLICKHOUSE_USER to the administrator's name (not default)"
fi
echo "init-rbac: users yurong_sink, yurong_analyst_gw, yurong_auditor_gw, yurong_operator_gw and their roles, profiles and quota applied from $sql"
