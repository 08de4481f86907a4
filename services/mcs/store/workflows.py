"""Workflows: a DAG of tasks (steps) submitted in one transaction; its state follows its steps. Functions
here run inside `in_write`/`in_read`; they never commit themselves."""

from __future__ import annotations

import graphlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mcs import quotas, routing
from mcs.errors import Conflict, Forbidden, NotFound, Unprocessable
from mcs.models import Caller, Task, TaskSpec, TaskState, iso
from mcs.state import effects
from mcs.store import agents as agents_store
from mcs.store import tasks as tasks_store
from mcs.store.connection import Connection

STATES = ("running", "completed", "failed", "canceled")


def add_event(conn: Connection, workflow_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
    conn.execute(
        "INSERT INTO workflow_events (workflow_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
        (workflow_id, now, kind, actor, None if detail is None else json.dumps(detail)),
    )


def order_steps(steps: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The steps, each after the ones it depends on; a duplicate or unknown step id, or a cycle, is a 422."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for step in steps:
        if step["id"] in by_id:
            raise Unprocessable(f"step id {step['id']!r} is used twice", code="duplicate_step")
        by_id[step["id"]] = step
    graph: dict[str, list[str]] = {}
    for step in steps:
        for dep in step.get("depends_on") or []:
            if dep not in by_id:
                raise Unprocessable(f"step {step['id']!r} depends on {dep!r}, which is not a step", code="unknown_step")
        graph[step["id"]] = list(dict.fromkeys(step.get("depends_on") or []))
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise Unprocessable(f"the steps' dependencies form a cycle: {cycle}", code="dependency_cycle") from exc
    return [by_id[i] for i in order]


def submit(
    conn: Connection,
    *,
    caller: Caller,
    name: str,
    steps: list[Mapping[str, Any]],
    inputs: Any,
    max_retries: int,
    claim_ttl: float,
    now: float,
    max_queued: int = 0,
    actor_detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a workflow and every step (tasks, blocked until their steps are done) at once."""
    ordered = order_steps(steps)
    if max_queued > 0 and not caller.is_admin:
        unfinished = tasks_store.unfinished_submitted(conn, caller.actor)
        if unfinished + len(steps) > max_queued:
            raise quotas.queued_tasks_exceeded(caller.actor, unfinished, max_queued)
    workflow_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO workflows (id, name, state, inputs, submitted_by, created_at, updated_at)"
        " VALUES (?, ?, 'running', ?, ?, ?, ?)",
        (workflow_id, name, None if inputs is None else json.dumps(inputs), caller.actor, now, now),
    )
    add_event(conn, workflow_id, "submitted", caller.actor, now, {"steps": len(steps)} | (actor_detail or {}))
    effects.note("workflow_submitted", "workflow", "normal")
    task_ids: dict[str, str] = {}
    for step in ordered:
        route = step.get("route") or routing.ROUTE_ANY
        if route not in (routing.ROUTE_ANY, routing.ROUTE_ALL) and agents_store.get(conn, route) is None:
            raise Unprocessable(
                f"step {step['id']!r}: route names agent {route!r}, which does not exist", code="unknown_agent"
            )
        spec = replace(
            TaskSpec.from_body(step, max_retries=max_retries, claim_ttl=claim_ttl),
            depends_on=tuple(task_ids[d] for d in dict.fromkeys(step.get("depends_on") or [])),
            run_if=step.get("run_if") or "success",
        )
        task_ids[step["id"]] = tasks_store.insert(
            conn, spec=spec, submitted_by=caller.actor, now=now, workflow_id=workflow_id, step_id=step["id"]
        )
    return show(conn, workflow_id)


def _row(conn: Connection, workflow_id: str) -> Any:
    row = conn.execute("SELECT * FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
    if row is None:
        raise NotFound(f"no workflow {workflow_id!r}")
    return row


def steps_of(conn: Connection, workflow_id: str) -> list[Task]:
    rows = conn.execute("SELECT * FROM tasks WHERE workflow_id = ? ORDER BY seq", (workflow_id,)).fetchall()
    return [Task.from_row(r) for r in rows]


def _view(conn: Connection, row: Any, steps: list[Task]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "state": row["state"],
        "inputs": None if row["inputs"] is None else json.loads(row["inputs"]),
        "submitted_by": row["submitted_by"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "finished_at": iso(row["finished_at"]),
        "steps": {t.step_id or t.id: tasks_store.to_api(conn, t) for t in steps},
    }


def show(conn: Connection, workflow_id: str) -> dict[str, Any]:
    row = _row(conn, workflow_id)
    return _view(conn, row, steps_of(conn, workflow_id))


def events(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    _row(conn, workflow_id)
    rows = conn.execute(
        "SELECT at, kind, actor, detail FROM workflow_events WHERE workflow_id = ? ORDER BY id", (workflow_id,)
    )
    return [
        {
            "at": iso(r["at"]),
            "kind": r["kind"],
            "actor": r["actor"],
            "detail": None if r["detail"] is None else json.loads(r["detail"]),
        }
        for r in rows
    ]


def list_workflows(conn: Connection, *, state: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    """Newest first, paged like tasks (the cursor continues after the last one shown)."""
    where: list[str] = []
    args: list[Any] = []
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if cursor:
        where.append("seq < ?")
        args.append(tasks_store.decode_cursor(cursor))
    sql = "SELECT * FROM workflows" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
    rows = conn.execute(sql, (*args, limit + 1)).fetchall()
    shown = rows[:limit]
    return {
        "workflows": [_view(conn, r, steps_of(conn, r["id"])) for r in shown],
        "next_cursor": tasks_store.encode_cursor(shown[-1]["seq"]) if len(rows) > limit else None,
    }


def _finish(conn: Connection, workflow_id: str, state: str, actor: str, now: float, detail: Any = None) -> None:
    conn.execute(
        "UPDATE workflows SET state = ?, updated_at = ?, finished_at = ? WHERE id = ? AND state = 'running'",
        (state, now, now, workflow_id),
    )
    add_event(conn, workflow_id, state, actor, now, detail)
    effects.note(f"workflow_{state}", "workflow", "normal")


def settle(conn: Connection, workflow_id: str, now: float) -> None:
    """After a step ended: the workflow completes when every step completed, and fails when every step
    ended and some did not complete (a step with run_if "always" still runs before that)."""
    row = conn.execute("SELECT state FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
    if row is None or row["state"] != "running":
        return
    steps = steps_of(conn, workflow_id)
    if any(not t.state.terminal for t in steps):
        return
    bad = [t.step_id for t in steps if t.state is not TaskState.COMPLETED]
    if not bad:
        _finish(conn, workflow_id, "completed", "mcs", now)
    else:
        _finish(conn, workflow_id, "failed", "mcs", now, {"steps": bad})


def reopen(conn: Connection, workflow_id: str, now: float, *, step: str | None) -> None:
    """A step of a failed workflow runs again (a retry): the workflow is running again."""
    cur = conn.execute(
        "UPDATE workflows SET state = 'running', updated_at = ?, finished_at = NULL WHERE id = ? AND state = 'failed'",
        (now, workflow_id),
    )
    if cur.rowcount == 1:
        add_event(conn, workflow_id, "reopened", "mcs", now, {"step": step})


def cancel(conn: Connection, *, workflow_id: str, caller: Caller, now: float) -> dict[str, Any]:
    """Cancel every unfinished step, dependents first (an agent holding one gets a task.canceled webhook)."""
    row = _row(conn, workflow_id)
    if not caller.is_admin and caller.name != row["submitted_by"]:
        raise Forbidden("only the submitter or the admin can cancel a workflow", code="not_submitter")
    if row["state"] != "running":
        raise Conflict(f"workflow is already {row['state']}", code="already_terminal")
    _finish(conn, workflow_id, "canceled", caller.actor, now)
    for task in reversed(steps_of(conn, workflow_id)):
        fresh = tasks_store.must_get(conn, task.id)
        if not fresh.state.terminal:
            tasks_store.cancel_step(conn, fresh, caller.actor, now)
    return show(conn, workflow_id)
