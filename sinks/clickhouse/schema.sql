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
TTL toDateTime(event_ts) + INTERVAL 5 YEAR
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

CREATE TABLE IF NOT EXISTS sql_audit
(
    ts          DateTime64(3, 'UTC') DEFAULT now64(3),
    principal   String,
    query       String,
    rows        UInt64,
    ok          Bool,
    error       String
)
ENGINE = MergeTree
ORDER BY ts
TTL toDateTime(ts) + INTERVAL 3 YEAR;
