"""SQL of the outbox area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class OutboxSql(SqlTx):
    """Implements mcs.engines.areas.outbox.OutboxTx; dialect-specific methods are overridden per engine."""
