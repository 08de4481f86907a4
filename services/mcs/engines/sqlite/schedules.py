"""SQLite's own SQL for the schedules area: overrides of mcs.engines.sql.schedules where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.schedules import ScheduleSql


class ScheduleSqlite(ScheduleSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""
