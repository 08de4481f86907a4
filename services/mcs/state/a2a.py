"""The A2A face's state (migration 0018): where a task came from (its A2A context and the client's message)
and the push configs set on tasks. The notifier's push rows are written by a trigger on `tasks`.

Functions take a `Tx` and return models (`Origin`, `PushConfig`, `Task`); they never commit.
"""

from __future__ import annotations

from typing import Any

from mcs.engines.base import Tx
from mcs.errors import Forbidden, NotFound
from mcs.models import Caller, Origin, PushConfig, Task, TaskSpec
from mcs.state import tasks as tasks_store


def origin(tx: Tx, task_id: str) -> Origin | None:
    return tx.a2a_origin_get(task_id)


def task_with_origin(tx: Tx, *, task_id: str) -> tuple[Task, Origin | None]:
    """The task (404 when there is none) and where it came from."""
    return tasks_store.must_get(tx, task_id), origin(tx, task_id)


def submit(
    tx: Tx,
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
        tx,
        caller=caller,
        spec=spec,
        idempotency_key=None,
        body_hash="",
        idempotency_ttl=0,
        now=now,
        max_queued=max_queued,
    )
    task_id = body.id
    tx.a2a_origin_insert(task_id, context_id=context_id, message=message, now=now)
    if push is not None:
        _insert_push(tx, caller=caller, config=push, task_id=task_id, now=now)
    return tasks_store.must_get(tx, task_id), Origin(context_id=context_id, message=message)


def _may_manage(task: Task, caller: Caller) -> None:
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can manage a task's push configs", code="not_submitter")


def _insert_push(tx: Tx, *, caller: Caller, config: PushConfig, task_id: str, now: float) -> PushConfig:
    stored = PushConfig(
        task_id=task_id,
        id=config.id,
        url=config.url,
        token=config.token,
        auth_scheme=config.auth_scheme,
        auth_credentials=config.auth_credentials,
        owner=caller.actor,
    )
    tx.push_upsert(stored, now)
    # The audit trail says a config was set, never its URL or token (any agent may read a task's events).
    tasks_store.add_event(tx, task_id, "push_config_set", caller.actor, now, {"config_id": config.id})
    return stored


def set_push(tx: Tx, *, caller: Caller, config: PushConfig, now: float) -> PushConfig:
    """Create or replace a push config on a task (the submitter's or the admin's)."""
    task = tasks_store.must_get(tx, config.task_id)
    _may_manage(task, caller)
    return _insert_push(tx, caller=caller, config=config, task_id=task.id, now=now)


def get_push(tx: Tx, *, caller: Caller, task_id: str, config_id: str) -> PushConfig:
    """One push config of a task; with no config id, its first."""
    _may_manage(tasks_store.must_get(tx, task_id), caller)
    if config_id:
        found = tx.push_get(task_id, config_id)
    else:
        found = next(iter(tx.push_list(task_id)), None)
    if found is None:
        raise NotFound(f"task {task_id} has no push config {config_id!r}")
    return found


def list_push(tx: Tx, *, caller: Caller, task_id: str) -> list[PushConfig]:
    _may_manage(tasks_store.must_get(tx, task_id), caller)
    return tx.push_list(task_id)


def delete_push(tx: Tx, *, caller: Caller, task_id: str, config_id: str, now: float) -> None:
    _may_manage(tasks_store.must_get(tx, task_id), caller)
    if not tx.push_delete(task_id, config_id):
        raise NotFound(f"task {task_id} has no push config {config_id!r}")
    tasks_store.add_event(tx, task_id, "push_config_deleted", caller.actor, now, {"config_id": config_id})


def push_target(tx: Tx, *, task_id: str, config_id: str) -> tuple[PushConfig, Task, Origin | None] | None:
    """For the notifier: the config, the task as it is now and its origin; None when either is gone."""
    config = tx.push_get(task_id, config_id)
    task = tasks_store.get(tx, task_id)
    if config is None or task is None:
        return None
    return config, task, origin(tx, task_id)


def signing_key(tx: Tx, owner: str) -> str | None:
    """An agent's webhook_secret (its notifications are signed as its webhooks are); None for another owner."""
    target = tx.webhook_target(owner)
    return None if target is None else target[1]


def online_capabilities(tx: Tx, *, now: float) -> dict[str, list[str]]:
    """Each capability an online agent serves (within its grant), with the agents that serve it."""
    serving: dict[str, list[str]] = {}
    for agent in tx.a2a_online_agents(now):
        for capability in agent.usable_capabilities:
            serving.setdefault(capability, []).append(agent.name)
    return dict(sorted(serving.items()))


def list_tasks(
    tx: Tx,
    *,
    states: list[tuple[str, bool | None]],
    context_id: str | None,
    limit: int,
    before_seq: int | None,
) -> tuple[list[tuple[Task, Origin | None]], int, int | None]:
    """Tasks newest first, filtered by MCS state (each with approval or not, `convert.mcs_filter`) and A2A
    context: (a page, how many match in all, the seq to continue before or None at the end)."""
    total = tx.a2a_tasks_count(states=states, context_id=context_id)
    found = tx.a2a_tasks_page(states=states, context_id=context_id, before_seq=before_seq, limit=limit + 1)
    tasks = found[:limit]
    more = tasks[-1].seq if len(found) > limit else None
    return [(t, origin(tx, t.id)) for t in tasks], total, more
