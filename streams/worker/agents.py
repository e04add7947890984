"""Faust agents: wire the pure core (ingest, profile, consent rules) to topics.

    dept.*            ──ingest──▶ enterprise.events    (validate, mask, re-key by USCC)
    <debezium>.*      ──ingest_debezium──▶ (same)       (a department's own Debezium, JSON or Avro converter)
    enterprise.events ──merge───▶ enterprise.profiles + risk.changes   (profile table)
    control.erasures  ──erase_requests──▶ enterprise.events   (an erase marker, op = erase, keyed by USCC)
    erase marker      ──merge───▶ profile dropped, tombstone on enterprise.profiles, control.erasures.applied
    risk.changes      ──route───▶ alerts.<bank_id>     (consent + watchlist, bank rules, de-dup, throttle)
    consent.grants    ──consent_sync──▶ Redis          (the router's view of the consents)

Every record is handled inside its own try: a bad record goes to ``dlq.<topic>`` and the
agent moves on; an exception never escapes an agent (Faust would skip the offset on restart,
faust-streaming#315). Infrastructure errors (Redis, Kafka) are retried with backoff instead,
holding the partition, because dead-lettering a good record for an outage would lose it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import redis.exceptions
from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException

from monitoring.metrics import ALERTS, ALERTS_BLOCKED, ALERTS_THROTTLED, DLQ, E2E_LATENCY, EVENTS_IN, EVENTS_OUT
from streams.codecs.avro_registry import (
    AvroRegistryDecoder,
    RegistryUnavailable,
    SchemaRegistry,
    decode_debezium_record,
    schema_id_of,
)
from streams.codecs.debezium import DebeziumConverter
from streams.codecs.serde import schema_store
from streams.core.access import WORKER
from streams.core.catalogue import catalogue
from streams.core.consent import ConsentGrant, filtered_by
from streams.core.erasure import check_request, erase_applied, erase_marker, is_erase_marker, replayed_marker
from streams.core.ingest import Provenance, to_enterprise_event
from streams.core.masking import assert_no_pii
from streams.core.profile import DecodedProfiles, merge_event
from streams.core.scorecard import DEFAULT_SCORECARD, Scorecard
from streams.errors import DecodeError, RecordError
from streams.kafka.admin import ensure_topics
from streams.kafka.dlq import dlq_headers
from streams.kafka.security import client_conf
from streams.settings import get_settings
from streams.worker.app import app
from streams.worker.consent_store import REDIS_WORKER, ConsentRegistry
from streams.worker.faust_fixes.output import output
from streams.worker.secrets import load_pseudonymizer
from streams.worker.topics import (
    ENTERPRISE_EVENTS,
    ENTERPRISE_PROFILES,
    ERASURES_APPLIED,
    RISK_CHANGES,
    alerts_topic_name,
    consent_grants,
    debezium_converters,
    debezium_topics,
    dept_topics,
    enterprise_events,
    erasure_requests,
    profiles,
    risk_changes,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_settings = get_settings()
_schemas = schema_store()
_datasets = catalogue().by_topic()
_pseudonymizer = load_pseudonymizer(_settings)
_scorecard = Scorecard.load(_settings.risk.scorecard) if _settings.risk.scorecard else DEFAULT_SCORECARD
_decoded = DecodedProfiles(lambda b: _schemas.decode(b, "enterprise/profile")[1])
_registry: ConsentRegistry | None = None
_declared_alert_topics: set[str] = set()


def _declare(topic: str) -> None:
    """Create ``topic`` unless it exists (auto-creation is off; the worker owns ``alerts.``)."""
    ensure_topics(client_conf(WORKER, _settings), {topic: {}}, partitions=_settings.kafka.topic_partitions,
                  replication_factor=_settings.kafka.replication_factor)
    _declared_alert_topics.add(topic)
# Every record the agents publish, the profile table's changelog included, goes through
# librdkafka: ``output(app)`` (streams/kafka/producer.py, made on first use), flushed before every
# offset commit.


def registry() -> ConsentRegistry:
    global _registry
    if _registry is None:
        _registry = ConsentRegistry.for_component(REDIS_WORKER, _settings)  # the worker's own Redis ACL user
    return _registry


def now_ms() -> int:
    return int(time.time() * 1000)


async def dead_letter(message, error: Exception) -> None:
    """Send the original bytes with provenance and the error to ``dlq.<topic>``."""
    kind = error.kind if isinstance(error, RecordError) else "unexpected"
    log.warning("dead letter %s[%d]@%d: %s: %s", message.topic, message.partition, message.offset, kind, error)
    output(app).produce(f"dlq.{message.topic}", message.key, message.value,
                 dlq_headers("worker", message.topic, message.partition, message.offset, error))
    DLQ.labels("worker", message.topic, kind).inc()


# Outages: the service is there again later and the same call then succeeds. Besides lost
# connections, a Redis that refuses writes for a while — out of memory (``OOM``), a replica during
# a failover (``READONLY``), a cluster re-sharding (``TRYAGAIN``/``CLUSTERDOWN``/``MASTERDOWN``)
# — is an outage too: dead-lettering a consent version or a change for it would lose it.
OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.OutOfMemoryError,
           redis.exceptions.ReadOnlyError, redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
           ConnectionError, asyncio.TimeoutError, KafkaError, KafkaException, RegistryUnavailable)


async def retrying(what: str, op: Callable[[], Awaitable[T]]) -> T:
    """Run ``op`` until it succeeds, backing off on outages (``OUTAGES``; never skip the record)."""
    delay = 0.2
    while True:
        try:
            return await op()
        except OUTAGES as exc:
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _debezium_registry() -> AvroRegistryDecoder | None:
    w = _settings.worker
    if not w.debezium_registry_url:
        return None
    return AvroRegistryDecoder(SchemaRegistry(w.debezium_registry_url, api=w.debezium_registry_api),
                               id_size=w.debezium_registry_id_size)


_debezium_avro = _debezium_registry()


async def _recipients_now(reg: ConsentRegistry, change: dict) -> dict[str, str]:
    """The banks that may get ``change`` as of now (the time is taken again on every retry)."""
    return await reg.recipients(change["uscc"], change["category"], now_ms())


def _decode_debezium(converter: DebeziumConverter, headers, value: bytes) -> tuple | None:
    return decode_debezium_record(converter, value, headers, _debezium_avro)


async def _prefetch_schema(registry: AvroRegistryDecoder, schema_id: int) -> None:
    async def fetch() -> None:
        try:
            registry.writer(schema_id)
        except DecodeError:
            pass  # unknown id or not Avro: decoding the record dead-letters it with the reason
    await retrying("schema registry", fetch)


async def ingest_one(msg, decode: Callable[[bytes], tuple | None]) -> None:
    """Validate, de-identify and re-key one change record; ``decode`` turns its bytes into
    ``(dataset, envelope)`` or None (nothing to ingest)."""
    EVENTS_IN.labels("worker", msg.topic).inc()
    if msg.value is None:
        return  # tombstone after a delete: nothing to merge
    try:
        decoded = decode(msg.value)
        if decoded is None:
            return
        ds, envelope = decoded
        record = to_enterprise_event(ds, envelope, Provenance(msg.topic, msg.partition, msg.offset), _pseudonymizer, now_ms())
        value = _schemas.encode("enterprise/event", record)
    except Exception as exc:  # noqa: BLE001 — every failure of one record is dead-lettered
        await dead_letter(msg, exc)
        return
    output(app).produce(ENTERPRISE_EVENTS, record["uscc"].encode(), value)
    EVENTS_OUT.labels("worker", ENTERPRISE_EVENTS).inc()


def _decode_dept(topic: str) -> Callable[[bytes], tuple]:
    ds = _datasets[topic]
    return lambda value: (ds, _schemas.decode(value, ds.schema_name)[1])


@app.agent(dept_topics)
async def ingest(stream):
    """dept.* → validate, de-identify, re-key by USCC → enterprise.events."""
    async for event in stream.events():
        await ingest_one(event.message, _decode_dept(event.message.topic))


if debezium_topics is not None:

    @app.agent(debezium_topics)
    async def ingest_debezium(stream):
        """A department's own Debezium connector (JSON converter, or Avro through the schema registry
        of YURONG_WORKER_DEBEZIUM_REGISTRY_URL) → the same path as dept.*."""
        async for event in stream.events():
            msg = event.message
            converter = debezium_converters[msg.topic]
            if _debezium_avro is not None:
                schema_id = schema_id_of(msg.value, msg.headers, _debezium_avro)
                if schema_id is not None:  # fetch the writer schema first: a registry outage is retried, not a dead letter
                    await _prefetch_schema(_debezium_avro, schema_id)
            await ingest_one(msg, partial(_decode_debezium, converter, msg.headers))


@app.agent(enterprise_events)
async def merge(stream):
    """enterprise.events → profile table → enterprise.profiles, risk.changes."""
    async for event in stream.events():
        msg = event.message
        EVENTS_IN.labels("worker", msg.topic).inc()
        try:
            _, ev = _schemas.decode(msg.value, "enterprise/event")
            uscc = ev["uscc"]
            stored = profiles.get(uscc)
            old = _decoded.get(uscc, stored)
            if is_erase_marker(ev):
                replayed = replayed_marker(old, msg.offset)
            else:
                new, changes = merge_event(old, ev, msg.offset, now_ms(), _scorecard)
                if new is old:
                    continue  # replayed event, already merged
                profile_bytes = _schemas.encode("enterprise/profile", new)
                change_bytes = []
                for change in changes:
                    assert_no_pii(change, "risk change")
                    change_bytes.append(_schemas.encode("risk/change", change))
                assert_no_pii(new, "enterprise profile", scanned=_decoded.scanned(uscc, old))
        except Exception as exc:  # noqa: BLE001 — any failure of this record is its dead letter
            await dead_letter(msg, exc)
            continue
        if is_erase_marker(ev):
            if not replayed:  # else merged before, and the profile now in the table was built after it
                await erase_profile(msg, ev, had_profile=stored is not None)
            continue
        profiles[uscc] = profile_bytes  # reassign: Faust writes a changelog entry only on set
        _decoded.put(uscc, profile_bytes, new)
        key = uscc.encode()
        output(app).produce(ENTERPRISE_PROFILES, key, profile_bytes)
        EVENTS_OUT.labels("worker", ENTERPRISE_PROFILES).inc()
        for value in change_bytes:
            output(app).produce(RISK_CHANGES, key, value)
            EVENTS_OUT.labels("worker", RISK_CHANGES).inc()


async def erase_profile(msg, marker: dict, had_profile: bool) -> None:
    """Apply an erase marker (streams/core/erasure.py): drop the profile from the table (Faust
    writes the changelog tombstone), publish a tombstone on enterprise.profiles, raise no risk
    change; once Kafka acknowledged everything published before, confirm on control.erasures.applied."""
    uscc = marker["uscc"]
    key = uscc.encode()
    if had_profile:
        del profiles[uscc]
    _decoded.forget(uscc)
    output(app).produce(ENTERPRISE_PROFILES, key, None)
    EVENTS_OUT.labels("worker", ENTERPRISE_PROFILES).inc()
    if not await output(app).settled():
        # an earlier output was refused: the pre-commit flush fails on it and the worker restarts
        # from the last commit, where it merges this marker again; no confirmation until then
        log.error("erase marker %s[%d]@%d: an earlier output was refused; not confirmed", msg.topic, msg.partition,
                  msg.offset)
        return
    try:
        value = _schemas.encode("control/erasure_applied", erase_applied(
            marker, _settings.worker.app_id, msg.partition, msg.offset, had_profile, now_ms()))
    except Exception as exc:  # noqa: BLE001 — e.g. a marker without its request id: the erasure stands, unconfirmed
        await dead_letter(msg, exc)
        return
    output(app).produce(ERASURES_APPLIED, key, value)
    EVENTS_OUT.labels("worker", ERASURES_APPLIED).inc()
    log.info("erased the profile of %s (%s; marker %s[%d]@%d)", uscc, "had one" if had_profile else "none held",
             msg.topic, msg.partition, msg.offset)


@app.agent(erasure_requests)
async def erase_requests(stream):
    """control.erasures (`yurong erase`) → an erase marker on enterprise.events under the USCC's
    key, behind every event of the enterprise published before it; the merge applies it. Stateless:
    a request handled twice puts a second marker there (streams/core/erasure.py)."""
    async for event in stream.events():
        msg = event.message
        EVENTS_IN.labels("worker", msg.topic).inc()
        if msg.value is None:
            continue
        try:
            _, request = _schemas.decode(msg.value, "control/erasure_request")
            request = check_request(request)
            if msg.key is not None and msg.key.decode() != request["uscc"]:
                raise ValueError(f"key {msg.key!r} is not the request's USCC")
            marker = erase_marker(request, msg.topic, msg.partition, msg.offset, now_ms())
            value = _schemas.encode("enterprise/event", marker)
        except Exception as exc:  # noqa: BLE001 — any failure of this record is its dead letter
            await dead_letter(msg, exc)
            continue
        output(app).produce(ENTERPRISE_EVENTS, marker["uscc"].encode(), value)
        EVENTS_OUT.labels("worker", ENTERPRISE_EVENTS).inc()
        log.info("erase request %s for %s by %s: marker on %s", request["request_id"], request["uscc"],
                 request["requested_by"], ENTERPRISE_EVENTS)


@app.agent(risk_changes)
async def route(stream):
    """risk.changes → alerts.<bank_id> for every bank with an active consent and a watch whose
    rules want the change; de-duplicated and throttled per bank in ``deliver``."""
    async for event in stream.events():
        msg = event.message
        EVENTS_IN.labels("worker", msg.topic).inc()
        try:
            _, change = _schemas.decode(msg.value, "risk/change")
        except Exception as exc:  # noqa: BLE001 — any failure of this record is its dead letter
            await dead_letter(msg, exc)
            continue
        reg = registry()
        try:
            banks = await retrying("consent lookup", partial(_recipients_now, reg, change))
            rules = await retrying("bank rules", partial(reg.rules_of, banks)) if banks else {}
        except Exception as exc:  # noqa: BLE001 — e.g. a malformed consent record: never skip silently
            await dead_letter(msg, exc)
            continue
        if not banks:
            ALERTS_BLOCKED.labels(change["category"]).inc()
        for bank_id, consent_id in banks.items():
            why = filtered_by(rules.get(bank_id), change)
            if why:
                log.debug("%s/%s not wanted by %s (rule: %s)", change["uscc"], change["change_id"], bank_id, why)
                continue
            await deliver(reg, msg, change, bank_id, consent_id)


async def deliver(reg: ConsentRegistry, msg, change: dict, bank_id: str, consent_id: str) -> None:
    """Throttle, then publish one alert and wait for Kafka's ack before recording it as delivered."""
    alert_id = f"{bank_id}/{change['change_id']}"
    if await retrying("dedup check", lambda: reg.already_delivered(alert_id)):
        return
    limits = _settings.alerts
    if limits.throttle_max:
        try:
            verdict = await retrying("throttle", lambda: reg.admit(alert_id, bank_id, change, now_ms(),
                                                                   limits.throttle_max, limits.throttle_window_ms))
        except Exception as exc:  # noqa: BLE001 — not an outage (e.g. a key of the wrong type): never skip silently
            await dead_letter(msg, exc)
            return
        if verdict <= 0:
            if verdict == 0:  # first time: counted and recorded (a replay of a held-back alert was already)
                ALERTS_THROTTLED.labels(bank_id, change["category"]).inc()
                log.warning("alert %s held back: more than %d %s alerts about %s for %s within %gs "
                            "(recorded; `yurong bank throttled %s`)", alert_id, limits.throttle_max, change["category"],
                            change["uscc"], bank_id, limits.throttle_window_s, bank_id)
            return
    alert = {"alert_id": alert_id, "bank_id": bank_id, "consent_id": consent_id, **change, "published_ts_ms": now_ms()}
    try:
        assert_no_pii(alert, "alert")
        value = _schemas.encode("risk/alert", alert)
    except Exception as exc:  # noqa: BLE001 — any failure of this record is its dead letter
        await dead_letter(msg, exc)
        return
    topic = alerts_topic_name(bank_id)
    if topic not in _declared_alert_topics:  # onboarding declares it; a consent may name a bank first
        await retrying(f"declare {topic}", partial(asyncio.to_thread, _declare, topic))
    await retrying(f"publish to {topic}", lambda: output(app).produce_acked(topic, change["uscc"].encode(), value))
    await retrying("dedup mark", lambda: reg.mark_delivered(alert_id))
    ALERTS.labels(bank_id, change["category"], change["severity"]).inc()
    EVENTS_OUT.labels("worker", topic).inc()
    E2E_LATENCY.labels("alert_published").observe(max(0, now_ms() - change["event_ts_ms"]) / 1000)


@app.agent(consent_grants)
async def consent_sync(stream):
    """consent.grants (the system of record) → Redis, where the router reads consents for every
    alert. Idempotent and order-independent (``streams.core.consent.merge_grant``): a replayed older
    version never undoes a newer revocation. A tombstone drops the consent."""
    async for event in stream.events():
        msg = event.message
        EVENTS_IN.labels("worker", msg.topic).inc()
        reg = registry()
        if msg.value is None:
            if msg.key:
                await retrying("consent forget", partial(reg.forget, msg.key.decode()))
            continue
        try:
            _, record = _schemas.decode(msg.value, "consent/grant")
            grant = ConsentGrant.from_record(record)
            if msg.key is not None and msg.key.decode() != grant.consent_id:
                raise ValueError(f"key {msg.key!r} is not the consent id {grant.consent_id}")
        except Exception as exc:  # noqa: BLE001 — any failure of this record is its dead letter
            await dead_letter(msg, exc)
            continue
        try:
            changed = await retrying("consent apply", partial(reg.apply, grant))
        except Exception as exc:  # noqa: BLE001 — e.g. a version changing the bank: refused, kept in the DLQ
            await dead_letter(msg, exc)
            continue
        log.info("consent %s (%s ← %s) %s%s", grant.consent_id, grant.bank_id, grant.uscc,
                 "revoked" if grant.revoked_ms else "granted", "" if changed else " (no change)")
