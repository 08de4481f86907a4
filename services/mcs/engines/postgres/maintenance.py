"""PostgreSQL's own SQL for the maintenance area: overrides of mcs.engines.sql.maintenance where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.maintenance import MaintenanceSql


class MaintenancePg(MaintenanceSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""
