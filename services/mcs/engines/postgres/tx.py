"""`PostgresTx`: one PostgreSQL transaction, every area's shared SQL plus PostgreSQL's own overrides.

The shared SQL is written with SQLite's placeholders: `?` (a sequence of parameters) and `:name` (a dict).
`translate_sql` rewrites them once per statement text into psycopg's `%s` / `%(name)s`, doubling any `%`
in the text, and leaves string literals, quoted names, comments and `::` casts alone. The same pass
notes which tables the statement writes (INSERT INTO / UPDATE / DELETE FROM), so the transaction knows
which topics (`mcs.engines.base.Topic`) to notify before it commits (docs/design/engines.md 5.2).

Rows are `PgRow`s: `row["column"]`, `row[0]`, `keys()`, iteration, `dict(row)`, as sqlite3.Row.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mcs.engines.base import Duplicate, Topic
from mcs.engines.postgres.a2a import A2aPg
from mcs.engines.postgres.agents import AgentPg
from mcs.engines.postgres.events import EventPg
from mcs.engines.postgres.maintenance import MaintenancePg
from mcs.engines.postgres.memory import MemoryPg
from mcs.engines.postgres.outbox import OutboxPg
from mcs.engines.postgres.queue import QueuePg
from mcs.engines.postgres.schedules import SchedulePg
from mcs.engines.postgres.stats import StatsPg
from mcs.engines.postgres.tasks import TaskPg
from mcs.engines.postgres.workflows import WorkflowPg
from mcs.engines.sql.base import Params, Row

# Which topics a write to each table touches (5.2). agent_events wakes the dispatcher (TASKS: its
# RoutingView follows agents) and the event streams (EVENTS).
TABLE_TOPICS: dict[str, tuple[Topic, ...]] = {
    "tasks": (Topic.TASKS,),
    "agents": (Topic.TASKS,),
    "agent_events": (Topic.TASKS, Topic.EVENTS),
    "outbox": (Topic.OUTBOX,),
    "task_events": (Topic.EVENTS,),
    "workflow_events": (Topic.EVENTS,),
    "event_log": (Topic.EVENTS,),
    "schedules": (Topic.SCHEDULES,),
}

UNIQUE_VIOLATION = "23505"

# A statement's text in pieces: quoted literals/names and comments (kept as they are) or plain SQL.
_PIECES = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/)""", re.DOTALL)
_PLACEHOLDER = re.compile(r"%|::|\?|(?<![\w:]):([A-Za-z_]\w*)")
_WRITES = re.compile(r"\b(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?\"?(\w+)", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def translate_sql(sql: str) -> tuple[str, tuple[Topic, ...]]:
    """psycopg's text for a statement written with `?` / `:name` placeholders, and the topics it writes."""
    out: list[str] = []
    tables: list[str] = []

    def placeholder(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "%":
            return "%%"
        if token == "::":
            return token
        if token == "?":
            return "%s"
        return f"%({m.group(1)})s"

    for i, piece in enumerate(_PIECES.split(sql)):
        if i % 2:  # a literal, a quoted name or a comment
            out.append(piece.replace("%", "%%") if not piece.startswith(("--", "/*")) else "")
            continue
        out.append(_PLACEHOLDER.sub(placeholder, piece))
        tables.extend(name.lower() for name in _WRITES.findall(piece))
    topics: list[Topic] = []
    for table in tables:
        for topic in TABLE_TOPICS.get(table, ()):
            if topic not in topics:
                topics.append(topic)
    return "".join(out), tuple(topics)


class PgRow:
    """One result row: by column name or position, like sqlite3.Row (names shared by the cursor's rows)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key]]
            except KeyError:
                lowered = {name.lower(): i for name, i in self._index.items()}
                if key.lower() in lowered:  # sqlite3.Row matches names case-insensitively
                    return self._values[lowered[key.lower()]]
                raise IndexError(f"no column named {key!r}") from None
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PgRow):
            return self._values == other._values and self._index == other._index
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._index, self._values, strict=True))!r})"


def pg_row(cursor: Any) -> Any:
    """psycopg row factory making PgRows (one name index per result set)."""
    description = cursor.description
    if description is None:
        return tuple
    index = {column.name: i for i, column in enumerate(description)}
    return lambda values: PgRow(values, index)


class PgCursor:
    """What `PostgresTx.execute` returns to code written against sqlite3: rows already fetched."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._at :]
        self._at = len(self._rows)
        return rest

    def fetchmany(self, size: int = 1) -> list[Any]:
        rest = self._rows[self._at : self._at + size]
        self._at += len(rest)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _duplicate(exc: Exception) -> Exception | None:
    if getattr(exc, "sqlstate", None) == UNIQUE_VIOLATION:
        diag = getattr(exc, "diag", None)
        constraint = getattr(diag, "constraint_name", None)
        return Duplicate(f"already exists ({constraint})" if constraint else "already exists")
    return None


class PostgresTx(
    TaskPg,
    QueuePg,
    AgentPg,
    MemoryPg,
    WorkflowPg,
    SchedulePg,
    OutboxPg,
    EventPg,
    A2aPg,
    MaintenancePg,
    StatsPg,
):
    """Wraps a pooled connection inside one transaction (BEGIN/COMMIT stay the engine's).

    A unique violation (23505) raises `Duplicate`; the transaction is then aborted, so the state layer
    answers 409 rather than carrying on. `statements` counts round trips (bench).
    """

    dialect: ClassVar[Literal["sqlite", "postgres"]] = "postgres"
    FOR_UPDATE: ClassVar[str] = " FOR UPDATE"
    SKIP_LOCKED: ClassVar[str] = " FOR UPDATE SKIP LOCKED"

    def __init__(self, conn: Any, *, begin: str | None = None) -> None:
        self.conn = conn
        self.begin = begin  # sent before the first statement: a job that sends none costs no round trip
        self.topics: set[Topic] = set()
        self.statements = 0
        self.failed: Exception | None = None  # the last statement error: PostgreSQL then aborts the transaction

    def _start(self) -> None:
        if self.begin is not None:
            begin, self.begin = self.begin, None
            self.conn.execute(begin)

    def _execute(self, sql: str, params: Params) -> Any:
        text, topics = translate_sql(sql)
        self.statements += 1
        try:
            self._start()
            cursor = self.conn.execute(text, params)  # even (): psycopg then un-doubles the %%
        except Exception as exc:
            self.failed = exc
            duplicate = _duplicate(exc)
            if duplicate is not None:
                raise duplicate from exc
            raise
        if topics and cursor.rowcount != 0:  # nothing changed: nobody needs waking
            self.topics.update(topics)
        return cursor

    def rows(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = self._execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []

    def row(self, sql: str, params: Params = ()) -> Row | None:
        cursor = self._execute(sql, params)
        return cursor.fetchone() if cursor.description is not None else None

    def run(self, sql: str, params: Params = ()) -> int:
        return int(self._execute(sql, params).rowcount)

    def run_many(self, sql: str, seq: Iterable[Params]) -> None:
        text, topics = translate_sql(sql)
        self.statements += 1
        try:
            self._start()
            with self.conn.cursor() as cursor:
                cursor.executemany(text, list(seq))
        except Exception as exc:
            self.failed = exc
            duplicate = _duplicate(exc)
            if duplicate is not None:
                raise duplicate from exc
            raise
        self.topics.update(topics)

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        cursor = self._execute(sql, params)
        rows = list(cursor.fetchall()) if cursor.description is not None else []
        return PgCursor(rows, int(cursor.rowcount))

    def executemany(self, sql: str, seq: Any) -> None:
        self.run_many(sql, seq)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR))

    # Locks (docs/design/engines.md 4.1): transaction-long advisory locks on a 64-bit hash of a name.
    def lock_dispatch(self) -> None:
        self.lock_name("dispatch", "")

    def lock_name(self, space: str, name: str) -> None:
        # PostgreSQL text holds no NUL, which callers use as a separator (caller NUL Idempotency-Key): spelt
        # out instead. Two names that then hash alike only share a lock, which is safe.
        key = f"{space}:{name}".replace("\0", "\\0")
        self._execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    def try_lock(self, space: str) -> bool:
        got = self.value("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))", (f"{space}:",))
        return bool(got)

    def commit_sql(self) -> str:
        """COMMIT, preceded by one pg_notify per topic this transaction touched (PostgreSQL delivers them
        only if it commits): one round trip, the channel names being our own constants."""
        notify = ", ".join(f"pg_notify('{topic.value}', '')" for topic in sorted(self.topics))
        return f"SELECT {notify}; COMMIT" if notify else "COMMIT"


if TYPE_CHECKING:  # mypy checks here that PostgresTx implements every area of the Tx protocol
    from mcs.engines.base import Tx

    _implements: type[Tx] = PostgresTx
