"""WorkflowTx: the workflows area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Any, Protocol

from mcs.models import Task, TaskEvent, Workflow


class WorkflowTx(Protocol):
    """The `workflows` and `workflow_events` rows, and a workflow's steps (docs/design/engines.md, 2.3)."""

    def workflow_insert(self, *, workflow_id: str, name: str, inputs: Any, submitted_by: str, now: float) -> None:
        """A new workflow, running."""
        ...

    def workflow_get(self, workflow_id: str) -> Workflow | None:
        """The workflow, or None."""
        ...

    def workflow_lock(self, workflow_id: str) -> Workflow | None:
        """The workflow, its row locked until commit (settle and cancel decide on its state)."""
        ...

    def workflow_finish(self, workflow_id: str, state: str, now: float) -> bool:
        """A running workflow ends in `state`; False when it was not running."""
        ...

    def workflow_reopen(self, workflow_id: str, now: float) -> bool:
        """A failed workflow is running again; False when it was not failed."""
        ...

    def workflow_event_add(self, workflow_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
        """An audit event of the workflow (detail stored as JSON)."""
        ...

    def workflow_events(self, workflow_id: str) -> list[TaskEvent]:
        """The workflow's audit events, oldest first."""
        ...

    def workflow_steps(self, workflow_id: str) -> list[Task]:
        """The workflow's steps (tasks), in submission order."""
        ...

    def workflows_page(self, *, state: str | None, before_seq: int | None, limit: int) -> list[Workflow]:
        """Workflows newest first, in one state or any, before a seq (a cursor) or from the newest."""
        ...
