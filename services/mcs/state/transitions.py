"""The core of the task state machine every other state module calls: one guarded state change
(`set_state`), its audit event, and what follows from a task ending or running again (its dependents,
its fanout parent, its workflow, the failure alert). Every function runs in the caller's transaction.

Serialisation (docs/design/engines.md 4.1): a dependent (site 6) and a fanout parent (site 7) are locked
before their dependencies or children are counted, so two tasks ending together on PostgreSQL never each
see the other unfinished. On SQLite the locks are no-ops: its write transaction holds the database.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from mcs import consensus, effects, routing
from mcs.engines.base import Tx
from mcs.errors import Conflict, NotFound
from mcs.models import APPROVAL, Task, TaskState, TaskView, iso
from mcs.render import task as render_task
from mcs.state import outbox_rows, workflow_steps

# State changes the metrics count (mcs_tasks_<event>_total), wherever they happen.
_COUNTED = {
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.RETRYING: "retried",
    TaskState.CANCELED: "canceled",
}


# ---------------------------------------------------------------- reading


def must_get(tx: Tx, task_id: str) -> Task:
    """The task (404 when there is none)."""
    task = tx.task_get(task_id)
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


def must_lock(tx: Tx, task_id: str) -> Task:
    """The task, locked for a write path to decide on (404 when there is none)."""
    task = tx.task_lock(task_id)
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


def dependency_inputs(tx: Tx, task: Task) -> tuple[tuple[str, ...], dict[str, Any]]:
    """`depends_on` and `inputs`: each dependency's result under its step id (or task id); a fanout
    parent's is its aggregate (the children list, or the consensus). A workflow's root steps get the
    workflow's own inputs under "workflow". A fanout child has its parent's inputs (the agents a fanout
    step reaches work on what the step was handed)."""
    deps = tx.deps_of(task.id)
    source = task
    if task.parent_id is not None and not deps:
        source = tx.task_get(task.parent_id) or task
    upstream = deps if source is task else tx.deps_of(source.id)
    inputs: dict[str, Any] = {}
    if source.workflow_id is not None and not upstream:
        found, value = tx.task_workflow_inputs(source.workflow_id)
        if found:
            inputs["workflow"] = value
    for dep in upstream:
        if dep.state.terminal:
            inputs[dep.step_id if dep.workflow_id is not None and dep.step_id else dep.id] = dep.result
    return tuple(d.id for d in deps), inputs


def view(tx: Tx, task: Task, *, claim_token: str | None = None) -> TaskView:
    """The task with what the API shows beside it (children, dependencies, inputs)."""
    kids = tuple(tx.task_children(task.id)) if task.route == routing.ROUTE_ALL else ()
    depends_on, inputs = dependency_inputs(tx, task)
    return TaskView(task=task, children=kids, depends_on=depends_on, inputs=inputs, claim_token=claim_token)


# ---------------------------------------------------------------- writing


def add_event(tx: Tx, task_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
    """Append one audit event to the task's trail."""
    tx.task_event_add(task_id, kind, actor, now, detail)


def set_state(tx: Tx, task: Task, now: float, **changes: Any) -> Task:
    """Update columns of one task, guarded by the state we read, so a lost race changes nothing (409).
    A task that ends releases its dependents; one that runs again after ending reopens them."""
    if not tx.task_update(task.id, task.state, changes, now):
        raise Conflict(f"task {task.id} changed under us; try again", code="task_changed")
    new_state = changes.get("state")
    counted = _COUNTED.get(new_state) if isinstance(new_state, TaskState) else None
    if counted is not None and new_state is not task.state:
        effects.note(counted, task.type, task.priority.label)
    changed = replace(task, **{k: v for k, v in changes.items() if k != "parked"}, updated_at=now)
    if isinstance(new_state, TaskState) and new_state.terminal and not task.state.terminal:
        release_dependents(tx, changed, now)
    elif isinstance(new_state, TaskState) and not new_state.terminal and task.state.terminal:
        reopen_dependents(tx, changed, now)  # a retried task: what it canceled waits for it again
    return changed


def back_to_queue(tx: Tx, task: Task, now: float, *, avoid: str | None, hard: bool, attempts: int) -> Task:
    """A task offered to or held by agent `avoid` goes back to the queue: unassigned, its claim token and
    lease dropped (a late completion with the token gets 409), unparked, its attempts set to `attempts`
    (never below 0); routing then prefers another agent (`hard`: never that one again)."""
    if avoid is not None:
        tx.avoid_add(task.id, avoid, hard=hard)
    return set_state(
        tx,
        task,
        now,
        state=TaskState.QUEUED,
        assigned_to=None,
        assigned_at=None,
        claim_token=None,
        lease_expires_at=None,
        attempts=max(attempts, 0),
        parked=0,
    )


def alert_failed(tx: Tx, task: Task, now: float) -> None:
    """A permanent failure raises an alert: id, type, agent and an error summary, never the payload."""
    summary = task.error if isinstance(task.error, str) else json.dumps(task.error)
    outbox_rows.alert(
        tx,
        event="task.failed",
        task_id=task.id,
        data={
            "task_id": task.id,
            "task_type": task.type,
            "agent": task.assigned_to,
            "attempts": task.attempts,
            "error": (summary or "")[:500],
        },
        now=now,
    )


def start_waiting_for_approval(tx: Tx, task: Task, actor: str, now: float) -> Task:
    """An approval gate waits for a person: `waiting`, never routed, and an alert says how to decide it."""
    task = set_state(tx, task, now, state=TaskState.WAITING)
    add_event(tx, task.id, "waiting", actor, now, {"for": APPROVAL})
    payload = task.payload if isinstance(task.payload, dict) else {}
    data: dict[str, Any] = {"task_id": task.id, "submitted_by": task.submitted_by}
    if task.workflow_id is not None:  # a workflow step: say which workflow and step waits on a person
        data["workflow_id"] = task.workflow_id
        data["workflow"] = tx.task_workflow_name(task.workflow_id)
        data["step"] = task.step_id
    for key in ("title", "summary"):
        if isinstance(payload.get(key), str):
            data[key] = payload[key][:500]
    data["approve"] = f"mcs task approve {task.id}"
    data["deny"] = f"mcs task deny {task.id} --reason ..."
    outbox_rows.alert(tx, event="approval.waiting", task_id=task.id, data=data, now=now)
    return task


# ---------------------------------------------------------------- dependencies


def resolve_blocked(tx: Tx, task: Task, now: float) -> None:
    """A blocked task whose dependencies changed: canceled when one failed or was canceled (unless it runs
    `always`), queued when every one ended (and its run_at is due; else the dispatcher queues it then)."""
    if task.state is not TaskState.BLOCKED:
        return
    deps = tx.deps_of(task.id)
    if task.run_if != "always":
        for dep in deps:
            if dep.state in (TaskState.FAILED, TaskState.CANCELED):
                error = f"upstream {dep.id} failed"
                set_state(tx, task, now, state=TaskState.CANCELED, error=error)
                add_event(tx, task.id, "canceled", "mcs", now, {"upstream": dep.id, "upstream_state": dep.state.value})
                return
    if any(not d.state.terminal for d in deps):
        return
    if task.not_before is not None and task.not_before > now:
        return
    task = set_state(tx, task, now, state=TaskState.QUEUED, parked=0)
    add_event(tx, task.id, "unblocked", "mcs", now, {"depends_on": [d.id for d in deps]})
    if task.type == APPROVAL:  # a gate waits for a person from the moment it may run, not a dispatcher pass later
        start_waiting_for_approval(tx, task, "mcs", now)


def release_dependents(tx: Tx, task: Task, now: float) -> None:
    """`task` just ended: look again at every blocked task that depends on it (in this transaction)."""
    for dependent_id in tx.dependents_blocked(task.id):
        # Locked, then read again (4.1 site 6): one resolved before it may have settled it already (c
        # depends on a and on b, which depends on a: a's failure cancels b, whose cascade cancels c), and
        # on PostgreSQL another dependency ending at the same time is seen once its transaction commits.
        current = tx.task_lock(dependent_id)
        if current is not None:
            resolve_blocked(tx, current, now)
    if task.workflow_id is not None:
        workflow_steps.settle(tx, task.workflow_id, now)  # a workflow's state follows its steps


def reopen_dependents(tx: Tx, task: Task, now: float) -> None:
    """`task` ended but runs again (a retry): the dependents its failure canceled are blocked again (their
    own dependents follow, through `set_state`), and its workflow, if that failed, is running again."""
    for dependent in tx.dependents_canceled(task.id, f"upstream {task.id} failed"):
        set_state(tx, dependent, now, state=TaskState.BLOCKED, error=None)
        add_event(tx, dependent.id, "reopened", "mcs", now, {"upstream": task.id})
    if task.workflow_id is not None:
        workflow_steps.reopen(tx, task.workflow_id, now, step=task.step_id)


def release_due(tx: Tx, now: float) -> list[str]:
    """Blocked tasks whose dependencies all ended and whose run_at came: queued (by the dispatcher)."""
    ids = tx.task_release_due(now)
    for task_id in ids:
        add_event(tx, task_id, "unblocked", "dispatcher", now, {"run_at": True})
    return ids


# ---------------------------------------------------------------- fanout parents


def settle_parent(tx: Tx, parent_id: str | None, now: float) -> None:
    """When the last child of a fanout ends, the parent ends with every child's outcome: completed when
    any child completed, canceled when none did and some were canceled, failed when every child failed.
    With `aggregate: "consensus"` the result also merges the children's findings (`mcs.consensus`)."""
    if parent_id is None:
        return
    parent = tx.task_lock(parent_id)  # 4.1 site 7: the last two children ending together see each other
    if parent is None or parent.state is not TaskState.WAITING:
        return
    kids = tx.children_of(parent_id)
    if any(not k.state.terminal for k in kids):
        return
    children = [
        {"agent": k.route, "task_id": k.id, "state": k.state.value}
        | ({"result": k.result} if k.state is TaskState.COMPLETED else {"error": k.error})
        for k in kids
    ]
    # "consensus" merges the children's findings (and keeps the children list); anything else collects.
    outcome: dict[str, Any] = {"children": children}
    if parent.aggregate == "consensus":
        try:
            outcome = consensus.aggregate(children)
        except Exception as exc:  # a bug in merging must not refuse the child's completion: keep what came
            outcome = {"aggregate": "consensus", "error": f"merging failed: {exc!r}"[:500], "children": children}
    if any(k.state is TaskState.COMPLETED for k in kids):
        set_state(tx, parent, now, state=TaskState.COMPLETED, result=outcome)
        add_event(tx, parent.id, "completed", "mcs", now, {"children": len(kids)})
    elif any(k.state is TaskState.CANCELED for k in kids):  # nothing completed and someone canceled: no alert
        set_state(tx, parent, now, state=TaskState.CANCELED, result=outcome)
        add_event(tx, parent.id, "canceled", "mcs", now, {"children": len(kids)})
    else:
        parent = set_state(tx, parent, now, state=TaskState.FAILED, result=outcome, error="every child task failed")
        add_event(tx, parent.id, "failed", "mcs", now, {"children": len(kids)})
        alert_failed(tx, parent, now)
    settle_parent(tx, parent.parent_id, now)


# ---------------------------------------------------------------- canceling, failing by route


def cancel_step(tx: Tx, task: Task, actor: str, now: float) -> None:
    """Cancel one unfinished task (a workflow's step) and its fanout children, as `cancel` does."""
    cancel_tree(tx, task, actor, now)
    settle_parent(tx, task.parent_id, now)


def cancel_tree(tx: Tx, task: Task, actor: str, now: float) -> None:
    """Cancel `task` (locked by the caller) and its unfinished fanout children, parent before child."""
    held = task.state in (TaskState.ASSIGNED, TaskState.CLAIMED) and task.assigned_to is not None
    canceled = set_state(tx, task, now, state=TaskState.CANCELED, lease_expires_at=None)
    add_event(tx, task.id, "canceled", actor, now)
    if held:  # the agent holding it learns of it (its SDK cancels the handler), signed like task.assigned
        outbox_rows.enqueue(
            tx,
            kind="webhook",
            agent=task.assigned_to,
            task_id=task.id,
            body={"type": "task.canceled", "timestamp": iso(now), "data": {"task": render_task(view(tx, canceled))}},
            now=now,
        )
    for kid in tx.unfinished_children(task.id):
        locked = tx.task_lock(kid.id)
        if locked is not None and not locked.state.terminal:
            cancel_tree(tx, locked, actor, now)


def fail_routed_to(tx: Tx, *, agent: str, error: str, actor: str, now: float) -> list[str]:
    """End every unfinished task routed to `agent` by name, failed with `error` (an alert each)."""
    failed: list[str] = []
    for found in tx.tasks_routed_to(agent):
        locked = tx.task_lock(found.id)
        if locked is None or locked.state.terminal:
            continue  # a parent settled earlier in this loop may have ended it
        task = set_state(tx, locked, now, state=TaskState.FAILED, error=error, lease_expires_at=None)
        add_event(tx, task.id, "failed", actor, now, {"error": error, "retryable": False})
        alert_failed(tx, task, now)
        settle_parent(tx, task.parent_id, now)
        failed.append(task.id)
    return failed


# ---------------------------------------------------------------- concurrency keys


def key_full(tx: Tx, key: str | None, limit: int | None) -> bool:
    """Whether `key` already has `limit` tasks assigned or claimed (a task without a key never is).
    The key's name lock comes first (4.1 site 4): two claims never both see room for one."""
    if key is None:
        return False
    tx.lock_name("ckey", key)
    return tx.key_running(key) >= (limit or 1)


def key_blocks(tx: Tx, key: str, limit: int | None, full_keys: set[tuple[str, int | None]]) -> bool:
    """`key_full` for the dispatcher's pass, remembering the keys found full so a long queue of tasks
    waiting on one key costs one count, not one per task."""
    if (key, limit) in full_keys:  # with its limit: tasks sharing a key may (oddly) give different ones
        return True
    if key_full(tx, key, limit):
        full_keys.add((key, limit))
        return True
    return False
