"""SQLite's own SQL for the agents area: overrides of mcs.engines.sql.agents where the dialects differ."""

from __future__ import annotations

from mcs.engines.base import Duplicate
from mcs.engines.sql.agents import AgentSql
from mcs.models import Agent, NewAgent


def unique_violation(exc: BaseException) -> bool:
    """Whether a driver error is SQLite refusing a duplicate primary or unique key (sqlite3 or pysqlite3)."""
    return type(exc).__name__ == "IntegrityError" and "UNIQUE constraint failed" in str(exc)


class AgentSqlite(AgentSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""

    def agent_insert(self, row: NewAgent) -> Agent:
        try:
            return super().agent_insert(row)
        except Exception as exc:
            if unique_violation(exc):
                raise Duplicate(f"agent {row.name!r} already exists") from exc
            raise
