"""``yurong erase --uscc … --reason …``: erase one enterprise's data on request, audited.

What happens, in this order (docs/security.md, "Data lifecycle"):

1. **The worker** (``request_erasure``). The command publishes an erase request on
   ``control.erasures`` (Avro ``control/erasure_request``, keyed by the USCC; the operator may not
   write ``enterprise.events``, where it could forge events). The worker's ``erase_requests`` agent
   puts an erase marker (``op = "erase"``) on ``enterprise.events`` under the USCC's key, so it is
   merged after every event of the enterprise published before it. The ``merge`` agent then drops
   the profile from its table (Faust writes the changelog tombstone), publishes a tombstone on
   ``enterprise.profiles``, and, once Kafka acknowledged everything it published before, confirms
   on ``control.erasures.applied``. The command waits for the confirmation of the worker whose app
   id it is configured with (``YURONG_WORKER_APP_ID``). From then on the running worker holds
   nothing of the enterprise, and the next event builds its profile from that event alone.
2. **Redis** (``redis_erase``): the enterprise leaves every bank's watchlist (so the router
   delivers, and holds back, no further alert about it), its throttle windows are deleted, and the
   entries of the banks' held-back streams (``throttled:<bank>``) that name it are deleted (XDEL).
   Kept: consents (``consent:*``, the legal evidence of an authorisation, on ``consent.grants`` as
   well) and the alert de-duplication / held-back markers (keyed by alert id, no enterprise data,
   expiring within 7 and 30 days; deleting them would let a replay send an alert twice).
3. **ClickHouse**: every row of the USCC in the USCC-keyed tables (``sinks.clickhouse.erase``),
   erased by the sink's SQL gateway for a caller whose token has the operator role
   (``streams.cli.common.erase_via_gateway``; audited in ``yurong_audit.sql_audit`` too). Before
   it deletes, the sink waits until its consumer group has stored everything on the enterprise's
   partitions of ``enterprise.events``, ``enterprise.profiles``, ``risk.changes`` and
   ``alerts.*`` up to that moment (``sinks.runner.wait_caught_up``).

Why this order: deleting the rows first (as this command once did) left a window in which the
sink, still behind, stored a profile version, an event or a risk change from before the erasure
*after* the delete, and in which the running worker, still holding the profile, published it
again with the next event. Here the worker's confirmation comes first: everything it will ever
publish from the old profile is then in Kafka, before the confirmation. The Redis step stops new
alerts about the enterprise. The sink's wait then puts every such record into ClickHouse before
the delete. The final state has no row of the enterprise from before the erasure; rows the sink
stores afterwards come from events after it.

A step that fails is recorded in ``failed`` and the other steps still run (each is idempotent:
run the command again). Without the worker's confirmation (worker down, or a different app id)
the request stays on ``control.erasures`` and the worker applies it when it runs; erase again then,
so that the rows its backlog stores in the meantime go too.

Not erased, and said so in the output: the records of the time-retained topics (``dept.*``,
``enterprise.events``, ``risk.changes``, ``alerts.*``, ``dlq.*``, ``control.erasures*``) until
their retention expires, older values on the compacted topics until compaction, and ``dlq_event``
rows (no USCC column).

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
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streams.codecs.serde import schema_store
from streams.core.access import (
    ERASURE_APPLIED_TOPIC,
    ERASURE_AUDIT_TOPIC,
    ERASURE_REQUEST_TOPIC,
    OPERATOR,
    OPERATOR_GROUP_PREFIX,
)
from streams.core.consent import check_uscc
from streams.core.erasure import erase_request
from streams.errors import ConfigError, DecodeError, YurongError
from streams.kafka.admin import ensure_topics, watermark_offsets
from streams.kafka.partitioner import murmur2_partition
from streams.kafka.security import client_conf, kafka_login
from streams.settings import Settings, get_settings
from streams.worker.consent_store import REDIS_CLI, redis_login

log = logging.getLogger(__name__)

WORKER_WAIT_S = 120.0  # how long the command waits for the worker's confirmation
ROUTING_NOTE = ("an alert about the enterprise that the worker's router was publishing while the command ran may "
                "still have reached a consenting bank; no later change of the enterprise reaches a bank until it is "
                "put on a watchlist again")
NOT_ERASED = [
    "dept.*, enterprise.events, risk.changes, alerts.*, dlq.*, control.erasures* records: deleted by their time "
    "retention",
    "older values on enterprise.profiles and the profile changelog: removed when log compaction runs after the "
    "worker's tombstones",
    "consents (consent:*, consent.grants): kept as the legal evidence of an authorisation",
    "alert de-duplication and held-back markers (keyed by alert id, no enterprise data): expire within 7 / 30 days",
    "dlq_event rows: no USCC column; deleted by YURONG_RETENTION_DLQ_EVENT_DAYS",
    ROUTING_NOTE,
]


def request_erasure(kafka: dict, uscc: str, settings: Settings, wait_s: float = WORKER_WAIT_S) -> dict[str, Any]:
    """Publish an erase request for ``uscc`` on ``control.erasures`` and wait until the worker
    (app id ``settings.worker.app_id``) confirms on ``control.erasures.applied`` that its merge
    applied it (see the module docstring). Returns where the request went and the confirmation."""
    schemas = schema_store()
    partitions = settings.kafka.topic_partitions
    ensure_topics(kafka, {ERASURE_REQUEST_TOPIC: {}, ERASURE_APPLIED_TOPIC: {}}, partitions=partitions,
                  replication_factor=settings.kafka.replication_factor)
    app_id = settings.worker.app_id
    request = erase_request(uuid.uuid4().hex, uscc, kafka_login(OPERATOR, settings).username, int(time.time() * 1000))
    consumer = Consumer({**kafka, "group.id": f"{OPERATOR_GROUP_PREFIX}-erase", "enable.auto.commit": False,
                         "enable.partition.eof": False})
    try:
        # the worker keys its confirmation by the USCC: one partition to read, from its end now
        md = consumer.list_topics(ERASURE_APPLIED_TOPIC, timeout=15).topics[ERASURE_APPLIED_TOPIC]
        if md.error is not None or not md.partitions:
            raise YurongError(f"{ERASURE_APPLIED_TOPIC} is not readable: {md.error}")
        tp = TopicPartition(ERASURE_APPLIED_TOPIC, murmur2_partition(uscc.encode(), len(md.partitions)))
        _, high = watermark_offsets(consumer, tp)
        consumer.assign([TopicPartition(tp.topic, tp.partition, high)])
        sent = _produce_acked(kafka, ERASURE_REQUEST_TOPIC, uscc.encode(), schemas.encode("control/erasure_request", request))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise YurongError(f"reading {ERASURE_APPLIED_TOPIC}: {err}")
            try:
                _, applied = schemas.decode(msg.value(), "control/erasure_applied")
            except DecodeError:
                continue  # not a confirmation: not ours to judge
            if applied["request_id"] == request["request_id"] and applied["app_id"] == app_id:
                return {"request_id": request["request_id"], "request": sent,
                        "applied": {k: applied[k] for k in ("app_id", "events_partition", "events_offset",
                                                            "had_profile", "applied_ts_ms")}}
    finally:
        consumer.close()
    raise YurongError(f"the worker (app id {app_id}) did not confirm erase request {request['request_id']} within "
                      f"{wait_s:g} s: is it running (`yurong worker`)? The request stays on {ERASURE_REQUEST_TOPIC} "
                      "and the worker applies it when it runs; run the command again then")


def _produce_acked(kafka: dict, topic: str, key: bytes, value: bytes) -> dict[str, int]:
    """Produce one record (murmur2 on the key, as the worker's producer) and wait for Kafka's ack."""
    producer = Producer({**kafka, "enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random"})
    outcome: list[Any] = []
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, msg: outcome.append((err, msg)))
    producer.flush(30)
    if not outcome or outcome[0][0] is not None:
        raise YurongError(f"record on {topic} not acknowledged: {outcome[0][0] if outcome else 'no delivery report within 30 s'}")
    msg = outcome[0][1]
    return {"partition": msg.partition(), "offset": msg.offset()}


def redis_erase(settings: Settings, uscc: str) -> dict[str, Any]:
    """Remove the USCC from every bank's watchlist, drop its throttle windows and delete the
    held-back stream entries naming it, as the ``cli`` ACL user (see the module docstring)."""
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
            ids = [entry_id for entry_id, fields in await r.xrevrange(key) if fields.get("uscc") == uscc]
            if ids:
                held_back[key.removeprefix(f"{p}throttled:")] = await r.xdel(key, *ids)
    finally:
        await r.aclose()
    return {"watchlists": removed_from, "throttle_windows": len(throttle), "held_back_entries": held_back}


def erase(uscc: str, reason: str, clickhouse: Callable[[str, str], dict[str, int]],
          settings: Settings | None = None, worker_wait_s: float = WORKER_WAIT_S) -> dict[str, Any]:
    """Erase ``uscc`` everywhere: the worker's profile (request, then its confirmation), Redis,
    then ClickHouse through ``clickhouse(uscc, reason)``; write the audit record and return it. A
    failing step is recorded in ``failed`` and the others still run (run the command again: every
    step is idempotent)."""
    s = settings or get_settings()
    uscc = check_uscc(uscc.strip().upper())
    reason = reason.strip()
    if len(reason) < 3:
        raise ConfigError("--reason must say why the enterprise's data is erased (e.g. the request's reference)")
    kafka = client_conf(OPERATOR, s)
    record: dict[str, Any] = {
        "uscc": uscc, "reason": reason, "os_user": getpass.getuser(), "host": socket.gethostname(),
        "kafka_principal": kafka_login(OPERATOR, s).username, "started_ts_ms": int(time.time() * 1000),
        "erased": {}, "failed": {}, "not_erased": list(NOT_ERASED),
    }
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("worker", lambda: request_erasure(kafka, uscc, s, worker_wait_s)),
        ("redis", lambda: redis_erase(s, uscc)),
        ("clickhouse", lambda: clickhouse(uscc, reason)),
    ]
    for name, step in steps:
        try:
            record["erased"][name] = step()
        except Exception as exc:  # noqa: BLE001 — any failure of a step is recorded in the audit record and shown
            log.error("erasure of %s: %s failed: %s", uscc, name, exc)
            record["failed"][name] = f"{type(exc).__name__}: {exc}"
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
