"""TaskTx: the tasks area of one transaction's data access (see mcs.engines.base).

Each method is one query's worth of work and decides no policy: `mcs.state.tasks` and
`mcs.state.transitions` decide. Methods named `*_lock` read a row this transaction will decide on
(`FOR UPDATE` on PostgreSQL, docs/design/engines.md 4.1); `task_take` skips a row another transaction is
deciding on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mcs.models import IdemRecord, Task, TaskEvent, TaskSpec, TaskState


@dataclass(frozen=True, kw_only=True)
class ClaimableRow:
    """A queued task an agent may claim, with only what the choice needs (the full row is read after)."""

    id: str
    priority: int
    seq: int
    capabilities: tuple[str, ...]
    concurrency_key: str | None
    max_concurrency: int | None


@dataclass(frozen=True, kw_only=True)
class TaskFilter:
    """What `tasks_page` keeps (every field None: every task)."""

    state: str | None = None
    type: str | None = None
    agent: str | None = None
    parent: str | None = None
    workflow: str | None = None
    id_prefix: str | None = None
    updated_after: float | None = None
    q: str | None = None  # contained in payload, result or error (ASCII case-insensitive)


class TaskTx(Protocol):
    """Tasks, their dependencies, audit events, avoid lists and idempotency keys."""

    def task_get(self, task_id: str) -> Task | None:
        """The task, or None."""
        ...

    def task_lock(self, task_id: str) -> Task | None:
        """The task, its row locked until the transaction ends (a write path decides on it)."""
        ...

    def task_take(self, task_id: str, state: TaskState) -> Task | None:
        """The task if it is in `state` and no other transaction is deciding on it, locked; else None."""
        ...

    def task_insert(
        self,
        *,
        task_id: str,
        spec: TaskSpec,
        state: TaskState,
        submitted_by: str,
        now: float,
        workflow_id: str | None = None,
        step_id: str | None = None,
    ) -> None:
        """Store a new task row from a spec (its dependencies go in with `deps_add`)."""
        ...

    def task_update(self, task_id: str, expect: TaskState, changes: Mapping[str, Any], now: float) -> bool:
        """Set columns (and updated_at) of the task if it is still in `expect`; False when it is not."""
        ...

    def task_children(self, task_id: str) -> list[str]:
        """The ids of a fanout parent's children, oldest first."""
        ...

    def children_of(self, parent_id: str) -> list[Task]:
        """A fanout parent's children, by agent then age."""
        ...

    def unfinished_children(self, parent_id: str) -> list[Task]:
        """A parent's children that have not ended."""
        ...

    def task_events(self, task_id: str) -> list[TaskEvent]:
        """The task's audit events, oldest first."""
        ...

    def task_event_add(self, task_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
        """Append one audit event (`detail` is stored as JSON)."""
        ...

    def last_claim_detail(self, task_id: str) -> Any:
        """The detail of the task's latest `claimed` event (decoded), or None."""
        ...

    def deps_add(self, task_id: str, dep_ids: tuple[str, ...]) -> None:
        """Record the task's dependencies (a repeated one is kept once)."""
        ...

    def deps_of(self, task_id: str) -> list[Task]:
        """The tasks this task depends on, oldest first."""
        ...

    def dependents_blocked(self, dep_id: str) -> list[str]:
        """Ids of the blocked tasks that depend on `dep_id`, oldest first."""
        ...

    def dependents_canceled(self, dep_id: str, error: str) -> list[Task]:
        """The tasks depending on `dep_id` that were canceled with `error`, oldest first."""
        ...

    def task_release_due(self, now: float) -> list[str]:
        """Queue the blocked tasks whose run_at came and whose dependencies all ended; their ids."""
        ...

    def unfinished_submitted(self, submitter: str) -> int:
        """How many of `submitter`'s top-level tasks have not ended."""
        ...

    def idem_get(self, caller: str, key: str, now: float) -> IdemRecord | None:
        """The unexpired Idempotency-Key record, or None."""
        ...

    def idem_put(self, record: IdemRecord) -> None:
        """Store (or replace) an Idempotency-Key record."""
        ...

    def avoid_is_hard(self, task_id: str, agent: str) -> bool:
        """Whether `agent` rejected this task (never offered to it again)."""
        ...

    def avoid_add(self, task_id: str, agent: str, *, hard: bool) -> None:
        """Avoid `agent` for this task: `hard` (a rejection) overrides a soft preference; soft keeps any."""
        ...

    def avoid_clear(self, task_id: str) -> None:
        """Forget every agent this task avoided."""
        ...

    def key_running(self, key: str) -> int:
        """How many tasks with this concurrency key are assigned or claimed."""
        ...

    def assigned_next(self, agent: str) -> Task | None:
        """The most urgent, oldest task assigned (not yet claimed) to `agent`."""
        ...

    def claimable(self, agent: str, capabilities: tuple[str, ...]) -> Iterator[ClaimableRow]:
        """Queued tasks `agent` may claim (route, every required capability, not rejected), most urgent
        and oldest first, read lazily: the caller stops at the first it takes."""
        ...

    def task_held(self, task_id: str, agent: str | None, token: str) -> bool:
        """Whether the task is claimed by `agent` with this claim token."""
        ...

    def claimed_by(self, agent: str) -> list[Task]:
        """The tasks `agent` holds claimed."""
        ...

    def tasks_routed_to(self, agent: str) -> list[Task]:
        """Unfinished tasks routed to `agent` by name."""
        ...

    def tasks_page(self, f: TaskFilter, *, before_seq: int | None, limit: int) -> list[Task]:
        """Tasks matching `f`, newest first, older than `before_seq`, at most `limit`."""
        ...

    def savepoint(self, name: str) -> None:
        """Start a savepoint (one item of a batch): undone alone by `savepoint_rollback`."""
        ...

    def savepoint_rollback(self, name: str) -> None:
        """Undo everything since `savepoint(name)` and end that savepoint."""
        ...

    def savepoint_release(self, name: str) -> None:
        """Keep everything since `savepoint(name)` and end that savepoint."""
        ...

    def task_workflow_name(self, workflow_id: str) -> str | None:
        """The name of the workflow a step belongs to (None when it is gone)."""
        ...

    def task_workflow_inputs(self, workflow_id: str) -> tuple[bool, Any]:
        """(whether the workflow has inputs, the inputs decoded) for its root steps."""
        ...
