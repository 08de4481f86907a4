"""SQLite's own SQL for the tasks area: overrides of mcs.engines.sql.tasks where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.tasks import TaskSql


class TaskSqlite(TaskSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""
