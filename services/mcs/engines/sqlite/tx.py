"""`SqliteTx`: one SQLite transaction, every area's shared SQL plus SQLite's own overrides."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mcs.engines.sql.base import Params, Row
from mcs.engines.sqlite.a2a import A2aSqlite
from mcs.engines.sqlite.agents import AgentSqlite
from mcs.engines.sqlite.events import EventSqlite
from mcs.engines.sqlite.maintenance import MaintenanceSqlite
from mcs.engines.sqlite.memory import MemorySqlite
from mcs.engines.sqlite.outbox import OutboxSqlite
from mcs.engines.sqlite.queue import QueueSqlite
from mcs.engines.sqlite.schedules import ScheduleSqlite
from mcs.engines.sqlite.stats import StatsSqlite
from mcs.engines.sqlite.tasks import TaskSqlite
from mcs.engines.sqlite.workflows import WorkflowSqlite


class SqliteTx(
    TaskSqlite,
    QueueSqlite,
    AgentSqlite,
    MemorySqlite,
    WorkflowSqlite,
    ScheduleSqlite,
    OutboxSqlite,
    EventSqlite,
    A2aSqlite,
    MaintenanceSqlite,
    StatsSqlite,
):
    """Wraps the connection a write or read transaction runs on (BEGIN/COMMIT stay the Store's).

    `execute`, `executemany` and `in_transaction` pass through, so code still written against a raw
    connection (`conn.execute(...)`) runs unchanged while it moves onto the area methods.
    """

    dialect: ClassVar[Literal["sqlite", "postgres"]] = "sqlite"
    CAPABLE: ClassVar[str] = (
        "NOT EXISTS (SELECT 1 FROM json_each(tasks.capabilities) c"
        " WHERE c.value NOT IN (SELECT value FROM json_each(?)))"
    )

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        return list(self.conn.execute(sql, params).fetchall())

    def iter_rows(self, sql: str, params: Params = ()) -> Iterator[Row]:
        return iter(self.conn.execute(sql, params))

    def row(self, sql: str, params: Params = ()) -> Row | None:
        return self.conn.execute(sql, params).fetchone()

    def run(self, sql: str, params: Params = ()) -> int:
        return int(self.conn.execute(sql, params).rowcount)

    def run_many(self, sql: str, seq: Iterable[Params]) -> None:
        self.conn.executemany(sql, seq)

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, seq: Any) -> Any:
        return self.conn.executemany(sql, seq)

    @property
    def in_transaction(self) -> bool:
        return bool(self.conn.in_transaction)

    @property
    def total_changes(self) -> int:
        return int(self.conn.total_changes)


def wrap(conn: Any) -> SqliteTx:
    """The Tx for a connection (an existing Tx passes through: nested helpers may be handed either)."""
    return conn if isinstance(conn, SqliteTx) else SqliteTx(conn)


if TYPE_CHECKING:  # mypy checks here that SqliteTx implements every area of the Tx protocol
    from mcs.engines.base import Tx

    _implements: type[Tx] = SqliteTx
