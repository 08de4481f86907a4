"""SQLite's own SQL for the stats area: overrides of mcs.engines.sql.stats where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.stats import StatsSql


class StatsSqlite(StatsSql):
    """Text whose shared form does not run, or does not plan well, on SQLite."""

    KEYED_QUEUED: ClassVar[str] = (
        "SELECT count(*) FROM tasks INDEXED BY tasks_queued_keyed"
        " WHERE state = 'queued' AND concurrency_key IS NOT NULL"
    )
