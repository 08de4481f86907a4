"""SQLite's own SQL for the outbox area: overrides of mcs.engines.sql.outbox where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.outbox import OutboxSql


class OutboxSqlite(OutboxSql):
    """The per-agent pick pinned to outbox_pending_agent (the planner, left alone, may walk outbox_pending)."""

    PENDING_INDEX: ClassVar[str] = " INDEXED BY outbox_pending_agent"
