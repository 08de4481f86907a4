"""SQLite's own SQL for the tasks area: overrides of mcs.engines.sql.tasks where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.tasks import TaskSql
from mcs.models import APPROVAL


class TaskSqlite(TaskSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""

    # Read lazily, only what the match needs: the capability match runs in SQL (every required one among
    # the agent's): with 100,000 queued tasks nobody serves, 75 ms a scan here instead of 430 ms decoding
    # each row's JSON in Python, and a waiting long poll scans at each commit.
    CLAIMABLE_SQL: ClassVar[str] = (
        "SELECT id, priority, seq, capabilities, concurrency_key, max_concurrency FROM tasks"
        f" WHERE state = 'queued' AND route != 'all' AND type != '{APPROVAL}'"
        " AND (route = 'any' OR route = ?)"
        " AND NOT EXISTS (SELECT 1 FROM json_each(tasks.capabilities) c"
        " WHERE c.value NOT IN (SELECT value FROM json_each(?)))"
        " AND NOT EXISTS (SELECT 1 FROM task_avoid v WHERE v.task_id = tasks.id AND v.agent = ? AND v.hard = 1)"
        " ORDER BY priority, seq"
    )
