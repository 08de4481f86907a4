from pathlib import Path

import pytest

from mcs.config import Settings
from mcs.errors import ConfigError


def test_defaults_match_the_design():
    s = Settings.from_env({})
    assert (s.db, s.host, s.port) == (Path("data/mcs.db"), "127.0.0.1", 8080)
    assert (s.claim_ttl, s.agent_ttl, s.watchdog_interval) == (300, 300, 30)
    assert (s.retry_base, s.retry_max, s.max_retries, s.synchronous) == (10, 600, 3, "FULL")
    assert (s.dispatcher_metrics_port, s.watchdog_metrics_port, s.notifier_metrics_port) == (9101, 9102, 9103)


def test_fractions_and_overrides():
    s = Settings.from_env({"MCS_RETRY_BASE": "0.05", "MCS_SYNCHRONOUS": "normal", "MCS_PORT": "9000"})
    assert (s.retry_base, s.synchronous, s.port) == (0.05, "NORMAL", 9000)


@pytest.mark.parametrize(("name", "value"), [("MCS_PORT", "http"), ("MCS_CLAIM_TTL", "-1"), ("MCS_SYNCHRONOUS", "OFF")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_review_sandbox_limits_parse_and_default():
    s = Settings.from_env({})
    assert (s.review_timeout, s.review_cpu, s.review_memory_bytes) == (300, 300, 4 * 1024**3)
    s = Settings.from_env({"MCS_REVIEW_TIMEOUT": "0", "MCS_REVIEW_CPU": "2.5", "MCS_REVIEW_MEMORY_BYTES": "1000"})
    assert (s.review_timeout, s.review_cpu, s.review_memory_bytes) == (0, 2.5, 1000)
    for name in ("MCS_REVIEW_TIMEOUT", "MCS_REVIEW_CPU", "MCS_REVIEW_MEMORY_BYTES"):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: "-1"})


def test_bot_token_is_not_in_repr():
    settings = Settings.from_env({"MCS_TELEGRAM_BOT_TOKEN": "sekrit", "MCS_TELEGRAM_CHAT_ID": "42"})
    assert "sekrit" not in repr(settings)
    assert settings.alert_channels == ["telegram"]


@pytest.mark.parametrize("given", ["MCS_TELEGRAM_BOT_TOKEN", "MCS_TELEGRAM_CHAT_ID"])
def test_half_a_telegram_setup_is_refused_with_what_is_missing(given):
    with pytest.raises(ConfigError, match="Telegram alerts need both"):
        Settings.from_env({given: "x"})


def test_alert_settings_parse_and_default():
    assert Settings.from_env({}).alert_agent_offline is True
    assert Settings.from_env({}).alert_channels == []
    assert Settings.from_env({"MCS_ALERT_AGENT_OFFLINE": "off"}).alert_agent_offline is False
    both = Settings.from_env(
        {"MCS_TELEGRAM_BOT_TOKEN": "t", "MCS_TELEGRAM_CHAT_ID": "1", "MCS_ALERT_WEBHOOK_URL": "http://127.0.0.1:1/"}
    )
    assert both.alert_channels == ["telegram", "webhook"]
    with pytest.raises(ConfigError, match="MCS_ALERT_AGENT_OFFLINE"):
        Settings.from_env({"MCS_ALERT_AGENT_OFFLINE": "maybe"})
    with pytest.raises(ConfigError, match="MCS_ALERT_WEBHOOK_FORMAT"):
        Settings.from_env({"MCS_ALERT_WEBHOOK_FORMAT": "xml"})


def test_alert_urls_must_be_http_and_the_token_is_trimmed():
    with pytest.raises(ConfigError, match="MCS_ALERT_WEBHOOK_URL"):
        Settings.from_env({"MCS_ALERT_WEBHOOK_URL": "ntfy.sh/topic"})
    with pytest.raises(ConfigError, match="MCS_TELEGRAM_API"):
        Settings.from_env({"MCS_TELEGRAM_API": "api.telegram.org"})
    settings = Settings.from_env({"MCS_TELEGRAM_BOT_TOKEN": " 123:abc \n", "MCS_TELEGRAM_CHAT_ID": " 42 "})
    assert (settings.telegram_bot_token, settings.telegram_chat_id) == ("123:abc", "42")


def test_retention_is_in_days_with_fractions_and_zero_keeps_all():
    assert Settings.from_env({}).retention == 30 * 86400
    assert Settings.from_env({"MCS_RETENTION_DAYS": "0.00025"}).retention == pytest.approx(21.6)
    assert Settings.from_env({"MCS_RETENTION_DAYS": "0"}).retention == 0
    with pytest.raises(ConfigError, match="MCS_RETENTION_DAYS"):
        Settings.from_env({"MCS_RETENTION_DAYS": "-1"})
