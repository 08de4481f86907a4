"""PostgreSQL's own SQL for the events area: overrides of mcs.engines.sql.events where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.events import EventSql


class EventPg(EventSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""
