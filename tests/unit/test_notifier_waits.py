"""How long the notifier agrees to wait when a receiver asks, and what it cuts out of its logs."""

from __future__ import annotations

import pytest

from mcs.notifier import RETRY_AFTER_MAX, _redact_token, _wait_asked


@pytest.mark.parametrize(
    ("asked", "waits"),
    [
        ("2", 2.0),
        (1, 1.0),
        ("0", 0.0),
        ("inf", RETRY_AFTER_MAX),
        ("1e999", RETRY_AFTER_MAX),
        (86400, RETRY_AFTER_MAX),
        ("nan", None),
        ("-1", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
        (None, None),
        ({"x": 1}, None),
    ],
)
def test_a_receiver_cannot_park_a_delivery_forever(asked, waits):
    assert _wait_asked(asked) == waits


def test_the_bot_token_is_cut_out_as_given_and_as_a_url_path():
    token = "123456:AAF-abc_DEF"
    line = f"HTTP Request: POST https://api.telegram.org/bot{token}/sendMessage failed for {token}"
    assert token not in _redact_token(line, token)
    encoded = "POST https://api.telegram.org/bot123456%3AAAF-abc_DEF/sendMessage"
    assert "AAF-abc_DEF" not in _redact_token(encoded, None)
    assert _redact_token("POST http://agent.local/bots/hook", None) == "POST http://agent.local/bots/hook"
