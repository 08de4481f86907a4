"""SQL of the tasks area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class TaskSql(SqlTx):
    """Implements mcs.engines.areas.tasks.TaskTx; dialect-specific methods are overridden per engine."""
