"""The dispatcher's pass and the watchdog's sweeps over tasks, still on the raw connection: they move to
`mcs.state.dispatch` / `mcs.state.sweeps` in their own branch. Everything else about tasks is in
`mcs.state.tasks` (submit, claim, transitions) and `mcs.state.transitions` (the core they share); the
names below that the pass uses are imported from there."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from mcs import render, routing
from mcs.engines.sql.tasks import UNFINISHED_DEPS as _UNFINISHED_DEPS
from mcs.models import APPROVAL, Task, TaskState, iso
from mcs.routing import Candidate
from mcs.state import tasks as state_tasks
from mcs.state import transitions
from mcs.state.tasks import fail_attempt as _fail
from mcs.state.transitions import add_event, must_get, release_due
from mcs.state.transitions import key_blocks as _key_blocks
from mcs.state.transitions import set_state as _set
from mcs.state.transitions import start_waiting_for_approval as _start_waiting_for_approval
from mcs.store import agents as agents_store
from mcs.store import effects, outbox_rows
from mcs.store.connection import Connection

# Queued tasks a pass handles with every agent busy: fanout parents and approvals (which go to waiting).
NEEDS_NO_AGENT = f"(route = 'all' OR type = '{APPROVAL}')"
DISPATCH_SCAN_MAX = 5000  # queued rows one dispatcher pass reads at most, page by page
FULL_KEYS_SKIPPED_MAX = 200  # full concurrency keys a pass leaves out of its queue reads by SQL


def to_api(conn: Connection, task: Task) -> dict[str, Any]:
    """The task as a webhook carries it (for the pass below, until it moves: `render.task(view(...))`)."""
    return render.task(transitions.view(conn, task))


def _claim(
    conn: Connection, task: Task, agent: str, now: float, *, pushed: bool = False, after: str | None = None
) -> dict[str, Any]:
    """`state.tasks.take`, rendered with its claim_token (for the pass below, until it moves)."""
    return render.task(state_tasks.take(conn, task, agent, now, pushed=pushed, after=after))


# ---------------------------------------------------------------- dispatcher


@dataclass
class DispatchResult:
    assigned: list[tuple[str, str, float]] = field(default_factory=list)  # (task id, agent, eligible since)
    fanned_out: int = 0
    parked: int = 0
    requeued: int = 0
    routable: int = -1  # the view's `routable` count when parked tasks were last looked at again
    next_due: float | None = None
    more: bool = False  # the pass stopped at DISPATCH_SCAN_MAX rows, before the queue's end: another at once
    resume: tuple[int, int] | None = None  # (priority, seq) where that next pass continues, after the head
    push_claimed: int = 0  # of `assigned`, those claimed for their agent at once (claim_on_push)


def has_work(conn: Connection, *, now: float, view: agents_store.RoutingView, unparked_at: int) -> bool:
    """A read, so the dispatcher takes the write lock only when a pass can change something: a retry fell
    due, or tasks are queued and either the agents changed in a way that can unpark them or one is
    waiting while some agent has room (or is a fanout). With nothing queued it does not look at the
    agents at all, so heartbeats cost nothing; with tasks queued the view reads only changed agents."""
    if conn.execute("SELECT 1 FROM tasks WHERE state = 'retrying' AND not_before <= ? LIMIT 1", (now,)).fetchone():
        return True
    if conn.execute(
        f"SELECT 1 FROM tasks WHERE state = 'blocked' AND not_before <= ? AND NOT {_UNFINISHED_DEPS} LIMIT 1", (now,)
    ).fetchone():
        return True
    if conn.execute("SELECT 1 FROM tasks WHERE state = 'queued' LIMIT 1").fetchone() is None:
        return False
    view.refresh(conn, now=now)
    if view.routable != unparked_at:
        return True
    room = view.for_pass(conn).room
    sql = "SELECT 1 FROM tasks WHERE state = 'queued' AND parked = 0" + ("" if room else f" AND {NEEDS_NO_AGENT}")
    return conn.execute(sql + " LIMIT 1").fetchone() is not None


def next_retry_due(conn: Connection) -> float | None:
    """When the next retry falls due, or the next blocked task's run_at comes (its dependencies done)."""
    row = conn.execute("SELECT min(not_before) FROM tasks WHERE state = 'retrying'").fetchone()
    retry = row[0] if row else None
    row = conn.execute(
        "SELECT min(not_before) FROM tasks WHERE state = 'blocked' AND not_before IS NOT NULL"
        f" AND NOT {_UNFINISHED_DEPS}"
    ).fetchone()
    run_at = row[0] if row else None
    due = [t for t in (retry, run_at) if t is not None]
    return min(due) if due else None


def _unpark(conn: Connection, agents: agents_store.PassAgents) -> None:
    """The agents changed: give back to the queue the parked tasks that some online agent could take now.
    Queued tasks are looked at by group (capabilities, route: a handful of rows in task_counts), so a backlog
    of tasks nobody serves is not read, unparked and parked again, row by row, at every agent change."""
    groups = conn.execute("SELECT capabilities, route FROM task_counts WHERE state = 'queued' AND n > 0").fetchall()
    for caps_json, route in groups:
        required = tuple(json.loads(caps_json))
        candidates = agents.candidates(route, required)
        if route == routing.ROUTE_ALL:
            servable = bool(routing.fanout_targets(required=required, candidates=candidates))
        else:
            servable = (
                routing.pick_agent(route=route, required=required, candidates=candidates, respect_capacity=False)
                is not None
            )
        if servable:
            conn.execute(
                "UPDATE tasks INDEXED BY tasks_queued SET parked = 0"
                " WHERE state = 'queued' AND capabilities = ? AND route = ? AND parked = 1",
                (caps_json, route),
            )


def dispatch(
    conn: Connection,
    *,
    now: float,
    view: agents_store.RoutingView,
    unparked_at: int,
    limit: int,
    resume: tuple[int, int] | None = None,
) -> DispatchResult:
    """One pass: due retries back to the queue, then route queued tasks (urgent first, oldest first).

    A task nobody can take now is parked, so later passes skip it; when the set of online agents or
    their capabilities changes, the parked tasks some agent could now take are looked at again. A task
    whose agents are all at capacity is not parked: it goes out, in order, when one of them finishes
    something. A pass reads at most DISPATCH_SCAN_MAX rows: the first page from the head of the queue,
    the rest from `resume` (where the previous pass stopped) when given.
    """
    out = DispatchResult()
    for (task_id,) in conn.execute(
        "UPDATE tasks SET state = 'queued', parked = 0, assigned_to = NULL, assigned_at = NULL,"
        " claim_token = NULL, updated_at = ? WHERE state = 'retrying' AND not_before <= ? RETURNING id",
        (now, now),
    ).fetchall():
        add_event(conn, task_id, "requeued", "dispatcher", now)
        out.requeued += 1
    out.requeued += len(release_due(conn, now))
    view.refresh(conn, now=now)
    out.routable = view.routable
    agents = view.for_pass(conn)
    if view.routable != unparked_at:
        _unpark(conn, agents)
    after: tuple[int, int] | None = None  # (priority, seq) of the last row read: the queue is read in pages
    scanned = 0
    jumped = False
    at_end = False  # the pass read to the end of the queue (rather than stopping at its scan limit)
    full_keys: set[tuple[str, int | None]] = (
        set()
    )  # concurrency keys found at their limit: nothing frees one during a pass
    while scanned < DISPATCH_SCAN_MAX:
        # When every push agent is at capacity only fanout parents can make progress: skip the backlog.
        # Only what routing needs is read: a backlog can be long, and most of it waits for room.
        sql = (
            "SELECT id, type, route, capabilities, priority, seq, concurrency_key, max_concurrency FROM tasks"
            " WHERE state = 'queued' AND parked = 0"
        )
        args: list[Any] = []
        if not agents.room:
            sql += f" AND {NEEDS_NO_AGENT}"
        if after is not None:
            sql += " AND (priority, seq) > (?, ?)"
            args += list(after)
        if full_keys:  # the rest of a full key's backlog is not read (nor counted against the scan limit)
            skip = sorted(full_keys, key=str)[:FULL_KEYS_SKIPPED_MAX]
            sql += " AND (concurrency_key IS NULL OR (concurrency_key, max_concurrency) NOT IN (VALUES "
            sql += ", ".join("(?, ?)" for _ in skip) + "))"
            args += [v for pair in skip for v in pair]
        rows = conn.execute(sql + " ORDER BY priority, seq LIMIT ?", (*args, limit)).fetchall()
        if not rows:
            at_end = True
            break
        scanned += len(rows)
        after = (rows[-1]["priority"], rows[-1]["seq"])
        pending: list[tuple[str, str, tuple[str, ...]]] = [
            (r["id"], r["route"], tuple(json.loads(r["capabilities"]))) for r in rows
        ]
        keys = {r["id"]: (r["concurrency_key"], r["max_concurrency"]) for r in rows if r["concurrency_key"]}
        # An approval queued by any path (a retry, a dependency met) waits for a person instead.
        gates = {r["id"] for r in rows if r["type"] == APPROVAL}
        pending = [p for p in pending if p[0] not in gates]
        for gate_id in gates:
            _start_waiting_for_approval(conn, must_get(conn, gate_id), "dispatcher", now)
        while pending:
            task_id, route, required = pending.pop(0)
            if task_id in keys and _key_blocks(conn, *keys[task_id], full_keys):
                continue  # its key is at its limit: it waits, queued and in order, for one to finish
            if route == routing.ROUTE_ALL:
                parent = must_get(conn, task_id)
                kids = _fan_out(conn, parent, agents.candidates(route, required), now)
                if kids:
                    out.fanned_out += 1
                    pending = [(k.id, k.route, k.capabilities) for k in kids] + pending
                    keys.update({k.id: (k.concurrency_key, k.max_concurrency) for k in kids if k.concurrency_key})
                else:
                    _set(conn, parent, now, parked=1)
                    out.parked += 1
                continue
            if not agents.room:
                continue  # every agent is busy: the task waits, in order, for one to free up
            name = _route(conn, task_id, route, required, agents.candidates(route, required), out)
            if name is None:
                continue
            task = must_get(conn, task_id)
            if agents.view.agents[name].claim_on_push:
                # Claimed for it here, in the assignment's transaction: the webhook carries the claim, once
                # (a retried delivery sends this same body, so never a second token).
                view_of_task = _claim(conn, task, name, now, pushed=True)
                out.push_claimed += 1
            else:
                task = _set(conn, task, now, state=TaskState.ASSIGNED, assigned_to=name, assigned_at=now)
                add_event(conn, task.id, "assigned", "dispatcher", now, {"agent": name})
                view_of_task = to_api(conn, task)
            conn.execute("UPDATE agents SET last_assigned_at = ? WHERE name = ?", (now, name))
            outbox_rows.enqueue(
                conn,
                kind="webhook",
                agent=name,
                task_id=task_id,
                body={"type": "task.assigned", "timestamp": iso(now), "data": {"task": view_of_task}},
                now=now,
            )
            agents.took(name, now)
            # Latency counts from when the task could first go out: submission, or its retry falling due.
            out.assigned.append((task.id, name, task.not_before or task.created_at))
        if len(rows) < limit:
            at_end = True
            break
        if not jumped and resume is not None and resume > after:
            # The head of the queue had its look (new and urgent work goes out at once); the rest of the
            # budget continues where the last pass stopped, so a task behind more than DISPATCH_SCAN_MAX
            # rows that wait (for room on their agents, or their concurrency key) is reached too.
            after, jumped = resume, True
    out.more = not at_end
    out.resume = after if out.more else None
    out.next_due = next_retry_due(conn)
    return out


def _route(
    conn: Connection, task_id: str, route: str, required: tuple[str, ...], agents: list[Candidate], out: DispatchResult
) -> str | None:
    """The agent to assign this task to now, or None; parks the task when no agent could ever take it."""
    avoid = {r[0]: bool(r[1]) for r in conn.execute("SELECT agent, hard FROM task_avoid WHERE task_id = ?", (task_id,))}
    name = routing.pick_agent(route=route, required=required, candidates=agents, avoid=avoid)
    if name is None and (
        routing.pick_agent(route=route, required=required, candidates=agents, avoid=avoid, respect_capacity=False)
        is None
    ):
        # nobody could take it: skip it until the agents change
        conn.execute("UPDATE tasks SET parked = 1 WHERE id = ? AND state = 'queued'", (task_id,))
        out.parked += 1
    return name


def _fan_out(conn: Connection, parent: Task, candidates: list[Candidate], now: float) -> list[Task]:
    targets = routing.fanout_targets(required=parent.capabilities, candidates=candidates)
    if not targets:
        return []
    kids = []
    for name in targets:
        kid_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO tasks (id, type, payload, priority, capabilities, route, state, max_retries, claim_ttl,"
            " parent_id, submitted_by, created_at, updated_at, concurrency_key, max_concurrency)"
            " SELECT ?, type, payload, priority, capabilities, ?, 'queued', max_retries, claim_ttl, id,"
            " submitted_by, created_at, ?, concurrency_key, max_concurrency FROM tasks WHERE id = ?",
            (kid_id, name, now, parent.id),
        )
        add_event(conn, kid_id, "submitted", "dispatcher", now, {"parent_id": parent.id, "route": name})
        # A child is a task of its own in the counters too, so completed never exceeds submitted.
        effects.note("submitted", parent.type, parent.priority.label)
        kids.append(must_get(conn, kid_id))
    _set(conn, parent, now, state=TaskState.WAITING)
    add_event(conn, parent.id, "waiting", "dispatcher", now, {"children": targets})
    return kids


# ---------------------------------------------------------------- watchdog


def expire_leases(conn: Connection, *, now: float, base: float, cap: float, limit: int = 500) -> list[str]:
    """Claimed tasks whose lease ran out: the attempt counts as failed (retry with backoff, or failed)."""
    rows = conn.execute(
        "SELECT * FROM tasks WHERE state = 'claimed' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?",
        (now, limit),
    ).fetchall()
    for row in rows:
        task = Task.from_row(row)
        add_event(conn, task.id, "lease_expired", "watchdog", now, {"agent": task.assigned_to})
        _fail(conn, task, error="lease expired", retryable=True, actor="watchdog", now=now, base=base, cap=cap)
    return [r["id"] for r in rows]


def reroute_unclaimed(conn: Connection, *, now: float, limit: int = 500) -> list[str]:
    """Assigned tasks nobody claimed within their claim TTL go back to the queue, preferring another agent;
    so do tasks whose webhook the notifier gave up delivering (no need to wait out the TTL)."""
    rows = conn.execute(
        # INDEXED BY: the task's own few outbox rows, never the agent's whole history (outbox_agent, 0017)
        "SELECT * FROM tasks t WHERE t.state = 'assigned' AND (t.assigned_at + t.claim_ttl <= ? OR EXISTS ("
        " SELECT 1 FROM outbox AS o INDEXED BY outbox_task WHERE o.task_id = t.id AND o.kind = 'webhook'"
        " AND o.state = 'dead' AND o.agent = t.assigned_to AND o.created_at >= t.assigned_at)) ORDER BY t.seq LIMIT ?",
        (now, limit),
    ).fetchall()
    for row in rows:
        task = Task.from_row(row)
        conn.execute(
            "INSERT OR IGNORE INTO task_avoid (task_id, agent, hard) VALUES (?, ?, 0)", (task.id, task.assigned_to)
        )
        _set(conn, task, now, state=TaskState.QUEUED, assigned_to=None, assigned_at=None, parked=0)
        add_event(conn, task.id, "unclaimed", "watchdog", now, {"agent": task.assigned_to})
    return [r["id"] for r in rows] + _reroute_undelivered_claims(conn, now=now, limit=limit - len(rows))


# Tasks claimed at assignment (claim_on_push) whose webhook, the one carrying their current claim, the
# notifier gave up delivering: read from the dead rows (few), not from every claimed task.
_UNDELIVERED_CLAIMS = (
    "SELECT t.* FROM outbox o JOIN tasks t ON t.id = o.task_id WHERE o.state = 'dead' AND o.kind = 'webhook'"
    " AND t.state = 'claimed' AND o.agent = t.assigned_to AND o.created_at >= t.assigned_at"
    " AND json_extract(o.body, '$.data.task.claim_token') = t.claim_token ORDER BY t.seq LIMIT ?"
)


def _reroute_undelivered_claims(conn: Connection, *, now: float, limit: int) -> list[str]:
    """A claim the agent was never told of goes back to the queue at once, as an undelivered assignment
    does: its token is revoked (a late completion with it gets 409), the attempt it counted is given back,
    and another agent is preferred."""
    if limit <= 0:
        return []
    rows = conn.execute(_UNDELIVERED_CLAIMS, (limit,)).fetchall()
    for row in rows:
        task = Task.from_row(row)
        conn.execute(
            "INSERT OR IGNORE INTO task_avoid (task_id, agent, hard) VALUES (?, ?, 0)", (task.id, task.assigned_to)
        )
        _set(
            conn,
            task,
            now,
            state=TaskState.QUEUED,
            assigned_to=None,
            assigned_at=None,
            claim_token=None,
            lease_expires_at=None,
            attempts=max(task.attempts - 1, 0),
            parked=0,
        )
        add_event(conn, task.id, "unclaimed", "watchdog", now, {"agent": task.assigned_to, "push": True})
    return [r["id"] for r in rows]
