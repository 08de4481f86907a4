"""One plain psycopg connection for migrations, the drift check and migrate-to-postgres (no pool: these run
once). The PostgreSQL engine (mcs.engines.postgres) has its own pool; this stays small on purpose.

Errors become `StoreError` with the server's reason and never the URL, which may carry a password.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mcs.errors import StoreError

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 10  # seconds to reach the server
MIN_SERVER_VERSION = 150000  # PostgreSQL 15 (server_version_num)


def redact(url: str) -> str:
    """The URL with any password replaced by ****, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1****@", url)


def reason(exc: Exception) -> str:
    """A driver error in one line, without the connection string."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    diag = getattr(exc, "diag", None)
    where = getattr(diag, "context", None) if diag is not None else None
    if where:  # e.g. "COPY agents, line 1": which table, which row
        text += f" ({where.splitlines()[-1].strip()})"
    return text


def connect_postgres(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection to `url`; StoreError (one line) if the server cannot be used."""
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="mcs-migrate")
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL at {redact(url)}: {reason(exc)}") from None
    if conn.info.server_version < MIN_SERVER_VERSION:
        version = conn.info.server_version
        conn.close()
        raise StoreError(f"PostgreSQL {version // 10000} is too old: MCS needs 15 or later")
    return conn
