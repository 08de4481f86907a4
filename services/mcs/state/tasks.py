"""Tasks: submitting, claiming and every transition an agent or a person asks for, with its audit event and
any outbox row it causes, in the caller's transaction (`db.write(state.tasks.claim, ...)`). Functions
return models (`TaskView`, ...); the api renders them with `mcs.render`.

Serialisation (docs/design/engines.md 4.1): write paths lock the task they decide on (site 5); the claim
paths take a queued task with `task_take` so a replica deciding on it is skipped (site 2); an agent's own
claims take its load lock in share mode once they hold the task (site 3, `agent_lock(share=True)`), so a
dispatcher pass counting that agent's load under the exclusive lock waits for the claim, or the claim for
the pass, and the count it decides on holds; concurrency keys are name-locked before they are counted
(site 4, `transitions.key_full`); an Idempotency-Key is name-locked before it is looked up (site 8).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from mcs import effects, quotas, routing
from mcs.backoff import retry_delay
from mcs.engines.areas.tasks import TaskFilter
from mcs.engines.base import Tx
from mcs.errors import ApiError, Conflict, Forbidden, Unprocessable
from mcs.models import (
    APPROVAL,
    Agent,
    Caller,
    IdemRecord,
    ProgressNote,
    Task,
    TaskEvent,
    TaskPage,
    TaskReplay,
    TaskSpec,
    TaskState,
    TaskView,
    iso,
)
from mcs.render import decode_cursor
from mcs.render import task as render_task
from mcs.state import agents as agents_store
from mcs.state.transitions import add_event as add_event  # re-exported: a2a, schedules, outbox call it here
from mcs.state.transitions import (
    alert_failed,
    back_to_queue,
    cancel_tree,
    key_full,
    must_lock,
    resolve_blocked,
    set_state,
    settle_parent,
    start_waiting_for_approval,
)
from mcs.state.transitions import cancel_step as cancel_step
from mcs.state.transitions import must_get as must_get  # re-exported: a2a, workflows call it here
from mcs.state.transitions import (
    view as view,  # re-exported: the api and workflows render it  # re-exported: workflows call it here
)

# ---------------------------------------------------------------- reading


def get(tx: Tx, task_id: str) -> Task | None:
    """The task, or None."""
    return tx.task_get(task_id)


def show(tx: Tx, task_id: str) -> TaskView:
    """The task as the API shows it (404 when there is none)."""
    return view(tx, must_get(tx, task_id))


def events(tx: Tx, task_id: str) -> list[TaskEvent]:
    """The task's audit trail, oldest first (404 when there is no task)."""
    must_get(tx, task_id)
    return tx.task_events(task_id)


def list_tasks(
    tx: Tx,
    *,
    state: str | None,
    type: str | None,
    agent: str | None,
    parent: str | None,
    limit: int,
    cursor: str | None,
    id_prefix: str | None = None,
    updated_after: float | None = None,
    workflow: str | None = None,
    q: str | None = None,
) -> TaskPage:
    """Newest first; `next_seq` continues after the last task shown (stable under new submissions).
    `id_prefix` keeps the tasks whose id starts with it (a range on the id index). `q` keeps the tasks
    whose payload, result or error contains it (ASCII case-insensitive), among the newest
    SEARCH_SCAN_ROWS tasks only, so a search costs a bounded scan."""
    f = TaskFilter(
        state=state,
        type=type,
        agent=agent,
        parent=parent,
        workflow=workflow,
        id_prefix=id_prefix,
        updated_after=updated_after,
        q=q,
    )
    found = tx.tasks_page(f, before_seq=decode_cursor(cursor) if cursor else None, limit=limit + 1)
    shown = found[:limit]
    return TaskPage(
        tasks=tuple(view(tx, t) for t in shown),
        next_seq=shown[-1].seq if len(found) > limit else None,
    )


def unfinished_submitted(tx: Tx, submitter: str) -> int:
    """How many of `submitter`'s own tasks are not finished."""
    return tx.unfinished_submitted(submitter)


def dependencies(tx: Tx, task_id: str) -> list[Task]:
    """The tasks `task_id` depends on, oldest first."""
    return tx.deps_of(task_id)


# ---------------------------------------------------------------- submit


def submit(
    tx: Tx,
    *,
    caller: Caller,
    spec: TaskSpec,
    idempotency_key: str | None,
    body_hash: str,
    idempotency_ttl: float,
    now: float,
    max_queued: int = 0,
    unfinished: int | None = None,
) -> tuple[TaskView | TaskReplay, bool]:
    """Store a new task (queued). Returns (the task, whether it is a replay: then the response stored the
    first time). An agent with `max_queued` unfinished tasks already (0: no limit) is refused (429); a
    replay is not. `unfinished`: the caller's count of them, when it keeps one (a batch counts once)."""
    if idempotency_key is not None:
        tx.lock_name("idem", caller.actor + "\n" + idempotency_key)  # 4.1 site 8 (PostgreSQL text refuses NUL)
        record = tx.idem_get(caller.actor, idempotency_key, now)
        if record is not None:
            if record.body_hash != body_hash:
                raise Unprocessable(
                    "this Idempotency-Key was used with a different request body", code="idempotency_key_reused"
                )
            return TaskReplay(body=json.loads(record.response)), True
    if max_queued > 0 and not caller.is_admin:
        if unfinished is None:
            unfinished = tx.unfinished_submitted(caller.actor)
        if unfinished >= max_queued:
            raise quotas.queued_tasks_exceeded(caller.actor, unfinished, max_queued)
    if spec.route not in (routing.ROUTE_ANY, routing.ROUTE_ALL) and agents_store.get(tx, spec.route) is None:
        raise Unprocessable(f"route names agent {spec.route!r}, which does not exist", code="unknown_agent")
    check_dependencies(tx, spec.depends_on)
    task_id = insert(tx, spec=spec, submitted_by=caller.actor, now=now)
    answer = view(tx, must_get(tx, task_id))
    if idempotency_key is not None:
        tx.idem_put(
            IdemRecord(
                caller=caller.actor,
                key=idempotency_key,
                body_hash=body_hash,
                response=json.dumps(render_task(answer)),
                expires_at=now + idempotency_ttl,
            )
        )
    return answer, False


@dataclass(frozen=True)
class BatchItem:
    """One task of a batch as the api prepared it: what `submit` takes, or why the api refused it already
    (a check on the body alone, or the submit rate)."""

    spec: TaskSpec | None
    idempotency_key: str | None = None
    body_hash: str = ""
    refused: ApiError | None = None


@dataclass(frozen=True)
class BatchOutcome:
    task: TaskView | TaskReplay | None  # None when refused
    replayed: bool = False
    error: ApiError | None = None


def submit_batch(
    tx: Tx,
    *,
    caller: Caller,
    items: list[BatchItem],
    idempotency_ttl: float,
    now: float,
    max_queued: int = 0,
) -> list[BatchOutcome]:
    """Store each task as `submit` would, in this one transaction, in order; one outcome per item.

    Each item runs in a savepoint: one refused (unknown dependency or route, an idempotency key reused with
    another body, the queued-tasks quota) changes nothing and the others are stored. An item whose key was
    seen (earlier in this batch too) replays the task stored for it. The quota is counted once, then kept
    up to date item by item."""
    unfinished: int | None = None
    if max_queued > 0 and not caller.is_admin:
        unfinished = tx.unfinished_submitted(caller.actor)
    out: list[BatchOutcome] = []
    for item in items:
        if item.refused is not None or item.spec is None:
            out.append(BatchOutcome(None, error=item.refused or Unprocessable("no task given")))
            continue
        tx.savepoint("batch_item")
        noted = effects.mark()
        try:
            task, replayed = submit(
                tx,
                caller=caller,
                spec=item.spec,
                idempotency_key=item.idempotency_key,
                body_hash=item.body_hash,
                idempotency_ttl=idempotency_ttl,
                now=now,
                max_queued=max_queued,
                unfinished=unfinished,
            )
        except ApiError as exc:
            tx.savepoint_rollback("batch_item")
            effects.discard_since(noted)
            out.append(BatchOutcome(None, error=exc))
            continue
        tx.savepoint_release("batch_item")
        if unfinished is not None and not replayed:
            unfinished += 1
        out.append(BatchOutcome(task, replayed))
    return out


def insert(
    tx: Tx,
    *,
    spec: TaskSpec,
    submitted_by: str,
    now: float,
    workflow_id: str | None = None,
    step_id: str | None = None,
) -> str:
    """Store one task: `blocked` while it has dependencies or a run_at ahead, else `queued`; returns its id.
    Its dependencies must exist (`check_dependencies`, or steps of the same workflow inserted before)."""
    task_id = str(uuid.uuid4())
    blocked = bool(spec.depends_on) or (spec.not_before is not None and spec.not_before > now)
    tx.task_insert(
        task_id=task_id,
        spec=spec,
        state=TaskState.BLOCKED if blocked else TaskState.QUEUED,
        submitted_by=submitted_by,
        now=now,
        workflow_id=workflow_id,
        step_id=step_id,
    )
    tx.deps_add(task_id, spec.depends_on)
    detail: dict[str, Any] = {"priority": spec.priority.label, "route": spec.route}
    if spec.depends_on:
        detail["depends_on"] = list(spec.depends_on)
    if spec.not_before is not None:
        detail["run_at"] = iso(spec.not_before)
    if workflow_id is not None:
        detail |= {"workflow_id": workflow_id, "step_id": step_id}
    add_event(tx, task_id, "submitted", submitted_by, now, detail)
    effects.note("submitted", spec.type, spec.priority.label)
    if blocked:
        resolve_blocked(tx, must_get(tx, task_id), now)
    elif spec.type == APPROVAL:  # a gate waits for a person at once: never routed, an alert says so
        start_waiting_for_approval(tx, must_get(tx, task_id), submitted_by, now)
    return task_id


def check_dependencies(tx: Tx, dep_ids: tuple[str, ...]) -> None:
    """Every dependency must exist when the dependent is submitted: so no cycle can ever form."""
    for dep_id in dep_ids:
        if tx.task_get(dep_id) is None:
            raise Unprocessable(f"depends_on names task {dep_id!r}, which does not exist", code="unknown_dependency")


# ---------------------------------------------------------------- agent-side transitions


def _check_may_take(task: Task, agent: Agent) -> None:
    if task.route == routing.ROUTE_ALL:
        raise Conflict("a fanout parent is not claimable; its children are", code="not_claimable")
    if not routing.allowed(task.route, agent.name):
        raise Forbidden(f"task is routed to agent {task.route!r}", code="routed_elsewhere")
    if not routing.capable(agent.usable_capabilities, task.capabilities):
        missing = sorted(set(task.capabilities) - set(agent.usable_capabilities))
        raise Forbidden(f"agent lacks required capabilities: {', '.join(missing)}", code="missing_capability")


def take(tx: Tx, task: Task, agent: str, now: float, *, pushed: bool = False, after: str | None = None) -> TaskView:
    """Claim `task` (locked or taken by the caller) for `agent`: a new claim_token, the lease started, the
    attempt counted. `pushed`: the dispatcher claims it at assignment for an agent with claim_on_push (its
    event says so). `after`: the task whose completion (complete-and-next) asked for this one."""
    token = uuid.uuid4().hex
    lease = now + task.claim_ttl
    task = set_state(
        tx,
        task,
        now,
        state=TaskState.CLAIMED,
        assigned_to=agent,
        assigned_at=task.assigned_at if task.assigned_to == agent and not pushed else now,
        claim_token=token,
        lease_expires_at=lease,
        attempts=task.attempts + 1,
        parked=0,
    )
    detail: dict[str, Any] = {"attempt": task.attempts, "lease_expires_at": iso(lease)}
    if pushed:
        detail = {"agent": agent, "push": True} | detail
    if after is not None:
        detail["after"] = after
    add_event(tx, task.id, "claimed", "dispatcher" if pushed else agent, now, detail)
    return view(tx, task, claim_token=token)


def claim(tx: Tx, *, task_id: str, agent: Agent, now: float) -> TaskView:
    """Claim one task by id for `agent` (409 when it is not claimable by it now)."""
    task = must_lock(tx, task_id)
    if task.type == APPROVAL:
        raise Conflict("an approval is decided by a person (approve or deny), never claimed", code="not_claimable")
    _check_may_take(task, agent)
    if task.state is TaskState.ASSIGNED and task.assigned_to != agent.name:
        raise Conflict(f"task is assigned to agent {task.assigned_to!r}", code="not_claimable")
    if task.state not in (TaskState.QUEUED, TaskState.ASSIGNED):
        raise Conflict(f"task is {task.state.value}, not claimable", code="not_claimable")
    if tx.avoid_is_hard(task.id, agent.name):
        raise Conflict("this agent rejected the task", code="not_claimable")
    if task.state is TaskState.QUEUED and key_full(tx, task.concurrency_key, task.max_concurrency):
        raise Conflict(
            f"{task.max_concurrency} task(s) with concurrency key {task.concurrency_key!r} already running",
            code="concurrency_limit",
        )
    tx.agent_lock(agent.name, share=True)  # site 3: after the task row, as the dispatcher's order is
    return take(tx, task, agent.name, now)


def claim_next(tx: Tx, *, agent: Agent, now: float, after: str | None = None) -> TaskView | None:
    """The most urgent, oldest task this agent may take: one assigned to it, or a queued one it can do.
    `after`: the task complete-and-next completed to ask for it."""
    best = _next_for(tx, agent, take=True)
    if best is None:
        return None
    tx.agent_lock(agent.name, share=True)  # site 3, as in `claim`
    return take(tx, best, agent.name, now, after=after)


def has_claimable(tx: Tx, *, agent: Agent) -> bool:
    """Whether `claim_next` would find a task for this agent now: a read, so a waiting long poll takes
    the write lock only when there is something to take (another agent may still take it first)."""
    return _next_for(tx, agent, take=False) is not None


def _next_for(tx: Tx, agent: Agent, *, take: bool) -> Task | None:
    best = tx.assigned_next(agent.name)
    if best is not None and take:
        best = tx.task_take(best.id, TaskState.ASSIGNED)  # 4.1 site 2 (nobody else takes it: it is ours)
    # Read lazily, only what the match needs, until the first task this agent can do (or one more urgent
    # than the one assigned to it): a long queue of tasks it cannot do costs a scan, never a miss.
    for row in tx.claimable(agent.name, agent.usable_capabilities):
        if best is not None and (row.priority, row.seq) > (int(best.priority), best.seq):
            break
        if routing.capable(agent.usable_capabilities, row.capabilities) and not key_full(
            tx, row.concurrency_key, row.max_concurrency
        ):
            # 4.1 site 2: a queued task another replica is taking is skipped, never a 409
            found = tx.task_take(row.id, TaskState.QUEUED) if take else tx.task_get(row.id)
            if found is not None:
                best = found
                break
    return best


def _held(tx: Tx, task_id: str, agent: Agent, token: str) -> Task:
    """The task, locked, if this agent holds it with this token; the stale-token check comes first (409)."""
    task = must_lock(tx, task_id)
    if task.claim_token is None or token != task.claim_token:
        raise Conflict("claim_token is stale: the task was claimed again since", code="stale_claim_token")
    if task.assigned_to != agent.name:
        raise Forbidden("another agent holds this task", code="not_holder")
    return task


def holds_claim(tx: Tx, *, task_id: str, agent: str | None, token: str) -> bool:
    """Whether `agent` still holds `task_id` with this claim_token (a claimed task)."""
    return tx.task_held(task_id, agent, token)


def extend(tx: Tx, *, task_id: str, agent: Agent, token: str, ttl: float | None, now: float) -> TaskView:
    """The holder's lease on a claimed task, renewed for `ttl` (default: the task's claim TTL)."""
    task = _held(tx, task_id, agent, token)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task can be extended", code="not_claimed")
    lease = now + (ttl if ttl is not None else task.claim_ttl)
    task = set_state(tx, task, now, lease_expires_at=lease)
    add_event(tx, task.id, "extended", agent.name, now, {"lease_expires_at": iso(lease)})
    return view(tx, task, claim_token=token)


def progress(
    tx: Tx,
    *,
    task_id: str,
    agent: Agent,
    token: str,
    message: str | None,
    percent: float | None,
    now: float,
) -> ProgressNote:
    """Record the holder's progress on a claimed task as a `progress` event (it changes no state)."""
    task = _held(tx, task_id, agent, token)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task reports progress", code="not_claimed")
    detail: dict[str, Any] = {}
    if message is not None:
        detail["message"] = message
    if percent is not None:
        detail["percent"] = percent
    add_event(tx, task.id, "progress", agent.name, now, detail)
    return ProgressNote(task_id=task.id, state=task.state, detail=detail)


def complete(tx: Tx, *, task_id: str, agent: Agent, token: str, result: Any, now: float) -> TaskView:
    """The completed task. The same token again is a no-op, so agents can retry."""
    task = _held(tx, task_id, agent, token)
    if task.state is TaskState.COMPLETED:
        return view(tx, task)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task can be completed", code="not_claimed")
    task = set_state(tx, task, now, state=TaskState.COMPLETED, result=result, lease_expires_at=None)
    add_event(tx, task.id, "completed", agent.name, now)
    settle_parent(tx, task.parent_id, now)
    return view(tx, task)


def complete_and_next(
    tx: Tx, *, task_id: str, agent: Agent, token: str, result: Any, now: float
) -> tuple[TaskView, TaskView | None, bool]:
    """`complete`, then `claim_next` for the same agent, in one transaction: (the completed task, the next
    task claimed or None, whether this was a repeat). A repeat (the completion was made already with this
    token: its answer was lost) claims nothing new: it answers the task the first one claimed, while this
    agent still holds it, so a retried request never leaves a claim nobody knows of."""
    repeat = must_lock(tx, task_id).state is TaskState.COMPLETED
    done = complete(tx, task_id=task_id, agent=agent, token=token, result=result, now=now)
    if repeat:
        return done, _claimed_after(tx, task_id, agent), True
    return done, claim_next(tx, agent=agent, now=now, after=task_id), False


def _claimed_after(tx: Tx, task_id: str, agent: Agent) -> TaskView | None:
    """The task `agent` holds by the claim complete-and-next made when it completed `task_id`, if any."""
    for task in tx.claimed_by(agent.name):
        detail = tx.last_claim_detail(task.id)
        if isinstance(detail, dict) and detail.get("after") == task_id:
            return view(tx, task, claim_token=task.claim_token)
    return None


def fail_attempt(
    tx: Tx, task: Task, *, error: Any, retryable: bool, actor: str, now: float, base: float, cap: float
) -> Task:
    """A failed attempt: retrying after backoff, or failed for good (which raises an alert)."""
    if retryable and task.attempts <= task.max_retries:
        delay = retry_delay(task.attempts, base=base, cap=cap)
        task = set_state(
            tx, task, now, state=TaskState.RETRYING, error=error, not_before=now + delay, lease_expires_at=None
        )
        add_event(tx, task.id, "retrying", actor, now, {"error": error, "attempt": task.attempts, "delay": delay})
        return task
    task = set_state(tx, task, now, state=TaskState.FAILED, error=error, lease_expires_at=None)
    add_event(tx, task.id, "failed", actor, now, {"error": error, "attempts": task.attempts, "retryable": retryable})
    alert_failed(tx, task, now)
    settle_parent(tx, task.parent_id, now)
    return task


def fail(
    tx: Tx,
    *,
    task_id: str,
    agent: Agent,
    token: str,
    error: Any,
    retryable: bool,
    now: float,
    base: float,
    cap: float,
) -> TaskView:
    """The holder's attempt failed: retried after backoff while retries remain, else failed."""
    task = _held(tx, task_id, agent, token)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task can fail", code="not_claimed")
    task = fail_attempt(tx, task, error=error, retryable=retryable, actor=agent.name, now=now, base=base, cap=cap)
    return view(tx, task)


def reject(tx: Tx, *, task_id: str, agent: Agent, token: str | None, reason: str, now: float) -> TaskView:
    """The agent declines: back to the queue, never to this agent again, and no attempt spent. A task
    routed to this agent by name (a fanout child too) fails instead: nobody else may take it."""
    task = must_lock(tx, task_id)
    if task.state is TaskState.ASSIGNED and task.assigned_to == agent.name and token is None:
        pass
    elif task.state is TaskState.CLAIMED or token is not None:
        task = _held(tx, task_id, agent, token or "")
        if task.state is not TaskState.CLAIMED:
            raise Conflict(f"task is {task.state.value}; nothing to reject", code="not_claimed")
    elif task.state is TaskState.QUEUED and routing.allowed(task.route, agent.name) and task.route != routing.ROUTE_ALL:
        pass  # a polling agent may decline a queued task it was offered
    else:
        raise Conflict(f"task is {task.state.value} and not offered to you", code="not_rejectable")
    attempts = task.attempts - 1 if task.state is TaskState.CLAIMED else task.attempts
    if task.route == agent.name:
        # Routed to this agent alone (by name, or a fanout child): nobody else may take it, so declining
        # ends it rather than leaving it queued forever; a fanout parent then collects it as failed.
        task = set_state(
            tx,
            task,
            now,
            state=TaskState.FAILED,
            error=f"rejected by {agent.name}: {reason}",
            lease_expires_at=None,
            attempts=max(attempts, 0),
        )
        add_event(tx, task.id, "rejected", agent.name, now, {"reason": reason})
        effects.note("rejected", task.type, task.priority.label)
        add_event(tx, task.id, "failed", agent.name, now, {"error": task.error, "retryable": False})
        alert_failed(tx, task, now)
        settle_parent(tx, task.parent_id, now)
        return view(tx, task)
    task = back_to_queue(tx, task, now, avoid=agent.name, hard=True, attempts=attempts)
    add_event(tx, task.id, "rejected", agent.name, now, {"reason": reason})
    effects.note("rejected", task.type, task.priority.label)
    return view(tx, task)


# ---------------------------------------------------------------- submitter-side transitions


def cancel(tx: Tx, *, task_id: str, caller: Caller, now: float) -> TaskView:
    """The submitter (or the admin) cancels an unfinished task and its fanout children."""
    task = must_lock(tx, task_id)
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can cancel a task", code="not_submitter")
    if task.state.terminal:
        raise Conflict(f"task is already {task.state.value}", code="already_terminal")
    cancel_tree(tx, task, caller.actor, now)
    settle_parent(tx, task.parent_id, now)
    return show(tx, task.id)


def _decidable(tx: Tx, task_id: str, caller: Caller) -> Task:
    task = must_lock(tx, task_id)
    if task.type != APPROVAL:
        raise Conflict(f"task is of type {task.type!r}, not an approval", code="not_approval")
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can decide an approval", code="not_submitter")
    if task.state is not TaskState.WAITING:
        raise Conflict(f"approval is {task.state.value}, not waiting", code="not_waiting")
    return task


def approve(tx: Tx, *, task_id: str, caller: Caller, note: str | None, now: float) -> TaskView:
    """A waiting approval, approved: completed with `{approved, by, note}`."""
    task = _decidable(tx, task_id, caller)
    result = {"approved": True, "by": caller.actor, "note": note}
    task = set_state(tx, task, now, state=TaskState.COMPLETED, result=result)
    add_event(tx, task.id, "approved", caller.actor, now, {"note": note})
    add_event(tx, task.id, "completed", caller.actor, now)
    settle_parent(tx, task.parent_id, now)
    return view(tx, task)


def deny(tx: Tx, *, task_id: str, caller: Caller, reason: str, now: float) -> TaskView:
    """A waiting approval, denied: failed with the reason as its error (no failure alert: a person did it)."""
    task = _decidable(tx, task_id, caller)
    task = set_state(
        tx, task, now, state=TaskState.FAILED, error=reason, result={"approved": False, "by": caller.actor}
    )
    add_event(tx, task.id, "denied", caller.actor, now, {"reason": reason})
    add_event(tx, task.id, "failed", caller.actor, now, {"error": reason, "retryable": False})
    settle_parent(tx, task.parent_id, now)
    return view(tx, task)


def retry(tx: Tx, *, task_id: str, caller: Caller, now: float) -> TaskView:
    """A failed or canceled task back to the queue, attempts reset and error cleared (event
    `retried_by_hand`). An approval goes back to waiting (and alerts again). A fanout parent: its failed
    and canceled children are retried and it waits for them again (completed children keep their
    results); one that never fanned out is queued. A fanout child alone is refused: retry its parent."""
    task = must_lock(tx, task_id)
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can retry a task", code="not_submitter")
    if task.state not in (TaskState.FAILED, TaskState.CANCELED):
        raise Conflict(f"task is {task.state.value}; only failed or canceled can be retried", code="not_retryable")
    if task.parent_id is not None:
        raise Conflict(f"task is part of fanout {task.parent_id}; retry that one", code="retry_parent")
    _redrive(tx, task, caller.actor, now)
    return show(tx, task.id)


def _redrive(tx: Tx, task: Task, actor: str, now: float) -> None:
    kids = tx.children_of(task.id)
    reset: dict[str, Any] = dict(
        attempts=0,
        error=None,
        result=None,
        not_before=None,
        lease_expires_at=None,
        claim_token=None,
        assigned_to=None,
        assigned_at=None,
        parked=0,
    )
    tx.avoid_clear(task.id)
    state = TaskState.WAITING if kids else TaskState.QUEUED
    task = set_state(tx, task, now, state=state, **reset)
    add_event(tx, task.id, "retried_by_hand", actor, now, {"children": len(kids)} if kids else None)
    effects.note("redriven", task.type, task.priority.label)
    if task.type == APPROVAL and not kids:
        start_waiting_for_approval(tx, task, actor, now)
    for kid in kids:
        if kid.state in (TaskState.FAILED, TaskState.CANCELED):
            locked = tx.task_lock(kid.id)  # read again: retrying an earlier child may have reopened it
            if locked is not None and locked.state in (TaskState.FAILED, TaskState.CANCELED):
                _redrive(tx, locked, actor, now)
