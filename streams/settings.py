"""Typed settings, one class per concern, read once from ``YURONG_*`` variables (and ``.env``).

Defaults give the local embedded stack started by ``yurong stack up`` (see scripts/stack.sh):
Kafka (SASL_SSL) on 127.0.0.1:19092 with credentials under ``$YURONG_HOME/secrets/kafka``, Redis
on 16379, the market department's PostgreSQL on 15432 and an embedded chDB under
``$YURONG_HOME/chdb``. Secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


class PathSettings(BaseSettings):
    """Where local state lives."""

    model_config = _config("YURONG_")
    home: Path = Field(default=REPO_ROOT / ".yurong", description="local data folder of the embedded stack")
    avro_dir: Path = Field(default=REPO_ROOT / "avro", description="folder of the .avsc schemas")


class KafkaSettings(BaseSettings):
    """Kafka client settings shared by connectors, workers, sinks and the CLI.

    Every client logs in over TLS with SCRAM-SHA-512 (PLAINTEXT is not offered). The user is the
    component's own principal (``worker``, ``sink``, ``connector-<dept>``, ``consent``,
    ``operator``, DESIGN §8) unless ``username`` names another; its password is ``password`` or
    else the file ``<secrets_dir>/<user>.password`` that ``yurong security apply`` writes.
    """

    model_config = _config("YURONG_KAFKA_")
    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["SASL_SSL"] = Field(default="SASL_SSL", description="TLS + SASL; nothing else is offered")
    sasl_mechanism: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str = Field(default="", description="SCRAM user; empty: the component's own principal")
    password: SecretStr | None = Field(default=None, description="SCRAM password; empty: read <secrets_dir>/<user>.password")
    secrets_dir: Path | None = Field(default=None, description="folder of the principals' password files and the CA; "
                                                               "default $YURONG_HOME/secrets/kafka")
    ca_location: Path | None = Field(default=None, description="CA certificate (PEM) the broker's certificate chains to; "
                                                               "default <secrets_dir>/ca.crt")
    topic_partitions: int = Field(default=4, ge=1, description="partitions of enterprise.* and risk.* topics")
    replication_factor: int = Field(default=1, ge=1)
    dept_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, description="raw dept.* topics hold PII: short retention")


class ClickHouseSettings(BaseSettings):
    """Analytics store: embedded chDB by default, any ClickHouse server by DSN."""

    model_config = _config("YURONG_CLICKHOUSE_")
    dsn: str = Field(default="", description="clickhouse-connect DSN; empty means chdb://$YURONG_HOME/chdb")
    database: str = "yurong"
    batch_size: int = Field(default=10_000, ge=1, description="max rows the sink writes in one insert")
    batch_seconds: float = Field(default=1.0, gt=0, description="max wait before a partial batch is written")
    query_port: int = Field(default=19123, description="the analysts' SQL gateway, served by the sink")
    role_dsns: dict[str, SecretStr] = Field(default_factory=dict, description="server mode: DSN per SQL role "
                                            "(analyst, auditor, operator), each a ClickHouse user holding only that "
                                            "role (sinks/clickhouse/server/rbac.sql); JSON")
    store_wait_s: float = Field(default=120.0, ge=0, description="how long the sink waits for an embedded store another "
                                "process holds before it gives up")

    def resolved_dsn(self, home: Path) -> str:
        return self.dsn or f"chdb://{home / 'chdb'}"

    @property
    def is_embedded(self) -> bool:
        return not self.dsn or self.dsn.startswith("chdb:")


class RedisSettings(BaseSettings):
    """Consent and watchlist registry, alert de-duplication.

    Every component logs in as its own Redis ACL user (``worker``, ``cli``; DESIGN §8) unless
    ``username`` names another; its password is ``password`` or else the file
    ``<secrets_dir>/<user>.password`` that ``scripts/stack.sh up`` writes. ``url`` says where Redis
    is (scheme, host, port, database); the components do not use credentials written into it.
    """

    model_config = _config("YURONG_REDIS_")
    url: SecretStr = Field(default=SecretStr("redis://127.0.0.1:16379/0"),
                           description="redis:// or rediss:// URL: host, port and database, no credentials")
    username: str = Field(default="", description="ACL user; empty: the component's own (worker, cli)")
    password: SecretStr | None = Field(default=None, description="the user's password; empty: read <secrets_dir>/<user>.password")
    secrets_dir: Path | None = Field(default=None, description="folder of the users' password files; "
                                                               "default $YURONG_HOME/secrets/redis")
    key_prefix: str = Field(default="yurong:", description="prefix of every key; the ACL users reach only yurong:* "
                            "(and, on the local stack, the tests' yurong-test:*)")


class MaskingSettings(BaseSettings):
    """De-identification keys (脱敏). The HMAC key is a secret: from a file (a deployment's secret store), never
    from code; the key id is public (docs/security.md, "Pseudonyms and keys")."""

    model_config = _config("YURONG_MASKING_")
    hmac_key: SecretStr | None = Field(default=None, description="pseudonymisation key, at least 32 bytes (tests; a "
                                       "deployment uses key_file)")
    key_file: Path | None = Field(default=None, description="file holding the key, `<key id>:<key>` or the key alone "
                                  "(stack up and the demo make one)")
    key_id: str | None = Field(default=None, pattern=r"^p[0-9]+$", description="id of the key (p1, p2, …) when the "
                               "key itself does not carry one; default p1. Prefixes every pseudonym")


class SourceSettings(BaseSettings):
    """Where each department's data comes from.

    A department's connection is ``dsns[<dept>]`` if given (``YURONG_SOURCE_DSNS`` as JSON,
    e.g. ``{"tax": "postgresql://cdc:…@tax-db:5432/tax"}``), else the template of its source
    kind with ``{db}`` = the department name — the local stack's databases. File-drop
    departments read ``drop_dir/<dept>``.
    """

    model_config = _config("YURONG_SOURCE_")
    market_dsn: SecretStr | None = Field(default=None, description="the market department's DSN (shortcut for dsns.market)")
    dsns: dict[str, SecretStr] = Field(default_factory=dict)
    postgres_template: SecretStr = SecretStr("postgresql://yurong:yurong@127.0.0.1:15432/{db}")
    mysql_template: SecretStr = SecretStr("mysql://yurong:yurong@127.0.0.1:13306/{db}")
    drop_dir: Path | None = Field(default=None, description="root of the file-drop folders; default $YURONG_HOME/drops")
    flush_interval_s: float = Field(default=0.2, gt=0,
                                    description="how often the connector waits for Kafka acks and then acknowledges the LSN")
    status_interval_s: float = Field(default=10.0, gt=0, description="standby status (keepalive) interval towards PostgreSQL")
    poll_interval_s: float = Field(default=2.0, gt=0, description="how often polling and file-drop sources look for news")
    drop_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="a dropped file larger than this (for "
                                "XLSX: its uncompressed content) is rejected unread")
    drop_max_rows: int = Field(default=2_000_000, ge=1, description="a dropped file with more data rows is rejected")
    heartbeat_interval_s: float = Field(default=5.0, ge=0, description="how often a connector writes position, lag and "
                                        "snapshot progress to connect.heartbeats, even when idle (0: never)")

    def dsn(self, dept: str, kind: str) -> str:
        """The connection string of department ``dept`` whose source kind is ``kind``."""
        if dept in self.dsns:  # the explicit per-department map wins over the market shortcut
            return self.dsns[dept].get_secret_value()
        if dept == "market" and self.market_dsn is not None:
            return self.market_dsn.get_secret_value()
        template = self.mysql_template if kind == "mysql" else self.postgres_template
        return template.get_secret_value().format(db=dept)


class WorkerSettings(BaseSettings):
    """The Faust worker."""

    model_config = _config("YURONG_WORKER_")
    app_id: str = Field(default="yurong-worker", description="Faust app id: the consumer group and the prefix of "
                        "Faust's internal topics; must start with yurong-worker (the worker's ACLs)")
    metadata_max_age_ms: int = Field(default=5000, ge=100, description="how often the worker refreshes topic metadata: "
                                     "how soon it consumes a topic created after it started")
    web_port: int = 6066
    store: str = "memory://"
    reread_check_s: float = Field(default=5.0, gt=0, description="how often the worker looks for partitions whose "
                                  "fetched records Faust dropped without handling them (streams/worker/faust_fixes/liveness.py)")
    fetch_min_bytes: int = Field(default=65536, ge=1, description="the broker answers the worker's fetch once this "
                                 "many bytes are there (or after fetch_max_wait_ms): fewer, larger fetches under load; "
                                 "1 = at once (streams/worker/faust_fixes/fetching.py)")
    fetch_max_wait_ms: int = Field(default=50, ge=0, description="longest a fetch waits for fetch_min_bytes: what a "
                                   "record may wait per pipeline hop when its topic is quiet")
    debezium_prefixes: dict[str, str] = Field(
        default_factory=dict,
        description="Debezium topic.prefix → department, e.g. {\"debezium\": \"market\"}: ingest what a "
                    "department's own Debezium connector writes (JSON or Avro converter) besides dept.* topics",
    )
    debezium_registry_url: str = Field(
        default="", description="schema registry of Debezium's Avro converter, e.g. "
                                "http://registry:8080/apis/registry/v2 (Apicurio) or http://registry:8081 (Confluent API)")
    debezium_registry_api: str = Field(default="apicurio", description="apicurio or confluent")
    debezium_registry_id_size: int = Field(default=8, description="bytes of the schema id after magic byte 0: "
                                                                  "8 (Apicurio globalId) or 4 (Confluent)")


class RiskSettings(BaseSettings):
    """The scorecard the merge step scores profiles with (docs/risk-scorecard.md)."""

    model_config = _config("YURONG_RISK_")
    scorecard: Path | None = Field(default=None, description="a scorecard TOML replacing streams/core/scorecard.toml")


class MetricsSettings(BaseSettings):
    """Prometheus ``/metrics`` ports per component (0 disables)."""

    model_config = _config("YURONG_METRICS_")
    connector_port: int = 9101
    worker_port: int = 9102
    sink_port: int = 9103
    bind: str = Field(default="127.0.0.1", description="listen address; 0.0.0.0 in containers")


class AlertSettings(BaseSettings):
    """Alert delivery: the throttle per bank, enterprise and category (held-back alerts are
    counted in ``yurong_alerts_throttled_total`` and recorded per bank in Redis)."""

    model_config = _config("YURONG_ALERTS_")
    throttle_max: int = Field(default=10, ge=0, description="alerts per bank, enterprise and category in a window (0: no throttle)")
    throttle_window_s: float = Field(default=3600.0, gt=0, description="the throttle's sliding window, seconds")

    @property
    def throttle_window_ms(self) -> int:
        return max(1, int(self.throttle_window_s * 1000))


class AnalystSettings(BaseSettings):
    """The analysts' SQL gateway (``sinks/analyst``): who may ask, what a query may cost, the audit.

    A client sends ``YURONG_ANALYST_TOKEN`` (or the file ``token_file``), issued by
    ``yurong analyst add``; the gateway checks it against ``credentials_file`` (scrypt hashes).
    Each query runs read-only under the limits below, which the query itself cannot change.
    """

    model_config = _config("YURONG_ANALYST_")
    token: SecretStr | None = Field(default=None, description="this client's bearer token (yra1.<name>.<secret>)")
    token_file: Path | None = Field(default=None, description="file holding this client's token")
    credentials_file: Path | None = Field(default=None, description="principals and scrypt hashes; default "
                                                                    "$YURONG_HOME/secrets/analysts.json")
    url: str = Field(default="", description="the gateway's URL for clients; default http://127.0.0.1:<query_port>")
    bind: str = Field(default="127.0.0.1", description="address the gateway listens on")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host header values accepted besides "
                                     "127.0.0.1/localhost:<port> (against DNS rebinding); JSON list")
    max_execution_time_s: int = Field(default=60, ge=1, description="a query is stopped after this many seconds")
    max_memory_usage: int = Field(default=2 * 1024**3, ge=1, description="bytes of memory one query may use")
    max_rows_to_read: int = Field(default=500_000_000, ge=1, description="rows one query may read")
    max_bytes_to_read: int = Field(default=50 * 1024**3, ge=1, description="bytes one query may read")
    max_result_rows: int = Field(default=100_000, ge=1, description="rows one query may return")
    max_result_bytes: int = Field(default=200 * 1024**2, ge=1, description="bytes one query may return")
    max_threads: int = Field(default=1, ge=1, description="engine threads per query: the pipeline keeps the rest")
    sessions_per_role: int = Field(default=2, ge=1, description="queries of one role that run at once")
    per_analyst_concurrency: int = Field(default=1, ge=1, description="queries of one analyst that run at once")
    queue_wait_s: float = Field(default=10.0, ge=0, description="how long a query waits for a free session")
    quota_queries_per_hour: int = Field(default=600, ge=1)
    quota_rows_read_per_hour: int = Field(default=20_000_000_000, ge=1)
    quota_seconds_per_hour: int = Field(default=1800, ge=1, description="engine time one analyst may use per hour")
    audit_database: str = Field(default="yurong_audit", pattern=r"^[a-z_][a-z0-9_]*$")
    audit_retention_days: int = Field(default=365, ge=180, description="the SQL audit is kept this long (≥180: "
                                      "网络安全法 第二十一条)")
    audit_chain: str = Field(default="", description="name of this gateway's audit chain; default the host name")

    def credentials_path(self, home: Path) -> Path:
        return self.credentials_file or home / "secrets" / "analysts.json"

    def read_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip()
        return None


class AssessSettings(BaseSettings):
    """The data-sharing assessment (数据汇集考核) the sink computes: docs/assessment.md."""

    model_config = _config("YURONG_ASSESS_")
    interval_s: float = Field(default=60.0, gt=0, description="how often the sink re-assesses today (live)")
    config: Path | None = Field(default=None, description="weights, targets, limits and cadences; default "
                                                          "streams/core/assessment.toml")


class RetentionSettings(BaseSettings):
    """How long enterprise data is kept (docs/security.md, "Data lifecycle"), in days.

    The ClickHouse tables get a TTL from these at every start of the sink (``apply_schema``): a
    changed value is applied to the stored rows too. The file-drop source purges the originals it
    moved to ``done/`` once their modification time is older than ``drop_done_days``. Raw ``dept.*``
    topics have their own, shorter retention (``YURONG_KAFKA_DEPT_RETENTION_MS``). Five years
    (1826 days) is how long negative credit information may be kept (征信业管理条例, art. 16).
    """

    model_config = _config("YURONG_RETENTION_")
    profile_days: int = Field(default=1826, ge=1, le=36_500, description="enterprise_profile and "
                              "enterprise_profile_history: a profile version is dropped this long after the source "
                              "time of the event that made it (last_event_ts); default 5 years")
    event_days: int = Field(default=1826, ge=1, le=36_500, description="enterprise_event, from the source commit time "
                            "(event_ts); default 5 years")
    risk_change_days: int = Field(default=1826, ge=1, le=36_500, description="risk_change, from the source time of the "
                                  "change (event_ts); default 5 years")
    alert_delivery_days: int = Field(default=1826, ge=1, le=36_500, description="alert_delivery (what was sent to which "
                                     "bank under which consent), from published_ts; default 5 years")
    dlq_event_days: int = Field(default=90, ge=1, le=36_500, description="dlq_event (dead-letter metadata, no values), "
                                "from dead_lettered_ts; default 90 days")
    drop_done_days: int = Field(default=7, ge=1, le=36_500, description="file-drop originals in done/ (raw department "
                                "data, PII included) are deleted this long after their modification time; default 7 "
                                "days, like the raw dept.* topics")


class Settings:
    """All settings, read once per process."""

    def __init__(self) -> None:
        self.paths = PathSettings()
        self.kafka = KafkaSettings()
        self.clickhouse = ClickHouseSettings()
        self.analyst = AnalystSettings()
        self.assess = AssessSettings()
        self.redis = RedisSettings()
        self.masking = MaskingSettings()
        self.source = SourceSettings()
        self.worker = WorkerSettings()
        self.risk = RiskSettings()
        self.metrics = MetricsSettings()
        self.alerts = AlertSettings()
        self.retention = RetentionSettings()

    @property
    def kafka_secrets_dir(self) -> Path:
        return self.kafka.secrets_dir or self.paths.home / "secrets" / "kafka"

    @property
    def redis_secrets_dir(self) -> Path:
        return self.redis.secrets_dir or self.paths.home / "secrets" / "redis"

    @property
    def drop_dir(self) -> Path:
        return self.source.drop_dir or self.paths.home / "drops"

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.resolved_dsn(self.paths.home)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
