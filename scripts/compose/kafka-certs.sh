#!/bin/sh
# The compose deployment's Kafka CA and broker certificate, made once (docker-compose.yml, service
# kafka-certs). POSIX sh and keytool only: the apache/kafka image has a JRE (keytool) but no openssl.
#
# Into KAFKA_SECRETS_DIR (the kafka-certs volume, mounted only into kafka-certs and kafka):
#   ca.p12      the CA's key pair (PKCS12, mode 0600, owned by whoever runs this script: the CA key
#               never leaves this folder, and the broker cannot read it when this runs as root)
#   ca.crt      the CA certificate (PEM), public
#   broker.p12  the broker's key and chain (PKCS12, mode 0600, owned by KAFKA_CERTS_OWNER if set),
#               SAN KAFKA_CERT_SAN (default dns:kafka,dns:localhost,ip:127.0.0.1)
# Into KAFKA_CA_DIR (the kafka-ca volume, the only one the app containers mount): ca.crt alone.
#
# Both PKCS12 stores are protected by KAFKA_KEYSTORE_PASSWORD, which keytool reads from the
# environment (-storepass:env), so it never appears in a command line or in the output.
# Idempotent: an existing CA and broker store are kept (checked to open with the password).
set -eu

SECRETS="${KAFKA_SECRETS_DIR:-/secrets}"
CA_DIR="${KAFKA_CA_DIR:-/ca}"
SAN="${KAFKA_CERT_SAN:-dns:kafka,dns:localhost,ip:127.0.0.1}"
BROKER_CN="${KAFKA_CERT_CN:-kafka}"
OWNER="${KAFKA_CERTS_OWNER:-}"

die() { echo "kafka-certs: $*" >&2; exit 1; }
log() { echo "kafka-certs: $*"; }

[ -n "${KAFKA_KEYSTORE_PASSWORD:-}" ] || die "KAFKA_KEYSTORE_PASSWORD is not set"
[ "${#KAFKA_KEYSTORE_PASSWORD}" -ge 6 ] || die "KAFKA_KEYSTORE_PASSWORD must have at least 6 characters (keytool)"
case "$KAFKA_KEYSTORE_PASSWORD" in
    *[!A-Za-z0-9._~-]*) die "KAFKA_KEYSTORE_PASSWORD may only use A-Z a-z 0-9 . _ ~ - (it is written into a Java properties file)" ;;
esac
export KAFKA_KEYSTORE_PASSWORD
command -v keytool >/dev/null || die "keytool not found"

umask 077
mkdir -p "$SECRETS" "$CA_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# keytool with the store password from the environment; its output is shown only when it fails
kt() {
    keytool "$@" -storepass:env KAFKA_KEYSTORE_PASSWORD >"$tmp/keytool.out" 2>&1 || { cat "$tmp/keytool.out" >&2; return 1; }
}

if [ -s "$SECRETS/ca.p12" ]; then
    kt -list -keystore "$SECRETS/ca.p12" -storetype PKCS12 \
        || die "KAFKA_KEYSTORE_PASSWORD does not open $SECRETS/ca.p12 (changed since the CA was made?)"
else
    log "generating the CA"
    rm -f "$SECRETS/ca.crt" "$SECRETS/broker.p12"
    kt -genkeypair -alias ca -keyalg RSA -keysize 2048 -sigalg SHA256withRSA -validity 3650 \
        -dname "CN=yurong compose CA" -ext bc:c -ext KeyUsage:c=keyCertSign,cRLSign \
        -storetype PKCS12 -keystore "$SECRETS/ca.p12" \
        || die "keytool could not generate the CA"
fi
if [ ! -s "$SECRETS/ca.crt" ]; then
    kt -exportcert -rfc -alias ca -keystore "$SECRETS/ca.p12" -storetype PKCS12 -file "$SECRETS/ca.crt" \
        || die "keytool could not export the CA certificate"
fi

if [ -s "$SECRETS/broker.p12" ]; then
    kt -list -keystore "$SECRETS/broker.p12" -storetype PKCS12 \
        || die "KAFKA_KEYSTORE_PASSWORD does not open $SECRETS/broker.p12 (changed since it was issued?)"
else
    log "issuing the broker certificate (CN=$BROKER_CN, SAN $SAN)"
    store="$tmp/broker.p12"
    kt -genkeypair -alias broker -keyalg RSA -keysize 2048 -sigalg SHA256withRSA -validity 825 \
        -dname "CN=$BROKER_CN" -ext "SAN=$SAN" -storetype PKCS12 -keystore "$store" \
        || die "keytool could not generate the broker key"
    kt -certreq -alias broker -keystore "$store" -storetype PKCS12 -file "$tmp/broker.csr" \
        || die "keytool could not make the broker's certificate request"
    kt -gencert -alias ca -keystore "$SECRETS/ca.p12" -storetype PKCS12 -infile "$tmp/broker.csr" \
        -outfile "$tmp/broker.crt" -rfc -validity 825 -sigalg SHA256withRSA \
        -ext "SAN=$SAN" -ext KeyUsage:c=digitalSignature,keyEncipherment -ext ExtendedKeyUsage=serverAuth,clientAuth \
        || die "keytool could not sign the broker certificate"
    # the CA as a trusted entry lets keytool chain the signed reply; the chain stays in the key entry
    kt -importcert -noprompt -alias ca -file "$SECRETS/ca.crt" -keystore "$store" -storetype PKCS12 \
        || die "keytool could not import the CA into the broker store"
    kt -importcert -noprompt -alias broker -file "$tmp/broker.crt" -keystore "$store" -storetype PKCS12 \
        || die "keytool could not import the signed broker certificate"
    kt -delete -alias ca -keystore "$store" -storetype PKCS12 \
        || die "keytool could not drop the CA entry from the broker store"
    mv "$store" "$SECRETS/broker.p12"
fi

chmod 600 "$SECRETS/ca.p12" "$SECRETS/broker.p12"
chmod 644 "$SECRETS/ca.crt"
chmod 755 "$SECRETS" "$CA_DIR"
cp "$SECRETS/ca.crt" "$CA_DIR/ca.crt.tmp"
chmod 644 "$CA_DIR/ca.crt.tmp"
mv "$CA_DIR/ca.crt.tmp" "$CA_DIR/ca.crt"
if [ -n "$OWNER" ]; then
    # the broker runs as OWNER (the image's appuser): it reads its own store, never the CA's
    chown "$OWNER" "$SECRETS/broker.p12" || die "cannot give broker.p12 to $OWNER"
fi
log "ready: $SECRETS/broker.p12, CA certificate $CA_DIR/ca.crt"
