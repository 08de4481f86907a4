"""SQLite's own SQL for the outbox area: overrides of mcs.engines.sql.outbox where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.outbox import OutboxSql


class OutboxSqlite(OutboxSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""
