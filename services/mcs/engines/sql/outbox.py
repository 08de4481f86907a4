"""SQL of the outbox area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.base import SqlTx
from mcs.models import STOPPED_PID, NewOutbox, OutboxItem, OutboxOutcome, ProcessBeat

# Due pending rows, oldest first but at most `per_key` per agent (alerts count as one key), none that a
# notifier holds a live lease on. The cost follows the agents with pending rows, not the rows: the
# recursive part steps from one agent to the next on the outbox_pending_agent index (a seek each), and each
# agent's oldest `per_key` due rows are read from the same index, so 50,000 pending rows for one dead agent
# cost what 8 do. `{ix}` pins that index where the dialect can (SQLite's INDEXED BY).
# Parameters: now, now, per_key, now, now, per_key, limit.
_PICK = (
    "WITH RECURSIVE keys(agent) AS ("
    " SELECT (SELECT min(agent) FROM outbox{ix} WHERE state = 'pending')"
    " UNION ALL SELECT (SELECT min(agent) FROM outbox{ix}"
    " WHERE state = 'pending' AND agent > keys.agent)"
    " FROM keys WHERE keys.agent IS NOT NULL),"
    " picked(id) AS ("
    " SELECT o.id FROM keys JOIN outbox o ON o.id IN (SELECT id FROM outbox{ix}"
    " WHERE state = 'pending' AND agent = keys.agent AND next_attempt_at <= ?"
    " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?)"
    " UNION ALL SELECT id FROM (SELECT id FROM outbox{ix}"
    " WHERE state = 'pending' AND agent IS NULL AND next_attempt_at <= ?"
    " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?) AS alerts)"
    " SELECT o.*,"
    " (SELECT a.notify_url FROM agents a WHERE a.name = o.agent) AS notify_url,"
    " (SELECT a.webhook_secret FROM agents a WHERE a.name = o.agent) AS webhook_secret,"
    " EXISTS (SELECT 1 FROM agents a WHERE a.name = o.agent) AS agent_exists"
    " FROM outbox o WHERE o.id IN (SELECT id FROM picked) ORDER BY o.id LIMIT ?"
)

# A final outcome ends the lease (the row is settled, or due again for whichever notifier takes it first).
_OUTCOME = {
    "delivered": "state = 'delivered', last_error = ?",
    "superseded": "state = 'superseded', last_error = ?",
    "dead": "state = 'dead', last_error = ?",
    "retry": "last_error = ?, next_attempt_at = ?",
}


class OutboxSql(SqlTx):
    """Implements mcs.engines.areas.outbox.OutboxTx; dialect-specific methods are overridden per engine."""

    PENDING_INDEX: ClassVar[str] = ""  # " INDEXED BY outbox_pending_agent" where the dialect has index hints

    def _pick(self) -> str:
        return _PICK.format(ix=self.PENDING_INDEX)

    def outbox_insert(self, row: NewOutbox) -> None:
        self.run(
            "INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.kind, row.message_id, row.agent, row.task_id, row.body, row.now, row.now, row.now),
        )

    def outbox_due(self, *, now: float, limit: int, per_key: int) -> list[OutboxItem]:
        rows = self.rows(self._pick(), (now, now, per_key, now, now, per_key, limit))
        return [OutboxItem.from_row(r) for r in rows]

    def outbox_take(self, owner: str, *, now: float, lease_until: float, limit: int, per_key: int) -> list[OutboxItem]:
        rows = self.rows(self._pick() + self.SKIP_LOCKED, (now, now, per_key, now, now, per_key, limit))
        items = [OutboxItem.from_row(r) for r in rows]
        self.run_many(
            "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id = ?",
            [(owner, lease_until, item.id) for item in items],
        )
        return items

    def outbox_renew(self, owner: str, ids: list[int], until: float) -> int:
        sql = "UPDATE outbox SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'pending'"
        return sum(self.run(sql, (until, i, owner)) for i in ids)

    def outbox_release(self, owner: str, ids: list[int]) -> int:
        sql = "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?"
        return sum(self.run(sql, (i, owner)) for i in ids)

    def outbox_record(self, owner: str, outcomes: list[OutboxOutcome], now: float) -> list[OutboxOutcome]:
        written: list[OutboxOutcome] = []
        for o in outcomes:
            sets = _OUTCOME.get(o.state, _OUTCOME["dead"])
            params: list[object] = [o.error]
            if o.state == "retry":
                params.append(o.next_attempt_at)
            if o.final:
                sets += ", lease_owner = NULL, lease_until = NULL"
            changed = self.run(
                f"UPDATE outbox SET {sets}, attempts = CASE WHEN attempts > ? THEN attempts ELSE ? END,"
                " updated_at = ? WHERE id = ? AND lease_owner = ?",
                (*params, o.attempts, o.attempts, now, o.id, owner),
            )
            if changed:
                written.append(o)
        return written

    def outbox_next_due(self, after: float) -> float | None:
        found = self.value(
            "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending' AND next_attempt_at > ?", (after,)
        )
        return None if found is None else float(found)

    def beat(self, process: str, instance: str, pid: int, started_at: float, now: float) -> None:
        self.run(
            "INSERT INTO heartbeats (process, instance, pid, started_at, beat_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (process, instance) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,"
            " beat_at = excluded.beat_at",
            (process, instance, pid, started_at, now),
        )

    def mark_stopped(self, process: str, instance: str, pid: int) -> None:
        self.run(
            "UPDATE heartbeats SET pid = ? WHERE process = ? AND instance = ? AND pid = ?",
            (STOPPED_PID, process, instance, pid),
        )

    def heartbeats_forget(self, process: str, instances: list[str]) -> int:
        sql = "DELETE FROM heartbeats WHERE process = ? AND instance = ?"
        return sum(self.run(sql, (process, i)) for i in instances)

    def heartbeats(self) -> list[ProcessBeat]:
        rows = self.rows(
            "SELECT process, instance, pid, started_at, beat_at FROM heartbeats ORDER BY process, instance"
        )
        return [ProcessBeat(name=r[0], instance=r[1], pid=r[2], started_at=r[3], beat_at=r[4]) for r in rows]
