"""Before a process opens its pool: can it reach the PostgreSQL server at all, and if not, why, in one line.

The pool connects in the background and retries quietly (and logs each failure over several lines), so a
server that is down, a wrong password or a missing database would otherwise show as a pool timeout. One
plain connection first names the server (host:port, never the URL: it may carry a password) and the
reason libpq gave (which never includes the password): `DatabaseUnreachable` when trying again later may
help (the process exits to be restarted), `StoreError` when it will not (a wrong password, no such
database: the process cannot start).
"""

from __future__ import annotations

from mcs.errors import DatabaseUnreachable, StoreError

CONNECT_TIMEOUT = 10  # seconds to reach the server (the pool's own connections use the same)
# What libpq says when the server is there but refuses us: waiting will not change it.
REFUSED_FOR_GOOD = ("authentication failed", "does not exist", "no pg_hba.conf entry", "password", "permission denied")


def where(url: str) -> str:
    """host:port of `url` (the first host when it lists several); a socket folder as it is."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a URL psycopg cannot parse: say nothing of it but that
        return "the MCS_DATABASE_URL server"
    host = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")[0]
    port = str(params.get("port") or "5432").split(",")[0]
    if host.startswith("/"):
        return f"{host} (socket, port {port})"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def why(exc: BaseException) -> str:
    """libpq's reason in one line, without its "connection to server at ... failed:" preamble."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "failed:" in text:
        text = text.rsplit("failed:", 1)[1]
    return " ".join(text.replace("FATAL:", "").split()) or type(exc).__name__


def preflight(url: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect once and close; raise DatabaseUnreachable or StoreError (one line, no password) if that fails."""
    import psycopg

    try:
        conn = psycopg.connect(url, connect_timeout=max(1, round(timeout)), application_name="mcs-preflight")
    except psycopg.Error as exc:
        reason = why(exc)
        message = f"cannot connect to PostgreSQL at {where(url)}: {reason}"
        if any(word in reason.lower() for word in REFUSED_FOR_GOOD):
            raise StoreError(message + " (check MCS_DATABASE_URL)") from None
        raise DatabaseUnreachable(message) from None
    conn.close()
