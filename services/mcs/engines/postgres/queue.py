"""PostgreSQL's own SQL for the queue area: overrides of mcs.engines.sql.queue where the dialects differ.

JSON columns are `text` on PostgreSQL (byte-identical bodies); queries that look inside cast to `jsonb`.
"""

from __future__ import annotations

from mcs.engines.sql.queue import QueueSql
from mcs.models import Task


class QueuePg(QueueSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""

    def agent_lock(self, name: str, *, share: bool) -> bool:
        # An advisory lock, not the agents row: heartbeats update that row and must not wait for a pass.
        fn = "pg_advisory_xact_lock_shared" if share else "pg_advisory_xact_lock"
        self.rows(f"SELECT {fn}(hashtextextended(?, 0))", ("agent:" + name,))
        return True  # READ COMMITTED: claims may have committed since the pass read the loads

    def undelivered_claims(self, limit: int) -> list[Task]:
        # OF t: the task rows are the ones decided on; the dead outbox rows stay free for the notifier.
        rows = self.rows(
            "SELECT t.* FROM outbox o JOIN tasks t ON t.id = o.task_id WHERE o.state = 'dead' AND o.kind = 'webhook'"
            " AND t.state = 'claimed' AND o.agent = t.assigned_to AND o.created_at >= t.assigned_at"
            " AND o.body::jsonb #>> '{data,task,claim_token}' = t.claim_token ORDER BY t.seq LIMIT ?"
            " FOR UPDATE OF t SKIP LOCKED",
            (limit,),
        )
        return [Task.from_row(r) for r in rows]
