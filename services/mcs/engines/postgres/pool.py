"""The connection pool of one process (psycopg_pool), every connection set up alike (design 1, row 3).

Connections are in autocommit mode: the engine sends BEGIN and COMMIT itself, as the SQLite engine does,
so a read can ask for a snapshot (REPEATABLE READ READ ONLY) and a write stays READ COMMITTED.

`configure` runs once per new connection: the session settings below, and the database's `database_id`
(mcs_meta, migration 0020), remembered per connection so the engine can tell a dropped and re-created
database (or a failover to another cluster) from the one it opened.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from mcs.engines.postgres.tx import pg_row

log = logging.getLogger("mcs.engines.postgres")

STATEMENT_TIMEOUT = 30.0  # seconds one statement may run
IDLE_IN_TRANSACTION_TIMEOUT = 60.0  # seconds a transaction may sit idle (never across an await)
CONNECT_TIMEOUT = 10  # seconds to open one connection


def sqlite_like_adapters() -> Any:
    """Types as the shared SQL expects them from SQLite: a Python bool binds as the integer 0 or 1 (the
    schema keeps SQLite's integer flags), and a `numeric` result (sum() of integers, avg()) loads as an int
    when it has no fraction, else a float, never a Decimal."""
    import psycopg
    from psycopg.adapt import AdaptersMap, Dumper, Loader

    class BoolAsInt(Dumper):
        oid = psycopg.adapters.types["int8"].oid

        def dump(self, obj: Any) -> bytes:
            return b"1" if obj else b"0"

    class NumericAsNumber(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data).decode("ascii")
            if any(c in text for c in ".eEN"):  # a fraction, an exponent, NaN
                return float(text)
            return int(text)

    adapters = AdaptersMap(psycopg.adapters)
    adapters.register_dumper(bool, BoolAsInt)
    adapters.register_loader("numeric", NumericAsNumber)
    return adapters


def read_database_id(conn: Any) -> str | None:
    """mcs_meta's database_id (None before migration 0020 made it)."""
    if conn.execute("SELECT to_regclass('mcs_meta') IS NULL").fetchone()[0]:
        return None
    row = conn.execute("SELECT value FROM mcs_meta WHERE key = 'database_id'").fetchone()
    return None if row is None else str(row[0])


def session_settings(*, synchronous: str, lock_timeout: float, process: str) -> list[tuple[str, str]]:
    """The settings every pooled connection gets: (name, value)."""
    return [
        ("synchronous_commit", "off" if synchronous.upper() == "NORMAL" else "on"),
        ("lock_timeout", f"{max(1, round(lock_timeout * 1000))}ms"),
        ("statement_timeout", f"{round(STATEMENT_TIMEOUT * 1000)}ms"),
        ("idle_in_transaction_session_timeout", f"{round(IDLE_IN_TRANSACTION_TIMEOUT * 1000)}ms"),
        ("application_name", f"mcs-{process}"[:63]),
    ]


class Pool:
    """psycopg_pool.ConnectionPool of `size` connections plus what `configure` learnt of each."""

    def __init__(
        self,
        url: str,
        *,
        size: int,
        synchronous: str,
        lock_timeout: float,
        process: str,
        timeout: float,
    ) -> None:
        from psycopg_pool import ConnectionPool

        self.size = max(1, size)
        self.settings = session_settings(synchronous=synchronous, lock_timeout=lock_timeout, process=process)
        self.database_ids: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
        self.pool: Any = ConnectionPool(
            url,
            min_size=1,
            max_size=self.size,
            kwargs={
                "autocommit": True,
                "row_factory": pg_row,
                "connect_timeout": CONNECT_TIMEOUT,
                "context": sqlite_like_adapters(),
            },
            configure=self._configure,
            timeout=timeout,
            name=f"mcs-{process}",
            open=False,
        )
        self.pool.open(wait=False)

    def _configure(self, conn: Any) -> None:
        calls = ", ".join("set_config(%s, %s, false)" for _ in self.settings)
        conn.execute(f"SELECT {calls}", [part for setting in self.settings for part in setting])
        self.database_ids[conn] = read_database_id(conn)

    def connection(self, timeout: float | None = None) -> Any:
        """A context manager lending one connection (PoolTimeout past `timeout`)."""
        return self.pool.connection(timeout=timeout)

    def getconn(self, timeout: float | None = None) -> Any:
        return self.pool.getconn(timeout=timeout)

    def putconn(self, conn: Any) -> None:
        self.pool.putconn(conn)

    def discard_broken(self) -> None:
        """Check the idle connections now and replace the dead ones (after a connection was lost)."""
        try:
            self.pool.check()
        except Exception:  # noqa: BLE001 - best effort: the next transaction says what is wrong
            log.warning("checking the database connections failed", exc_info=True)

    def stats(self) -> dict[str, int]:
        return dict(self.pool.get_stats())

    def close(self, timeout: float = 5.0) -> None:
        self.pool.close(timeout=timeout)
