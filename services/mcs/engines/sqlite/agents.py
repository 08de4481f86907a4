"""SQLite's own SQL for the agents area: overrides of mcs.engines.sql.agents where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.agents import AgentSql


class AgentSqlite(AgentSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""

    ALL_AFTER: ClassVar[str] = "LIMIT -1 OFFSET ?"
