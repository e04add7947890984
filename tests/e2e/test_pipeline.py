"""End to end on real services: PostgreSQL rows → connector → Kafka → Faust worker →
ClickHouse (chDB) and bank alert topics. Proves the consent and masking rules."""

from __future__ import annotations

import json
import random

import psycopg2
import pytest
from confluent_kafka import Producer

from connectors.simulator.identities import make_id_number, make_uscc
from connectors.simulator.market import MarketSimulator
from streams.codecs.serde import schema_store
from streams.core.masking import find_pii
from streams.kafka.admin import ensure_topics
from streams.kafka.dlq import parse_dlq_headers
from streams.worker.consent_store import ConsentRegistry
from tests.conftest import TEST_KEY, drop_database, make_database, wait_for
from tests.harness import IsolatedPipeline, skip_history

pytestmark = pytest.mark.e2e

DOWNSTREAM = ["enterprise.events", "enterprise.profiles", "risk.changes"]


@pytest.fixture
def e2e_db(pg_admin_dsn, unique):
    name = f"market_e2e{unique}"
    dsn = make_database(pg_admin_dsn, name)
    yield dsn
    drop_database(pg_admin_dsn, name)


def _one_source_record(dead_letters: list):
    """The dead letter of one source record (the same record's copies, if any, say the same)."""
    assert dead_letters and len({parse_dlq_headers(m.headers())["offset"] for m in dead_letters}) == 1
    return dead_letters[0]


def test_rows_become_profiles_and_only_consented_banks_get_alerts(
    e2e_db, kafka_admin, redis_url, unique, tmp_path, topic_reader
):
    schemas = schema_store()
    sim = MarketSimulator(e2e_db, seed=int(unique[:6], 16), distress_share=0.0)
    sim.create_schema()
    usccs = sim.seed_enterprises(200)
    a, b, c, d = usccs[:4]
    rng = random.Random(unique)
    consented, unconsented = f"b{rng.randint(1000, 4999)}", f"b{rng.randint(5000, 9999)}"
    p = IsolatedPipeline(tmp_path, e2e_db, kafka_admin, redis_url, unique, TEST_KEY,
                         {"YURONG_CLICKHOUSE_BATCH_SECONDS": "0.3", "YURONG_SOURCE_FLUSH_INTERVAL_S": "0.1"})

    async def setup(reg: ConsentRegistry):
        for code in (a, b):
            await reg.grant(consented, code, "post-loan monitoring", expiry_ms=4_102_444_800_000,
                            recorded_by="consent", evidence_ref="auth-letter:test/0001")
        await reg.watch(consented, [a, b, c])
        await reg.watch(unconsented, [a, b, c])
    p.registry(setup)
    alert_topics = [f"alerts.{consented}", f"alerts.{unconsented}"]
    ensure_topics(kafka_admin, {t: {} for t in alert_topics})
    alerts = topic_reader(alert_topics)

    skip_history(kafka_admin, p.app_id, p.sink_group)  # other runs' records are not this test's
    with p.running():
        # 1. the snapshot becomes 200 profiles in ClickHouse
        wait_for(lambda: (rows := p.sql("SELECT count() FROM enterprise_profile FINAL WHERE has({u:Array(String)}, uscc)",
                                        u=usccs)) and rows[0][0] == 200,
                 180, lambda: "200 snapshot profiles in ClickHouse\n" + p.logs_tail())

        # 2. bad input first, then good changes: bytes that are not Avro, and a valid Avro
        # record of the wrong schema, straight onto a department topic ...
        garbage_key, mismatch_key = f"garbage-{unique}".encode(), f"mismatch-{unique}".encode()
        producer = Producer(dict(kafka_admin))
        producer.produce("dept.market.enterprise_registration", key=garbage_key, value=b"\x00not avro at all")
        producer.produce("dept.market.enterprise_registration", key=mismatch_key,
                         value=schemas.encode("connect/source_offset", {"source": "x", "ts_ms": 1}))
        assert producer.flush(10) == 0
        with psycopg2.connect(e2e_db) as pg, pg.cursor() as cur:
            # ... and a USCC failing its check digit at the source
            bad = a[:17] + ("0" if a[17] != "0" else "1")
            cur.execute("INSERT INTO enterprise_registration (uscc, name, status) VALUES (%s, '坏数据有限公司', 'active')", (bad,))
            pg.commit()
            # ... and a legal representative's ID number failing the GB 11643 check digit
            id_rng = random.Random(f"{unique}:id")
            bad_id_uscc, good_id = make_uscc(id_rng, "500103"), make_id_number(id_rng, "500103")
            bad_id = good_id[:17] + ("0" if good_id[17] != "0" else "1")
            cur.execute("INSERT INTO enterprise_registration (uscc, name, legal_rep_id_number, status)"
                        " VALUES (%s, '坏证件有限公司', %s, 'active')", (bad_id_uscc, bad_id))
            pg.commit()
            # 3. live changes
            cur.execute("UPDATE enterprise_registration SET status = 'revoked' WHERE uscc = %s", (a,))
            pg.commit()
            cur.execute("INSERT INTO abnormal_operation (uscc, reason_code, listed_date) "
                        "VALUES (%s, 'unreachable_address', CURRENT_DATE)", (b,))
            pg.commit()
            cur.execute("UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", (c,))
            pg.commit()
            cur.execute("UPDATE enterprise_registration SET legal_rep_phone = '13912345678', legal_rep_name = '王小明' "
                        "WHERE uscc = %s", (d,))
            pg.commit()

        def alerts_for(bank: str) -> list[dict]:
            p.check_alive()
            alerts.poll(0.3)
            return [schemas.decode(m.value(), "risk/alert")[1] for m in alerts.messages
                    if m.topic() == f"alerts.{bank}" and m.key() and m.key().decode() in (a, b, c, d)]

        got = wait_for(lambda: len(alerts_for(consented)) >= 2 and alerts_for(consented), 90,
                       lambda: "alerts for the consented bank\n" + p.logs_tail())
        by_uscc = {x["uscc"]: x for x in got}
        assert set(by_uscc) == {a, b}, "only enterprises with an active consent reach the bank"
        assert by_uscc[a]["reason_codes"][0] == "STATUS_REVOKED" and by_uscc[a]["severity"] == "critical"
        assert (by_uscc[a]["before"]["status"], by_uscc[a]["after"]["status"]) == ("active", "revoked")
        assert by_uscc[b]["reason_codes"][0] == "ABNORMAL_OPERATION_LISTED"
        assert all(x["bank_id"] == consented and x["consent_id"] for x in got)
        assert all(x["published_ts_ms"] >= x["detected_ts_ms"] >= x["event_ts_ms"] > 0 for x in got)

        # C's change went through (its risk change is in ClickHouse), yet nobody got an alert
        wait_for(lambda: p.sql("SELECT count() FROM risk_change FINAL WHERE uscc = {u:String}", u=c) == [[1]], 60,
                 "C's risk change in ClickHouse")
        wait_for(lambda: p.sql("SELECT status FROM enterprise_profile FINAL WHERE uscc = {u:String}", u=a) == [["revoked"]],
                 60, "A's profile to show the revocation")
        alerts.poll(1.0)
        assert alerts_for(unconsented) == [], "a bank without consent receives nothing"
        assert {x["uscc"] for x in alerts_for(consented)} == {a, b}

        # every delivery is audited in ClickHouse
        wait_for(lambda: p.sql("SELECT count() FROM alert_delivery FINAL WHERE bank_id = {b:String}", b=consented) == [[2]],
                 60, "two alert_delivery rows")

        # the bad row went to the dead-letter topic with provenance, and into dlq_event
        dlq = topic_reader(["dlq.dept.market.enterprise_registration"], from_end=False)
        def dead_letters():
            dlq.poll(0.3)
            keys = {m.key() for m in dlq.messages}
            return {bad.encode(), bad_id_uscc.encode(), garbage_key, mismatch_key} <= keys
        wait_for(dead_letters, 30, "the four dead letters")
        # at least once: a record the worker read again after a rebalance is dead-lettered again
        dead = _one_source_record([m for m in dlq.messages if m.key() == bad.encode()])
        h = parse_dlq_headers(dead.headers())
        assert h["topic"] == "dept.market.enterprise_registration" and int(h["offset"]) >= 0
        assert h["error.kind"] == "validation" and "check digit" in h["error.message"]
        assert schemas.decode(dead.value())[1]["after"]["uscc"] == bad, "the original bytes are kept"
        by_key = {m.key(): m for m in dlq.messages}
        assert by_key[garbage_key].value() == b"\x00not avro at all"
        assert parse_dlq_headers(by_key[garbage_key].headers())["error.kind"] == "decode"
        assert parse_dlq_headers(by_key[mismatch_key].headers())["error.kind"] == "schema_mismatch"
        wait_for(lambda: p.sql("SELECT error_kind FROM dlq_event WHERE source_topic = 'dept.market.enterprise_registration'"
                               " AND error_message LIKE {m:String}", m=f"%{bad[:4]}%"), 30, "the dead letter in dlq_event")
        # the bad ID number: dead-lettered naming the field and the rule, never the number
        dead_id = _one_source_record([m for m in dlq.messages if m.key() == bad_id_uscc.encode()])
        h = parse_dlq_headers(dead_id.headers())
        assert (h["error.kind"], h["error.field"]) == ("validation", "legal_rep_id_number")
        assert h["error.message"] == ("enterprise_registration.legal_rep_id_number: fails the GB 11643 check digit"
                                      " (rule gb11643.check_digit)")
        assert schemas.decode(dead_id.value())[1]["after"]["legal_rep_id_number"] == bad_id, "the original bytes are kept"
        in_ch = wait_for(lambda: p.sql("SELECT DISTINCT error_kind, error_field, error_message FROM dlq_event"
                                       " WHERE source_topic = 'dept.market.enterprise_registration'"
                                       " AND error_field = 'legal_rep_id_number'"), 30, "the bad ID's dead letter in dlq_event")
        assert [r[:2] for r in in_ch] == [["validation", "legal_rep_id_number"]] and "gb11643" in in_ch[0][2]
        assert not any(bad_id[i:i + 6] in in_ch[0][2] for i in range(13)), "no part of the number in dlq_event"

        # revocation stops alerts: revoke B, change B again, see the change land, no alert
        p.registry(lambda reg: reg.revoke(consented, b, recorded_by="consent"))
        with psycopg2.connect(e2e_db) as pg, pg.cursor() as cur:
            cur.execute("UPDATE enterprise_registration SET status = 'suspended' WHERE uscc = %s", (b,))
        wait_for(lambda: p.sql("SELECT count() FROM risk_change FINAL WHERE uscc = {u:String}", u=b) == [[2]], 60,
                 "B's second risk change in ClickHouse")
        alerts.poll(1.0)
        assert len([x for x in alerts_for(consented) if x["uscc"] == b]) == 1, "no alert after revocation"

        # no raw personal data downstream: not on the topics, not in ClickHouse
        with psycopg2.connect(e2e_db) as pg, pg.cursor() as cur:
            cur.execute("SELECT legal_rep_id_number, legal_rep_phone, legal_rep_name FROM enterprise_registration"
                        " WHERE legal_rep_id_number IS NOT NULL")
            rows = cur.fetchall()
        # ID and phone numbers must not appear anywhere, not even inside other text; a person's
        # name must not be any field's value (a company name may contain a 2-character name by chance).
        raw_numbers = {v for row in rows for v in row[:2] if v}
        raw_names = {row[2] for row in rows if row[2]}
        assert "13912345678" in raw_numbers and "王小明" in raw_names

        def leaks(text: str) -> list[str]:
            return [v for v in raw_numbers if v in text] + [n for n in raw_names if json.dumps(n, ensure_ascii=False) in text]
        downstream = topic_reader(DOWNSTREAM + alert_topics, from_end=False)
        ours = set(usccs)

        def scanned() -> int:
            downstream.poll(1.0)
            return sum(1 for m in downstream.messages if m.key() and m.key().decode() in ours)
        wait_for(lambda: scanned() >= 400, 60, "our records on the downstream topics")
        for m in downstream.messages:
            if not m.key() or m.key().decode() not in ours or m.value() is None:
                continue
            name, record = schemas.decode(m.value())
            assert find_pii(record) is None, f"raw PII on {m.topic()}"
            text = json.dumps(record, ensure_ascii=False, default=str)
            assert not leaks(text), f"raw personal values on {m.topic()} ({name})"
        for table in ("enterprise_event", "enterprise_profile", "risk_change", "alert_delivery"):
            rows = p.sql(f"SELECT * FROM {table} WHERE has({{u:Array(String)}}, uscc)", u=usccs)  # table from a fixed list
            assert rows, table
            text = json.dumps(rows, ensure_ascii=False, default=str)
            assert not leaks(text), f"raw personal values in ClickHouse table {table}"
            assert all(find_pii({"row": json.dumps(r, ensure_ascii=False, default=str)}) is None for r in rows), table
        # operators see it: events, dead letters and end-to-end latency on /metrics
        worker = p.metrics("WORKER")
        assert worker['yurong_e2e_latency_seconds_count{stage="alert_published"}'] >= 2
        assert worker['yurong_dlq_total{component="worker",kind="validation",topic="dept.market.enterprise_registration"}'] >= 1
        assert worker['yurong_events_out_total{component="worker",topic="enterprise.events"}'] >= 200
        sink = p.metrics("SINK")
        assert sink['yurong_e2e_latency_seconds_count{stage="profile_written"}'] >= 200
        assert sink['yurong_sink_rows_total{table="enterprise_profile"}'] >= 200
        connector = p.metrics("CONNECTOR")
        assert connector['yurong_events_out_total{component="connector",topic="dept.market.enterprise_registration"}'] >= 200

        masked = p.sql("SELECT legal_rep_phone_masked, legal_rep_name_masked FROM enterprise_profile FINAL WHERE uscc = {u:String}", u=d)
        assert masked == [["139****5678", "王**"]]
