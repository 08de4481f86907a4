"""PostgreSQL's own SQL for the tasks area: overrides of mcs.engines.sql.tasks where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.tasks import TaskSql
from mcs.models import APPROVAL


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
