"""SQLite's own SQL for the memory area: overrides of mcs.engines.sql.memory where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.memory import MemorySql


class MemorySqlite(MemorySql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""

    TAG_MATCH: ClassVar[str] = "EXISTS (SELECT 1 FROM json_each(memory.tags) WHERE json_each.value = ?)"
