"""SQLite's own SQL for the tasks area: overrides of mcs.engines.sql.tasks where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.tasks import TaskSql


class TaskSqlite(TaskSql):
    """Methods whose shared SQL does not run on SQLite (the capability match is the engine's `CAPABLE`
    fragment, set on SqliteTx)."""

    # CROSS JOIN fixes the order: this task's few dependents first, not every blocked task in seq order
    DEPENDENTS: ClassVar[str] = "task_deps d CROSS JOIN tasks t ON t.id = d.task_id"
