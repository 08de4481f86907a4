"""The A2A face's rows (migration 0018): where a task came from (its A2A context and the client's message)
and the push configs set on tasks. The notifier's push rows are written by a trigger on `tasks`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mcs.errors import Forbidden, NotFound
from mcs.models import APPROVAL, Agent, AgentStatus, Caller, Task, TaskSpec
from mcs.state import agents as agents_store
from mcs.store import tasks as tasks_store
from mcs.store.connection import Connection


@dataclass(frozen=True)
class Origin:
    """What the A2A face recorded when it created a task: its context and the client's message (JSON)."""

    context_id: str
    message: dict[str, Any] | None


@dataclass(frozen=True, kw_only=True)
class PushConfig:
    task_id: str
    id: str
    url: str
    token: str | None
    auth_scheme: str | None
    auth_credentials: str | None = field(repr=False)
    owner: str  # who set it: an agent's notifications are signed with its webhook_secret; the admin's are not

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PushConfig:
        return cls(
            task_id=row["task_id"],
            id=row["id"],
            url=row["url"],
            token=row["token"],
            auth_scheme=row["auth_scheme"],
            auth_credentials=row["auth_credentials"],
            owner=row["owner"],
        )


def origin(conn: Connection, task_id: str) -> Origin | None:
    row = conn.execute("SELECT context_id, message FROM a2a_tasks WHERE task_id = ?", (task_id,)).fetchone()
    return Origin(context_id=row[0], message=json.loads(row[1])) if row else None


def task_with_origin(conn: Connection, *, task_id: str) -> tuple[Task, Origin | None]:
    """The task (404 when there is none) and where it came from."""
    return tasks_store.must_get(conn, task_id), origin(conn, task_id)


def submit(
    conn: Connection,
    *,
    caller: Caller,
    spec: TaskSpec,
    context_id: str,
    message: dict[str, Any],
    push: PushConfig | None,
    now: float,
    max_queued: int,
) -> tuple[Task, Origin]:
    """A task from an A2A message, as `POST /v1/tasks` makes one (quota, audit event), with its origin and
    the push config the message asked for, in one transaction."""
    body, _ = tasks_store.submit(
        conn,
        caller=caller,
        spec=spec,
        idempotency_key=None,
        body_hash="",
        idempotency_ttl=0,
        now=now,
        max_queued=max_queued,
    )
    conn.execute(
        "INSERT INTO a2a_tasks (task_id, context_id, message, created_at) VALUES (?, ?, ?, ?)",
        (body["id"], context_id, json.dumps(message), now),
    )
    if push is not None:
        _insert_push(conn, caller=caller, config=push, task_id=body["id"], now=now)
    return tasks_store.must_get(conn, body["id"]), Origin(context_id=context_id, message=message)


def _may_manage(task: Task, caller: Caller) -> None:
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can manage a task's push configs", code="not_submitter")


def _insert_push(conn: Connection, *, caller: Caller, config: PushConfig, task_id: str, now: float) -> PushConfig:
    conn.execute(
        "INSERT INTO a2a_push_configs (task_id, id, url, token, auth_scheme, auth_credentials, owner, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(task_id, id) DO UPDATE SET url = excluded.url,"
        " token = excluded.token, auth_scheme = excluded.auth_scheme, auth_credentials = excluded.auth_credentials,"
        " owner = excluded.owner",
        (task_id, config.id, config.url, config.token, config.auth_scheme, config.auth_credentials, caller.actor, now),
    )
    # The audit trail says a config was set, never its URL or token (any agent may read a task's events).
    tasks_store.add_event(conn, task_id, "push_config_set", caller.actor, now, {"config_id": config.id})
    return PushConfig(
        task_id=task_id,
        id=config.id,
        url=config.url,
        token=config.token,
        auth_scheme=config.auth_scheme,
        auth_credentials=config.auth_credentials,
        owner=caller.actor,
    )


def set_push(conn: Connection, *, caller: Caller, config: PushConfig, now: float) -> PushConfig:
    """Create or replace a push config on a task (the submitter's or the admin's)."""
    task = tasks_store.must_get(conn, config.task_id)
    _may_manage(task, caller)
    return _insert_push(conn, caller=caller, config=config, task_id=task.id, now=now)


def get_push(conn: Connection, *, caller: Caller, task_id: str, config_id: str) -> PushConfig:
    _may_manage(tasks_store.must_get(conn, task_id), caller)
    row = conn.execute(
        "SELECT * FROM a2a_push_configs WHERE task_id = ? AND (id = ? OR ? = '') ORDER BY created_at LIMIT 1",
        (task_id, config_id, config_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"task {task_id} has no push config {config_id!r}")
    return PushConfig.from_row(row)


def list_push(conn: Connection, *, caller: Caller, task_id: str) -> list[PushConfig]:
    _may_manage(tasks_store.must_get(conn, task_id), caller)
    rows = conn.execute("SELECT * FROM a2a_push_configs WHERE task_id = ? ORDER BY created_at", (task_id,))
    return [PushConfig.from_row(r) for r in rows]


def delete_push(conn: Connection, *, caller: Caller, task_id: str, config_id: str, now: float) -> None:
    _may_manage(tasks_store.must_get(conn, task_id), caller)
    gone = conn.execute("DELETE FROM a2a_push_configs WHERE task_id = ? AND id = ?", (task_id, config_id)).rowcount
    if not gone:
        raise NotFound(f"task {task_id} has no push config {config_id!r}")
    tasks_store.add_event(conn, task_id, "push_config_deleted", caller.actor, now, {"config_id": config_id})


def push_target(conn: Connection, *, task_id: str, config_id: str) -> tuple[PushConfig, Task, Origin | None] | None:
    """For the notifier: the config, the task as it is now and its origin; None when either is gone."""
    row = conn.execute("SELECT * FROM a2a_push_configs WHERE task_id = ? AND id = ?", (task_id, config_id)).fetchone()
    task = tasks_store.get(conn, task_id)
    if row is None or task is None:
        return None
    return PushConfig.from_row(row), task, origin(conn, task_id)


def signing_key(conn: Connection, owner: str) -> str | None:
    """An agent's webhook_secret (its notifications are signed as its webhooks are); None for another owner."""
    target = agents_store.webhook_target(conn, owner)
    return target[1] if target else None


def online_capabilities(conn: Connection, *, now: float) -> dict[str, list[str]]:
    """Each capability an online agent serves (within its grant), with the agents that serve it."""
    rows = conn.execute(
        "SELECT * FROM agents WHERE status = ? AND expires_at > ? ORDER BY name", (AgentStatus.ONLINE.value, now)
    ).fetchall()
    serving: dict[str, list[str]] = {}
    for row in rows:
        agent = Agent.from_row(row)
        for capability in agent.usable_capabilities:
            serving.setdefault(capability, []).append(agent.name)
    return dict(sorted(serving.items()))


def list_tasks(
    conn: Connection,
    *,
    states: list[tuple[str, bool | None]],
    context_id: str | None,
    limit: int,
    before_seq: int | None,
) -> tuple[list[tuple[Task, Origin | None]], int, int | None]:
    """Tasks newest first, filtered by MCS state (each with approval or not, `convert.mcs_filter`) and A2A
    context: (a page, how many match in all, the seq to continue before or None at the end)."""
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
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = int(conn.execute(f"SELECT count(*) FROM tasks{clause}", args).fetchone()[0])
    if before_seq is not None:
        clause += (" AND " if where else " WHERE ") + "seq < ?"
        args.append(before_seq)
    rows = conn.execute(f"SELECT * FROM tasks{clause} ORDER BY seq DESC LIMIT ?", [*args, limit + 1]).fetchall()
    tasks = [Task.from_row(r) for r in rows[:limit]]
    more = tasks[-1].seq if len(rows) > limit else None
    return [(t, origin(conn, t.id)) for t in tasks], total, more
