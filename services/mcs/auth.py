"""Secrets: generation, hashing and constant-time checks.

Agent secrets are 256-bit random tokens, so a single SHA-256 is a sound way to store them (a slow KDF
protects guessable passwords; nobody guesses 2**256). The webhook signing key has to stay usable for
signing, so it is stored as issued; it is shown once and never appears in a log or metric.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def new_agent_secret() -> str:
    return "mcs_" + secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    """A Standard Webhooks key: `whsec_` and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_admin_token() -> str:
    return "mcsadm_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Constant time whatever the input; a missing agent is compared against a dummy so timing says nothing."""
    candidate = hash_secret(secret)
    return hmac.compare_digest(candidate.encode(), (stored_hash or _DUMMY_HASH).encode()) and stored_hash is not None


def token_matches(given: str, expected: str | None) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


_DUMMY_HASH = hash_secret("no such agent")
