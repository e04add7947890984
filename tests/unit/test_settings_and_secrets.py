"""Settings come from YURONG_* variables; the pseudonymisation key is never in code or logs."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from streams.worker.secrets import generate_key_file, load_pseudonymizer


def test_defaults_are_the_local_stack(monkeypatch):
    for var in ("YURONG_KAFKA_BOOTSTRAP_SERVERS", "YURONG_CLICKHOUSE_DSN", "YURONG_HOME"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.clickhouse.is_embedded and s.clickhouse_dsn.startswith("chdb://") and s.clickhouse_dsn.endswith("/chdb")


def test_environment_overrides_and_server_dsn(monkeypatch, tmp_path):
    monkeypatch.setenv("YURONG_HOME", str(tmp_path))
    monkeypatch.setenv("YURONG_CLICKHOUSE_DSN", "http://yurong:s3cret@ch:8123/yurong")
    monkeypatch.setenv("YURONG_KAFKA_TOPIC_PARTITIONS", "12")
    s = Settings()
    assert not s.clickhouse.is_embedded and s.kafka.topic_partitions == 12
    assert s.paths.home == tmp_path


def test_missing_key_is_a_clear_start_up_error(monkeypatch):
    monkeypatch.delenv("YURONG_MASKING_HMAC_KEY", raising=False)
    monkeypatch.delenv("YURONG_MASKING_KEY_FILE", raising=False)
    with pytest.raises(ConfigError, match="YURONG_MASKING_HMAC_KEY"):
        load_pseudonymizer(Settings())


def test_short_key_is_refused(monkeypatch):
    monkeypatch.setenv("YURONG_MASKING_HMAC_KEY", "too-short")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_pseudonymizer(Settings())


def test_key_file_is_private_and_stable(monkeypatch, tmp_path):
    path = generate_key_file(tmp_path / "secrets" / "k")
    assert path.stat().st_mode & 0o077 == 0, "only the owner may read the key"
    assert generate_key_file(path).read_text() == path.read_text(), "an existing key is never replaced"
    monkeypatch.delenv("YURONG_MASKING_HMAC_KEY", raising=False)
    monkeypatch.setenv("YURONG_MASKING_KEY_FILE", str(path))
    p1, p2 = load_pseudonymizer(Settings()), load_pseudonymizer(Settings())
    assert p1.pseudonym("id_number", "50010319800101001X") == p2.pseudonym("id_number", "50010319800101001X")


def test_secrets_are_not_printed(monkeypatch):
    monkeypatch.setenv("YURONG_MASKING_HMAC_KEY", "k" * 40)
    monkeypatch.setenv("YURONG_REDIS_URL", "redis://:hunter2@redis:6379/0")
    s = Settings()
    shown = repr(s.masking) + str(s.masking) + repr(s.redis) + repr(load_pseudonymizer(s))
    assert "k" * 40 not in shown and "hunter2" not in shown
