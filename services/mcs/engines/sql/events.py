"""SQL of the events area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class EventSql(SqlTx):
    """Implements mcs.engines.areas.events.EventTx; dialect-specific methods are overridden per engine."""
