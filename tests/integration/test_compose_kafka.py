"""docker-compose.yml's Kafka, run for real without Docker: scripts/compose/kafka-certs.sh makes the
CA and the broker's key store with keytool, scripts/compose/kafka-start.sh writes the broker's
configuration, formats the storage with the admin's SCRAM credential and starts the broker,
scripts/compose/kafka-security.sh applies the principals and ACLs with the passwords compose gives
it — each with the environment docker-compose.yml gives its service, only the paths, ports and
host names changed for this machine.

No Docker here: the Kafka jars of the local stack (``scripts/stack.sh up`` installs them under
``$YURONG_HOME/kafka/libs``) stand in for the image's ``/opt/kafka``, through a ``bin/`` of small
wrappers named like the image's scripts. Needs no running stack.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import IN_CI

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "compose"
COMPOSE = REPO / "docker-compose.yml"

# .env for these tests (the broker's two passwords: only A-Z a-z 0-9 . _ ~ -)
DOTENV = {
    "KAFKA_ADMIN_PASSWORD": "test-admin-Pw.1",
    "KAFKA_KEYSTORE_PASSWORD": "test-keystore-Pw.2",
    "KAFKA_WORKER_PASSWORD": "test-worker-pw",
    "KAFKA_SINK_PASSWORD": "test-sink-pw",
    "KAFKA_CONSENT_PASSWORD": "test-consent-pw",
    "KAFKA_OPERATOR_PASSWORD": "test-operator-pw",
    "KAFKA_CONNECTOR_MARKET_PASSWORD": "test-connector-market-pw",
}

# the image's Kafka scripts, as the classes they run
WRAPPERS = {
    "kafka-storage.sh": "kafka.tools.StorageTool",
    "kafka-server-start.sh": "kafka.Kafka",
    "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
}


def _missing(msg: str) -> None:
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def kafka_libs() -> Path:
    candidates = [Path(os.environ["YURONG_HOME"]) / "kafka" / "libs"] if os.environ.get("YURONG_HOME") else []
    candidates += [REPO / ".yurong-test" / "kafka" / "libs", REPO / ".yurong" / "kafka" / "libs"]
    for libs in candidates:
        if list(libs.glob("kafka_2.13-*.jar")):
            return libs
    _missing("no Kafka jars (scripts/stack.sh up installs them under $YURONG_HOME/kafka/libs)")
    raise AssertionError  # not reached


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def interpolate(value: str) -> str:
    """Compose's ${VAR:?..} / ${VAR:-default} against DOTENV (see tests/unit/test_monitoring_assets.py)."""
    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if DOTENV.get(name):
            return DOTENV[name]
        if op and op.endswith("?"):
            assert not name.startswith("KAFKA_"), f"{name} missing from the test's .env"
            return "not-used-here"  # the services' other secrets (ClickHouse, Redis, ...)
        return arg or ""
    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, value).replace("$$", "$")


def service_env(name: str) -> dict[str, str]:
    svc = yaml.safe_load(COMPOSE.read_text())["services"][name]
    return {k: interpolate(str(v)) for k, v in svc["environment"].items()}


def base_env() -> dict[str, str]:
    """A clean process environment: no YURONG_*/KAFKA_* of the developer's shell or the stack."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("YURONG_", "KAFKA_"))}


@dataclass
class Broker:
    root: Path
    env: dict[str, str]                  # kafka-start.sh's environment
    port: int                            # SASL_SSL (kafka:9092 in compose)
    host_port: int                       # HOST (127.0.0.1:29092 in compose)
    controller_port: int
    certs_output: str
    proc: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def ca(self) -> Path:
        return self.ca_dir / "ca.crt"

    def start(self) -> None:
        log = self.root / f"broker-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(["sh", str(SCRIPTS / "kafka-start.sh")], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the broker exited:\n{self.output()[-4000:]}"
            try:
                AdminClient(self.login("admin", DOTENV["KAFKA_ADMIN_PASSWORD"])).list_topics(timeout=2)
                return
            except KafkaException:
                time.sleep(0.5)
        pytest.fail(f"the broker did not answer within 60 s:\n{self.output()[-4000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # the start script exec'd the broker: this pid is the JVM
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.logs[-1].read_text(errors="replace") if self.logs else ""

    def login(self, user: str, password: str, port: int | None = None, host: str = "127.0.0.1") -> dict[str, Any]:
        return {
            "bootstrap.servers": f"{host}:{port or self.port}",
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(self.ca),
            "log_level": 0,
        }


def kafka_home(root: Path, libs: Path) -> Path:
    """A stand-in for the image's /opt/kafka: bin/ with the scripts kafka-start.sh and the health
    check call, each running its class from the stack's jars."""
    home = root / "kafka-home"
    (home / "bin").mkdir(parents=True)
    log4j = REPO / "scripts" / "kafka" / "tools-log4j2.properties"
    for script, main_class in WRAPPERS.items():
        path = home / "bin" / script
        path.write_text("#!/bin/sh\n"
                        f"# shellcheck disable=SC2086\nexec java ${{KAFKA_HEAP_OPTS:-}} -Dlog4j2.configurationFile={log4j} "
                        f"-cp '{libs}/*' {main_class} \"$@\"\n")
        path.chmod(0o755)
    return home


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[Broker]:
    for tool in ("java", "keytool"):
        if shutil.which(tool) is None:
            _missing(f"{tool} is not installed (openjdk-17-jre-headless)")
    libs = kafka_libs()
    root = tmp_path_factory.mktemp("compose-kafka")

    # kafka-certs, with its compose environment; the volumes become folders here
    certs_env = {**base_env(), **service_env("kafka-certs"),
                 "KAFKA_SECRETS_DIR": str(root / "secrets"), "KAFKA_CA_DIR": str(root / "ca")}
    certs_env.pop("KAFKA_CERTS_OWNER")  # no appuser here: the files stay the test's
    done = subprocess.run(["sh", str(SCRIPTS / "kafka-certs.sh")], env=certs_env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    port, host_port, controller_port = free_ports(3)
    env = {**base_env(), **service_env("kafka"),
           "KAFKA_HOME": str(kafka_home(root, libs)),
           "KAFKA_SECRETS_DIR": str(root / "secrets"),
           "KAFKA_DATA_DIR": str(root / "data"),
           "KAFKA_CONF_DIR": str(root / "conf"),
           # in compose the broker is `kafka` on every interface; here 127.0.0.1, also in the SAN
           "KAFKA_LISTEN_HOST": "127.0.0.1",
           "KAFKA_ADVERTISED_HOST": "127.0.0.1",
           "KAFKA_SASL_PORT": str(port),
           "KAFKA_HOST_PORT": str(host_port),
           "KAFKA_HOST_ADVERTISED": f"localhost:{host_port}",
           "KAFKA_CONTROLLER_PORT": str(controller_port),
           "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m"}
    b = Broker(root, env, port, host_port, controller_port, done.stdout + done.stderr)
    try:
        b.start()
        yield b
    finally:
        b.stop()


# ---------------------------------------------------------------- kafka-certs.sh


def test_certificates_made_with_keytool(broker):
    s = broker.secrets
    assert {p.name for p in s.iterdir()} == {"ca.p12", "ca.crt", "broker.p12"}
    assert {p.name for p in broker.ca_dir.iterdir()} == {"ca.crt"}, "the app containers' volume holds the CA certificate only"
    assert broker.ca.read_bytes() == (s / "ca.crt").read_bytes()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (*s.iterdir(), broker.ca)}
    assert modes == {"ca.p12": 0o600, "broker.p12": 0o600, "ca.crt": 0o644}
    assert DOTENV["KAFKA_KEYSTORE_PASSWORD"] not in broker.certs_output

    env = {**base_env(), "KAFKA_KEYSTORE_PASSWORD": DOTENV["KAFKA_KEYSTORE_PASSWORD"]}
    listing = subprocess.run(["keytool", "-list", "-v", "-keystore", str(s / "broker.p12"), "-storetype", "PKCS12",
                              "-storepass:env", "KAFKA_KEYSTORE_PASSWORD"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout
    assert "Your keystore contains 1 entry" in out and "PrivateKeyEntry" in out
    assert "Certificate chain length: 2" in out, "the broker presents its certificate and the CA's"
    for san in ("DNSName: kafka", "DNSName: localhost", "IPAddress: 127.0.0.1"):
        assert san in out
    assert "Issuer: CN=yurong compose CA" in out


def test_certificates_script_is_idempotent(broker):
    before = {p.name: p.read_bytes() for p in broker.secrets.iterdir()}
    env = {**base_env(), **service_env("kafka-certs"),
           "KAFKA_SECRETS_DIR": str(broker.secrets), "KAFKA_CA_DIR": str(broker.ca_dir)}
    env.pop("KAFKA_CERTS_OWNER")
    again = subprocess.run(["sh", str(SCRIPTS / "kafka-certs.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "generating" not in again.stdout and "issuing" not in again.stdout
    assert {p.name: p.read_bytes() for p in broker.secrets.iterdir()} == before
    # a changed password does not silently re-issue anything
    wrong = subprocess.run(["sh", str(SCRIPTS / "kafka-certs.sh")], env={**env, "KAFKA_KEYSTORE_PASSWORD": "another-pw"},
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0 and "does not open" in wrong.stderr
    assert "another-pw" not in wrong.stdout + wrong.stderr
    assert {p.name: p.read_bytes() for p in broker.secrets.iterdir()} == before


# ---------------------------------------------------------------- kafka-start.sh: the broker


def test_admin_logs_in_over_sasl_ssl_on_both_listeners(broker):
    admin = DOTENV["KAFKA_ADMIN_PASSWORD"]
    inside = AdminClient(broker.login("admin", admin)).list_topics(timeout=10)
    assert [f"{b.host}:{b.port}" for b in inside.brokers.values()] == [f"127.0.0.1:{broker.port}"]
    # the published listener advertises its own address (127.0.0.1:29092 in compose; localhost here,
    # which the certificate also names)
    host = AdminClient(broker.login("admin", admin, broker.host_port, "localhost")).list_topics(timeout=10)
    assert [f"{b.host}:{b.port}" for b in host.brokers.values()] == [f"localhost:{broker.host_port}"]
    # what aiokafka (the worker's Faust) checks: the chain and the host name, strict X.509
    ctx = ssl.create_default_context(cafile=str(broker.ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    for host_name, port in (("127.0.0.1", broker.port), ("localhost", broker.host_port)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=host_name) as tls:
            assert tls.version() in ("TLSv1.3", "TLSv1.2")
    # a host name the certificate does not name is refused
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="not-kafka.example")


def test_admin_creates_a_topic_no_topic_is_auto_created(broker):
    admin = AdminClient(broker.login("admin", DOTENV["KAFKA_ADMIN_PASSWORD"]))
    admin.create_topics([NewTopic("compose.smoke", 1, 1)])["compose.smoke"].result(15)
    assert "compose.smoke" in admin.list_topics(timeout=10).topics
    md = admin.list_topics(topic="compose.never-declared", timeout=10)
    assert md.topics["compose.never-declared"].error is not None, "auto.create.topics.enable=false"


def _api_versions_v0(correlation_id: int) -> bytes:
    client = b"plaintext-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client)) + client
    return struct.pack(">i", len(body)) + body


def test_plaintext_is_refused_on_every_listener(broker):
    for port in (broker.port, broker.host_port, broker.controller_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(_api_versions_v0(4242))
            s.settimeout(10)
            try:
                reply = s.recv(64)
            except (ConnectionResetError, TimeoutError):
                reply = b""
        is_kafka_reply = len(reply) >= 8 and struct.unpack(">i", reply[4:8])[0] == 4242
        assert not is_kafka_reply, f"port {port} answered a PLAINTEXT Kafka request"
    plain = AdminClient({"bootstrap.servers": f"127.0.0.1:{broker.port}", "security.protocol": "PLAINTEXT", "log_level": 0})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=3)


def test_wrong_admin_password_is_refused(broker):
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**broker.login("admin", "not-the-password"), "error_cb": errors.append}
    client = AdminClient(conf)
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        client.poll(0.2)  # connects in the background; serves error_cb
    with pytest.raises(KafkaException):
        client.list_topics(timeout=1)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_compose_healthcheck_command(broker):
    """The kafka service's health check, with this machine's paths and address."""
    svc = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]
    check = (svc["healthcheck"]["test"][1]
             .replace("/opt/kafka/config/yurong", str(broker.conf))
             .replace("/opt/kafka", broker.env["KAFKA_HOME"])
             .replace("kafka:9092", f"127.0.0.1:{broker.port}"))
    done = subprocess.run(["sh", "-c", check], env=base_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (broker.conf / "admin.properties").stat().st_mode & 0o777 == 0o600


def test_no_password_in_the_output(broker):
    out = broker.output()
    assert "starting the broker" in out
    for secret in (DOTENV["KAFKA_ADMIN_PASSWORD"], DOTENV["KAFKA_KEYSTORE_PASSWORD"]):
        assert secret not in out
    assert "UserScramCredentialRecord" not in out, "the admin's SCRAM keys stay out of the log"


# ---------------------------------------------------------------- kafka-security.sh, then the apps


def run_kafka_security(broker: Broker, root: Path, **passwords: str) -> subprocess.CompletedProcess:
    env = {**base_env(), **service_env("kafka-security"), **passwords,
           "YURONG_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.port}",
           "YURONG_KAFKA_CA_LOCATION": str(broker.ca),
           "YURONG_KAFKA_SECRETS_DIR": str(root / "tmpfs" / "secrets"),  # a tmpfs in compose: fresh every run
           "YURONG_HOME": str(root / "home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    shutil.rmtree(root / "tmpfs", ignore_errors=True)
    done = subprocess.run(["sh", str(SCRIPTS / "kafka-security.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for secret in (*DOTENV.values(), *passwords.values()):
        assert secret not in done.stdout + done.stderr
    return done


def app_lists_topics(broker: Broker, service: str, principal: str, password: str | None = None,
                     timeout: float = 10) -> subprocess.CompletedProcess:
    """A client built as the service builds it (streams.kafka.security.client_conf) from the
    YURONG_KAFKA_* environment compose gives that service, listing topics."""
    env = {**base_env(), **{k: v for k, v in service_env(service).items() if k.startswith("YURONG_KAFKA_")},
           "YURONG_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.port}",
           "YURONG_KAFKA_CA_LOCATION": str(broker.ca),
           "YURONG_HOME": str(broker.root / "app-home")}
    if password is not None:
        env["YURONG_KAFKA_PASSWORD"] = password
    code = ("import sys\n"
            "from confluent_kafka.admin import AdminClient\n"
            "from streams.kafka.security import client_conf\n"
            "conf = {**client_conf(sys.argv[1]), 'log_level': 0}\n"
            "assert conf['sasl.username'] == sys.argv[1], conf['sasl.username']\n"
            "AdminClient(conf).list_topics(timeout=float(sys.argv[2]))\n")
    return subprocess.run([sys.executable, "-c", code, principal, str(timeout)], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def refused(done: subprocess.CompletedProcess) -> bool:
    """The client got no metadata: it could not log in (and did not fail for another reason)."""
    return done.returncode != 0 and "KafkaException" in done.stderr and "Failed to get metadata" in done.stderr


def test_kafka_security_then_each_app_logs_in_with_its_own_password(broker, tmp_path):
    run_kafka_security(broker, tmp_path)
    admin = AdminClient(broker.login("admin", DOTENV["KAFKA_ADMIN_PASSWORD"]))
    every: Any = admin.describe_user_scram_credentials(request_timeout=15)  # no users named: one future
    users = set(every.result())
    assert {"worker", "sink", "consent", "operator", "connector-market", "connector-tax"} <= users
    for service, principal in (("worker", "worker"), ("sink", "sink"), ("connector-market", "connector-market")):
        done = app_lists_topics(broker, service, principal)
        assert done.returncode == 0, f"{service} cannot log in: {done.stderr[-2000:]}"
    # another service's password is not this one's
    assert refused(app_lists_topics(broker, "worker", "worker", DOTENV["KAFKA_SINK_PASSWORD"], timeout=2))

    # a password changed in .env reaches the broker at the next `up`
    run_kafka_security(broker, tmp_path, KAFKA_WORKER_PASSWORD="rotated-worker-pw")
    assert app_lists_topics(broker, "worker", "worker", "rotated-worker-pw").returncode == 0
    assert refused(app_lists_topics(broker, "worker", "worker", timeout=2)), "the old password still works"
    run_kafka_security(broker, tmp_path)  # back to the .env of the other tests


# ---------------------------------------------------------------- restarts


def test_restart_keeps_the_storage_and_refuses_a_plaintext_one(broker, tmp_path):
    admin_pw = DOTENV["KAFKA_ADMIN_PASSWORD"]
    admin = AdminClient(broker.login("admin", admin_pw))
    admin.create_topics([NewTopic("compose.kept", 1, 1)])["compose.kept"].result(15)
    del admin
    broker.stop()
    broker.start()  # formatted once: the second start goes straight to the broker
    assert "formatting" not in broker.output()
    assert "compose.kept" in AdminClient(broker.login("admin", admin_pw)).list_topics(timeout=10).topics

    # a storage the former PLAINTEXT broker formatted has no admin credential: refused, not reused
    old = tmp_path / "old-data"
    old.mkdir()
    (old / "meta.properties").write_text("version=1\nnode.id=1\n")
    done = subprocess.run(["sh", str(SCRIPTS / "kafka-start.sh")], env={**broker.env, "KAFKA_DATA_DIR": str(old)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "without the admin's SCRAM credential" in done.stderr
