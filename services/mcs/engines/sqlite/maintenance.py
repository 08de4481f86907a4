"""SQLite's own SQL for the maintenance area: overrides of mcs.engines.sql.maintenance where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.maintenance import MaintenanceSql


class MaintenanceSqlite(MaintenanceSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""
