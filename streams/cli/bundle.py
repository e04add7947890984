"""A bank's client bundle: everything it needs to read and decode its alerts, nothing more.

``<folder>/``: ``client.properties`` (Java Kafka client), ``librdkafka.conf`` (librdkafka, e.g.
confluent-kafka), ``ca.crt`` (the CA the broker's certificate chains to), ``alert.avsc`` (the
writer schema of the Avro single-object values), ``topic.txt``, and a consumer example in Java
(``AlertConsumer.java`` + ``pom.xml``: Apache Avro and kafka-clients from Maven Central) and in
Python (``consumer_example.py``), with a README. The folder holds the bank's password: mode 0700,
files 0600; hand it over through a channel fit for credentials.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import SecretStr

from streams.core.access import OPERATOR, check_bank
from streams.kafka.banks import onboard_bank
from streams.kafka.security import KafkaLogin, client_conf, new_password, write_secret
from streams.settings import REPO_ROOT, Settings, get_settings

TEMPLATES = Path(__file__).resolve().parent / "bank_bundle"
PASSWORD_KEY = "sasl.password"


def read_bundle_conf(folder: Path) -> dict[str, str]:
    """A bundle's ``librdkafka.conf`` as client settings (what a bank's Python consumer loads)."""
    conf = {}
    for line in (folder / "librdkafka.conf").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            conf[key.strip()] = value.strip()
    return conf


def existing_password(folder: Path) -> str | None:
    """The password a bundle written earlier holds, if any (re-onboarding keeps it)."""
    if not (folder / "librdkafka.conf").exists():
        return None
    return read_bundle_conf(folder).get(PASSWORD_KEY) or None


def onboard(bank_id: str, out: Path | None = None, rotate: bool = False,
            settings: Settings | None = None) -> tuple[Path, tuple[int, int], list[Path]]:
    """Onboard ``bank_id`` as ``operator`` (login, ACLs, topics: ``streams.kafka.banks``) and write
    its bundle to ``out`` (default ``$YURONG_HOME/banks/<bank_id>``). The password of an earlier
    bundle there is kept unless ``rotate``. Returns (folder, (ACLs created, deleted), files)."""
    s = settings or get_settings()
    check_bank(bank_id)
    folder = out or s.paths.home / "banks" / bank_id
    password = (None if rotate else existing_password(folder)) or new_password()
    changes = onboard_bank(client_conf(OPERATOR, s), bank_id, password, partitions=s.kafka.topic_partitions,
                           replication_factor=s.kafka.replication_factor)
    files = write_bundle(folder, bank_id, s.kafka.bootstrap_servers, password, s.kafka.ca_location or s.kafka_secrets_dir / "ca.crt")
    return folder, changes, files


def write_bundle(folder: Path, bank_id: str, bootstrap: str, password: str, ca_file: Path) -> list[Path]:
    """Write the bundle of ``bank_id`` into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    ca = folder / "ca.crt"
    shutil.copyfile(ca_file, ca)
    login = KafkaLogin(bootstrap, bank_id, SecretStr(password), ca.resolve())
    consumer = {"group.id": f"{bank_id}.alerts", "auto.offset.reset": "earliest"}
    write_secret(folder / "client.properties", login.java_properties(**consumer))
    write_secret(folder / "librdkafka.conf", "".join(f"{k}={v}\n" for k, v in {**login.conf(), **consumer}.items()))
    shutil.copyfile(REPO_ROOT / "avro" / "risk" / "alert.avsc", folder / "alert.avsc")
    (folder / "topic.txt").write_text(f"alerts.{bank_id}\n")
    for template in sorted(TEMPLATES.iterdir()):
        if template.is_file():
            text = template.read_text()
            if template.name == "README.md":
                text = text.replace("{bank_id}", bank_id)
            (folder / template.name).write_text(text)
    return sorted(p for p in folder.iterdir() if p.is_file())
