"""SQL of the maintenance area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class MaintenanceSql(SqlTx):
    """Implements mcs.engines.areas.maintenance.MaintenanceTx; dialect-specific methods are overridden per engine."""
