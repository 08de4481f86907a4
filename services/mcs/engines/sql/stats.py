"""SQL of the stats area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.base import SqlTx
from mcs.engines.sql.tasks import ENDED

# Distinct types by skipping through tasks_type: one index step per type, where DISTINCT read the index's
# every row (90 ms at a million tasks, at each process's start).
TYPES_SQL = (
    "WITH RECURSIVE t(type) AS (SELECT min(type) FROM tasks"
    " UNION ALL SELECT (SELECT min(type) FROM tasks WHERE type > t.type) FROM t WHERE t.type IS NOT NULL)"
    " SELECT type FROM t WHERE type IS NOT NULL LIMIT ?"
)


class StatsSql(SqlTx):
    """Implements mcs.engines.areas.stats.StatsTx; dialect-specific text is overridden per engine."""

    # Queued tasks with a concurrency key, read from the partial index tasks_queued_keyed (SQLite pins it).
    KEYED_QUEUED: ClassVar[str] = "SELECT count(*) FROM tasks WHERE state = 'queued' AND concurrency_key IS NOT NULL"

    def stats_task_types(self, limit: int) -> list[str]:
        return [r[0] for r in self.rows(TYPES_SQL, (limit,))]

    def stats_queue_counts(self, states: tuple[str, ...]) -> dict[tuple[str, int], int]:
        rows = self.rows(
            f"SELECT state, priority, sum(n) FROM task_counts WHERE state IN ({','.join('?' * len(states))})"
            " GROUP BY state, priority",
            states,
        )
        return {(r[0], int(r[1])): int(r[2]) for r in rows if r[2]}

    def stats_claimed_kinds(self) -> list[tuple[str, int]]:
        return [
            (r[0], int(r[1])) for r in self.rows("SELECT DISTINCT type, priority FROM tasks WHERE state = 'claimed'")
        ]

    def stats_oldest_queued(self, priority: int) -> float | None:
        # One step down the partial index tasks_queued_since (a GROUP BY would read the whole queue).
        found = self.value(
            "SELECT min(coalesce(not_before, created_at)) FROM tasks WHERE state = 'queued' AND priority = ?",
            (priority,),
        )
        return None if found is None else float(found)

    def stats_agents(self) -> list[tuple[str, str, float | None, float | None]]:
        rows = self.rows("SELECT name, status, expires_at, last_seen FROM agents ORDER BY name")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def stats_memory_keys(self, now: float) -> dict[str, int]:
        rows = self.rows(
            "SELECT ns, count(*) FROM memory WHERE expires_at IS NULL OR expires_at > ? GROUP BY ns", (now,)
        )
        return {r[0]: int(r[1]) for r in rows}

    def stats_outbox_pending(self) -> dict[str, int]:
        rows = self.rows("SELECT kind, count(*) FROM outbox WHERE state = 'pending' GROUP BY kind")
        return {r[0]: int(r[1]) for r in rows}

    def stats_heartbeats(self) -> dict[str, float]:
        return {r[0]: float(r[1]) for r in self.rows("SELECT process, max(beat_at) FROM heartbeats GROUP BY process")}

    def stats_failed_since(self, since: float) -> dict[tuple[str, int], int]:
        # ENDED names the partial index tasks_finished's predicate, so SQLite plans the query on it.
        rows = self.rows(
            f"SELECT type, priority, count(*) FROM tasks WHERE state = 'failed' AND {ENDED} AND updated_at > ?"
            " GROUP BY type, priority",
            (since,),
        )
        return {(r[0], int(r[1])): int(r[2]) for r in rows}

    def stats_approvals_waiting(self, approval_type: str) -> tuple[int, float | None]:
        # On tasks_type: only approval rows are read. An approval's updated_at is when it started waiting.
        row = self.row(
            "SELECT count(*), min(updated_at) FROM tasks WHERE type = ? AND state = 'waiting'", (approval_type,)
        )
        assert row is not None
        return int(row[0]), row[1]

    def stats_keyed_queued(self) -> int:
        return int(self.value(self.KEYED_QUEUED))

    def stats_workflows(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.rows("SELECT state, count(*) FROM workflows GROUP BY state")}
