"""The dispatcher's pass: due retries back to the queue, then queued tasks routed to agents (urgent first,
oldest first), each assignment with its webhook's outbox row in the same transaction.

Serialisation (docs/design/engines.md 4.1; no-ops on SQLite, whose write transaction holds the database):
one pass at a time (`lock_dispatch`, site 1); a queued task another transaction is deciding on is skipped,
never a 409 (`queued_take`, SKIP LOCKED, site 2); an agent's load is counted afresh under its lock before
the pass first assigns to it (`agent_lock`, site 3); a concurrency key is locked before it is counted
(`lock_name("ckey", key)`, site 4).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from mcs import effects, render, routing
from mcs.engines.base import Tx
from mcs.models import APPROVAL, QueuedRow, Task, TaskState, iso
from mcs.routing import Candidate
from mcs.state import outbox_rows
from mcs.state import tasks as state_tasks
from mcs.state.routing_view import PassAgents, RoutingView
from mcs.state.transitions import add_event, release_due, start_waiting_for_approval, view
from mcs.state.transitions import key_blocks as _key_blocks
from mcs.state.transitions import set_state as _set

DISPATCH_SCAN_MAX = 5000  # queued rows one dispatcher pass reads at most, page by page
FULL_KEYS_SKIPPED_MAX = 200  # full concurrency keys a pass leaves out of its queue reads by SQL


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


def has_work(tx: Tx, *, now: float, view: RoutingView, unparked_at: int) -> bool:
    """A read, so the dispatcher takes the write lock only when a pass can change something: a retry fell
    due, or tasks are queued and either the agents changed in a way that can unpark them or one is
    waiting while some agent has room (or is a fanout). With nothing queued it does not look at the
    agents at all, so heartbeats cost nothing; with tasks queued the view reads only changed agents."""
    if tx.work_due(now):
        return True
    if not tx.queued_any():
        return False
    view.refresh(tx, now=now)
    if view.routable != unparked_at:
        return True
    room = view.for_pass(tx).room
    return tx.queued_any(unparked=True, needs_no_agent=not room)


def next_retry_due(tx: Tx) -> float | None:
    """When the next retry falls due, or the next blocked task's run_at comes (its dependencies done)."""
    return tx.next_due()


def _unpark(tx: Tx, agents: PassAgents) -> None:
    """The agents changed: give back to the queue the parked tasks that some online agent could take now.
    Queued tasks are looked at by group (capabilities, route: a handful of rows in task_counts), so a backlog
    of tasks nobody serves is not read, unparked and parked again, row by row, at every agent change."""
    for group in tx.queued_groups():
        required = group.capabilities
        candidates = agents.candidates(group.route, required)
        if group.route == routing.ROUTE_ALL:
            servable = bool(routing.fanout_targets(required=required, candidates=candidates))
        else:
            servable = (
                routing.pick_agent(route=group.route, required=required, candidates=candidates, respect_capacity=False)
                is not None
            )
        if servable:
            tx.unpark(group)


def dispatch(
    tx: Tx,
    *,
    now: float,
    view: RoutingView,
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
    tx.lock_dispatch()  # site 1: one pass at a time, across dispatcher replicas
    out = DispatchResult()
    for task_id in tx.requeue_due_retries(now):
        add_event(tx, task_id, "requeued", "dispatcher", now)
        out.requeued += 1
    out.requeued += len(release_due(tx, now))
    view.refresh(tx, now=now)
    out.routable = view.routable
    agents = view.for_pass(tx)
    if view.routable != unparked_at:
        _unpark(tx, agents)
    counted: set[str] = set()  # agents whose load this pass counted under their lock (site 3)
    after: tuple[int, int] | None = None  # (priority, seq) of the last row read: the queue is read in pages
    scanned = 0
    jumped = False
    at_end = False  # the pass read to the end of the queue (rather than stopping at its scan limit)
    full_keys: set[tuple[str, int | None]] = set()  # keys found at their limit: nothing frees one during a pass
    while scanned < DISPATCH_SCAN_MAX:
        # When every push agent is at capacity only fanout parents can make progress: skip the backlog.
        rows = tx.queue_page(
            after=after,
            needs_no_agent=not agents.room,
            skip_keys=sorted(full_keys, key=str)[:FULL_KEYS_SKIPPED_MAX],
            limit=limit,
        )
        if not rows:
            at_end = True
            break
        scanned += len(rows)
        after = (rows[-1].priority, rows[-1].seq)
        _route_page(tx, rows, agents, counted, full_keys, now, out)
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
    out.next_due = tx.next_due()
    return out


def _route_page(
    tx: Tx,
    rows: list[QueuedRow],
    agents: PassAgents,
    counted: set[str],
    full_keys: set[tuple[str, int | None]],
    now: float,
    out: DispatchResult,
) -> None:
    """Route one page of the queue, in order: fan out, assign, leave waiting, or park each task."""
    pending: list[tuple[str, str, tuple[str, ...]]] = [(r.id, r.route, r.capabilities) for r in rows]
    keys = {r.id: (r.concurrency_key, r.max_concurrency) for r in rows if r.concurrency_key}
    # An approval queued by any path (a retry, a dependency met) waits for a person instead.
    gates = {r.id for r in rows if r.type == APPROVAL}
    pending = [p for p in pending if p[0] not in gates]
    for gate_id in gates:
        gate = tx.queued_take(gate_id)
        if gate is not None:  # else another transaction is deciding on it (an approval, a cancel)
            start_waiting_for_approval(tx, gate, "dispatcher", now)
    while pending:
        task_id, route, required = pending.pop(0)
        if task_id in keys:
            key, key_limit = keys[task_id]
            assert key is not None
            if (key, key_limit) not in full_keys:
                tx.lock_name("ckey", key)  # site 4: claims of this key wait until the pass commits
            if _key_blocks(tx, key, key_limit, full_keys):
                continue  # its key is at its limit: it waits, queued and in order, for one to finish
        if route == routing.ROUTE_ALL:
            parent = tx.queued_take(task_id)
            if parent is None:
                continue  # another transaction is deciding on it (a cancel)
            kids = _fan_out(tx, parent, agents.candidates(route, required), now)
            if kids:
                out.fanned_out += 1
                pending = [(k.id, k.route, k.capabilities) for k in kids] + pending
                keys.update({k.id: (k.concurrency_key, k.max_concurrency) for k in kids if k.concurrency_key})
            else:
                _set(tx, parent, now, parked=1)
                out.parked += 1
            continue
        if not agents.room:
            continue  # every agent is busy: the task waits, in order, for one to free up
        name = _pick(tx, task_id, route, required, agents, counted, out)
        if name is None:
            continue
        task = tx.queued_take(task_id)  # site 2
        if task is None:
            continue  # an agent is claiming it right now (or it was canceled): the claim wins, no 409
        _assign(tx, task, name, agents, now, out)


def _pick(
    tx: Tx,
    task_id: str,
    route: str,
    required: tuple[str, ...],
    agents: PassAgents,
    counted: set[str],
    out: DispatchResult,
) -> str | None:
    """The agent to assign this task to now, or None. The first time a pass picks an agent it locks the
    agent (site 3): its own claims then wait until the pass commits. Where other writers ran since the pass
    read the loads (PostgreSQL), its load is counted again under the lock, and the task routed again if it
    moved; SQLite's transaction holds the database, so the loads it read still hold and nothing is read."""
    while True:
        name = _route(tx, task_id, route, required, agents.candidates(route, required), out)
        if name is None or name in counted:
            return name
        counted.add(name)
        if not tx.agent_lock(name, share=False) or not _recount(agents, name, tx.agent_load(name)):
            return name
        # its load moved since the pass read it: route again with the count as it is now


def _recount(agents: PassAgents, name: str, load: int) -> bool:
    """Put an agent's current load into the pass's figures; False when it is what the pass had."""
    before = agents.load.get(name, 0)
    if load == before:
        return False
    agent = agents.view.agents[name]
    if agent.pushable:  # `free` counts push agents with room
        agents.free += int(load < agent.capacity) - int(before < agent.capacity)
    agents.load[name] = load
    return True


def _assign(tx: Tx, task: Task, name: str, agents: PassAgents, now: float, out: DispatchResult) -> None:
    """Assign a queued task to `name` (claimed for it at once with claim_on_push) and write its webhook."""
    if agents.view.agents[name].claim_on_push:
        # Claimed for it here, in the assignment's transaction: the webhook carries the claim, once
        # (a retried delivery sends this same body, so never a second token).
        view_of_task = render.task(state_tasks.take(tx, task, name, now, pushed=True))
        out.push_claimed += 1
    else:
        task = _set(tx, task, now, state=TaskState.ASSIGNED, assigned_to=name, assigned_at=now)
        add_event(tx, task.id, "assigned", "dispatcher", now, {"agent": name})
        view_of_task = render.task(view(tx, task))
    tx.agent_mark_assigned(name, now)
    outbox_rows.enqueue(
        tx,
        kind="webhook",
        agent=name,
        task_id=task.id,
        body={"type": "task.assigned", "timestamp": iso(now), "data": {"task": view_of_task}},
        now=now,
    )
    agents.took(name, now)
    # Latency counts from when the task could first go out: submission, or its retry falling due.
    out.assigned.append((task.id, name, task.not_before or task.created_at))


def _route(
    tx: Tx, task_id: str, route: str, required: tuple[str, ...], agents: list[Candidate], out: DispatchResult
) -> str | None:
    """The agent to assign this task to now, or None; parks the task when no agent could ever take it."""
    avoid = tx.avoid_get(task_id)
    name = routing.pick_agent(route=route, required=required, candidates=agents, avoid=avoid)
    if name is None and (
        routing.pick_agent(route=route, required=required, candidates=agents, avoid=avoid, respect_capacity=False)
        is None
    ):
        # nobody could take it: skip it until the agents change
        tx.park(task_id)
        out.parked += 1
    return name


def _fan_out(tx: Tx, parent: Task, candidates: list[Candidate], now: float) -> list[Task]:
    targets = routing.fanout_targets(required=parent.capabilities, candidates=candidates)
    if not targets:
        return []
    kids = []
    for name in targets:
        kid = tx.task_insert_child(parent, kid_id=str(uuid.uuid4()), route=name, now=now)
        add_event(tx, kid.id, "submitted", "dispatcher", now, {"parent_id": parent.id, "route": name})
        # A child is a task of its own in the counters too, so completed never exceeds submitted.
        effects.note("submitted", parent.type, parent.priority.label)
        kids.append(kid)
    _set(tx, parent, now, state=TaskState.WAITING)
    add_event(tx, parent.id, "waiting", "dispatcher", now, {"children": targets})
    return kids
