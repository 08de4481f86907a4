"""PostgreSQL's own SQL for the queue area: overrides of mcs.engines.sql.queue where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.queue import QueueSql


class QueuePg(QueueSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""
