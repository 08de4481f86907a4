"""Web console sessions (see mcs.api.console): stored by the SHA-256 of their id, with a CSRF token and an
expiry, so a login survives an api restart and works whichever api process answers."""

from __future__ import annotations

from mcs.engines.base import Tx

MAX_SESSIONS = 1000  # live sessions kept; the oldest go beyond this


def create(tx: Tx, *, id_hash: str, csrf: str, now: float, ttl: float) -> None:
    """A new session; expired ones go, and the oldest beyond MAX_SESSIONS."""
    tx.sessions_prune(now, keep=MAX_SESSIONS - 1)
    tx.session_insert(id_hash, csrf=csrf, created_at=now, expires_at=now + ttl)


def csrf_of(tx: Tx, *, id_hash: str, now: float) -> str | None:
    """The live session's CSRF token, or None when there is no such session or it expired."""
    return tx.session_csrf(id_hash, now)


def drop(tx: Tx, *, id_hash: str) -> None:
    tx.session_drop(id_hash)
