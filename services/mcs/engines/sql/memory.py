"""SQL of the memory area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class MemorySql(SqlTx):
    """Implements mcs.engines.areas.memory.MemoryTx; dialect-specific methods are overridden per engine."""
