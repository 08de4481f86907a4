"""PostgreSQL's own SQL for the workflows area: overrides of mcs.engines.sql.workflows where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.workflows import WorkflowSql


class WorkflowPg(WorkflowSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""
