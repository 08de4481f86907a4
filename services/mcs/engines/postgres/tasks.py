"""PostgreSQL's own SQL for the tasks area: overrides of mcs.engines.sql.tasks where the dialects differ."""

from __future__ import annotations

import json
from typing import ClassVar

from mcs.engines.sql.tasks import TaskSql
from mcs.models import APPROVAL, Task


class TaskPg(TaskSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""

    LIKE: ClassVar[str] = "ILIKE"  # SQLite's LIKE is ASCII case-insensitive; PostgreSQL's is not
    DEPENDENTS_JOIN: ClassVar[str] = "JOIN"  # no CROSS JOIN ... ON here; the planner picks the order

    # JSON stays text; containment on a jsonb cast: every required capability is among the agent's.
    CLAIMABLE_SQL: ClassVar[str] = (
        "SELECT id, priority, seq, capabilities, concurrency_key, max_concurrency FROM tasks"
        f" WHERE state = 'queued' AND route != 'all' AND type != '{APPROVAL}'"
        " AND (route = 'any' OR route = ?)"
        " AND capabilities::jsonb <@ ?::jsonb"
        " AND NOT EXISTS (SELECT 1 FROM task_avoid v WHERE v.task_id = tasks.id AND v.agent = ? AND v.hard = 1)"
        " ORDER BY priority, seq"
    )

    # SQLite's CROSS JOIN ... ON pins the join order there; PostgreSQL refuses ON after CROSS JOIN (and
    # starts from the task_deps_dep index on its own).
    def dependents_blocked(self, dep_id: str) -> list[str]:
        rows = self.rows(
            "SELECT t.id FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ?"
            " AND t.state = 'blocked' ORDER BY t.seq",
            (dep_id,),
        )
        return [r["id"] for r in rows]

    def dependents_canceled(self, dep_id: str, error: str) -> list[Task]:
        rows = self.rows(
            "SELECT t.* FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ?"
            " AND t.state = 'canceled' AND t.error = ? ORDER BY t.seq",
            (dep_id, json.dumps(error)),
        )
        return [Task.from_row(r) for r in rows]
