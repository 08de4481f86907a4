"""PostgreSQL's own SQL for the memory area: overrides of mcs.engines.sql.memory where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.memory import MemorySql


class MemoryPg(MemorySql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""
