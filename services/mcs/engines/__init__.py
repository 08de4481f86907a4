"""Storage engines: one package per database, behind the protocols of `mcs.engines.base`.

Layers (docs/design/engines.md): the api and the processes call `mcs.state` (the state machine and
authorisation, engine-free, models in and out), which calls a `Tx` (one transaction's data access). Each
engine implements `Tx`: the SQL both engines share lives in `mcs.engines.sql` mixins written against the
primitives of `SqlTx`, and what differs lives in `mcs.engines.sqlite` and `mcs.engines.postgres`. Nothing
outside `mcs.engines` imports a database driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcs.config import Settings
    from mcs.engines.postgres.engine import PostgresEngine
    from mcs.engines.sqlite.engine import Store


def open_engine(settings: Settings, *, process: str = "mcs") -> Store | PostgresEngine:
    """The engine `settings` name: SQLite's Store at MCS_DB when MCS_DATABASE_URL is unset, else the
    PostgreSQL engine (psycopg is imported only then). The caller closes it.

    A PostgreSQL server that cannot be reached raises DatabaseUnreachable (try again later: a process exits
    to be restarted), one that refuses us (wrong password, no such database) StoreError; either message is
    one line naming host:port, never the password."""
    if settings.database_url is None:
        from mcs.engines.sqlite.engine import Store

        return Store(settings.db, synchronous=settings.synchronous, write_lock_timeout=settings.write_lock_timeout)
    from mcs.engines.postgres.engine import PostgresEngine
    from mcs.engines.postgres.reach import preflight

    preflight(settings.database_url)
    return PostgresEngine.from_settings(settings, process=process)
