"""Alert routing by the real Faust worker (a child process of its own: app id, Redis prefix,
ports), fed real ``risk.changes`` records and real ``consent.grants`` versions on Kafka.

1. The bank × enterprise matrix: 4 banks × 12 enterprises, every consent state (none, active,
   expired, revoked — its revocation replayed *before* the grant —, not yet started, scope
   excluding the category, not on the watchlist) and per-bank rules; six kinds of change per
   enterprise, some replayed, some repeated past the throttle. No alert reaches a bank without
   an active consent, every permitted one arrives exactly once, and every alert the throttle
   held back is counted and recorded.
2. Revocation and expiry stop alerts within one second while changes keep flowing:
   ``yurong consent revoke`` (the CLI, publishing to consent.grants) → ``consent_sync`` → Redis
   → ``route``. The measured latencies are printed (``pytest -s``).

The changes are produced straight onto ``risk.changes`` (what ``merge`` would emit), so the
test controls category, severity and level moves exactly and needs no connector or sink; the
pipeline tests (tests/e2e/test_pipeline.py) cover the path from PostgreSQL.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import replace

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from connectors.simulator.identities import distinct_usccs
from streams.cli.demo import pipeline
from streams.codecs.serde import schema_store
from streams.core.consent import BankRules, filtered_by, new_grant, revocations
from streams.kafka.admin import ensure_topics
from streams.kafka.consent_log import publish_grants
from streams.worker.consent_store import ConsentRegistry
from tests.conftest import TEST_KEY, wait_for
from tests.harness import IsolatedPipeline, commit_at_end, skip_history

pytestmark = pytest.mark.e2e

DAY = 86_400_000
THROTTLE_MAX = 2
# (category, severity, level before, level after): what each enterprise goes through
KINDS = [
    ("judicial", "high", "B", "B"),
    ("tax", "low", "B", "B"),
    ("registration", "critical", "B", "B"),
    ("positive", "info", "B", "B"),
    ("score_band", "medium", "B", "C"),  # one band down
    ("score_band", "medium", "B", "D"),  # two bands down
]
STATES = ["none", "active", "expired", "revoked", "not_started", "scope_tax_only", "not_watched", "active"]


def now_ms() -> int:
    return int(time.time() * 1000)


def usccs(seed: str, n: int) -> list[str]:
    return distinct_usccs(random.Random(seed), n, "500112")


def banks(seed: str, n: int) -> list[str]:
    return [f"b{k:04d}" for k in sorted(random.Random(seed).sample(range(1000, 10_000), n))]


def risk_change(change_id: str, uscc: str, category: str, severity: str, before: str, after: str) -> dict:
    t = now_ms()
    return {
        "change_id": change_id, "uscc": uscc, "category": category, "severity": severity,
        "reason_codes": [change_id.rsplit("/", 1)[1]], "before": {"risk_level": before}, "after": {"risk_level": after},
        "score_before": 700, "score_after": 600, "level_before": before, "level_after": after,
        "source_dataset": "market.enterprise_registration", "source_position": "0/0", "source_seq": 0,
        "event_ts_ms": t - 5, "detected_ts_ms": t,
    }


class Changes:
    """Produces risk changes and remembers the last offset per partition (for ``processed``)."""

    def __init__(self, bootstrap: dict) -> None:
        self.schemas = schema_store()
        self.producer = Producer({**bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 2})
        self.last: dict[int, int] = {}

    def _done(self, err, msg) -> None:
        assert err is None, err
        self.last[msg.partition()] = max(self.last.get(msg.partition(), -1), msg.offset())

    def send(self, change: dict) -> None:
        self.producer.produce("risk.changes", key=change["uscc"].encode(),
                              value=self.schemas.encode("risk/change", change), on_delivery=self._done)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def processed(bootstrap: dict, group: str, last: dict[int, int]) -> bool:
    """True once ``group`` committed past every offset in ``last`` (Faust commits after handling)."""
    c = Consumer({**bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition("risk.changes", p) for p in last], timeout=10)
    finally:
        c.close()
    return all(tp.offset > last[tp.partition] for tp in committed)


class AlertReader:
    """Alerts on the banks' topics about our enterprises (the topics are shared)."""

    def __init__(self, bootstrap: dict, bank_ids: list[str], ours: set[str]) -> None:
        self.schemas = schema_store()
        self.ours = ours
        self.consumer = Consumer({**bootstrap, "group.id": f"test-alerts-{time.time_ns()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([f"alerts.{b}" for b in bank_ids])
        self.alerts: list[dict] = []
        self.received_ms: list[int] = []

    def poll(self, seconds: float = 0.3) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self.consumer.consume(num_messages=1000, timeout=0.1):
                if m.error() is None and m.value() is not None and m.key() and m.key().decode() in self.ours:
                    self.alerts.append(self.schemas.decode(m.value(), "risk/alert")[1])
                    self.received_ms.append(now_ms())
        return self.alerts

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def worker_pipeline(tmp_path, kafka_admin, redis_url, unique, request):
    """A worker-only isolated pipeline, positioned at the end of the shared topics; the test
    passes its extra environment with ``@pytest.mark.parametrize(..., indirect=True)`` or uses
    the default (throttle of ``THROTTLE_MAX`` per hour)."""
    env = getattr(request, "param", None) or {"YURONG_ALERTS_THROTTLE_MAX": str(THROTTLE_MAX),
                                              "YURONG_ALERTS_THROTTLE_WINDOW_S": "3600"}
    p = IsolatedPipeline(tmp_path, "postgresql://unused@127.0.0.1:1/none", kafka_admin, redis_url, unique, TEST_KEY,
                         env, label="route")
    ensure_topics(kafka_admin, {"consent.grants": {"cleanup.policy": "compact"}})
    skip_history(kafka_admin, p.app_id, p.sink_group)
    commit_at_end(kafka_admin, p.app_id, ["consent.grants"])  # other runs' consents are not this test's
    with pipeline(p.env, p.logs, ("worker",)) as procs:
        p.procs = procs
        yield p
        p.procs = []


def wait_synced(p: IsolatedPipeline, expected: dict[str, object], timeout: float = 90) -> None:
    """Wait until the worker applied every consent version to Redis (``expected``: id → state)."""
    async def stored(reg: ConsentRegistry):
        return {cid: await reg.grant_by_id(cid) for cid in expected}

    def done():
        p.check_alive()
        return p.registry(stored) == expected
    wait_for(done, timeout, lambda: "the worker to apply the consents from consent.grants\n" + p.logs_tail())


def test_no_alert_without_active_consent_and_every_permitted_one_exactly_once(worker_pipeline, kafka_admin, unique):
    p = worker_pipeline
    bank_ids, codes = banks(f"routing-{unique}", 4), usccs(f"routing-{unique}", 12)
    rules = {
        bank_ids[0]: None,
        bank_ids[1]: BankRules(min_severity="high"),
        bank_ids[2]: BankRules(categories=("judicial", "score_band", "tax"), score_band_drop=2),
        bank_ids[3]: BankRules(categories=("registration", "positive", "judicial")),
    }
    now = now_ms()
    state = {(b, u): STATES[(i + 3 * j) % len(STATES)] for i, b in enumerate(bank_ids) for j, u in enumerate(codes)}
    assert set(state.values()) == set(STATES) and all(
        {state[(b, u)] for u in codes} >= {"none", "active", "revoked"} for b in bank_ids)

    # consents as versions on consent.grants; a revocation is sent *before* its grant (a replay)
    versions, expected = [], {}
    for (b, u), s in sorted(state.items()):
        if s == "none":
            continue
        start, expiry = {"expired": (now - 2 * DAY, now - DAY), "not_started": (now + DAY, now + 2 * DAY)}.get(
            s, (now - DAY, now + DAY))
        g = new_grant(b, u, "post-loan monitoring", expiry, ["tax"] if s == "scope_tax_only" else [], start_ms=start,
                      now_ms=now, recorded_by="consent", evidence_ref=f"auth-letter:{b}/2026/00017")
        if s == "revoked":
            [r] = revocations([g], b, now, recorded_by="consent")
            versions += [r, g]
            expected[g.consent_id] = r
        else:
            versions.append(g)
            expected[g.consent_id] = g
    assert publish_grants(kafka_admin, versions) == len(versions)

    async def setup(reg: ConsentRegistry):
        for b in bank_ids:
            await reg.watch(b, [u for u in codes if state[(b, u)] != "not_watched"])
            if rules[b]:
                await reg.set_rules(b, rules[b])
    p.registry(setup)
    ensure_topics(kafka_admin, {f"alerts.{b}": {} for b in bank_ids})
    reader = AlertReader(kafka_admin, bank_ids, set(codes))
    wait_synced(p, expected)

    # the changes: six kinds per enterprise; three more judicial ones for the first three
    # enterprises (past the throttle); then a replay of the first eight changes
    sent: list[dict] = []
    changes = Changes(kafka_admin)
    for j, u in enumerate(codes):
        for k, (category, severity, before, after) in enumerate(KINDS + [KINDS[0]] * (3 if j < 3 else 0)):
            c = risk_change(f"route-{unique}-{j}-{k}/R{k}", u, category, severity, before, after)
            changes.send(c)
            sent.append(c)
    for c in sent[:8]:
        changes.send(c)
    changes.flush()

    # the model: consent active and covering, watched, wanted by the rules; then the throttle
    def permitted(b: str, c: dict) -> bool:
        s = state[(b, c["uscc"])]
        consented = s == "active" or (s == "scope_tax_only" and c["category"] == "tax")
        return consented and filtered_by(rules[b], c) is None

    want, held = set(), set()
    per_window: Counter = Counter()
    for c in sent:
        for b in bank_ids:
            if permitted(b, c):
                per_window[(b, c["uscc"], c["category"])] += 1
                (want if per_window[(b, c["uscc"], c["category"])] <= THROTTLE_MAX else held).add(f"{b}/{c['change_id']}")
    assert len(want) >= 20 and len(held) >= 2, (len(want), len(held))

    wait_for(lambda: processed(kafka_admin, p.app_id, changes.last) and len(reader.poll()) >= len(want), 90,
             lambda: f"{len(want)} alerts (got {len(reader.alerts)})\n" + p.logs_tail())
    reader.poll(1.0)  # anything late would show up now
    reader.close()
    got = Counter(a["alert_id"] for a in reader.alerts)
    assert {a for a, n in got.items() if n > 1} == set(), "every alert exactly once (replays are de-duplicated)"
    assert set(got) == want, {"unexpected": sorted(set(got) - want)[:5], "missing": sorted(want - set(got))[:5]}
    active = {(g.bank_id, g.uscc): g.consent_id for g in expected.values() if g.revoked_ms == 0
              and g.start_ms <= now < g.expiry_ms}
    for a in reader.alerts:
        assert state[(a["bank_id"], a["uscc"])] in ("active", "scope_tax_only")
        assert a["consent_id"] == active[(a["bank_id"], a["uscc"])]
        assert a["alert_id"] == f"{a['bank_id']}/{a['change_id']}"

    # every held-back alert is counted and recorded, once
    async def recorded(reg: ConsentRegistry):
        return [r["alert_id"] for b in bank_ids for r in await reg.throttled(b, 1000)]
    assert sorted(p.registry(recorded)) == sorted(held)
    metrics = p.metrics("WORKER")
    throttled = sum(v for k, v in metrics.items() if k.startswith("yurong_alerts_throttled_total{")
                    and any(f'bank_id="{b}"' in k for b in bank_ids))
    assert throttled == len(held)
    print(f"\nmatrix: {len(sent)} changes (+8 replayed) × {len(bank_ids)} banks → {len(got)} alerts delivered, "
          f"{len(held)} held back by the throttle, {len(sent) * len(bank_ids) - len(want) - len(held)} refused")


@pytest.mark.parametrize("worker_pipeline", [{"YURONG_ALERTS_THROTTLE_MAX": "0"}], indirect=True)
def test_revocation_and_expiry_stop_alerts_within_one_second(worker_pipeline, kafka_admin, unique):
    """Changes keep flowing (~25/s) about one enterprise watched by three banks: the first keeps
    its consent, the second's is revoked with ``yurong consent revoke``, the third's expires
    mid-stream. No alert to the second or third whose detection time is more than 1 s after
    the revocation or the expiry."""
    p = worker_pipeline
    keep, revoke, expire = banks(f"revoke-{unique}", 3)
    (u,) = usccs(f"revoke-{unique}", 1)
    now = now_ms()
    grants = {b: new_grant(b, u, "post-loan monitoring", now + DAY, now_ms=now, recorded_by="consent",
                        evidence_ref=f"auth-letter:{b}/2026/00017") for b in (keep, revoke)}
    expiry_ms = now + 60_000  # made to expire during the flow below (replaced once the flow runs)
    grants[expire] = new_grant(expire, u, "post-loan monitoring", expiry_ms, now_ms=now, recorded_by="consent",
                               evidence_ref=f"auth-letter:{expire}/2026/00018")
    publish_grants(kafka_admin, list(grants.values()))

    async def setup(reg: ConsentRegistry):
        for b in grants:
            await reg.watch(b, [u])
    p.registry(setup)
    ensure_topics(kafka_admin, {f"alerts.{b}": {} for b in grants})
    reader = AlertReader(kafka_admin, list(grants), {u})
    wait_synced(p, {g.consent_id: g for g in grants.values()})

    stop = threading.Event()
    changes = Changes(kafka_admin)
    kinds = [k for k in KINDS if k[0] != "score_band"]

    def flow():
        n = 0
        while not stop.is_set():
            category, severity, before, after = kinds[n % len(kinds)]
            changes.send(risk_change(f"revoke-{unique}-{n}/R{n % len(kinds)}", u, category, severity, before, after))
            n += 1
            time.sleep(0.04)
        changes.flush()

    thread = threading.Thread(target=flow, daemon=True)
    thread.start()
    try:
        # alerts flow to all three banks
        wait_for(lambda: {a["bank_id"] for a in reader.poll()} == set(grants), 60,
                 lambda: "alerts to all three banks\n" + p.logs_tail())
        # the third consent expires 1.5 s from now (a new version of it on consent.grants)
        expiry_ms = now_ms() + 1_500
        expiring = replace(grants[expire], expiry_ms=expiry_ms, ts_ms=now_ms())
        publish_grants(kafka_admin, [expiring])
        # the enterprise revokes the second bank's consent through the CLI; a watcher sees the
        # moment the worker has applied it to Redis (where the router looks for every alert)
        key = f"{p.prefix}consent:{grants[revoke].consent_id}"
        applied: list[int] = []

        def watch_redis():
            r = redis.from_url(p.redis_url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and r.hget(key, "revoked_ms") in (None, b"0"):
                time.sleep(0.002)
            applied.append(now_ms())
            r.close()
        watcher = threading.Thread(target=watch_redis, daemon=True)
        watcher.start()
        cli = subprocess.run([sys.executable, "-m", "streams.cli", "consent", "revoke", "--bank", revoke, "--uscc", u],
                             env=p.env, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        watcher.join(60)
        revoked = p.registry(lambda reg: reg.grant_by_id(grants[revoke].consent_id))
        assert revoked.revoked_ms, "the worker applied the revocation\n" + p.logs_tail()
        revoked_ms = revoked.revoked_ms  # set by the CLI just before it published
        apply_ms = applied[0] - revoked_ms
        # changes keep flowing for 4 s after the revocation; the first bank keeps getting alerts
        wait_for(lambda: now_ms() > max(revoked_ms, expiry_ms) + 4_000 and any(
            a["bank_id"] == keep and a["detected_ts_ms"] > revoked_ms + 3_000 for a in reader.poll()), 60,
            lambda: "alerts to the bank that kept its consent\n" + p.logs_tail())
    finally:
        stop.set()
        thread.join(30)
    wait_for(lambda: processed(kafka_admin, p.app_id, changes.last), 60, "the worker to route every change")
    reader.poll(1.0)
    reader.close()

    by_bank = defaultdict(list)
    for a in reader.alerts:
        by_bank[a["bank_id"]].append(a)
    late_revoked = [a for a in by_bank[revoke] if a["detected_ts_ms"] > revoked_ms + 1_000]
    late_expired = [a for a in by_bank[expire] if a["detected_ts_ms"] > expiry_ms + 1_000]
    assert late_revoked == [], f"{len(late_revoked)} alerts after the revocation"
    assert late_expired == [], f"{len(late_expired)} alerts after the expiry"
    assert any(a["detected_ts_ms"] > revoked_ms + 3_000 for a in by_bank[keep]), "changes kept flowing"
    # measured: the last alert the revoked bank got, relative to the revocation
    last_detected = max(a["detected_ts_ms"] for a in by_bank[revoke]) - revoked_ms
    last_published = max(a["published_ts_ms"] for a in by_bank[revoke]) - revoked_ms
    expired_published = max(a["published_ts_ms"] for a in by_bank[expire]) - expiry_ms
    print(f"\nrevocation published → applied in Redis by the worker: {apply_ms} ms")
    print(f"revocation at {revoked_ms}: last alert to the revoked bank detected {last_detected:+d} ms, published "
          f"{last_published:+d} ms after it; expiry: last alert published {expired_published:+d} ms after it; "
          f"{len(by_bank[keep])} alerts to the bank that kept its consent")
    assert last_published < 1_000 and expired_published < 1_000


def test_a_forged_consent_changes_nothing(worker_pipeline, kafka_admin, unique, topic_reader):
    """Two forgeries of the attack in DESIGN §8, against the real worker: a principal other than the
    consent service (the bank itself, the worker) cannot write consent.grants at all; a version the
    consent service did write but without who recorded it and the evidence of authorisation is
    dead-lettered and applied to nothing. No alert reaches the bank; a genuine grant afterwards
    lets the next change through, so the test sees the path work."""
    from streams.core.access import CONSENT, WORKER, bank_rules
    from streams.errors import YurongError
    from streams.kafka.dlq import parse_dlq_headers
    from tests.conftest import TemporaryPrincipals, as_principal

    p = worker_pipeline
    [b], [u] = banks(f"forged-{unique}", 1), usccs(f"forged-{unique}", 1)
    temp = TemporaryPrincipals(kafka_admin)
    bank_conf = temp.add(b, bank_rules(b))
    try:
        real = new_grant(b, u, "post-loan monitoring", now_ms() + DAY, recorded_by="consent",
                         evidence_ref=f"auth-letter:{b}/2026/00018")
        schemas = schema_store()
        for forger in (bank_conf, as_principal(WORKER)):  # the record itself, straight onto the topic
            refused: list = []
            producer = Producer({**forger, "message.timeout.ms": 15000})
            producer.produce("consent.grants", key=real.consent_id.encode(), value=schemas.encode("consent/grant", real.to_record()),
                             on_delivery=lambda err, _m, out=refused: out.append(err))
            producer.flush(20)
            assert refused and refused[0] is not None and refused[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
            with pytest.raises((YurongError, KafkaException), match="(?i)authori[sz]ation"):  # and through the publisher
                publish_grants(forger, [real])

        # the consent service's own login, but a version without its recorder and evidence
        dlq = topic_reader(["dlq.consent.grants"])
        unproven = {**real.to_record(), "consent_id": f"forged-{unique}", "recorded_by": "", "evidence_ref": ""}
        producer = Producer(as_principal(CONSENT))
        producer.produce("consent.grants", key=unproven["consent_id"].encode(), value=schemas.encode("consent/grant", unproven))
        assert producer.flush(30) == 0
        p.registry(lambda reg: reg.watch(b, [u]))
        ensure_topics(kafka_admin, {f"alerts.{b}": {}})
        reader = AlertReader(kafka_admin, [b], {u})

        def dead_lettered():
            p.check_alive()
            return [m for m in dlq.poll() if m.key() == unproven["consent_id"].encode()]
        [letter] = wait_for(dead_lettered, 60, lambda: "the unproven consent in dlq.consent.grants\n" + p.logs_tail())
        error = parse_dlq_headers(letter.headers())["error.message"]
        assert "recorded_by" in error or "evidence_ref" in error, error
        assert p.registry(lambda reg: reg.grants_of(u)) == []

        changes = Changes(kafka_admin)
        changes.send(risk_change(f"forged-{unique}/R1", u, "judicial", "high", "B", "B"))
        changes.flush()
        wait_for(lambda: processed(kafka_admin, p.app_id, changes.last), 60, lambda: "the change handled\n" + p.logs_tail())
        reader.poll(1.0)
        assert reader.alerts == [], "an alert reached a bank under a forged consent"

        # the genuine grant, from the consent service: the next change reaches the bank
        assert publish_grants(as_principal(CONSENT), [real]) == 1
        wait_synced(p, {real.consent_id: real})
        changes.send(risk_change(f"forged-{unique}/R2", u, "judicial", "high", "B", "B"))
        changes.flush()
        wait_for(lambda: reader.poll(), 60, lambda: "the alert under the genuine consent\n" + p.logs_tail())
        assert [a["change_id"] for a in reader.alerts] == [f"forged-{unique}/R2"]
        reader.close()
    finally:
        temp.remove_all()
