"""SQL of the queue area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class QueueSql(SqlTx):
    """Implements mcs.engines.areas.queue.QueueTx; dialect-specific methods are overridden per engine."""
