#!/bin/sh
# The compose deployment's Kafka principals and ACLs (docker-compose.yml, one-shot service
# kafka-security, in the yurong image): `yurong security apply` as admin, after writing the
# passwords that .env gives the platform's principals to YURONG_KAFKA_SECRETS_DIR (a tmpfs), so that
# apply_matrix (streams/kafka/security.py) creates those users with them rather than with random
# ones. Then it sets those passwords again, so that a password changed in .env reaches the broker
# (apply_matrix leaves an existing user's password alone when its file exists).
#
# The connector principals of the other departments (connector-<dept>) get random passwords in the
# tmpfs, thrown away when this container exits: no service of docker-compose.yml runs them.
#
# Needs: YURONG_KAFKA_BOOTSTRAP_SERVERS, YURONG_KAFKA_USERNAME=admin, YURONG_KAFKA_PASSWORD (the
# admin's), YURONG_KAFKA_CA_LOCATION, YURONG_KAFKA_SECRETS_DIR, and KAFKA_<PRINCIPAL>_PASSWORD
# for each principal below. Never prints a password.
set -eu

die() { echo "kafka-security: $*" >&2; exit 1; }

DIR="${YURONG_KAFKA_SECRETS_DIR:?YURONG_KAFKA_SECRETS_DIR is not set}"
[ "${YURONG_KAFKA_USERNAME:-}" = admin ] || die "run as the super user: YURONG_KAFKA_USERNAME=admin"
[ -n "${YURONG_KAFKA_PASSWORD:-}" ] || die "YURONG_KAFKA_PASSWORD (the admin's) is not set"

# principal=variable holding its password
PRINCIPALS="worker=KAFKA_WORKER_PASSWORD sink=KAFKA_SINK_PASSWORD consent=KAFKA_CONSENT_PASSWORD \
operator=KAFKA_OPERATOR_PASSWORD connector-market=KAFKA_CONNECTOR_MARKET_PASSWORD"

umask 077
mkdir -p "$DIR"
names=""
for pair in $PRINCIPALS; do
    principal="${pair%%=*}"
    var="${pair#*=}"
    eval "pw=\${$var:-}"
    [ -n "$pw" ] || die "$var is not set"
    printf '%s\n' "$pw" >"$DIR/$principal.password"
    names="$names $principal"
done

yurong security apply

# shellcheck disable=SC2086  # names: one argument per principal
python - $names <<'EOF'
import sys

from confluent_kafka.admin import AdminClient

from streams.core.access import ADMIN
from streams.kafka.security import client_conf, password_file, set_password
from streams.settings import get_settings

s = get_settings()
admin = AdminClient(client_conf(ADMIN, s))
for principal in sys.argv[1:]:
    set_password(admin, principal, password_file(s, principal).read_text().strip())
print(f"kafka-security: passwords from the environment set for {', '.join(sys.argv[1:])}")
EOF
