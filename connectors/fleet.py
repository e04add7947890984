"""Run every catalogue department's connector in one process (``yurong connect --all``), and
report where each source stands (``yurong connect status``).

Each department gets its own runner thread and producer, so one department's flush never waits
for another's. A runner that fails (source unreachable, slot lost) is logged and restarted
with backoff; the others keep going.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition

from connectors.offsets import SCHEMA as OFFSET_SCHEMA
from connectors.offsets import OffsetStore, connect_topic
from connectors.runner import HEARTBEAT_SCHEMA, ConnectorRunner, producer_config
from connectors.sources import location_of, make_source
from streams.codecs.serde import SchemaStore
from streams.core.access import OPERATOR, OPERATOR_GROUP_PREFIX, connector_principal
from streams.core.catalogue import Catalogue, Department
from streams.kafka.admin import read_compacted, watermark_offsets
from streams.kafka.security import client_conf
from streams.settings import Settings

log = logging.getLogger(__name__)


def build_runner(dept: Department, settings: Settings, schemas: SchemaStore, resnapshot: bool = False) -> ConnectorRunner:
    """The runner of one department as the settings describe it: its own Kafka login
    (``connector-<dept>``), producer and offsets."""
    s = settings
    kafka = client_conf(connector_principal(dept.dept), s)
    producer = Producer(producer_config(kafka))
    offsets = OffsetStore(kafka, dept.dept, schemas, producer, replication_factor=s.kafka.replication_factor)
    source = make_source(dept, s, offsets, schemas, resnapshot)
    return ConnectorRunner(source, dept, producer, schemas, kafka,
                           flush_interval_s=s.source.flush_interval_s, retention_ms=s.kafka.dept_retention_ms,
                           partitions=s.kafka.topic_partitions, heartbeat_interval_s=s.source.heartbeat_interval_s,
                           replication_factor=s.kafka.replication_factor)


class Fleet:
    def __init__(self, catalogue: Catalogue, settings: Settings, schemas: SchemaStore) -> None:
        self.catalogue = catalogue
        self.settings = settings
        self.schemas = schemas
        self.stopping = threading.Event()
        self.runners: dict[str, ConnectorRunner] = {}

    def _supervise(self, dept: Department) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                runner = self.runners[dept.dept] = build_runner(dept, self.settings, self.schemas)
                if self.stopping.is_set():
                    return
                runner.run()
                return  # stopped on request
            except Exception:  # one department's failure must not stop the others
                log.exception("%s: connector failed; restarting in %.0fs", dept.dept, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 60.0)

    def run(self) -> None:
        threads = [threading.Thread(target=self._supervise, args=(d,), name=f"connect-{d.dept}", daemon=True)
                   for d in self.catalogue.departments.values()]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and not self.stopping.is_set():
            self.stopping.wait(0.5)
        for r in self.runners.values():
            r.stop()
        for t in threads:
            t.join(30)

    def stop(self, *_args) -> None:
        self.stopping.set()
        for r in list(self.runners.values()):
            r.stop()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


@dataclass
class SourceStatus:
    dept: str
    kind: str
    source: str
    snapshot: str
    position: str
    acknowledged: str
    lag: str
    records: int
    per_second: float
    heartbeat: str = "-"  # age of the source's last heartbeat


def _topic_records(consumer: Consumer, topics: list[str]) -> int:
    md = consumer.list_topics(timeout=10).topics
    total = 0
    for t in topics:
        for p in (md[t].partitions if t in md else {}):
            lo, hi = watermark_offsets(consumer, TopicPartition(t, p))
            total += hi - lo
    return total


def _slot_lag(dsn: str, dept: str) -> str:
    try:
        with psycopg2.connect(dsn, connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), active"
                        " FROM pg_replication_slots WHERE slot_name LIKE %s AND database = current_database()",
                        (f"yurong\\_{dept}\\_%",))
            row = cur.fetchone()
        conn.close()
    except psycopg2.Error as exc:
        return f"unreachable ({type(exc).__name__})"
    return f"{row[0]}{'' if row[1] else ' (slot idle)'}" if row else "no slot"


def _drop_folder_state(folder: Path) -> str:
    """``<done> done, <waiting> waiting, <rejected> rejected`` files of a drop folder."""
    def count(path: Path) -> int:
        return sum(1 for f in path.glob("*") if f.is_file() and not f.name.endswith((".manifest.json", ".error.json")))
    if not folder.is_dir():
        return "no folder"
    return f"{count(folder / 'done')} done, {count(folder)} waiting, {count(folder / 'rejected')} rejected"


def _snapshot_state(offset: dict, beat: dict | None) -> str:
    """``done``, ``not started`` or ``running`` with the heartbeat's progress, e.g. ``running 35% (35,000/100,000)``."""
    if beat and beat["snapshotting"]:
        rows, total = beat["snapshot_rows"], beat["snapshot_total"]
        return f"running {100 * rows / total:.0f}% ({rows:,}/{total:,})" if total > 0 else f"running ({rows:,} rows)"
    if offset.get("snapshot_completed") or beat:
        return "done"
    return "running" if offset else "not started"


def fleet_status(catalogue: Catalogue, settings: Settings, schemas: SchemaStore, sample_s: float = 2.0) -> list[SourceStatus]:
    """Position, lag and throughput of every department's source (read as ``operator``)."""
    kafka = client_conf(OPERATOR, settings)
    group = f"{OPERATOR_GROUP_PREFIX}.connect-status"
    depts = list(catalogue.departments)  # one consumer each for every department's offsets and heartbeats
    offsets = read_compacted(kafka, [connect_topic(d, "offsets") for d in depts],
                             lambda value: schemas.decode(value, OFFSET_SCHEMA)[1], group)
    beats = read_compacted(kafka, [connect_topic(d, "heartbeats") for d in depts],
                           lambda value: schemas.decode(value, HEARTBEAT_SCHEMA)[1], group)
    consumer = Consumer({**kafka, "group.id": group})
    try:
        topics = {d.dept: [ds.topic for ds in d.datasets.values()] for d in catalogue.departments.values()}
        before = {dept: _topic_records(consumer, t) for dept, t in topics.items()}
        time.sleep(sample_s)
        after = {dept: _topic_records(consumer, t) for dept, t in topics.items()}
    finally:
        consumer.close()
    out = []
    for d in catalogue.departments.values():
        location = location_of(d, settings)
        key = f"{d.dept}@{location.rsplit('/', 1)[-1].split('?')[0]}"
        if key not in offsets:  # a source keyed otherwise (file drops): its latest record
            mine = sorted((v["ts_ms"], k) for k, v in offsets.items() if k.split("@")[0] == d.dept)
            key = mine[-1][1] if mine else "-"
        rec = offsets.get(key, {})
        beat = beats.get(key)
        lag = _slot_lag(location, d.dept) if d.kind == "postgres" else "-"
        snapshot = _snapshot_state(rec, beat)
        position = (beat or {}).get("position") or rec.get("position", "") or "-"
        if d.kind == "file":  # file drops keep their state in the folder and on connect.<dept>.files
            key, snapshot, position, lag = location, "-", _drop_folder_state(Path(location)), "-"
        out.append(SourceStatus(
            dept=d.dept, kind=d.kind, source=key, snapshot=snapshot, position=position,
            acknowledged=time.strftime("%H:%M:%S", time.localtime(rec["ts_ms"] / 1000)) if rec else "-",
            lag=lag, records=after[d.dept], per_second=(after[d.dept] - before[d.dept]) / sample_s,
            heartbeat=f"{max(0, time.time() - beat['ts_ms'] / 1000):.0f}s ago" if beat else "-",
        ))
    return out
