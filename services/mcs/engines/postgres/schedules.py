"""PostgreSQL's own SQL for the schedules area: overrides of mcs.engines.sql.schedules where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.schedules import ScheduleSql


class SchedulePg(ScheduleSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""
