"""SQLite's own SQL for the memory area: overrides of mcs.engines.sql.memory where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.memory import MemorySql


class MemorySqlite(MemorySql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""
