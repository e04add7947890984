-- yurong analytics schema (ClickHouse / chDB). Applied idempotently by `yurong sink` and
-- `yurong sql --init`, statement by statement, inside the configured database.
-- Versions come from source positions, so a replayed batch changes nothing after merges;
-- read the latest state with FINAL (or argMax(..., version)).
-- No table holds a raw ID number, phone, bank account or natural person's name.

CREATE TABLE IF NOT EXISTS enterprise_profile
(
    uscc                     String,
    name                     Nullable(String),
    status                   LowCardinality(Nullable(String)),
    district_code            LowCardinality(Nullable(String)),
    industry_code            LowCardinality(Nullable(String)),
    registered_capital       Nullable(Float64) COMMENT '10k CNY',
    established_date         Nullable(Date),
    legal_rep_pseudonym      Nullable(String) COMMENT 'keyed HMAC pseudonym: links one person across enterprises',
    legal_rep_id_masked      Nullable(String),
    legal_rep_name_masked    Nullable(String),
    legal_rep_phone_masked   Nullable(String),
    address_masked           Nullable(String),
    abnormal_open_count      UInt16,
    abnormal_listings_total  UInt32,
    risk_score               UInt16,
    risk_level               LowCardinality(String),
    reason_codes             Array(String),
    version                  Int64 COMMENT 'enterprise.events offset of the last merged event',
    last_event_id            String,
    last_event_ts            DateTime64(3, 'UTC') COMMENT 'source commit time of the last merged event',
    updated_ts               DateTime64(3, 'UTC'),
    written_ts               DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY uscc
SETTINGS non_replicated_deduplication_window = 1000;

-- Issue 4: indicators, ratings and the score's explanation (added to tables made before them).
ALTER TABLE enterprise_profile
    ADD COLUMN IF NOT EXISTS indicators Map(String, Float64) COMMENT 'derived indicators (streams/core/indicators.py)' AFTER abnormal_listings_total,
    ADD COLUMN IF NOT EXISTS ratings Map(String, String) COMMENT 'latest ratings / certificate states' AFTER indicators,
    ADD COLUMN IF NOT EXISTS score_factors Array(Tuple(code String, points Int32, value Nullable(String)))
        COMMENT 'scorecard factors that applied, adverse first' AFTER reason_codes;

-- Every version of every profile: what was known about an enterprise at any time.
-- As of a date: SELECT * FROM enterprise_profile_as_of(as_of = '2026-06-30 00:00:00') WHERE uscc = ...
-- Same columns as enterprise_profile, copied from it when the table is made (so after the ALTERs
-- above); a row's version / last_event_ts are those of the event that made that version, which
-- holds from last_event_ts. A later ALTER of enterprise_profile's columns must be repeated for
-- enterprise_profile_history, whose existing tables it would otherwise miss.
CREATE TABLE IF NOT EXISTS enterprise_profile_history AS enterprise_profile
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(last_event_ts)
ORDER BY (uscc, version)
SETTINGS non_replicated_deduplication_window = 1000;

-- The newest version of each enterprise's profile at a given time (a parameterised view).
CREATE VIEW IF NOT EXISTS enterprise_profile_as_of AS
SELECT *
FROM enterprise_profile_history FINAL
WHERE last_event_ts <= {as_of:DateTime64(3, 'UTC')}
ORDER BY uscc, version DESC
LIMIT 1 BY uscc;

-- Related parties: enterprises sharing a legal representative, linked by the keyed pseudonym
-- of the person's ID number; the person is never revealed.
CREATE VIEW IF NOT EXISTS related_party AS
SELECT
    legal_rep_pseudonym           AS person_pseudonym,
    count()                       AS enterprises,
    groupArray(uscc)              AS usccs,
    countIf(risk_level IN ('D', 'E')) AS enterprises_at_risk,
    min(risk_score)               AS worst_score
FROM enterprise_profile FINAL
WHERE legal_rep_pseudonym IS NOT NULL
GROUP BY legal_rep_pseudonym
HAVING enterprises > 1;

-- One row per enterprise and each enterprise related to it through its legal representative.
CREATE VIEW IF NOT EXISTS enterprise_related AS
SELECT a.uscc AS uscc, b.uscc AS related_uscc, a.legal_rep_pseudonym AS person_pseudonym,
       b.risk_level AS related_risk_level, b.risk_score AS related_risk_score
FROM (SELECT uscc, legal_rep_pseudonym FROM enterprise_profile FINAL WHERE legal_rep_pseudonym IS NOT NULL) AS a
INNER JOIN (SELECT uscc, legal_rep_pseudonym, risk_level, risk_score FROM enterprise_profile FINAL
            WHERE legal_rep_pseudonym IS NOT NULL) AS b
    ON a.legal_rep_pseudonym = b.legal_rep_pseudonym
WHERE a.uscc != b.uscc;

CREATE TABLE IF NOT EXISTS enterprise_event
(
    event_id          String,
    uscc              String,
    dept              LowCardinality(String),
    dataset           LowCardinality(String),
    op                LowCardinality(String),
    attributes        Map(String, Nullable(String)) COMMENT 'masked after-image',
    before            Map(String, Nullable(String)) COMMENT 'masked before-image',
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    position          String,
    seq               UInt64,
    snapshot          LowCardinality(String),
    event_ts          DateTime64(3, 'UTC'),
    ingest_ts         DateTime64(3, 'UTC'),
    written_ts        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_ts)
ORDER BY (uscc, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS risk_change
(
    change_id       String,
    uscc            String,
    category        LowCardinality(String),
    severity        LowCardinality(String),
    reason_codes    Array(String),
    before          Map(String, Nullable(String)),
    after           Map(String, Nullable(String)),
    score_before    UInt16,
    score_after     UInt16,
    level_before    LowCardinality(String),
    level_after     LowCardinality(String),
    source_dataset  LowCardinality(String),
    source_position String,
    source_seq      UInt64,
    event_ts        DateTime64(3, 'UTC'),
    detected_ts     DateTime64(3, 'UTC'),
    written_ts      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (uscc, change_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS alert_delivery
(
    alert_id        String,
    bank_id         LowCardinality(String),
    consent_id      String,
    change_id       String,
    uscc            String,
    category        LowCardinality(String),
    severity        LowCardinality(String),
    reason_codes    Array(String),
    topic           LowCardinality(String),
    partition       UInt32,
    offset          UInt64,
    event_ts        DateTime64(3, 'UTC'),
    detected_ts     DateTime64(3, 'UTC'),
    published_ts    DateTime64(3, 'UTC'),
    written_ts      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (bank_id, alert_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS dlq_event
(
    dlq_topic       LowCardinality(String),
    dlq_partition   UInt32,
    dlq_offset      UInt64,
    source_topic    LowCardinality(String),
    source_partition Int32,
    source_offset   Int64,
    component       LowCardinality(String),
    error_kind      LowCardinality(String),
    error_class     LowCardinality(String),
    error_field     String,
    error_message   String,
    value_bytes     UInt32 COMMENT 'size of the original value; the bytes stay on the restricted dlq topic',
    dead_lettered_ts DateTime64(3, 'UTC'),
    written_ts      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (dlq_topic, dlq_partition, dlq_offset)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS connector_heartbeat
(
    source        LowCardinality(String) COMMENT 'e.g. market@market',
    dept          LowCardinality(String),
    kind          LowCardinality(String) COMMENT 'postgres, mysql, polling or file',
    position      String,
    snapshotting  Bool,
    events        UInt64 COMMENT 'change events sent since the connector started',
    lag           Nullable(Int64) COMMENT 'slot lag in bytes (PostgreSQL) or transactions behind (MariaDB)',
    ts            DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (dept, source, ts)
TTL toDateTime(ts) + INTERVAL 400 DAY
COMMENT 'every connector heartbeat (connect.<dept>.heartbeats): the assessment''s availability; no enterprise data';

CREATE TABLE IF NOT EXISTS dept_assessment
(
    day           Date,
    dept          LowCardinality(String),
    dataset       LowCardinality(String) COMMENT 'empty: the department as a whole',
    score         Float64 COMMENT '0..100',
    grade         LowCardinality(String) COMMENT 'A..E',
    dimensions    Map(String, Float64) COMMENT 'timeliness, completeness, validity, consistency, availability: 0..100',
    indicators    Map(String, Float64) COMMENT 'the measured values (lags, shares, counts)',
    reasons       Array(String) COMMENT 'each sub-score below its target, worst first',
    live          Bool COMMENT 'the day was not over when this was computed',
    computed_ts   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_ts)
ORDER BY (day, dept, dataset)
COMMENT '数据汇集考核 per department, dataset and day (sinks/assessment.py, docs/assessment.md); history kept';

-- Retention (docs/security.md, "Data lifecycle"): every table holding enterprise data gets its TTL
-- from YURONG_RETENTION_* (streams/settings.py RetentionSettings). The days are query parameters,
-- bound by apply_schema, which runs an ALTER only when the stored TTL differs from the setting
-- (a changed TTL is applied to the stored rows: materialize_ttl_after_modify).
ALTER TABLE enterprise_profile MODIFY TTL toDateTime(last_event_ts) + toIntervalDay({profile_days:UInt32});
ALTER TABLE enterprise_profile_history MODIFY TTL toDateTime(last_event_ts) + toIntervalDay({profile_days:UInt32});
ALTER TABLE enterprise_event MODIFY TTL toDateTime(event_ts) + toIntervalDay({event_days:UInt32});
ALTER TABLE risk_change MODIFY TTL toDateTime(event_ts) + toIntervalDay({risk_change_days:UInt32});
ALTER TABLE alert_delivery MODIFY TTL toDateTime(published_ts) + toIntervalDay({alert_delivery_days:UInt32});
ALTER TABLE dlq_event MODIFY TTL toDateTime(dead_lettered_ts) + toIntervalDay({dlq_event_days:UInt32});

-- The analysts' SQL audit lives in its own database (yurong_audit.sql_audit, hash-chained),
-- created by the gateway: sinks/analyst/audit.py.
