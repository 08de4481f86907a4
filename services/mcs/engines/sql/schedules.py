"""SQL of the schedules area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class ScheduleSql(SqlTx):
    """Implements mcs.engines.areas.schedules.ScheduleTx; dialect-specific methods are overridden per engine."""
