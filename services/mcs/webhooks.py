"""Standard Webhooks (https://www.standardwebhooks.com): signing, and the HTTP client that sends them."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx

from mcs import egress

SECRET_PREFIX = "whsec_"


def sign(*, secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` value: `v1,` and base64 HMAC-SHA256 of `id.timestamp.body`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(*, secret: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=secret, message_id=message_id, timestamp=timestamp, body=body),
        "user-agent": "mcs-notifier",
    }


def make_client(
    *,
    timeout: float,
    policy: egress.Policy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    """One kept-alive client for deliveries. Every connection goes through the egress `policy`, checked
    when it is made (a test may pass its own `transport` instead). Redirects are never followed: a webhook
    that answers 3xx has not been delivered, and following it could send a signed body somewhere the agent
    did not name."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if transport is None and policy is not None:
        transport = egress.EgressTransport(policy, limits=limits)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), follow_redirects=False, transport=transport, limits=limits, trust_env=False
    )


TOLERANCE = 300  # seconds a webhook timestamp may differ from our clock


class InvalidSignature(Exception):
    """The webhook's signature, id or timestamp does not check out."""


def verify(*, secret: str, headers: dict[str, str], body: str, now: float | None = None) -> None:
    """For agents: check a webhook the notifier sent. Raises InvalidSignature when it is not genuine."""
    import time as _time

    lower = {k.lower(): v for k, v in headers.items()}
    try:
        message_id, timestamp = lower["webhook-id"], int(lower["webhook-timestamp"])
        signatures = lower["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("missing or malformed webhook headers") from exc
    if abs((now or _time.time()) - timestamp) > TOLERANCE:
        raise InvalidSignature("webhook timestamp too far from now")
    expected = sign(secret=secret, message_id=message_id, timestamp=timestamp, body=body)
    # compare_digest refuses non-ASCII str: compare bytes, so a junk header is a mismatch, not a crash.
    if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures):
        raise InvalidSignature("no signature matches")
