"""Retention: the deletes behind the pruner (mcs.maintenance.retention), one bounded batch per call.

Each function runs inside the caller's write transaction and touches at most `limit` rows of the table it
is named after (plus, for tasks, the rows that belong to them), through the indexes of migration 0007, so
a batch costs the same with a million rows as with ten and never holds the write lock for long.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mcs.store.connection import Connection

TERMINAL = ("completed", "failed", "canceled")
# Repeated verbatim from the partial index tasks_finished: SQLite uses it only for a query that implies it.
_FINISHED = "state IN ('completed', 'failed', 'canceled') AND parent_id IS NULL"
_IDS = "(SELECT value FROM json_each(?))"  # one bound JSON array instead of a variable number of ?s

# Every statement a batch runs, named, so a test can check each one's query plan (EXPLAIN QUERY PLAN).
SQL = {
    "finished_roots": f"SELECT id, seq, updated_at, workflow_id FROM tasks INDEXED BY tasks_finished WHERE {_FINISHED}"
    " AND updated_at < ? AND (updated_at, seq) > (?, ?) ORDER BY updated_at, seq LIMIT ?",
    "children": f"SELECT id, parent_id, state, updated_at FROM tasks INDEXED BY tasks_parent WHERE parent_id IN {_IDS}",
    "undelivered": f"SELECT DISTINCT task_id FROM outbox INDEXED BY outbox_task WHERE task_id IN {_IDS}"
    " AND state = 'pending'",
    "depended_on": "SELECT DISTINCT d.dep_id FROM task_deps d INDEXED BY task_deps_dep"
    f" JOIN tasks t ON t.id = d.task_id WHERE d.dep_id IN {_IDS}"
    " AND t.state NOT IN ('completed', 'failed', 'canceled')",
    "running_workflows": f"SELECT id FROM workflows WHERE id IN {_IDS} AND state = 'running'",
    "delete_task_deps": f"DELETE FROM task_deps WHERE task_id IN {_IDS}",
    "delete_task_deps_up": f"DELETE FROM task_deps WHERE dep_id IN {_IDS}",
    "delete_task_events": f"DELETE FROM task_events WHERE task_id IN {_IDS}",
    "delete_task_avoid": f"DELETE FROM task_avoid WHERE task_id IN {_IDS}",
    "delete_task_outbox": f"DELETE FROM outbox WHERE task_id IN {_IDS}",
    "delete_tasks": f"DELETE FROM tasks WHERE id IN {_IDS}",
    "outbox": "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_done"
    " WHERE state != 'pending' AND updated_at < ? LIMIT ?)",
    "idempotency_keys": "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys"
    " INDEXED BY idempotency_expiry WHERE expires_at <= ? LIMIT ?)",
    "agent_events": "DELETE FROM agent_events WHERE id IN (SELECT id FROM agent_events INDEXED BY agent_events_at"
    " WHERE at < ? LIMIT ?)",
    "finished_workflows": "SELECT id, seq, finished_at FROM workflows INDEXED BY workflows_finished"
    " WHERE finished_at IS NOT NULL AND finished_at < ? AND (finished_at, seq) > (?, ?)"
    " ORDER BY finished_at, seq LIMIT ?",
    "workflows_with_steps": "SELECT DISTINCT workflow_id FROM tasks INDEXED BY tasks_workflow"
    f" WHERE workflow_id IN {_IDS}",
    "delete_workflow_events": f"DELETE FROM workflow_events WHERE workflow_id IN {_IDS}",
    "delete_workflows": f"DELETE FROM workflows WHERE id IN {_IDS}",
    "schedule_runs": "DELETE FROM schedule_runs WHERE (schedule, tick_at) IN (SELECT schedule, tick_at"
    " FROM schedule_runs INDEXED BY schedule_runs_at WHERE at < ? LIMIT ?)",
}


@dataclass(frozen=True, kw_only=True)
class TaskBatch:
    tasks: int = 0
    task_events: int = 0
    outbox: int = 0
    cursor: tuple[float, int] | None = None  # (updated_at, seq) of the last top-level task looked at
    full: bool = False  # the batch was full: there may be more


def prune_tasks(conn: Connection, *, before: float, after: tuple[float, int] | None, limit: int) -> TaskBatch:
    """Delete up to `limit` finished top-level tasks last changed before `before`, each with its whole
    family (fanout children, theirs...), their events, avoid-lists and outbox rows.

    A family goes only as a whole: it is kept while any member is unfinished, changed at or after
    `before`, needed by an unfinished dependent (its `inputs`), a step of a workflow still running, or
    still has an outbox row to deliver
    (the notifier would write an event for it). So no child outlives its parent, no parent_id dangles,
    and nothing a live task refers to disappears.
    `after` is where the previous batch of this pass stopped, so kept families are not read again.
    """
    start = after or (float("-inf"), -1)
    roots = conn.execute(
        SQL["finished_roots"],
        (before, *start, limit),
    ).fetchall()
    if not roots:
        return TaskBatch()
    cursor = (float(roots[-1]["updated_at"]), int(roots[-1]["seq"]))
    root_of: dict[str, str] = {r["id"]: r["id"] for r in roots}
    levels: list[list[str]] = [list(root_of)]
    kept: set[str] = set()
    while levels[-1]:
        kids = conn.execute(
            SQL["children"],
            (json.dumps(levels[-1]),),
        ).fetchall()
        for k in kids:
            root_of[k["id"]] = root_of[k["parent_id"]]
            if k["state"] not in TERMINAL or k["updated_at"] >= before:
                kept.add(root_of[k["id"]])
        levels.append([k["id"] for k in kids])
    for (task_id,) in conn.execute(SQL["undelivered"], (json.dumps(list(root_of)),)):
        kept.add(root_of[task_id])
    # An unfinished task still needs the result of a finished one it depends on (its `inputs`).
    for (task_id,) in conn.execute(SQL["depended_on"], (json.dumps(list(root_of)),)):
        kept.add(root_of[task_id])
    # A step of a workflow still running stays (its `GET` shows every step) until the workflow ends.
    in_workflow = {r["id"]: r["workflow_id"] for r in roots if r["workflow_id"] is not None}
    if in_workflow:
        running = {r[0] for r in conn.execute(SQL["running_workflows"], (json.dumps(list(set(in_workflow.values()))),))}
        kept.update(task_id for task_id, wf in in_workflow.items() if wf in running)
    doomed = [task_id for task_id, root in root_of.items() if root not in kept]
    batch = TaskBatch(cursor=cursor, full=len(roots) == limit)
    if not doomed:
        return batch
    ids = json.dumps(doomed)
    events = conn.execute(SQL["delete_task_events"], (ids,)).rowcount
    conn.execute(SQL["delete_task_avoid"], (ids,))
    conn.execute(SQL["delete_task_deps"], (ids,))
    conn.execute(SQL["delete_task_deps_up"], (ids,))
    outbox = conn.execute(SQL["delete_task_outbox"], (ids,)).rowcount
    tasks = 0
    for level in reversed(levels):  # children before their parents: tasks.parent_id is a foreign key
        gone = [task_id for task_id in level if root_of[task_id] not in kept]
        if gone:
            tasks += conn.execute(SQL["delete_tasks"], (json.dumps(gone),)).rowcount
    return TaskBatch(tasks=tasks, task_events=events, outbox=outbox, cursor=cursor, full=batch.full)


@dataclass(frozen=True, kw_only=True)
class WorkflowBatch:
    workflows: int = 0
    workflow_events: int = 0
    cursor: tuple[float, int] | None = None  # (finished_at, seq) of the last workflow looked at
    full: bool = False  # the batch was full: there may be more


def prune_workflows(conn: Connection, *, before: float, after: tuple[float, int] | None, limit: int) -> WorkflowBatch:
    """Delete up to `limit` workflows that finished before `before` and have no step left (the task
    pruner took them all), with their events. A workflow keeps while any of its steps is kept, so
    `GET /v1/workflows/ID` never shows a workflow with half its steps; a running one is never read.
    `after` is where the previous batch of this pass stopped, so kept workflows are not read again.
    """
    start = after or (float("-inf"), -1)
    rows = conn.execute(SQL["finished_workflows"], (before, *start, limit)).fetchall()
    if not rows:
        return WorkflowBatch()
    cursor = (float(rows[-1]["finished_at"]), int(rows[-1]["seq"]))
    ids = [r["id"] for r in rows]
    kept = {r[0] for r in conn.execute(SQL["workflows_with_steps"], (json.dumps(ids),))}
    doomed = json.dumps([i for i in ids if i not in kept])
    events = conn.execute(SQL["delete_workflow_events"], (doomed,)).rowcount
    gone = conn.execute(SQL["delete_workflows"], (doomed,)).rowcount
    return WorkflowBatch(workflows=gone, workflow_events=events, cursor=cursor, full=len(rows) == limit)


def prune_outbox(conn: Connection, *, before: float, limit: int) -> int:
    """Delete up to `limit` delivered or given-up (dead) outbox rows last changed before `before`."""
    return int(conn.execute(SQL["outbox"], (before, limit)).rowcount)


def prune_idempotency_keys(conn: Connection, *, now: float, limit: int) -> int:
    """Delete up to `limit` expired idempotency keys (a replay after expiry is a new submission anyway)."""
    return int(conn.execute(SQL["idempotency_keys"], (now, limit)).rowcount)


def prune_agent_events(conn: Connection, *, before: float, limit: int) -> int:
    """Delete up to `limit` agent audit events older than `before`."""
    return int(conn.execute(SQL["agent_events"], (before, limit)).rowcount)


def prune_schedule_runs(conn: Connection, *, before: float, limit: int) -> int:
    """Delete up to `limit` records of schedule ticks handled before `before` (the schedules stay)."""
    return int(conn.execute(SQL["schedule_runs"], (before, limit)).rowcount)


def query_plans(conn: Connection) -> dict[str, list[str]]:
    """EXPLAIN QUERY PLAN of every statement above: how a test proves that none scans a whole table."""
    plans: dict[str, list[str]] = {}
    for name, sql in SQL.items():
        params = ("[]",) if _IDS in sql else (0,) * sql.count("?")  # statements with _IDS take only that
        plans[name] = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
    return plans
