"""SQL of the workflows area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx


class WorkflowSql(SqlTx):
    """Implements mcs.engines.areas.workflows.WorkflowTx; dialect-specific methods are overridden per engine."""
