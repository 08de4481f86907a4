"""SQLite's own SQL for the events area: overrides of mcs.engines.sql.events where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.events import EventSql


class EventSqlite(EventSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""
