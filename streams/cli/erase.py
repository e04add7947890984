"""``yurong erase --uscc … --reason …``: erase one enterprise's data on request, audited.

What is erased (docs/security.md, "Data lifecycle"):

- ClickHouse: every row of the USCC in the USCC-keyed tables (``sinks.clickhouse.erase``), erased
  by the sink's SQL gateway for a caller whose token has the operator role
  (``streams.cli.common.erase_via_gateway``; audited in ``yurong_audit.sql_audit`` too): only the
  sink holds the store (embedded) or a login that may write it (server).
- Kafka: a tombstone for the USCC on the compacted topics keyed by it: ``enterprise.profiles`` and
  the worker's profile-table changelog (``<app id>-enterprise_profile-changelog``, whose keys Faust
  writes as JSON). Each goes to the partition holding the key's values: ``enterprise.profiles`` by
  Kafka's murmur2 partitioner on the USCC (as the worker's producer), the changelog to the
  partition of ``enterprise.events`` the worker merged from (the same murmur2 of the USCC). Log
  compaction removes the older values; until it runs they are still on disk.
- Redis: the enterprise in every bank's watchlist and its throttle windows. Kept: consents
  (``consent:*``, the legal evidence of an authorisation, on ``consent.grants`` as well) and the
  alert de-duplication / held-back markers (keyed by alert id, no enterprise data, expiring within
  7 and 30 days; deleting them would let a replay send an alert twice). Entries of the banks'
  held-back streams (``throttled:<bank>``) that name the enterprise need XDEL, which the ``cli``
  Redis user is not granted yet: they are reported, not deleted.

Not erased, and said so in the output: the running worker's in-memory copy of the profile (gone
at its next restart, which recovers the table from the changelog and its tombstone), the records
of the time-retained topics (``dept.*``, ``enterprise.events``, ``risk.changes``, ``alerts.*``,
``dlq.*``) until their retention expires, and ``dlq_event`` rows (no USCC column).

Every run writes an audit record to ``audit.erasures`` (declared by the operator, kept without a
time limit) and prints it: who (OS user, Kafka principal), the USCC, the reason, what was erased
with counts, what failed, when.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.core.access import ERASURE_AUDIT_TOPIC, OPERATOR, profile_changelog
from streams.core.consent import check_uscc
from streams.errors import ConfigError, YurongError
from streams.kafka.admin import ensure_topics
from streams.kafka.security import client_conf, kafka_login
from streams.settings import Settings, get_settings
from streams.worker.consent_store import REDIS_CLI, redis_login

log = logging.getLogger(__name__)

PROFILES_TOPIC = "enterprise.profiles"
WORKER_NOTE = ("the running worker still holds this enterprise's profile in memory: restart the worker "
               "(`yurong worker`) so that it recovers its profile table from the changelog, where the tombstone "
               "removes it; until then a new event for this USCC re-creates the profile from the in-memory copy")
NOT_ERASED = [
    "dept.*, enterprise.events, risk.changes, alerts.*, dlq.* records: deleted by their time retention",
    "older values on enterprise.profiles and the profile changelog: removed when log compaction runs",
    "consents (consent:*, consent.grants): kept as the legal evidence of an authorisation",
    "alert de-duplication and held-back markers (keyed by alert id, no enterprise data): expire within 7 / 30 days",
    "dlq_event rows: no USCC column; deleted by YURONG_RETENTION_DLQ_EVENT_DAYS",
]


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``: what librdkafka's
    ``murmur2_random`` and the Java client do (``Utils.murmur2``, ``toPositive``)."""
    m, length = 0x5BD1E995, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[length - length % 4:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def kafka_tombstones(kafka: dict, uscc: str, worker_app_id: str) -> dict[str, dict[str, Any]]:
    """Publish the USCC's tombstones (see the module docstring) and wait for Kafka's acks;
    ``{topic: {"partition": p, "offset": o}}`` or ``{"absent": True}`` for a topic not there."""
    changelog = profile_changelog(worker_app_id)
    topics = AdminClient(dict(kafka)).list_topics(timeout=15).topics
    out: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, bytes, int]] = []
    # The changelog has the partitions of enterprise.events (Faust refuses to run the table otherwise),
    # so the partition the worker merged the USCC's events from is murmur2 of it over the changelog's.
    for topic, key in ((PROFILES_TOPIC, uscc.encode()), (changelog, json.dumps(uscc).encode())):
        md = topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            out[topic] = {"absent": True}
            continue
        todo.append((topic, key, murmur2_partition(uscc.encode(), len(md.partitions))))
    if not todo:
        return out
    producer = Producer({**kafka, "enable.idempotence": True, "acks": "all"})
    results: dict[str, Any] = {}

    def delivered(topic: str) -> Callable[[Any, Any], None]:
        def cb(err, msg) -> None:
            results[topic] = err if err is not None else {"partition": msg.partition(), "offset": msg.offset()}
        return cb

    for topic, key, partition in todo:
        producer.produce(topic, key=key, value=None, partition=partition, on_delivery=delivered(topic))
    producer.flush(30)
    for topic, _, _ in todo:
        got = results.get(topic)
        if not isinstance(got, dict):
            raise YurongError(f"tombstone on {topic} not acknowledged: {got or 'no delivery report within 30 s'}")
        out[topic] = got
    return out


def redis_erase(settings: Settings, uscc: str) -> dict[str, Any]:
    """Remove the USCC from every bank's watchlist and drop its throttle windows, as the ``cli``
    ACL user; held-back stream entries naming it are counted (see the module docstring)."""
    return asyncio.run(_redis_erase(settings, uscc))


async def _redis_erase(settings: Settings, uscc: str) -> dict[str, Any]:
    p = settings.redis.key_prefix
    r: Any = redis_login(REDIS_CLI, settings).client()  # replies are str (decode_responses)
    try:
        watchlists = {k async for k in r.scan_iter(match=f"{p}watchlist:*", count=500)}
        watchlists |= {f"{p}watchlist:{b}" for b in await r.smembers(f"{p}banks")}
        removed_from = []
        for key in sorted(watchlists):
            if await r.srem(key, uscc):
                removed_from.append(key.removeprefix(f"{p}watchlist:"))
        throttle = sorted({k async for k in r.scan_iter(match=f"{p}throttle:*:{uscc}:*", count=500)})
        if throttle:
            await r.delete(*throttle)
        held_back: dict[str, int] = {}
        async for key in r.scan_iter(match=f"{p}throttled:*", count=500):
            n = sum(1 for _, fields in await r.xrevrange(key) if fields.get("uscc") == uscc)
            if n:
                held_back[key.removeprefix(f"{p}throttled:")] = n
    finally:
        await r.aclose()
    return {"watchlists": removed_from, "throttle_windows": len(throttle), "held_back_entries_not_erased": held_back}


def erase(uscc: str, reason: str, clickhouse: Callable[[str, str], dict[str, int]],
          settings: Settings | None = None) -> dict[str, Any]:
    """Erase ``uscc`` everywhere (ClickHouse through ``clickhouse(uscc, reason)``, then Kafka, then
    Redis), write the audit record and return it. A failing step is recorded in ``failed``; after
    a ClickHouse failure nothing else is tried (run the command again: every step is idempotent)."""
    s = settings or get_settings()
    uscc = check_uscc(uscc.strip().upper())
    reason = reason.strip()
    if len(reason) < 3:
        raise ConfigError("--reason must say why the enterprise's data is erased (e.g. the request's reference)")
    kafka = client_conf(OPERATOR, s)
    record: dict[str, Any] = {
        "uscc": uscc, "reason": reason, "os_user": getpass.getuser(), "host": socket.gethostname(),
        "kafka_principal": kafka_login(OPERATOR, s).username, "started_ts_ms": int(time.time() * 1000),
        "erased": {}, "failed": {}, "not_erased": [*NOT_ERASED, WORKER_NOTE],
    }
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("clickhouse", lambda: clickhouse(uscc, reason)),
        ("kafka", lambda: kafka_tombstones(kafka, uscc, s.worker.app_id)),
        ("redis", lambda: redis_erase(s, uscc)),
    ]
    for name, step in steps:
        try:
            record["erased"][name] = step()
        except Exception as exc:  # noqa: BLE001 — any failure of a step is recorded in the audit record and shown
            log.error("erasure of %s: %s failed: %s", uscc, name, exc)
            record["failed"][name] = f"{type(exc).__name__}: {exc}"
            if name == "clickhouse":
                record["failed"]["skipped"] = "kafka and redis: not tried after the ClickHouse step failed"
                break
    held = (record["erased"].get("redis") or {}).get("held_back_entries_not_erased")
    if held:
        record["not_erased"].append(f"held-back alert entries naming the enterprise in {sorted(held)}: the cli "
                                    "Redis user has no XDEL; they leave with the stream's 30-day expiry")
    record["finished_ts_ms"] = int(time.time() * 1000)
    publish_audit(kafka, record, s)
    return record


def publish_audit(kafka: dict, record: dict[str, Any], settings: Settings) -> None:
    """Declare ``audit.erasures`` (kept without a time limit) and publish ``record`` there, keyed by
    the USCC, waiting for Kafka's ack."""
    ensure_topics(kafka, {ERASURE_AUDIT_TOPIC: {"cleanup.policy": "delete", "retention.ms": "-1"}}, partitions=1,
                  replication_factor=settings.kafka.replication_factor)
    producer = Producer({**kafka, "enable.idempotence": True, "acks": "all"})
    outcome: list[Any] = []
    producer.produce(ERASURE_AUDIT_TOPIC, key=record["uscc"].encode(),
                     value=json.dumps(record, ensure_ascii=False, sort_keys=True).encode(),
                     on_delivery=lambda err, _m: outcome.append(err))
    producer.flush(30)
    if not outcome or outcome[0] is not None:
        raise YurongError(f"the audit record of the erasure was not acknowledged by Kafka "
                          f"({outcome[0] if outcome else 'no delivery report within 30 s'}); the record: "
                          + json.dumps(record, ensure_ascii=False))
