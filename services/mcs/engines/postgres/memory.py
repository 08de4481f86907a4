"""PostgreSQL's own SQL for the memory area: overrides of mcs.engines.sql.memory where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.memory import MemorySql


class MemoryPg(MemorySql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""

    # Tags stay text (byte-identical bodies); containment rather than jsonb's `?` operator, which the
    # engine's `?` -> `%s` placeholder rewrite would take for a parameter.
    TAG_MATCH: ClassVar[str] = "memory.tags::jsonb @> jsonb_build_array(?::text)"
