"""Debezium's Avro converter: yurong decodes it to the same envelopes as the JSON converter.

One fresh market database, one Kafka Connect 4.3.0 standalone worker (the jars of
``scripts/debezium.sh install``) running two Debezium 3.6.1.Final PostgreSQL connectors on it:
one with the ``JsonConverter`` (schemas enabled, as ``scripts/debezium.sh``), one with Apicurio's
``AvroConverter`` against the schema registry of ``scripts/registry.sh`` (Apicurio Registry
2.6.13.Final, in-memory). Values of the Avro connector carry magic byte 0 + 8-byte globalId
(``apicurio.registry.headers.enabled=false``), its keys the Apicurio default (id in the
``apicurio.key.globalId`` header), so both framings run for real. Every Avro record goes through
``streams.codecs.avro_registry`` + ``streams.codecs.debezium.DebeziumConverter`` and must equal the JSON
record: the same payload dict (bar the connector name and processing times), the same yurong
envelope, the same merged profiles. Needs Java 17 and Maven (fails under CI when missing, skips
otherwise).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import psycopg2
import pytest

from connectors.simulator.market import MarketSimulator
from streams.codecs.avro_registry import (
    APICURIO_KEY_HEADER,
    APICURIO_VALUE_HEADER,
    AvroRegistryDecoder,
    SchemaRegistry,
)
from streams.codecs.debezium import DebeziumConverter, topic_datasets
from streams.core.catalogue import catalogue
from streams.kafka.admin import ensure_topics
from tests.conftest import free_port, java_client_props, wait_for
from tests.harness import REPO, StreamPair, file_tail, need_tools, run_script, yurong_home
from tests.integration.test_debezium_interop import TailReader, _changes, _drop_slot, _has_sentinel, _profiles

pytestmark = pytest.mark.integration

DEBEZIUM = REPO / "scripts" / "debezium.sh"
REGISTRY = REPO / "scripts" / "registry.sh"
AVRO = "io.apicurio.registry.utils.converter.AvroConverter"
VOLATILE = ("ts_ms", "ts_us", "ts_ns")  # the envelope's processing times differ between connectors


class Registry:
    """scripts/registry.sh run/stop on a free port."""

    def __init__(self, name: str) -> None:
        self.port = free_port()
        self.env = {**os.environ, "YURONG_REGISTRY_PORT": str(self.port), "YURONG_REGISTRY_NAME": name}
        self.url = f"http://127.0.0.1:{self.port}/apis/registry/v2"
        self.plugins = yurong_home() / "registry" / "connect-plugins"
        self.home = yurong_home() / "registry" / name

    def run(self) -> float:
        t = time.monotonic()
        run_script(REGISTRY, "run", self.env, 600)
        return time.monotonic() - t

    def stop(self) -> None:
        run_script(REGISTRY, "stop", self.env, 60)


class Connect:
    """Kafka Connect standalone with a JSON and an Avro Debezium connector on one database."""

    def __init__(self, db: str, bootstrap: dict, pg_port: int, registry: Registry) -> None:
        self.db = db
        self.dir = yurong_home() / "debezium" / f"avro-{db}"
        self.rest = free_port()
        self.slots = [f"dbzjson_{db}", f"dbzavro_{db}"]
        self.names = ["yurong-json", "yurong-avro"]
        self.proc: subprocess.Popen | None = None
        self.bootstrap = bootstrap
        self.pg_port = pg_port
        self.registry = registry

    def _connector(self, name: str, prefix: str, slot: str, extra: str = "") -> Path:
        path = self.dir / f"{name}.properties"
        path.write_text(f"""name={name}
connector.class=io.debezium.connector.postgresql.PostgresConnector
tasks.max=1
plugin.name=pgoutput
slot.name={slot}
publication.name={slot}
publication.autocreate.mode=filtered
database.hostname=127.0.0.1
database.port={self.pg_port}
database.user=yurong
database.password=yurong
database.dbname={self.db}
topic.prefix={prefix}
table.include.list=public.enterprise_registration,public.abnormal_operation
snapshot.mode=initial
decimal.handling.mode=double
time.precision.mode=adaptive
tombstones.on.delete=true
topic.creation.default.partitions=1
topic.creation.default.replication.factor=1
{extra}""")
        return path

    def start(self) -> None:
        env = {**os.environ, "YURONG_KAFKA_PORT": self.bootstrap["bootstrap.servers"].split(",")[0].rpartition(":")[2]}
        run_script(DEBEZIUM, "install", env, 900)  # the Debezium + Connect jars
        libs = yurong_home() / "debezium" / "libs"
        self.dir.mkdir(parents=True, exist_ok=True)
        worker = self.dir / "worker.properties"
        worker.write_text(f"""bootstrap.servers={self.bootstrap["bootstrap.servers"]}
{java_client_props(self.bootstrap, ("", "producer.", "consumer.", "admin."))}key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
offset.storage.file.filename={self.dir}/connect.offsets
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:{self.rest}
plugin.path={self.registry.plugins}
plugin.discovery=only_scan
""")
        url = self.registry.url
        avro = "".join(f"""{side}.converter={AVRO}
{side}.converter.apicurio.registry.url={url}
{side}.converter.apicurio.registry.auto-register=true
{side}.converter.apicurio.registry.find-latest=true
""" for side in ("key", "value")) + "value.converter.apicurio.registry.headers.enabled=false\n"
        files = [self._connector("yurong-json", "dbzjson", self.slots[0]),
                 self._connector("yurong-avro", "dbzavro", self.slots[1], avro)]
        self.log = self.dir / "connect.log"
        out = open(self.dir / "connect.out", "ab")
        self.proc = subprocess.Popen(
            ["java", "-Xmx512m", "-Xms128m", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={REPO / 'scripts' / 'debezium' / 'log4j2.properties'}",
             f"-Dyurong.debezium.log={self.log}", "-cp", f"{libs}/*",
             "org.apache.kafka.connect.cli.ConnectStandalone", str(worker), *map(str, files)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

        def running() -> bool:
            assert self.proc.poll() is None, f"Kafka Connect exited during startup\n{self.log_tail()}"
            states = []
            for name in self.names:
                try:
                    with urlopen(f"http://127.0.0.1:{self.rest}/connectors/{name}/status", timeout=3) as r:
                        s = json.load(r)
                except OSError:
                    return False
                tasks = s.get("tasks") or [{}]
                states.append(tasks[0].get("state"))
                assert "FAILED" not in (s["connector"]["state"], states[-1]), f"{name} FAILED: {s}\n{self.log_tail()}"
            return states == ["RUNNING", "RUNNING"]

        wait_for(running, 180, lambda: f"both connectors RUNNING\n{self.log_tail()}", interval=0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self) -> str:
        return file_tail(self.log)


def _json_records(reader: TailReader, conv: DebeziumConverter, db: str) -> list[tuple]:
    """(dataset, envelope, topic, partition, offset, payload, key payload) of the JSON connector."""
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue
        value = json.loads(m.value())
        got = conv.envelope(value)
        if got is not None and got[1]["source"]["db"] == db:
            key = json.loads(m.key())["payload"]
            out.append((got[0], got[1], m.topic(), m.partition(), m.offset(), value["payload"], key))
    return out


def _avro_records(reader: TailReader, conv: DebeziumConverter, values: AvroRegistryDecoder,
                  keys: AvroRegistryDecoder, db: str) -> list[tuple]:
    out = []
    for m in reader.messages:
        if m.value() is None:
            continue
        headers = m.headers() or []
        assert m.value()[:1] == b"\x00" and APICURIO_VALUE_HEADER not in dict(headers), "values carry the id inline"
        payload, schema = values.decode(m.value(), headers)
        got = conv.from_payload(payload, schema)
        if got is not None and got[1]["source"]["db"] == db:
            key, _ = keys.decode(m.key(), headers)
            out.append((got[0], got[1], m.topic(), m.partition(), m.offset(), payload, key))
    return out


def _comparable(records: list[tuple]) -> list[tuple]:
    """Per record: op, dataset, key, the payload and envelope without the connector's name and
    processing times. Snapshot rows are matched by row image (each connector has its own
    snapshot transaction); streamed changes also by their source block (LSN, txId, commit time)."""
    rows = []
    for ds, env, _t, _p, _o, payload, key in records:
        pay = copy.deepcopy({k: v for k, v in payload.items() if k not in VOLATILE})
        del pay["source"]["name"]
        envelope = copy.deepcopy({k: v for k, v in env.items() if k != "ts_ms"})
        if env["op"] == "r":
            for block in (pay["source"], envelope["source"]):
                for k in ("ts_ms", "ts_us", "ts_ns", "txId", "tx_id", "lsn", "sequence", "position", "seq", "snapshot"):
                    block.pop(k, None)
        rows.append((env["op"] != "r", env["source"]["seq"] if env["op"] != "r" else 0, ds.name, json.dumps(key, sort_keys=True),
                     json.dumps(pay, sort_keys=True, ensure_ascii=False), repr(envelope)))
    return sorted(rows)


def test_debezium_avro_converter_decodes_to_the_json_converters_envelopes(department_db, pg_admin_dsn, kafka_admin):
    need_tools("java", "mvn", "curl")
    started = time.monotonic()
    dsn = department_db
    db = dsn.rsplit("/", 1)[1]
    sim = MarketSimulator(dsn, seed=23)
    sim.create_schema()
    usccs = sim.seed_enterprises(30)
    with psycopg2.connect(dsn) as pg, pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM abnormal_operation")
        listings_at_start = cur.fetchone()[0]
    pg.close()

    dept = catalogue().department("market")
    conv = DebeziumConverter(dept)
    json_topics, avro_topics = list(topic_datasets(dept, "dbzjson")), list(topic_datasets(dept, "dbzavro"))
    ensure_topics(kafka_admin, {t: {} for t in json_topics + avro_topics}, partitions=4)
    json_reader, avro_reader = TailReader(kafka_admin, json_topics), TailReader(kafka_admin, avro_topics)

    registry = Registry(f"test-{db}")
    connect = Connect(db, kafka_admin, urlsplit(pg_admin_dsn).port or 5432, registry)
    try:
        t_registry = registry.run()
        schemas = SchemaRegistry(registry.url)
        values = AvroRegistryDecoder(schemas)  # magic 0 + 8-byte globalId
        keys = AvroRegistryDecoder(schemas, header=APICURIO_KEY_HEADER)  # id in the key header
        connect.start()
        t_up = time.monotonic() - started
        streams = StreamPair({"json": (json_reader, lambda: _json_records(json_reader, conv, db)),
                              "avro": (avro_reader, lambda: _avro_records(avro_reader, conv, values, keys, db))},
                             connect.log_tail)
        streams.wait_snapshots(30 + listings_at_start, f"both snapshots of {db}")
        t_snap = time.monotonic() - started

        streams.wait_caught_up(_has_sentinel(_changes(dsn, sim, usccs)), "both connectors to carry every change")
        t_stream = time.monotonic() - started
    finally:
        connect.stop()
        registry.stop()
        json_reader.close()
        avro_reader.close()
        for slot in connect.slots:
            _drop_slot(dsn, slot)
        shutil.rmtree(connect.dir, ignore_errors=True)
        shutil.rmtree(registry.home, ignore_errors=True)

    from_json = _json_records(json_reader, conv, db)
    from_avro = _avro_records(avro_reader, conv, values, keys, db)
    assert len(from_json) == len(from_avro) > 30 + listings_at_start
    assert {r[1]["op"] for r in from_avro} >= {"r", "c", "u", "d"}
    assert _comparable(from_avro) == _comparable(from_json)
    # streamed changes: the whole yurong envelope agrees, position included
    streamed = lambda rs: sorted((r[1]["source"]["seq"], r[2].split(".", 1)[1], repr({**r[1], "ts_ms": 0}))  # noqa: E731
                                 for r in rs if r[1]["op"] != "r")
    assert streamed(from_avro) == streamed(from_json)
    assert _profiles([r[:5] for r in from_avro]) == _profiles([r[:5] for r in from_json])
    print(f"\ndebezium avro: registry up {t_registry:.1f}s, connect up {t_up:.1f}s, snapshots {t_snap:.1f}s, "
          f"changes streamed {t_stream:.1f}s, {len(from_avro)} envelopes each, schemas fetched {len(schemas._schemas)}")
