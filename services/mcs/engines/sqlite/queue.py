"""SQLite's own SQL for the queue area: overrides of mcs.engines.sql.queue where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.queue import QueueSql
from mcs.models import QueueGroup, Task


class QueueSqlite(QueueSql):
    """Methods whose shared SQL does not run on SQLite (json_each, INDEXED BY, jsonb operators, ...)."""

    def unpark(self, group: QueueGroup) -> int:
        return self.run(
            "UPDATE tasks INDEXED BY tasks_queued SET parked = 0"
            " WHERE state = 'queued' AND capabilities = ? AND route = ? AND parked = 1",
            (group.key, group.route),
        )

    def unclaimed(self, now: float, limit: int) -> list[Task]:
        rows = self.rows(
            # INDEXED BY: the task's own few outbox rows, never the agent's whole history (outbox_agent, 0017)
            "SELECT * FROM tasks t WHERE t.state = 'assigned' AND (t.assigned_at + t.claim_ttl <= ? OR EXISTS ("
            " SELECT 1 FROM outbox AS o INDEXED BY outbox_task WHERE o.task_id = t.id AND o.kind = 'webhook'"
            " AND o.state = 'dead' AND o.agent = t.assigned_to AND o.created_at >= t.assigned_at))"
            " ORDER BY t.seq LIMIT ?",
            (now, limit),
        )
        return [Task.from_row(r) for r in rows]

    def undelivered_claims(self, limit: int) -> list[Task]:
        # Read from the dead rows (few), not from every claimed task.
        rows = self.rows(
            "SELECT t.* FROM outbox o JOIN tasks t ON t.id = o.task_id WHERE o.state = 'dead' AND o.kind = 'webhook'"
            " AND t.state = 'claimed' AND o.agent = t.assigned_to AND o.created_at >= t.assigned_at"
            " AND json_extract(o.body, '$.data.task.claim_token') = t.claim_token ORDER BY t.seq LIMIT ?",
            (limit,),
        )
        return [Task.from_row(r) for r in rows]
