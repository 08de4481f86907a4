"""SQL of the a2a area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

import json
from typing import Any

from mcs.engines.sql.base import SqlTx
from mcs.models import APPROVAL, Agent, AgentStatus, Origin, PushConfig, Task


def _task_filter(states: list[tuple[str, bool | None]], context_id: str | None) -> tuple[list[str], list[Any]]:
    """WHERE terms and their arguments for the A2A task list."""
    where: list[str] = []
    args: list[Any] = []
    if states:
        either = []
        for state, approval in states:
            if approval is None:
                either.append("state = ?")
                args.append(state)
            else:
                either.append(f"(state = ? AND type {'=' if approval else '!='} ?)")
                args += [state, APPROVAL]
        where.append("(" + " OR ".join(either) + ")")
    if context_id is not None:
        where.append("id IN (SELECT task_id FROM a2a_tasks WHERE context_id = ?)")
        args.append(context_id)
    return where, args


class A2aSql(SqlTx):
    """Implements mcs.engines.areas.a2a.A2aTx; dialect-specific methods are overridden per engine."""

    def a2a_origin_insert(self, task_id: str, *, context_id: str, message: Any, now: float) -> None:
        self.run(
            "INSERT INTO a2a_tasks (task_id, context_id, message, created_at) VALUES (?, ?, ?, ?)",
            (task_id, context_id, json.dumps(message), now),
        )

    def a2a_origin_get(self, task_id: str) -> Origin | None:
        row = self.row("SELECT context_id, message FROM a2a_tasks WHERE task_id = ?", (task_id,))
        return Origin(context_id=row[0], message=json.loads(row[1])) if row else None

    def push_upsert(self, config: PushConfig, now: float) -> None:
        c = config
        self.run(
            "INSERT INTO a2a_push_configs (task_id, id, url, token, auth_scheme, auth_credentials, owner, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id, id) DO UPDATE SET url = excluded.url,"
            " token = excluded.token, auth_scheme = excluded.auth_scheme,"
            " auth_credentials = excluded.auth_credentials, owner = excluded.owner",
            (c.task_id, c.id, c.url, c.token, c.auth_scheme, c.auth_credentials, c.owner, now),
        )

    def push_get(self, task_id: str, config_id: str) -> PushConfig | None:
        row = self.row("SELECT * FROM a2a_push_configs WHERE task_id = ? AND id = ?", (task_id, config_id))
        return PushConfig.from_row(row) if row else None

    def push_list(self, task_id: str) -> list[PushConfig]:
        rows = self.rows("SELECT * FROM a2a_push_configs WHERE task_id = ? ORDER BY created_at, id", (task_id,))
        return [PushConfig.from_row(r) for r in rows]

    def push_delete(self, task_id: str, config_id: str) -> bool:
        return self.run("DELETE FROM a2a_push_configs WHERE task_id = ? AND id = ?", (task_id, config_id)) == 1

    def a2a_online_agents(self, now: float) -> list[Agent]:
        rows = self.rows(
            "SELECT * FROM agents WHERE status = ? AND expires_at > ? ORDER BY name", (AgentStatus.ONLINE.value, now)
        )
        return [Agent.from_row(r) for r in rows]

    def a2a_tasks_count(self, *, states: list[tuple[str, bool | None]], context_id: str | None) -> int:
        where, args = _task_filter(states, context_id)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return int(self.value("SELECT count(*) FROM tasks" + clause, args))

    def a2a_tasks_page(
        self, *, states: list[tuple[str, bool | None]], context_id: str | None, before_seq: int | None, limit: int
    ) -> list[Task]:
        where, args = _task_filter(states, context_id)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = self.rows("SELECT * FROM tasks" + clause + " ORDER BY seq DESC LIMIT ?", [*args, limit])
        return [Task.from_row(r) for r in rows]
