"""PostgreSQL's own SQL for the tasks area: overrides of mcs.engines.sql.tasks where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.tasks import TaskSql


class TaskPg(TaskSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""

    LIKE: ClassVar[str] = "ILIKE"  # SQLite's LIKE is ASCII case-insensitive; PostgreSQL's is not
    DEPENDENTS: ClassVar[str] = "task_deps d JOIN tasks t ON t.id = d.task_id"  # no ON after CROSS JOIN here
