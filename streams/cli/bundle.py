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

from streams.kafka.security import KafkaLogin, write_secret
from streams.settings import REPO_ROOT

TEMPLATES = Path(__file__).resolve().parent / "bank_bundle"
PASSWORD_KEY = "sasl.password"


def existing_password(folder: Path) -> str | None:
    """The password a bundle written earlier holds, if any (re-onboarding keeps it)."""
    conf = folder / "librdkafka.conf"
    if not conf.exists():
        return None
    for line in conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == PASSWORD_KEY and value.strip():
            return value.strip()
    return None


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
