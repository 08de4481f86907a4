"""Retention: the deletes behind the pruner (mcs.maintenance.retention), one bounded batch per call: what
is kept and why here, the statements in the engine (`MaintenanceTx`, engines/sql/maintenance.py).

Each function runs inside the caller's write transaction and touches at most `limit` rows of the table it
is named after (plus, for tasks, the rows that belong to them), through the indexes of migration 0007, so
a batch costs the same with a million rows as with ten and never holds the write lock for long.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcs.engines.base import Tx
from mcs.models import TERMINAL_STATES


@dataclass(frozen=True, kw_only=True)
class TaskBatch:
    tasks: int = 0
    task_events: int = 0
    outbox: int = 0
    cursor: tuple[float, int] | None = None  # (updated_at, seq) of the last top-level task looked at
    full: bool = False  # the batch was full: there may be more


def prune_tasks(tx: Tx, *, before: float, after: tuple[float, int] | None, limit: int) -> TaskBatch:
    """Delete up to `limit` finished top-level tasks last changed before `before`, each with its whole
    family (fanout children, theirs...), their events, avoid-lists and outbox rows.

    A family goes only as a whole: it is kept while any member is unfinished, changed at or after
    `before`, needed by an unfinished dependent (its `inputs`), a step of a workflow still running, or
    still has an outbox row to deliver
    (the notifier would write an event for it). So no child outlives its parent, no parent_id dangles,
    and nothing a live task refers to disappears.
    `after` is where the previous batch of this pass stopped, so kept families are not read again.
    """
    if not tx.try_lock("retention"):  # another watchdog replica is pruning now: its batches do this work
        return TaskBatch()
    start = after or (float("-inf"), -1)
    roots = tx.retention_finished_roots(before=before, after=start, limit=limit)
    if not roots:
        return TaskBatch()
    cursor = (roots[-1][2], roots[-1][1])
    root_of: dict[str, str] = {r[0]: r[0] for r in roots}
    levels: list[list[str]] = [list(root_of)]
    kept: set[str] = set()
    while levels[-1]:
        kids = tx.retention_children(levels[-1])
        for kid, parent, state, updated_at in kids:
            root_of[kid] = root_of[parent]
            if state not in TERMINAL_STATES or updated_at >= before:
                kept.add(root_of[kid])
        levels.append([k[0] for k in kids])
    for task_id in tx.retention_undelivered(list(root_of)):
        kept.add(root_of[task_id])
    # An unfinished task still needs the result of a finished one it depends on (its `inputs`).
    for task_id in tx.retention_depended_on(list(root_of)):
        kept.add(root_of[task_id])
    # A step of a workflow still running stays (its `GET` shows every step) until the workflow ends.
    in_workflow = {r[0]: r[3] for r in roots if r[3] is not None}
    if in_workflow:
        running = tx.retention_running_workflows(list(set(in_workflow.values())))
        kept.update(task_id for task_id, wf in in_workflow.items() if wf in running)
    doomed = [task_id for task_id, root in root_of.items() if root not in kept]
    batch = TaskBatch(cursor=cursor, full=len(roots) == limit)
    if not doomed:
        return batch
    events, outbox = tx.retention_delete_task_rows(doomed)
    tasks = 0
    for level in reversed(levels):  # children before their parents: tasks.parent_id is a foreign key
        gone = [task_id for task_id in level if root_of[task_id] not in kept]
        if gone:
            tasks += tx.retention_delete_tasks(gone)
    return TaskBatch(tasks=tasks, task_events=events, outbox=outbox, cursor=cursor, full=batch.full)


@dataclass(frozen=True, kw_only=True)
class WorkflowBatch:
    workflows: int = 0
    workflow_events: int = 0
    cursor: tuple[float, int] | None = None  # (finished_at, seq) of the last workflow looked at
    full: bool = False  # the batch was full: there may be more


def prune_workflows(tx: Tx, *, before: float, after: tuple[float, int] | None, limit: int) -> WorkflowBatch:
    """Delete up to `limit` workflows that finished before `before` and have no step left (the task
    pruner took them all), with their events. A workflow keeps while any of its steps is kept, so
    `GET /v1/workflows/ID` never shows a workflow with half its steps; a running one is never read.
    `after` is where the previous batch of this pass stopped, so kept workflows are not read again.
    """
    if not tx.try_lock("retention"):
        return WorkflowBatch()
    start = after or (float("-inf"), -1)
    rows = tx.retention_finished_workflows(before=before, after=start, limit=limit)
    if not rows:
        return WorkflowBatch()
    cursor = (rows[-1][2], rows[-1][1])
    ids = [r[0] for r in rows]
    kept = tx.retention_workflows_with_steps(ids)
    gone, events = tx.retention_delete_workflows([i for i in ids if i not in kept])
    return WorkflowBatch(workflows=gone, workflow_events=events, cursor=cursor, full=len(rows) == limit)


def prune_outbox(tx: Tx, *, before: float, limit: int) -> int:
    """Delete up to `limit` delivered or given-up (dead) outbox rows last changed before `before`."""
    return tx.prune_outbox(before=before, limit=limit)


def prune_idempotency_keys(tx: Tx, *, now: float, limit: int) -> int:
    """Delete up to `limit` expired idempotency keys (a replay after expiry is a new submission anyway)."""
    return tx.prune_idempotency_keys(now=now, limit=limit)


def prune_agent_events(tx: Tx, *, before: float, limit: int) -> int:
    """Delete up to `limit` agent audit events older than `before`."""
    return tx.prune_agent_events(before=before, limit=limit)


def prune_schedule_runs(tx: Tx, *, before: float, limit: int) -> int:
    """Delete up to `limit` records of schedule ticks handled before `before` (the schedules stay)."""
    return tx.prune_schedule_runs(before=before, limit=limit)


def prune_heartbeats(tx: Tx, *, before: float, limit: int) -> int:
    """Delete the heartbeat rows of replicas silent since `before` while another replica of the same
    process beat later (a replica that went away for good; the only replica's row always stays, so
    `mcs check` keeps telling how long ago it stopped). Few rows: `limit` is not needed."""
    return tx.prune_heartbeats(before=before)


def query_plans(tx: Tx) -> dict[str, list[str]]:
    """The plan of every statement a batch runs: how a test proves that none scans a whole table."""
    return tx.retention_query_plans()
