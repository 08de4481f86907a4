"""SQL of the agents area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class AgentSql(SqlTx):
    """Implements mcs.engines.areas.agents.AgentTx; dialect-specific methods are overridden per engine."""
