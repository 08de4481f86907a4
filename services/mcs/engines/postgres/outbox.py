"""PostgreSQL's own SQL for the outbox area: overrides of mcs.engines.sql.outbox where the dialects differ."""

from __future__ import annotations

from mcs.engines.sql.outbox import OutboxSql
from mcs.models import OutboxItem


class OutboxPg(OutboxSql):
    """Methods whose shared SQL does not run on PostgreSQL (json_each, INDEXED BY, jsonb operators, ...)."""

    def outbox_take(self, owner: str, *, now: float, lease_until: float, limit: int, per_key: int) -> list[OutboxItem]:
        # The pick reads its CTE from the statement's snapshot, and FOR UPDATE SKIP LOCKED re-checks only
        # the outer WHERE once it locks a row: a row another notifier leased (or settled) and committed
        # after that snapshot is locked and returned all the same. So the lease is written only where the
        # row, as committed now (a new statement under READ COMMITTED), is still pending, due and free,
        # and only the rows leased here are handed back. (SQLite: one writer, the pick is never stale.)
        rows = self.rows(self._pick() + self.SKIP_LOCKED, (now, now, per_key, now, now, per_key, limit))
        items = [OutboxItem.from_row(r) for r in rows]
        if not items:
            return []
        leased = self.rows(
            "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id = ANY(?) AND state = 'pending'"
            " AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?) RETURNING id",
            (owner, lease_until, [item.id for item in items], now, now),
        )
        ids = {row[0] for row in leased}
        return [item for item in items if item.id in ids]
