"""`SqlTx`: the primitives every area's SQL is written against, and the locks of docs/design/engines.md 4.1.

SQL text uses `?` placeholders (SQLite's); the PostgreSQL engine rewrites them to `%s` once per statement
text. Rows support both `row["column"]` and `row[0]`, as sqlite3.Row does. Each engine subclasses this
with its driver: `mcs.engines.sqlite.tx.SqliteTx`, `mcs.engines.postgres.tx.PostgresTx`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, Literal

Params = Sequence[Any] | dict[str, Any]
Row = Any  # sqlite3.Row or the PostgreSQL engine's row: key and index access both


class SqlTx:
    """One transaction of one engine. Only `mcs.engines` builds these; `mcs.state` receives them."""

    dialect: ClassVar[Literal["sqlite", "postgres"]]
    # Appended to a SELECT that reads a row this transaction will decide on (docs/design/engines.md 4.1).
    # Empty on SQLite, whose write transaction already holds the whole database.
    FOR_UPDATE: ClassVar[str] = ""  # " FOR UPDATE": wait for the row
    SKIP_LOCKED: ClassVar[str] = ""  # " FOR UPDATE SKIP LOCKED": take rows nobody else is deciding on
    # Every capability a task (the outer query's `tasks` row) requires is among those in the JSON list bound
    # here (`?`): json_each on SQLite, jsonb containment on PostgreSQL. Set by each engine's Tx.
    CAPABLE: ClassVar[str]

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        raise NotImplementedError

    def iter_rows(self, sql: str, params: Params = ()) -> Iterator[Row]:
        """The rows, read lazily where the driver can (a scan the caller stops early)."""
        return iter(self.rows(sql, params))

    def row(self, sql: str, params: Params = ()) -> Row | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        found = self.row(sql, params)
        return None if found is None else found[0]

    def run(self, sql: str, params: Params = ()) -> int:
        """Execute a statement; the number of rows it changed."""
        raise NotImplementedError

    def run_many(self, sql: str, seq: Iterable[Params]) -> None:
        raise NotImplementedError

    # Locks (4.1): no-ops on SQLite, whose write transaction already holds the whole database.
    def lock_dispatch(self) -> None:
        """One dispatch pass at a time across dispatcher replicas."""

    def lock_name(self, space: str, name: str) -> None:
        """A transaction-long lock on a name (a concurrency key, an idempotency key, a memory key)."""

    def try_lock(self, space: str) -> bool:
        """A transaction-long lock if free now (retention, a sweep): False when another replica holds it."""
        return True
