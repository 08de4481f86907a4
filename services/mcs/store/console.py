"""Web console sessions (see mcs.api.console): stored by the SHA-256 of their id, with a CSRF token and an
expiry, so a login survives an api restart and works whichever api process answers."""

from __future__ import annotations

from mcs.store.connection import Connection

MAX_SESSIONS = 1000  # live sessions kept; the oldest go beyond this


def create(conn: Connection, *, id_hash: str, csrf: str, now: float, ttl: float) -> None:
    conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
    conn.execute(
        "DELETE FROM console_sessions WHERE id_hash IN"
        " (SELECT id_hash FROM console_sessions ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
        (MAX_SESSIONS - 1,),
    )
    conn.execute(
        "INSERT INTO console_sessions (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (id_hash, csrf, now, now + ttl),
    )


def csrf_of(conn: Connection, *, id_hash: str, now: float) -> str | None:
    """The live session's CSRF token, or None when there is no such session or it expired."""
    row = conn.execute(
        "SELECT csrf FROM console_sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, now)
    ).fetchone()
    return None if row is None else str(row["csrf"])


def drop(conn: Connection, *, id_hash: str) -> None:
    conn.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,))
