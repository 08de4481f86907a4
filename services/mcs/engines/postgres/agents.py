"""PostgreSQL's own SQL for the agents area: overrides of mcs.engines.sql.agents where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.base import Duplicate
from mcs.engines.sql.agents import AgentSql
from mcs.models import Agent, NewAgent


def unique_violation(exc: BaseException) -> bool:
    """Whether a driver error is PostgreSQL's unique_violation (SQLSTATE 23505)."""
    return getattr(exc, "sqlstate", None) == "23505"


class AgentPg(AgentSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""

    FOR_SHARE: ClassVar[str] = " FOR SHARE"

    def agent_insert(self, row: NewAgent) -> Agent:
        # Site 11 (docs/design/engines.md 4.1): two creators may both find the name free; the key decides.
        try:
            return super().agent_insert(row)
        except Exception as exc:
            if unique_violation(exc):
                raise Duplicate(f"agent {row.name!r} already exists") from exc
            raise
