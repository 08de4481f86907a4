"""Which engine the tests run on, and raw SQL that runs on either (docs/design/engines.md 6.1).

`pytest --engine postgres` (or MCS_TEST_ENGINE=postgres) runs the suites on a real PostgreSQL server
(tests/pg.py): every store, mesh and settings a test builds gets a fresh database copied from one migrated
once per session. The default is SQLite.

Markers (registered in pyproject.toml):
- `sqlite_only`: the test is about SQLite itself (the file, WAL, flock, inotify, backup/restore, a full
  disk, DatabaseReplaced by replacing the file, EXPLAIN QUERY PLAN, sqlite_master). Deselected on
  PostgreSQL: not run, not counted, and the run says how many.
- `postgres_only`: the test is about PostgreSQL itself (sequencer, NOTIFY, the pool). Deselected on SQLite.

`Db(engine).sql(query, params)` runs one statement written with SQLite's `?` placeholders in a write
transaction of whichever engine (the PostgreSQL Tx translates them) and returns its rows (empty for a
statement that returns none): for tests that peek at or poke tables directly.
"""

from __future__ import annotations

import os
from typing import Any

ENGINES = ("sqlite", "postgres")
ENV = "MCS_TEST_ENGINE"
DEFAULT = "sqlite"


def from_env() -> str:
    return os.environ.get(ENV, DEFAULT) or DEFAULT


class Rows(list[Any]):
    """A statement's rows, also answering `fetchone()` / `fetchall()` as the sqlite3 cursor tests used to."""

    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list[Any]:
        return list(self)


class Db:
    """Raw SQL on one open engine (SQLite's Store or the PostgreSQL engine)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @property
    def kind(self) -> str:
        return str(getattr(self.engine, "kind", "sqlite"))

    def sql(self, query: str, params: Any = ()) -> Rows:
        """Run `query` (with `?` placeholders) in one committed write transaction; its rows."""

        def job(tx: Any) -> list[Any]:
            return list(tx.rows(query, params))

        return Rows(self.engine.write(job))

    def value(self, query: str, params: Any = ()) -> Any:
        """The first column of the first row (None when there is none)."""
        rows = self.sql(query, params)
        return rows[0][0] if rows else None


def sql(engine: Any, query: str, params: Any = ()) -> Rows:
    """`Db(engine).sql(query, params)`."""
    return Db(engine).sql(query, params)
