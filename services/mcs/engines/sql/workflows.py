"""SQL of the workflows area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

import json
from typing import Any

from mcs.engines.sql.base import SqlTx
from mcs.models import Task, TaskEvent, Workflow


class WorkflowSql(SqlTx):
    """Implements mcs.engines.areas.workflows.WorkflowTx; dialect-specific methods are overridden per engine."""

    def workflow_insert(self, *, workflow_id: str, name: str, inputs: Any, submitted_by: str, now: float) -> None:
        self.run(
            "INSERT INTO workflows (id, name, state, inputs, submitted_by, created_at, updated_at)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?)",
            (workflow_id, name, None if inputs is None else json.dumps(inputs), submitted_by, now, now),
        )

    def workflow_get(self, workflow_id: str) -> Workflow | None:
        row = self.row("SELECT * FROM workflows WHERE id = ?", (workflow_id,))
        return Workflow.from_row(row) if row else None

    def workflow_lock(self, workflow_id: str) -> Workflow | None:
        row = self.row("SELECT * FROM workflows WHERE id = ?" + self.FOR_UPDATE, (workflow_id,))
        return Workflow.from_row(row) if row else None

    def workflow_finish(self, workflow_id: str, state: str, now: float) -> bool:
        return (
            self.run(
                "UPDATE workflows SET state = ?, updated_at = ?, finished_at = ? WHERE id = ? AND state = 'running'",
                (state, now, now, workflow_id),
            )
            == 1
        )

    def workflow_reopen(self, workflow_id: str, now: float) -> bool:
        return (
            self.run(
                "UPDATE workflows SET state = 'running', updated_at = ?, finished_at = NULL"
                " WHERE id = ? AND state = 'failed'",
                (now, workflow_id),
            )
            == 1
        )

    def workflow_event_add(self, workflow_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
        self.run(
            "INSERT INTO workflow_events (workflow_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
            (workflow_id, now, kind, actor, None if detail is None else json.dumps(detail)),
        )

    def workflow_events(self, workflow_id: str) -> list[TaskEvent]:
        rows = self.rows(
            "SELECT at, kind, actor, detail FROM workflow_events WHERE workflow_id = ? ORDER BY id", (workflow_id,)
        )
        return [TaskEvent.from_row(r) for r in rows]

    def workflow_steps(self, workflow_id: str) -> list[Task]:
        rows = self.rows("SELECT * FROM tasks WHERE workflow_id = ? ORDER BY seq", (workflow_id,))
        return [Task.from_row(r) for r in rows]

    def workflows_page(self, *, state: str | None, before_seq: int | None, limit: int) -> list[Workflow]:
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        sql = "SELECT * FROM workflows" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.rows(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))
        return [Workflow.from_row(r) for r in rows]
