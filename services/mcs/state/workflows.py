"""Workflows: a DAG of tasks (steps) submitted in one transaction; its state follows its steps.

Functions take a `Tx` and return models (`WorkflowView.to_api()` renders them); they never commit.
`settle` and `reopen` are the hooks the task state machine calls when a step ends or runs again.
"""

from __future__ import annotations

import graphlib
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mcs import effects, quotas, render, routing
from mcs.engines.base import Tx
from mcs.errors import Conflict, Forbidden, NotFound, Unprocessable
from mcs.models import Caller, Task, TaskEvent, TaskSpec, Workflow, WorkflowView
from mcs.state import agents as agents_store
from mcs.state import tasks as tasks_store
from mcs.state.workflow_steps import _finish as _finish
from mcs.state.workflow_steps import add_event as add_event  # re-exported: the api and schedules call it here
from mcs.state.workflow_steps import reopen as reopen
from mcs.state.workflow_steps import settle as settle

STATES = ("running", "completed", "failed", "canceled")


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
    tx: Tx,
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
) -> WorkflowView:
    """Store a workflow and every step (tasks, blocked until their steps are done) at once."""
    ordered = order_steps(steps)
    if max_queued > 0 and not caller.is_admin:
        unfinished = tasks_store.unfinished_submitted(tx, caller.actor)
        if unfinished + len(steps) > max_queued:
            raise quotas.queued_tasks_exceeded(caller.actor, unfinished, max_queued)
    workflow_id = str(uuid.uuid4())
    tx.workflow_insert(workflow_id=workflow_id, name=name, inputs=inputs, submitted_by=caller.actor, now=now)
    add_event(tx, workflow_id, "submitted", caller.actor, now, {"steps": len(steps)} | (actor_detail or {}))
    effects.note("workflow_submitted", "workflow", "normal")
    task_ids: dict[str, str] = {}
    for step in ordered:
        route = step.get("route") or routing.ROUTE_ANY
        if route not in (routing.ROUTE_ANY, routing.ROUTE_ALL) and agents_store.get(tx, route) is None:
            raise Unprocessable(
                f"step {step['id']!r}: route names agent {route!r}, which does not exist", code="unknown_agent"
            )
        spec = replace(
            TaskSpec.from_body(step, max_retries=max_retries, claim_ttl=claim_ttl),
            depends_on=tuple(task_ids[d] for d in dict.fromkeys(step.get("depends_on") or [])),
            run_if=step.get("run_if") or "success",
        )
        task_ids[step["id"]] = tasks_store.insert(
            tx, spec=spec, submitted_by=caller.actor, now=now, workflow_id=workflow_id, step_id=step["id"]
        )
    return show(tx, workflow_id)


def _must_get(tx: Tx, workflow_id: str) -> Workflow:
    workflow = tx.workflow_get(workflow_id)
    if workflow is None:
        raise NotFound(f"no workflow {workflow_id!r}")
    return workflow


def steps_of(tx: Tx, workflow_id: str) -> list[Task]:
    return tx.workflow_steps(workflow_id)


def _view(tx: Tx, workflow: Workflow) -> WorkflowView:
    steps = tx.workflow_steps(workflow.id)
    # Each step as GET /v1/tasks/{id} shows it (its dependencies' results as inputs).
    return WorkflowView(
        workflow=workflow, steps={t.step_id or t.id: render.task(tasks_store.view(tx, t)) for t in steps}
    )


def show(tx: Tx, workflow_id: str) -> WorkflowView:
    return _view(tx, _must_get(tx, workflow_id))


def events(tx: Tx, workflow_id: str) -> list[TaskEvent]:
    _must_get(tx, workflow_id)
    return tx.workflow_events(workflow_id)


def list_workflows(
    tx: Tx, *, state: str | None, limit: int, cursor: str | None
) -> tuple[list[WorkflowView], str | None]:
    """Newest first, paged like tasks: (a page, the cursor that continues after its last one or None)."""
    before = render.decode_cursor(cursor) if cursor else None
    found = tx.workflows_page(state=state, before_seq=before, limit=limit + 1)
    shown = found[:limit]
    more = render.encode_cursor(shown[-1].seq) if len(found) > limit else None
    return [_view(tx, w) for w in shown], more


def cancel(tx: Tx, *, workflow_id: str, caller: Caller, now: float) -> WorkflowView:
    """Cancel every unfinished step, dependents first (an agent holding one gets a task.canceled webhook)."""
    workflow = tx.workflow_lock(workflow_id)
    if workflow is None:
        raise NotFound(f"no workflow {workflow_id!r}")
    if not caller.is_admin and caller.name != workflow.submitted_by:
        raise Forbidden("only the submitter or the admin can cancel a workflow", code="not_submitter")
    if workflow.state != "running":
        raise Conflict(f"workflow is already {workflow.state}", code="already_terminal")
    _finish(tx, workflow_id, "canceled", caller.actor, now)
    for task in reversed(tx.workflow_steps(workflow_id)):
        fresh = tasks_store.must_get(tx, task.id)
        if not fresh.state.terminal:
            tasks_store.cancel_step(tx, fresh, caller.actor, now)
    return show(tx, workflow_id)
