"""SQL of the queue area shared by both engines (placeholders `?`; the PostgreSQL engine translates them).

The statements are today's, tuned at a million stored tasks (bench/scale.py, tests/integration/test_scale.py
check their plans): where SQLite needs its own text (INDEXED BY, json_each, json_extract) it is in
mcs.engines.sqlite.queue, and the PostgreSQL form in mcs.engines.postgres.queue.
"""

from __future__ import annotations

import json
from typing import Any

from mcs.engines.sql.base import SqlTx
from mcs.engines.sql.tasks import FOR_AGENT, NEEDS_NO_AGENT, NOT_REJECTED, UNFINISHED_DEPS
from mcs.models import QueuedRow, QueueGroup, Task

# What routing needs of a queued task: a backlog can be long, and most of it waits for room.
QUEUED_COLUMNS = "id, type, route, capabilities, priority, seq, concurrency_key, max_concurrency"


class QueueSql(SqlTx):
    """Implements mcs.engines.areas.queue.QueueTx; dialect-specific methods are overridden per engine."""

    # ------------------------------------------------------------ is there work

    def work_due(self, now: float) -> bool:
        if self.row("SELECT 1 FROM tasks WHERE state = 'retrying' AND not_before <= ? LIMIT 1", (now,)):
            return True
        return (
            self.row(
                f"SELECT 1 FROM tasks WHERE state = 'blocked' AND not_before <= ? AND NOT {UNFINISHED_DEPS} LIMIT 1",
                (now,),
            )
            is not None
        )

    def queued_any(self, *, unparked: bool = False, needs_no_agent: bool = False) -> bool:
        sql = "SELECT 1 FROM tasks WHERE state = 'queued'"
        if unparked:
            sql += " AND parked = 0"
        if needs_no_agent:
            sql += f" AND {NEEDS_NO_AGENT}"
        return self.row(sql + " LIMIT 1") is not None

    def next_due(self) -> float | None:
        retry = self.value("SELECT min(not_before) FROM tasks WHERE state = 'retrying'")
        run_at = self.value(
            "SELECT min(not_before) FROM tasks WHERE state = 'blocked' AND not_before IS NOT NULL"
            f" AND NOT {UNFINISHED_DEPS}"
        )
        due = [float(t) for t in (retry, run_at) if t is not None]
        return min(due) if due else None

    # ------------------------------------------------------------ a dispatch pass

    def requeue_due_retries(self, now: float) -> list[str]:
        rows = self.rows(
            "UPDATE tasks SET state = 'queued', parked = 0, assigned_to = NULL, assigned_at = NULL,"
            " claim_token = NULL, updated_at = ? WHERE state = 'retrying' AND not_before <= ? RETURNING id",
            (now, now),
        )
        return [r[0] for r in rows]

    def queued_groups(self) -> list[QueueGroup]:
        rows = self.rows(  # a group's count may span rows (PostgreSQL's slots, migration 0022): their sum
            "SELECT capabilities, route FROM task_counts WHERE state = 'queued'"
            " GROUP BY capabilities, route HAVING sum(n) > 0"
        )
        return [QueueGroup(capabilities=tuple(json.loads(r[0])), route=r[1], key=r[0]) for r in rows]

    def unpark(self, group: QueueGroup) -> int:
        return self.run(
            "UPDATE tasks SET parked = 0 WHERE state = 'queued' AND capabilities = ? AND route = ? AND parked = 1",
            (group.key, group.route),
        )

    def queue_page(
        self,
        *,
        after: tuple[int, int] | None,
        needs_no_agent: bool,
        skip_keys: list[tuple[str, int | None]],
        limit: int,
    ) -> list[QueuedRow]:
        sql = f"SELECT {QUEUED_COLUMNS} FROM tasks WHERE state = 'queued' AND parked = 0"
        args: list[Any] = []
        if needs_no_agent:
            sql += f" AND {NEEDS_NO_AGENT}"
        if after is not None:
            sql += " AND (priority, seq) > (?, ?)"
            args += list(after)
        if skip_keys:  # the rest of a full key's backlog is not read (nor counted against the scan limit)
            sql += " AND (concurrency_key IS NULL OR (concurrency_key, max_concurrency) NOT IN (VALUES "
            sql += ", ".join("(?, ?)" for _ in skip_keys) + "))"
            args += [v for pair in skip_keys for v in pair]
        rows = self.rows(sql + " ORDER BY priority, seq LIMIT ?", (*args, limit))
        return [QueuedRow.from_row(r) for r in rows]

    def next_for_agent(
        self, name: str, capabilities: tuple[str, ...], *, after: tuple[int, int] | None = None, limit: int
    ) -> list[QueuedRow]:
        # The capability match runs in SQL (every required one among the agent's): a long queue of tasks
        # this agent cannot do costs a scan, never a decode of each row's JSON in Python.
        sql = f"SELECT {QUEUED_COLUMNS} FROM tasks WHERE {FOR_AGENT} AND {self.CAPABLE} AND {NOT_REJECTED}"
        args: list[Any] = [name, json.dumps(list(capabilities)), name]
        if after is not None:
            sql += " AND (priority, seq) > (?, ?)"
            args += list(after)
        return [QueuedRow.from_row(r) for r in self.rows(sql + " ORDER BY priority, seq LIMIT ?", (*args, limit))]

    def queued_take(self, task_id: str) -> Task | None:
        row = self.row("SELECT * FROM tasks WHERE id = ? AND state = 'queued'" + self.SKIP_LOCKED, (task_id,))
        return Task.from_row(row) if row else None

    def park(self, task_id: str) -> bool:
        return self.run("UPDATE tasks SET parked = 1 WHERE id = ? AND state = 'queued'", (task_id,)) == 1

    def avoid_get(self, task_id: str) -> dict[str, bool]:
        return {r[0]: bool(r[1]) for r in self.rows("SELECT agent, hard FROM task_avoid WHERE task_id = ?", (task_id,))}

    def task_insert_child(self, parent: Task, *, kid_id: str, route: str, now: float) -> Task:
        self.run(
            "INSERT INTO tasks (id, type, payload, priority, capabilities, route, state, max_retries, claim_ttl,"
            " parent_id, submitted_by, created_at, updated_at, concurrency_key, max_concurrency)"
            " SELECT ?, type, payload, priority, capabilities, ?, 'queued', max_retries, claim_ttl, id,"
            " submitted_by, created_at, ?, concurrency_key, max_concurrency FROM tasks WHERE id = ?",
            (kid_id, route, now, parent.id),
        )
        return Task.from_row(self.rows("SELECT * FROM tasks WHERE id = ?", (kid_id,))[0])

    def loads(self) -> dict[str, int]:
        rows = self.rows(
            "SELECT assigned_to, count(*) FROM tasks WHERE state IN ('assigned', 'claimed')"
            " AND assigned_to IS NOT NULL GROUP BY assigned_to"
        )
        return {r[0]: int(r[1]) for r in rows}

    def agent_load(self, name: str) -> int:
        return int(
            self.value("SELECT count(*) FROM tasks WHERE assigned_to = ? AND state IN ('assigned', 'claimed')", (name,))
        )

    def agent_lock(self, name: str, *, share: bool) -> bool:
        """A no-op: SQLite's write transaction holds the whole database, so loads read in it still hold
        (PostgreSQL overrides it)."""
        return False

    def agent_mark_assigned(self, name: str, now: float) -> None:
        self.run("UPDATE agents SET last_assigned_at = ? WHERE name = ?", (now, name))

    # ------------------------------------------------------------ the watchdog's sweeps

    def expired_leases(self, now: float, limit: int) -> list[Task]:
        rows = self.rows(
            "SELECT * FROM tasks WHERE state = 'claimed' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?"
            + self.SKIP_LOCKED,
            (now, limit),
        )
        return [Task.from_row(r) for r in rows]

    def unclaimed(self, now: float, limit: int) -> list[Task]:
        rows = self.rows(
            "SELECT * FROM tasks t WHERE t.state = 'assigned' AND (t.assigned_at + t.claim_ttl <= ? OR EXISTS ("
            " SELECT 1 FROM outbox AS o WHERE o.task_id = t.id AND o.kind = 'webhook'"
            " AND o.state = 'dead' AND o.agent = t.assigned_to AND o.created_at >= t.assigned_at))"
            " ORDER BY t.seq LIMIT ?" + self.SKIP_LOCKED,
            (now, limit),
        )
        return [Task.from_row(r) for r in rows]

    def undelivered_claims(self, limit: int) -> list[Task]:
        raise NotImplementedError  # reads the claim token out of the webhook's JSON body: dialect-specific
