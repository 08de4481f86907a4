"""Our signing must satisfy the Standard Webhooks reference implementation, not just our own verifier."""

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mcs import auth, webhooks


def test_reference_implementation_accepts_our_signature():
    secret = auth.new_webhook_secret()
    body = json.dumps({"type": "task.assigned", "data": {"task": {"id": "t1", "payload": "é ✓"}}})
    headers = webhooks.headers(secret=secret, message_id="msg_1", timestamp=int(time.time()), body=body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    webhooks.verify(secret=secret, headers=headers, body=body)


def test_reference_implementation_rejects_tampering_and_wrong_keys():
    secret = auth.new_webhook_secret()
    body = '{"a":1}'
    headers = webhooks.headers(secret=secret, message_id="msg_1", timestamp=int(time.time()), body=body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify('{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(auth.new_webhook_secret()).verify(body, headers)
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify(secret=secret, headers=headers, body='{"a":2}')


def test_stale_timestamps_are_refused():
    secret = auth.new_webhook_secret()
    headers = webhooks.headers(secret=secret, message_id="m", timestamp=int(time.time()) - 3600, body="{}")
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify(secret=secret, headers=headers, body="{}")


def test_secrets_are_hashed_and_compared_safely():
    secret = auth.new_agent_secret()
    stored = auth.hash_secret(secret)
    assert secret not in stored
    assert auth.secret_matches(secret, stored)
    assert not auth.secret_matches(secret + "x", stored)
    assert not auth.secret_matches(secret, None)
    assert auth.new_webhook_secret().startswith("whsec_")


def test_a_non_ascii_signature_header_is_a_mismatch_not_a_crash():
    now = 1_700_000_000
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": "v1,\u00e9\u00e9"}
    with pytest.raises(webhooks.InvalidSignature, match="no signature matches"):
        webhooks.verify(secret="whsec_" + "A" * 32, headers=headers, body="{}", now=now)
