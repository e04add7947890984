"""Deletes for the rows an interrupted initial snapshot published that its restart no longer finds.

A connector killed mid-snapshot runs the snapshot again from scratch (``snapshot_completed`` is
still false in ``connect.<dept>.offsets``). A row the killed run already published (``op = 'r'``) and
that was deleted at the source before the new snapshot started is simply not in the new
snapshot, so its stale ``r`` record would stay the last record of that row in Kafka, and the
profiles would keep a row that no longer exists (Debezium has the same gap).
``StaleSnapshotRows`` closes it; the PostgreSQL and the MariaDB connector call it so:

1. ``start(saved)`` — when a snapshot starts, before it publishes anything; the result goes into
   the run's offsets record as ``snapshot_start``: the end offsets of the source's dataset topics
   when the *first* unfinished run started, kept over any number of restarts. If ``saved`` is
   such an unfinished run, the topics are read from there to their current end, and the keys
   whose last record *of this source* (``source.connector`` and ``source.db``: the topics are
   shared by every database of a department) is a row image are kept as 64-bit hashes — a
   sorted array of 8 bytes a key, 8 MB for a million rows.
2. ``found(events)`` — for every snapshot chunk before it is handed out: those keys still exist.
3. ``deletes(position, seq)`` — once every table was read: the same range is read once more for
   the keys not found (only if there are any), and each gets an ``op = 'd'`` event with
   ``before`` = the row image as published, ``source.snapshot = 'true'``, and the new snapshot's
   position and seq. The row was deleted at the source between the two runs, so the new
   snapshot's position is past the stale record's and the merge (``streams.core.profile.is_duplicate``)
   takes the delete. The runner follows each delete with a tombstone, then the snapshot is
   marked complete.

A run killed while it hands out its deletes leaves them in the range: the next run sees those
keys end with a delete and does not repeat them. Limits: a 64-bit hash collision between a
deleted and a live key (odds about n²/2⁶⁵) keeps one stale row; records that topic retention
removed before the restart cannot be read (their rows are then left as they are); an offsets
record written before ``snapshot_start`` existed carries none, so that one restart snapshots
again without deletes, as before.
"""

from __future__ import annotations

import hashlib
import logging
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connectors.base import ChangeEvent
from connectors.offsets import OffsetStore
from streams.core.catalogue import Dataset
from streams.errors import DecodeError
from streams.kafka.admin import watermark_offsets

log = logging.getLogger(__name__)

DELETE_CHUNK = 5000  # delete events handed out per poll
READ_IDLE_TIMEOUT_S = 60.0  # reading the earlier runs' records fails after this long without a message

Partition = tuple[str, int]  # (topic, partition)


def key_hash(topic: str, key: str) -> int:
    """64-bit hash of a row key in its topic (signed, to fit ``array('q')``)."""
    digest = hashlib.blake2b(f"{topic}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class StaleSnapshotRows:
    """The rows earlier, interrupted runs of one source's initial snapshot published (see the
    module doc). One instance per snapshot run."""

    def __init__(self, source_name: str, datasets: Iterable[Dataset], offsets: OffsetStore, connector: str, db: str) -> None:
        self._name = source_name
        self._by_topic = {ds.topic: ds for ds in datasets}
        self._offsets = offsets
        self._connector = connector  # source.connector of this source's records: postgresql, mysql
        self._db = db
        self._range: tuple[dict[Partition, int], dict[Partition, int]] | None = None  # earlier runs' records: [from, to)
        self._published = array("q")  # sorted hashes of the keys whose last record is a row image
        self._found = bytearray()  # per entry of _published: the new snapshot read that key

    def start(self, saved: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Called once when a snapshot starts, before it publishes anything, with the source's
        offsets record before this run (None: none, or ``--resnapshot``). Reads what unfinished
        runs published; returns the ``snapshot_start`` to save in this run's offsets record."""
        marks = self._watermarks()
        now = {tp: high for tp, (_, high) in marks.items()}
        unfinished = saved is not None and not saved.get("snapshot_completed")
        earlier = (saved or {}).get("snapshot_start") if unfinished else None
        if earlier is None:
            if unfinished:
                log.warning("%s: the unfinished snapshot's offsets record has no snapshot_start (written by an older "
                            "version): rows it published that were deleted since keep their snapshot record", self._name)
            return _as_records(now)
        since = {(r["topic"], r["partition"]): r["offset"] for r in earlier}
        # a partition (or dataset topic) added since the first run held nothing of it before
        first = {tp: since.get(tp, 0) for tp in now}
        self._range = ({tp: max(first[tp], low) for tp, (low, _) in marks.items()}, now)
        started = time.monotonic()
        live: set[int] = set()
        records = 0
        for topic, key, env in self._read(*self._range):
            records += 1
            if env["op"] == "d":
                live.discard(key_hash(topic, key))
            else:
                live.add(key_hash(topic, key))
        self._published = array("q", sorted(live))
        self._found = bytearray(len(self._published))
        log.info("%s: interrupted snapshot run(s) published %d rows (%d records, read in %.1f s); rows the new "
                 "snapshot does not find get a delete", self._name, len(live), records, time.monotonic() - started)
        return _as_records(first)

    def found(self, events: Iterable[ChangeEvent]) -> None:
        """The new snapshot read these rows (called for every chunk before it is handed out)."""
        published, flags = self._published, self._found
        if not published:
            return
        for e in events:
            h = key_hash(e.dataset.topic, e.key)
            i = bisect_left(published, h)
            if i < len(published) and published[i] == h:
                flags[i] = 1

    def deletes(self, position: str, seq: int) -> Iterator[list[ChangeEvent]]:
        """Delete events, in chunks, for the rows earlier runs published that the new snapshot
        (at ``position``/``seq``) did not find. Called once after every table was read."""
        missing = {h for h, seen in zip(self._published, self._found, strict=True) if not seen}
        self._published, self._found = array("q"), bytearray()
        if not missing or self._range is None:
            return
        stale: dict[int, tuple[str, str, dict[str, Any]]] = {}  # hash → last record of the key
        for topic, key, env in self._read(*self._range):
            h = key_hash(topic, key)
            if h in missing:
                if env["op"] == "d":
                    stale.pop(h, None)
                else:
                    stale[h] = (topic, key, env)
        now_ms = int(time.time() * 1000)
        events = []
        not_after = 0
        for topic, key, env in stale.values():
            if env["source"]["seq"] >= seq:
                not_after += 1
            source = {**env["source"], "position": position, "seq": seq, "ts_ms": now_ms, "snapshot": "true", "tx_id": None}
            events.append(ChangeEvent(self._by_topic[topic], "d", env["after"], None, source, key, 0))
        log.info("%s: %d rows an interrupted snapshot published are gone from the source: publishing their deletes",
                 self._name, len(events))
        if not_after:
            log.warning("%s: %d of these deletes have a seq (%d) not above their stale record's; the profile merge "
                        "will skip them (more than one replication domain?)", self._name, not_after, seq)
        for i in range(0, len(events), DELETE_CHUNK):
            yield events[i:i + DELETE_CHUNK]

    # --- Kafka ----------------------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        return Consumer({**self._offsets.kafka, "group.id": f"{self._offsets.group_prefix}.snapshot",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True})

    def _watermarks(self) -> dict[Partition, tuple[int, int]]:
        """(low, high) of every partition of the source's dataset topics that exist."""
        consumer = self._consumer()
        try:
            md = consumer.list_topics(timeout=15).topics
            return {(t, p): watermark_offsets(consumer, TopicPartition(t, p))
                    for t in sorted(self._by_topic) if t in md for p in md[t].partitions}
        finally:
            consumer.close()

    def _read(self, first: dict[Partition, int], end: dict[Partition, int]) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(topic, key, envelope) of this source's change records in [first, end), Kafka's
        order per partition (= per key). Tombstones are skipped: they carry no source, and this
        source's own deletes come with their envelope before them."""
        todo = {tp: stop for tp, stop in end.items() if stop > first.get(tp, 0)}
        if not todo:
            return
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(t, p, first.get((t, p), 0)) for t, p in todo])
            idle_since = time.monotonic()
            while todo:
                msgs = consumer.consume(num_messages=5000, timeout=1.0)
                if not msgs and time.monotonic() - idle_since > READ_IDLE_TIMEOUT_S:
                    raise KafkaException(f"{self._name}: reading the interrupted snapshot's records stalled before "
                                         f"the offsets {todo} within {READ_IDLE_TIMEOUT_S:.0f} s")
                for m in msgs:
                    idle_since = time.monotonic()
                    err = m.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    topic, partition, offset = _coordinates(m)
                    tp = (topic, partition)
                    if err is not None:  # the end of a partition
                        todo.pop(tp, None)
                        continue
                    stop = todo.get(tp)
                    if stop is None or offset >= stop:
                        todo.pop(tp, None)
                        continue
                    if offset >= stop - 1:
                        del todo[tp]
                    env = self._decode(m)
                    key = m.key()
                    if env is not None and key is not None:  # _decode gives None for a record without key
                        yield topic, key.decode(), env
        finally:
            consumer.close()

    def _decode(self, msg) -> dict[str, Any] | None:
        """The envelope of a change record of this source; None for anything else."""
        value = msg.value()
        if value is None or msg.key() is None:
            return None
        try:
            _, env = self._offsets.schemas.decode(value, self._by_topic[msg.topic()].schema_name)
        except DecodeError:
            return None  # not a change envelope of this dataset (another writer's record)
        source = env.get("source") or {}
        if source.get("connector") != self._connector or source.get("db") != self._db:
            return None
        return env


def _coordinates(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record or partition-EOF event (typed optional by
    confluent-kafka: only a message built to be produced lacks them)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise KafkaException(f"consumed a record without topic, partition or offset ({topic}[{partition}]@{offset})")
    return topic, partition, offset


def _as_records(offsets: dict[Partition, int]) -> list[dict[str, Any]]:
    return [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(offsets.items())]
