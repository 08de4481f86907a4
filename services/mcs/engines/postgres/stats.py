"""PostgreSQL's own SQL for the stats area: overrides of mcs.engines.sql.stats where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.stats import StatsSql


class StatsPg(StatsSql):
    """The shared text runs as is on PostgreSQL (INDEXED BY is SQLite's: the planner finds the partial index)."""
