"""The protocols every engine implements: `Engine` (one per process), `Tx` (one transaction), `ChangeFeed`.

`mcs.state` is written against these and never against a driver; see docs/design/engines.md, section 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from mcs.engines.areas.a2a import A2aTx
from mcs.engines.areas.agents import AgentTx
from mcs.engines.areas.events import EventTx
from mcs.engines.areas.maintenance import MaintenanceTx
from mcs.engines.areas.memory import MemoryTx
from mcs.engines.areas.outbox import OutboxTx
from mcs.engines.areas.queue import QueueTx
from mcs.engines.areas.schedules import ScheduleTx
from mcs.engines.areas.stats import StatsTx
from mcs.engines.areas.tasks import TaskTx
from mcs.engines.areas.workflows import WorkflowTx

T = TypeVar("T")


class RaceLost(Exception):
    """A row this transaction decided on changed under it: `Engine.write` runs the job again."""


class Duplicate(Exception):
    """A unique key already exists (an agent's name, a schedule's): the state layer answers 409."""


class Topic(StrEnum):
    """What a commit touched, for the processes waiting on it (5.1)."""

    TASKS = "mcs_tasks"
    OUTBOX = "mcs_outbox"
    EVENTS = "mcs_events"
    SCHEDULES = "mcs_schedules"


class Locks(Protocol):
    def lock_dispatch(self) -> None: ...
    def lock_name(self, space: str, name: str) -> None: ...
    def try_lock(self, space: str) -> bool: ...


class Tx(
    Locks,
    TaskTx,
    QueueTx,
    AgentTx,
    MemoryTx,
    WorkflowTx,
    ScheduleTx,
    OutboxTx,
    EventTx,
    A2aTx,
    MaintenanceTx,
    StatsTx,
    Protocol,
):
    """One transaction's data access: every area's methods plus the locks."""

    @property
    def dialect(self) -> Literal["sqlite", "postgres"]: ...

    def execute(self, sql: str, params: Any = ()) -> Any:
        """Raw SQL for code not yet moved onto the area methods, tests and tools (a cursor)."""
        ...


class ChangeFeed(Protocol):
    """Whether another process committed something a waiter cares about, without polling the tables."""

    def version(self, *topics: Topic) -> int: ...
    def wait(self, topics: Iterable[Topic], after: int, *, deadline: float, stop: Callable[[], bool]) -> None: ...
    async def wait_async(self, topics: Iterable[Topic], after: int, *, timeout: float) -> bool: ...
    def close(self) -> None: ...


class Engine(Protocol):
    """One database for one process: transactions, migrations, change notifications, identity."""

    kind: Literal["sqlite", "postgres"]

    def version(self) -> str: ...
    def migrate(self) -> list[str]: ...
    def pending_migrations(self) -> list[str]: ...
    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...
    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...
    def write_batch(self, jobs: list[Callable[[Tx], Any]], *, since: float | None = None) -> list[Any]: ...
    def read_batch(self, jobs: list[Callable[[Tx], Any]]) -> list[Any]: ...
    def check_file(self) -> None: ...
    @property
    def replaced(self) -> str | None: ...
    def close(self) -> None: ...
