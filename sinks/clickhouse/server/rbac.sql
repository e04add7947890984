-- yurong on a ClickHouse server: users, roles, settings profiles and the analysts' quota
-- (docs/security.md, "ClickHouse users and roles (server mode)"). The embedded chDB store has no
-- users; this file is for the server of docker-compose.yml or any other deployment.
--
-- Run as an administrator with access management (compose: the CLICKHOUSE_USER of the official
-- image, with CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT=1), through init-rbac.sh, never by hand with
-- passwords typed in: the passwords are query parameters, {<user>_password:String}, which
-- init-rbac.sh sets with `SET param_<user>_password = '…'` lines ahead of this file on the client's
-- standard input; the server substitutes them. No password is in this file, in git or on a command
-- line, and the server's query_masking_rules (config.d/yurong-access.xml) hide the SET lines'
-- values in its logs and system.query_log.
--
-- It can run at every server start: every object is made with OR REPLACE, in an order where
-- nothing refers to an object made after it (profiles, roles and their grants, users and their
-- roles, the quota), so a run leaves exactly what this file says and repairs drift. The official
-- image runs it before the server listens on anything but 127.0.0.1.
--
-- The DSNs the sink service gets (docker-compose.yml builds them from .env):
--   YURONG_CLICKHOUSE_DSN=http://yurong_sink:<pw>@clickhouse:8123/yurong
--   YURONG_CLICKHOUSE_ROLE_DSNS={"analyst": "http://yurong_analyst_gw:<pw>@clickhouse:8123/yurong",
--                                "auditor": "http://yurong_auditor_gw:<pw>@clickhouse:8123/yurong",
--                                "operator": "http://yurong_operator_gw:<pw>@clickhouse:8123/yurong"}
-- The sink writes as yurong_sink; its SQL gateway runs a caller's query as the *_gw user of the
-- caller's verified role. No service holds the administrator's password.
--
-- tests/unit/test_clickhouse_rbac_sql.py parses every statement with the ClickHouse engine of
-- chDB (EXPLAIN AST) and checks the grants; a ClickHouse server was not run against it there.

CREATE DATABASE IF NOT EXISTS yurong;
CREATE DATABASE IF NOT EXISTS yurong_audit;

-- ---------------------------------------------------------------- settings profiles
-- What an analyst, auditor or operator query may cost. Every limit is also a constraint,
-- MIN 1 MAX <limit>: a client can lower a limit but neither raise it nor set it to 0, which
-- ClickHouse reads as "unlimited". readonly = 1 CONST: only reads, and no setting can be changed at
-- all (a SET or a setting sent with a query is refused).
CREATE SETTINGS PROFILE OR REPLACE yurong_readonly SETTINGS
    readonly = 1 CONST,
    max_execution_time = 60 MIN 1 MAX 60,
    max_memory_usage = 2000000000 MIN 1 MAX 2000000000,
    max_rows_to_read = 500000000 MIN 1 MAX 500000000,
    max_bytes_to_read = 50000000000 MIN 1 MAX 50000000000,
    max_result_rows = 100000 MIN 1 MAX 100000,
    max_result_bytes = 200000000 MIN 1 MAX 200000000,
    max_threads = 2 MIN 1 MAX 2;

-- ---------------------------------------------------------------- roles (the gateway's role names)
-- Analysts: SELECT on the analytic tables and views of sinks/clickhouse/schema.sql, named one by
-- one (a table added later is not readable until it is added here), nothing in yurong_audit.
-- Nothing but SELECT: no sources (file, url, remote, s3, …), no dictionaries, no SHOW beyond what
-- SELECT implies, no system tables (config.d/yurong-access.xml makes those need a grant).
CREATE ROLE OR REPLACE yurong_analyst;
GRANT SELECT ON yurong.enterprise_profile TO yurong_analyst;
GRANT SELECT ON yurong.enterprise_profile_history TO yurong_analyst;
GRANT SELECT ON yurong.enterprise_profile_as_of TO yurong_analyst;
GRANT SELECT ON yurong.related_party TO yurong_analyst;
GRANT SELECT ON yurong.enterprise_related TO yurong_analyst;
GRANT SELECT ON yurong.enterprise_event TO yurong_analyst;
GRANT SELECT ON yurong.risk_change TO yurong_analyst;
GRANT SELECT ON yurong.alert_delivery TO yurong_analyst;
GRANT SELECT ON yurong.dlq_event TO yurong_analyst;
GRANT SELECT ON yurong.dept_assessment TO yurong_analyst;
GRANT SELECT ON yurong.connector_heartbeat TO yurong_analyst;

-- Auditors: the analysts' query audit and the alert deliveries, nothing else.
CREATE ROLE OR REPLACE yurong_auditor;
GRANT SELECT ON yurong_audit.sql_audit TO yurong_auditor;
GRANT SELECT ON yurong.alert_delivery TO yurong_auditor;

-- Operators: read every yurong table, erase an enterprise's rows (ALTER DELETE); nothing in
-- yurong_audit.
CREATE ROLE OR REPLACE yurong_operator;
GRANT SELECT ON yurong.* TO yurong_operator;

-- ---------------------------------------------------------------- users
-- The sink: makes and evolves the yurong schema (schema.sql, retention TTLs) and writes its rows.
-- In yurong_audit it may create the audit table and append to it, and read only the columns that
-- continue the hash chain (chain, seq, hash) and seed the analysts' hourly quotas after a restart
-- (ts, principal, action, outcome, rows_read, elapsed_ms) — never a query's text or parameters. No ALTER (which holds ALTER DELETE, ALTER UPDATE and MODIFY TTL),
-- TRUNCATE, DROP or OPTIMIZE there: it cannot rewrite or shorten the audit.
CREATE USER OR REPLACE yurong_sink
    IDENTIFIED WITH sha256_password BY {sink_password:String}
    HOST ANY
    DEFAULT DATABASE yurong;
GRANT CREATE DATABASE, CREATE TABLE, CREATE VIEW, ALTER, INSERT, SELECT ON yurong.* TO yurong_sink;
GRANT CREATE DATABASE ON yurong_audit.* TO yurong_sink;
GRANT CREATE TABLE, INSERT, SELECT(chain, seq, hash, ts, principal, action, outcome, rows_read, elapsed_ms)
    ON yurong_audit.sql_audit TO yurong_sink;
-- system tables need a grant (config.d/yurong-access.xml): the sink reads the stored TTLs of its
-- tables, the gateway's analyst login the function catalogue its sandbox allows from.
GRANT SELECT ON system.tables TO yurong_sink;

-- The gateway's three logins, one per verified caller role, each holding only its role.
CREATE USER OR REPLACE yurong_analyst_gw
    IDENTIFIED WITH sha256_password BY {analyst_gw_password:String}
    HOST ANY
    DEFAULT DATABASE yurong
    SETTINGS PROFILE 'yurong_readonly';
GRANT yurong_analyst TO yurong_analyst_gw;
-- the function catalogue the gateway's sandbox allows from (the analysts' queries cannot name it)
GRANT SELECT ON system.functions TO yurong_analyst_gw;
SET DEFAULT ROLE yurong_analyst TO yurong_analyst_gw;

CREATE USER OR REPLACE yurong_auditor_gw
    IDENTIFIED WITH sha256_password BY {auditor_gw_password:String}
    HOST ANY
    DEFAULT DATABASE yurong
    SETTINGS PROFILE 'yurong_readonly';
GRANT yurong_auditor TO yurong_auditor_gw;
SET DEFAULT ROLE yurong_auditor TO yurong_auditor_gw;

CREATE USER OR REPLACE yurong_operator_gw
    IDENTIFIED WITH sha256_password BY {operator_gw_password:String}
    HOST ANY
    DEFAULT DATABASE yurong
    SETTINGS PROFILE 'yurong_readonly';
GRANT yurong_operator TO yurong_operator_gw;
SET DEFAULT ROLE yurong_operator TO yurong_operator_gw;

-- ---------------------------------------------------------------- quota
-- Per hour, for the analysts' login. Keyed by the client's quota key, else the user name: the
-- gateway can pass each verified analyst as the quota key (HTTP `quota_key`), so that each analyst
-- has the limits below; a query without one counts against the yurong_analyst_gw user as a whole.
CREATE QUOTA OR REPLACE yurong_analyst_quota
    KEYED BY client_key, user_name
    FOR INTERVAL 1 hour MAX queries = 600, errors = 300, result_rows = 10000000,
        read_rows = 20000000000, execution_time = 1800
    TO yurong_analyst_gw;
