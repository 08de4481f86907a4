"""Tasks: every state change, each with its audit event and any outbox row it causes, in the caller's
transaction. Functions here run inside `in_write`/`in_read`; they never commit themselves."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from mcs import consensus, quotas, routing
from mcs.backoff import retry_delay
from mcs.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from mcs.models import APPROVAL, Agent, Caller, Task, TaskEvent, TaskSpec, TaskState, iso
from mcs.routing import Candidate
from mcs.state import effects, outbox_rows
from mcs.store import agents as agents_store
from mcs.store.connection import Connection

NON_TERMINAL = ("queued", "assigned", "claimed", "retrying", "waiting", "blocked")
# Queued tasks a pass handles with every agent busy: fanout parents and approvals (which go to waiting).
NEEDS_NO_AGENT = f"(route = 'all' OR type = '{APPROVAL}')"
DISPATCH_SCAN_MAX = 5000  # queued rows one dispatcher pass reads at most, page by page
FULL_KEYS_SKIPPED_MAX = 200  # full concurrency keys a pass leaves out of its queue reads by SQL


# ---------------------------------------------------------------- reading


def get(conn: Connection, task_id: str) -> Task | None:
    row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return Task.from_row(row) if row else None


def must_get(conn: Connection, task_id: str) -> Task:
    task = get(conn, task_id)
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


def children_ids(conn: Connection, task_id: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM tasks WHERE parent_id = ? ORDER BY seq", (task_id,))]


def to_api(conn: Connection, task: Task) -> dict[str, Any]:
    kids = children_ids(conn, task.id) if task.route == routing.ROUTE_ALL else []
    return task.to_api(kids) | dependency_view(conn, task)


def show(conn: Connection, task_id: str) -> dict[str, Any]:
    return to_api(conn, must_get(conn, task_id))


def events(conn: Connection, task_id: str) -> list[dict[str, Any]]:
    must_get(conn, task_id)
    rows = conn.execute("SELECT at, kind, actor, detail FROM task_events WHERE task_id = ? ORDER BY id", (task_id,))
    return [TaskEvent.from_row(r).to_api() for r in rows]


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        seq = int(raw[1:]) if raw.startswith("s") else -1
        if not 0 <= seq < 2**63:
            raise ValueError(raw)
        return seq
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this server gave out", code="bad_cursor") from exc


TERMINAL_STATES = ("completed", "failed", "canceled")
# The WHERE of the partial index tasks_ended (0017), repeated verbatim: SQLite uses a partial index only
# for a query that names its condition (`state = 'failed'` alone does not imply this IN list to it).
ENDED = "state IN ('completed', 'failed', 'canceled')"
SEARCH_SCAN_ROWS = 10_000  # a `q=` search looks at this many of the newest tasks at most


def list_tasks(
    conn: Connection,
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
) -> dict[str, Any]:
    """Newest first; `next_cursor` continues after the last task shown (stable under new submissions).
    `id_prefix` keeps the tasks whose id starts with it (a range on the id index). `q` keeps the tasks
    whose payload, result or error contains it (ASCII case-insensitive), among the newest SEARCH_SCAN_ROWS
    tasks only, so a search costs a bounded scan."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("state", state),
        ("type", type),
        ("assigned_to", agent),
        ("parent_id", parent),
        ("workflow_id", workflow),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if id_prefix:
        where.append("id >= ? AND id < ?")
        args.extend((id_prefix, id_prefix + "\U0010ffff"))
    if updated_after is not None:
        where.append("updated_at >= ?")
        args.append(updated_after)
        if state in TERMINAL_STATES:
            where.append(ENDED)  # the partial index tasks_ended: only the tasks that ended since then
    if cursor:
        where.append("seq < ?")
        args.append(decode_cursor(cursor))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append("seq > (SELECT coalesce(max(seq), 0) FROM tasks) - ?")
        args.append(SEARCH_SCAN_ROWS)
        where.append(
            "(payload LIKE ? ESCAPE '\\' OR coalesce(result, '') LIKE ? ESCAPE '\\'"
            " OR coalesce(error, '') LIKE ? ESCAPE '\\')"
        )
        args.extend((pattern, pattern, pattern))
    sql = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
    if updated_after is not None:
        # The page's seqs first, from the index alone, then their rows: tens of thousands of tasks may have
        # changed since then (a busy 5 minutes), and reading each row only to sort it out costs seconds.
        sql = f"SELECT * FROM tasks WHERE seq IN ({sql.replace('SELECT *', 'SELECT seq', 1)}) ORDER BY seq DESC"
    rows = conn.execute(sql, (*args, limit + 1)).fetchall()
    tasks = [Task.from_row(r) for r in rows[:limit]]
    return {
        "tasks": [to_api(conn, t) for t in tasks],
        "next_cursor": encode_cursor(tasks[-1].seq) if len(rows) > limit else None,
    }


# ---------------------------------------------------------------- writing helpers


def add_event(conn: Connection, task_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
    conn.execute(
        "INSERT INTO task_events (task_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
        (task_id, now, kind, actor, None if detail is None else json.dumps(detail)),
    )


# State changes the metrics count (mcs_tasks_<event>_total), wherever they happen.
_COUNTED = {
    TaskState.COMPLETED: "completed",
    TaskState.FAILED: "failed",
    TaskState.RETRYING: "retried",
    TaskState.CANCELED: "canceled",
}


def _set(conn: Connection, task: Task, now: float, **changes: Any) -> Task:
    """Update columns of one task, guarded by the state we read, so a lost race changes nothing."""
    encoded = {k: (json.dumps(v) if k in ("result", "error") and v is not None else v) for k, v in changes.items()}
    encoded = {k: (v.value if isinstance(v, TaskState) else v) for k, v in encoded.items()}
    columns = ", ".join(f"{k} = ?" for k in encoded)
    cur = conn.execute(
        f"UPDATE tasks SET {columns}, updated_at = ? WHERE id = ? AND state = ?",
        (*encoded.values(), now, task.id, task.state.value),
    )
    if cur.rowcount != 1:
        raise Conflict(f"task {task.id} changed under us; try again", code="task_changed")
    new_state = changes.get("state")
    counted = _COUNTED.get(new_state) if isinstance(new_state, TaskState) else None
    if counted is not None and new_state is not task.state:
        effects.note(counted, task.type, task.priority.label)
    changed = replace(task, **{k: v for k, v in changes.items() if k != "parked"}, updated_at=now)
    if isinstance(new_state, TaskState) and new_state.terminal and not task.state.terminal:
        release_dependents(conn, changed, now)
    elif isinstance(new_state, TaskState) and not new_state.terminal and task.state.terminal:
        reopen_dependents(conn, changed, now)  # a retried task: what it canceled waits for it again
    return changed


def _alert_failed(conn: Connection, task: Task, now: float) -> None:
    """A permanent failure raises an alert: id, type, agent and an error summary, never the payload."""
    summary = task.error if isinstance(task.error, str) else json.dumps(task.error)
    outbox_rows.alert(
        conn,
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


# ---------------------------------------------------------------- submit


# A submitter's unfinished top-level tasks, on the partial index tasks_submitter (migration 0008): about
# 0.4 us an unfinished task here, so at most the quota's worth (1000: 0.4 ms) per submit; without the
# index SQLite walks every top-level task (24 ms at 20,000 tasks). Fanout children are not counted:
# their parent, unfinished until they are, stands for them.
UNFINISHED_SQL = (
    "SELECT count(*) FROM tasks WHERE submitted_by = ? AND parent_id IS NULL"
    f" AND state IN ({','.join('?' * len(NON_TERMINAL))})"
)


def unfinished_submitted(conn: Connection, submitter: str) -> int:
    """How many of `submitter`'s own tasks are not finished."""
    return int(conn.execute(UNFINISHED_SQL, (submitter, *NON_TERMINAL)).fetchone()[0])


def submit(
    conn: Connection,
    *,
    caller: Caller,
    spec: TaskSpec,
    idempotency_key: str | None,
    body_hash: str,
    idempotency_ttl: float,
    now: float,
    max_queued: int = 0,
    unfinished: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """Store a new task (queued). Returns (the task as the API shows it, whether it is a replay).
    An agent with `max_queued` unfinished tasks already (0: no limit) is refused (429); a replay is not.
    `unfinished`: the caller's count of them, when it keeps one (a batch counts once, not per task)."""
    if idempotency_key is not None:
        row = conn.execute(
            "SELECT body_hash, response FROM idempotency_keys WHERE caller = ? AND key = ? AND expires_at > ?",
            (caller.actor, idempotency_key, now),
        ).fetchone()
        if row is not None:
            if row["body_hash"] != body_hash:
                raise Unprocessable(
                    "this Idempotency-Key was used with a different request body", code="idempotency_key_reused"
                )
            return json.loads(row["response"]), True
    if max_queued > 0 and not caller.is_admin:
        if unfinished is None:
            unfinished = unfinished_submitted(conn, caller.actor)
        if unfinished >= max_queued:
            raise quotas.queued_tasks_exceeded(caller.actor, unfinished, max_queued)
    if spec.route not in (routing.ROUTE_ANY, routing.ROUTE_ALL) and agents_store.get(conn, spec.route) is None:
        raise Unprocessable(f"route names agent {spec.route!r}, which does not exist", code="unknown_agent")
    check_dependencies(conn, spec.depends_on)
    task_id = insert(conn, spec=spec, submitted_by=caller.actor, now=now)
    response = to_api(conn, must_get(conn, task_id))
    if idempotency_key is not None:
        conn.execute(
            "INSERT OR REPLACE INTO idempotency_keys (caller, key, body_hash, status, response, expires_at)"
            " VALUES (?, ?, ?, 201, ?, ?)",
            (caller.actor, idempotency_key, body_hash, json.dumps(response), now + idempotency_ttl),
        )
    return response, False


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
    task: dict[str, Any] | None  # as the API shows it; None when refused
    replayed: bool = False
    error: ApiError | None = None


def submit_batch(
    conn: Connection,
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
        unfinished = unfinished_submitted(conn, caller.actor)
    out: list[BatchOutcome] = []
    for item in items:
        if item.refused is not None or item.spec is None:
            out.append(BatchOutcome(None, error=item.refused or Unprocessable("no task given")))
            continue
        conn.execute("SAVEPOINT batch_item")
        noted = effects.mark()
        try:
            task, replayed = submit(
                conn,
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
            conn.execute("ROLLBACK TO batch_item")
            conn.execute("RELEASE batch_item")
            effects.discard_since(noted)
            out.append(BatchOutcome(None, error=exc))
            continue
        conn.execute("RELEASE batch_item")
        if unfinished is not None and not replayed:
            unfinished += 1
        out.append(BatchOutcome(task, replayed))
    return out


def insert(
    conn: Connection,
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
    conn.execute(
        "INSERT INTO tasks (id, type, payload, priority, capabilities, route, aggregate, state, max_retries,"
        " claim_ttl, submitted_by, created_at, updated_at, not_before, run_if, workflow_id, step_id,"
        " concurrency_key, max_concurrency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            task_id,
            spec.type,
            json.dumps(spec.payload),
            int(spec.priority),
            json.dumps(list(spec.capabilities)),
            spec.route,
            spec.aggregate,
            TaskState.BLOCKED.value if blocked else TaskState.QUEUED.value,
            spec.max_retries,
            spec.claim_ttl,
            submitted_by,
            now,
            now,
            spec.not_before,
            spec.run_if,
            workflow_id,
            step_id,
            spec.concurrency_key,
            spec.max_concurrency,
        ),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO task_deps (task_id, dep_id) VALUES (?, ?)", [(task_id, d) for d in spec.depends_on]
    )
    detail: dict[str, Any] = {"priority": spec.priority.label, "route": spec.route}
    if spec.depends_on:
        detail["depends_on"] = list(spec.depends_on)
    if spec.not_before is not None:
        detail["run_at"] = iso(spec.not_before)
    if workflow_id is not None:
        detail |= {"workflow_id": workflow_id, "step_id": step_id}
    add_event(conn, task_id, "submitted", submitted_by, now, detail)
    effects.note("submitted", spec.type, spec.priority.label)
    if blocked:
        resolve_blocked(conn, must_get(conn, task_id), now)
    elif spec.type == APPROVAL:  # a gate waits for a person at once: never routed, an alert says so
        _start_waiting_for_approval(conn, must_get(conn, task_id), submitted_by, now)
    return task_id


# ---------------------------------------------------------------- dependencies

_UNFINISHED_DEPS = (
    "EXISTS (SELECT 1 FROM task_deps d JOIN tasks u ON u.id = d.dep_id WHERE d.task_id = tasks.id"
    " AND u.state NOT IN ('completed', 'failed', 'canceled'))"
)


def check_dependencies(conn: Connection, dep_ids: tuple[str, ...]) -> None:
    """Every dependency must exist when the dependent is submitted: so no cycle can ever form."""
    for dep_id in dep_ids:
        if get(conn, dep_id) is None:
            raise Unprocessable(f"depends_on names task {dep_id!r}, which does not exist", code="unknown_dependency")


def dependencies(conn: Connection, task_id: str) -> list[Task]:
    rows = conn.execute(
        "SELECT u.* FROM task_deps d JOIN tasks u ON u.id = d.dep_id WHERE d.task_id = ? ORDER BY u.seq", (task_id,)
    ).fetchall()
    return [Task.from_row(r) for r in rows]


def dependency_view(conn: Connection, task: Task) -> dict[str, Any]:
    """`depends_on` and `inputs`: each dependency's result under its step id (or task id); a fanout
    parent's is its aggregate (the children list, or the consensus). A workflow's root steps get the
    workflow's own inputs under "workflow". A fanout child has its parent's inputs (the agents a fanout
    step reaches work on what the step was handed)."""
    deps = dependencies(conn, task.id)
    source = task
    if task.parent_id is not None and not deps:
        source = get(conn, task.parent_id) or task
    upstream = deps if source is task else dependencies(conn, source.id)
    inputs: dict[str, Any] = {}
    if source.workflow_id is not None and not upstream:
        row = conn.execute("SELECT inputs FROM workflows WHERE id = ?", (source.workflow_id,)).fetchone()
        if row is not None and row["inputs"] is not None:
            inputs["workflow"] = json.loads(row["inputs"])
    for dep in upstream:
        if dep.state.terminal:
            inputs[dep.step_id if dep.workflow_id is not None and dep.step_id else dep.id] = dep.result
    return {"depends_on": [d.id for d in deps], "inputs": inputs}


def resolve_blocked(conn: Connection, task: Task, now: float) -> None:
    """A blocked task whose dependencies changed: canceled when one failed or was canceled (unless it runs
    `always`), queued when every one ended (and its run_at is due; else the dispatcher queues it then)."""
    if task.state is not TaskState.BLOCKED:
        return
    deps = dependencies(conn, task.id)
    if task.run_if != "always":
        for dep in deps:
            if dep.state in (TaskState.FAILED, TaskState.CANCELED):
                error = f"upstream {dep.id} failed"
                _set(conn, task, now, state=TaskState.CANCELED, error=error)
                add_event(
                    conn, task.id, "canceled", "mcs", now, {"upstream": dep.id, "upstream_state": dep.state.value}
                )
                return
    if any(not d.state.terminal for d in deps):
        return
    if task.not_before is not None and task.not_before > now:
        return
    task = _set(conn, task, now, state=TaskState.QUEUED, parked=0)
    add_event(conn, task.id, "unblocked", "mcs", now, {"depends_on": [d.id for d in deps]})
    if task.type == APPROVAL:  # a gate waits for a person from the moment it may run, not a dispatcher pass later
        _start_waiting_for_approval(conn, task, "mcs", now)


def release_dependents(conn: Connection, task: Task, now: float) -> None:
    """`task` just ended: look again at every blocked task that depends on it (in this transaction)."""
    rows = conn.execute(
        # CROSS JOIN fixes the order: this task's few dependents first, not every blocked task in seq order
        "SELECT t.* FROM task_deps d CROSS JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ? AND t.state = 'blocked'"
        " ORDER BY t.seq",
        (task.id,),
    ).fetchall()
    for row in rows:
        # Read again: one resolved before it may have settled it already (c depends on a and on b, which
        # depends on a: a's failure cancels b, whose cascade cancels c).
        current = get(conn, row["id"])
        if current is not None:
            resolve_blocked(conn, current, now)
    if task.workflow_id is not None:
        from mcs.store import workflows as workflows_store  # a workflow's state follows its steps

        workflows_store.settle(conn, task.workflow_id, now)


def reopen_dependents(conn: Connection, task: Task, now: float) -> None:
    """`task` ended but runs again (a retry): the dependents its failure canceled are blocked again (their
    own dependents follow, through `_set`), and its workflow, if that failed, is running again."""
    rows = conn.execute(
        "SELECT t.* FROM task_deps d CROSS JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ?"
        " AND t.state = 'canceled' AND t.error = ? ORDER BY t.seq",
        (task.id, json.dumps(f"upstream {task.id} failed")),
    ).fetchall()
    for row in rows:
        _set(conn, Task.from_row(row), now, state=TaskState.BLOCKED, error=None)
        add_event(conn, row["id"], "reopened", "mcs", now, {"upstream": task.id})
    if task.workflow_id is not None:
        from mcs.store import workflows as workflows_store

        workflows_store.reopen(conn, task.workflow_id, now, step=task.step_id)


def release_due(conn: Connection, now: float) -> list[str]:
    """Blocked tasks whose dependencies all ended and whose run_at came: queued (by the dispatcher)."""
    ids = conn.execute(
        "UPDATE tasks SET state = 'queued', parked = 0, updated_at = ? WHERE state = 'blocked'"
        f" AND not_before <= ? AND NOT {_UNFINISHED_DEPS} RETURNING id",
        (now, now),
    ).fetchall()
    for (task_id,) in ids:
        add_event(conn, task_id, "unblocked", "dispatcher", now, {"run_at": True})
    return [r[0] for r in ids]


# ---------------------------------------------------------------- agent-side transitions


def _check_may_take(task: Task, agent: Agent) -> None:
    if task.route == routing.ROUTE_ALL:
        raise Conflict("a fanout parent is not claimable; its children are", code="not_claimable")
    if not routing.allowed(task.route, agent.name):
        raise Forbidden(f"task is routed to agent {task.route!r}", code="routed_elsewhere")
    if not routing.capable(agent.usable_capabilities, task.capabilities):
        missing = sorted(set(task.capabilities) - set(agent.usable_capabilities))
        raise Forbidden(f"agent lacks required capabilities: {', '.join(missing)}", code="missing_capability")


def _claim(
    conn: Connection, task: Task, agent: str, now: float, *, pushed: bool = False, after: str | None = None
) -> dict[str, Any]:
    """Claim `task` for `agent`: a new claim_token, the lease started, the attempt counted. `pushed`: the
    dispatcher claims it at assignment for an agent with claim_on_push (its event says so). `after`: the
    task whose completion (complete-and-next) asked for this one (its event says so, for a repeat)."""
    token = uuid.uuid4().hex
    lease = now + task.claim_ttl
    task = _set(
        conn,
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
    add_event(conn, task.id, "claimed", "dispatcher" if pushed else agent, now, detail)
    body = to_api(conn, task)
    body["claim_token"] = token
    return body


def claim(conn: Connection, *, task_id: str, agent: Agent, now: float) -> dict[str, Any]:
    task = must_get(conn, task_id)
    if task.type == APPROVAL:
        raise Conflict("an approval is decided by a person (approve or deny), never claimed", code="not_claimable")
    _check_may_take(task, agent)
    if task.state is TaskState.ASSIGNED and task.assigned_to != agent.name:
        raise Conflict(f"task is assigned to agent {task.assigned_to!r}", code="not_claimable")
    if task.state not in (TaskState.QUEUED, TaskState.ASSIGNED):
        raise Conflict(f"task is {task.state.value}, not claimable", code="not_claimable")
    if conn.execute(
        "SELECT 1 FROM task_avoid WHERE task_id = ? AND agent = ? AND hard = 1", (task.id, agent.name)
    ).fetchone():
        raise Conflict("this agent rejected the task", code="not_claimable")
    if task.state is TaskState.QUEUED and _key_full(conn, task.concurrency_key, task.max_concurrency):
        raise Conflict(
            f"{task.max_concurrency} task(s) with concurrency key {task.concurrency_key!r} already running",
            code="concurrency_limit",
        )
    return _claim(conn, task, agent.name, now)


def claim_next(conn: Connection, *, agent: Agent, now: float, after: str | None = None) -> dict[str, Any] | None:
    """The most urgent, oldest task this agent may take: one assigned to it, or a queued one it can do.
    `after`: the task complete-and-next completed to ask for it."""
    best = _next_for(conn, agent)
    return _claim(conn, best, agent.name, now, after=after) if best else None


def has_claimable(conn: Connection, *, agent: Agent) -> bool:
    """Whether `claim_next` would find a task for this agent now: a read, so a waiting long poll takes
    the write lock only when there is something to take (another agent may still take it first)."""
    return _next_for(conn, agent) is not None


def _next_for(conn: Connection, agent: Agent) -> Task | None:
    mine = conn.execute(
        "SELECT * FROM tasks WHERE state = 'assigned' AND assigned_to = ? ORDER BY priority, seq LIMIT 1",
        (agent.name,),
    ).fetchone()
    best = Task.from_row(mine) if mine else None
    # Read lazily, only what the match needs, until the first task this agent can do (or one more urgent
    # than the one assigned to it): a long queue of tasks it cannot do costs a scan, never a miss. The
    # capability match runs in SQL (every required one among the agent's): with 100,000 queued tasks
    # nobody serves, 75 ms a scan here instead of 430 ms decoding each row's JSON in Python, and a
    # waiting long poll scans at each commit.
    queued = conn.execute(
        "SELECT id, priority, seq, capabilities, concurrency_key, max_concurrency FROM tasks"
        f" WHERE state = 'queued' AND route != 'all' AND type != '{APPROVAL}'"
        " AND (route = 'any' OR route = ?)"
        " AND NOT EXISTS (SELECT 1 FROM json_each(tasks.capabilities) c"
        " WHERE c.value NOT IN (SELECT value FROM json_each(?)))"
        " AND NOT EXISTS (SELECT 1 FROM task_avoid v WHERE v.task_id = tasks.id AND v.agent = ? AND v.hard = 1)"
        " ORDER BY priority, seq",
        (agent.name, json.dumps(list(agent.usable_capabilities)), agent.name),
    )
    for row in queued:
        if best is not None and (row["priority"], row["seq"]) > (int(best.priority), best.seq):
            break
        if routing.capable(agent.usable_capabilities, json.loads(row["capabilities"])) and not _key_full(
            conn, row["concurrency_key"], row["max_concurrency"]
        ):
            best = must_get(conn, row["id"])
            break
    return best


def _held(conn: Connection, task_id: str, agent: Agent, token: str) -> Task:
    """The task, if this agent holds it with this token; the stale-token check comes first (409)."""
    task = must_get(conn, task_id)
    if task.claim_token is None or token != task.claim_token:
        raise Conflict("claim_token is stale: the task was claimed again since", code="stale_claim_token")
    if task.assigned_to != agent.name:
        raise Forbidden("another agent holds this task", code="not_holder")
    return task


def holds_claim(conn: Connection, *, task_id: str, agent: str | None, token: str) -> bool:
    """Whether `agent` still holds `task_id` with this claim_token (a claimed task)."""
    row = conn.execute(
        "SELECT 1 FROM tasks WHERE id = ? AND state = 'claimed' AND assigned_to = ? AND claim_token = ?",
        (task_id, agent, token),
    ).fetchone()
    return row is not None


def extend(
    conn: Connection, *, task_id: str, agent: Agent, token: str, ttl: float | None, now: float
) -> dict[str, Any]:
    task = _held(conn, task_id, agent, token)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task can be extended", code="not_claimed")
    lease = now + (ttl if ttl is not None else task.claim_ttl)
    task = _set(conn, task, now, lease_expires_at=lease)
    add_event(conn, task.id, "extended", agent.name, now, {"lease_expires_at": iso(lease)})
    body = to_api(conn, task)
    body["claim_token"] = token
    return body


def progress(
    conn: Connection,
    *,
    task_id: str,
    agent: Agent,
    token: str,
    message: str | None,
    percent: float | None,
    now: float,
) -> dict[str, Any]:
    """Record the holder's progress on a claimed task as a `progress` event (it changes no state)."""
    task = _held(conn, task_id, agent, token)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task reports progress", code="not_claimed")
    detail: dict[str, Any] = {}
    if message is not None:
        detail["message"] = message
    if percent is not None:
        detail["percent"] = percent
    add_event(conn, task.id, "progress", agent.name, now, detail)
    return {"task_id": task.id, "state": task.state.value} | detail


def complete(conn: Connection, *, task_id: str, agent: Agent, token: str, result: Any, now: float) -> dict[str, Any]:
    """The completed task. The same token again is a no-op, so agents can retry."""
    task = _held(conn, task_id, agent, token)
    if task.state is TaskState.COMPLETED:
        return to_api(conn, task)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task can be completed", code="not_claimed")
    task = _set(conn, task, now, state=TaskState.COMPLETED, result=result, lease_expires_at=None)
    add_event(conn, task.id, "completed", agent.name, now)
    settle_parent(conn, task.parent_id, now)
    return to_api(conn, task)


def complete_and_next(
    conn: Connection, *, task_id: str, agent: Agent, token: str, result: Any, now: float
) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """`complete`, then `claim_next` for the same agent, in one transaction: (the completed task, the next
    task claimed or None, whether this was a repeat). A repeat (the completion was made already with this
    token: its answer was lost) claims nothing new: it answers the task the first one claimed, while this
    agent still holds it, so a retried request never leaves a claim nobody knows of."""
    repeat = must_get(conn, task_id).state is TaskState.COMPLETED
    done = complete(conn, task_id=task_id, agent=agent, token=token, result=result, now=now)
    if repeat:
        return done, _claimed_after(conn, task_id, agent), True
    return done, claim_next(conn, agent=agent, now=now, after=task_id), False


def _claimed_after(conn: Connection, task_id: str, agent: Agent) -> dict[str, Any] | None:
    """The task `agent` holds by the claim complete-and-next made when it completed `task_id`, if any."""
    for row in conn.execute("SELECT * FROM tasks WHERE state = 'claimed' AND assigned_to = ?", (agent.name,)):
        last = conn.execute(
            "SELECT detail FROM task_events WHERE task_id = ? AND kind = 'claimed' ORDER BY rowid DESC LIMIT 1",
            (row["id"],),
        ).fetchone()
        if last is not None and last[0] is not None and json.loads(last[0]).get("after") == task_id:
            task = Task.from_row(row)
            body = to_api(conn, task)
            body["claim_token"] = task.claim_token
            return body
    return None


def _fail(
    conn: Connection, task: Task, *, error: Any, retryable: bool, actor: str, now: float, base: float, cap: float
) -> Task:
    """A failed attempt: retrying after backoff, or failed for good (which raises an alert)."""
    if retryable and task.attempts <= task.max_retries:
        delay = retry_delay(task.attempts, base=base, cap=cap)
        task = _set(
            conn, task, now, state=TaskState.RETRYING, error=error, not_before=now + delay, lease_expires_at=None
        )
        add_event(conn, task.id, "retrying", actor, now, {"error": error, "attempt": task.attempts, "delay": delay})
        return task
    task = _set(conn, task, now, state=TaskState.FAILED, error=error, lease_expires_at=None)
    add_event(conn, task.id, "failed", actor, now, {"error": error, "attempts": task.attempts, "retryable": retryable})
    _alert_failed(conn, task, now)
    settle_parent(conn, task.parent_id, now)
    return task


def fail(
    conn: Connection,
    *,
    task_id: str,
    agent: Agent,
    token: str,
    error: Any,
    retryable: bool,
    now: float,
    base: float,
    cap: float,
) -> dict[str, Any]:
    task = _held(conn, task_id, agent, token)
    if task.state is not TaskState.CLAIMED:
        raise Conflict(f"task is {task.state.value}; only a claimed task can fail", code="not_claimed")
    task = _fail(conn, task, error=error, retryable=retryable, actor=agent.name, now=now, base=base, cap=cap)
    return to_api(conn, task)


def reject(
    conn: Connection, *, task_id: str, agent: Agent, token: str | None, reason: str, now: float
) -> dict[str, Any]:
    """The agent declines: back to the queue, never to this agent again, and no attempt spent. A task
    routed to this agent by name (a fanout child too) fails instead: nobody else may take it."""
    task = must_get(conn, task_id)
    if task.state is TaskState.ASSIGNED and task.assigned_to == agent.name and token is None:
        pass
    elif task.state is TaskState.CLAIMED or token is not None:
        task = _held(conn, task_id, agent, token or "")
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
        task = _set(
            conn,
            task,
            now,
            state=TaskState.FAILED,
            error=f"rejected by {agent.name}: {reason}",
            lease_expires_at=None,
            attempts=max(attempts, 0),
        )
        add_event(conn, task.id, "rejected", agent.name, now, {"reason": reason})
        effects.note("rejected", task.type, task.priority.label)
        add_event(conn, task.id, "failed", agent.name, now, {"error": task.error, "retryable": False})
        _alert_failed(conn, task, now)
        settle_parent(conn, task.parent_id, now)
        return to_api(conn, task)
    conn.execute("INSERT OR REPLACE INTO task_avoid (task_id, agent, hard) VALUES (?, ?, 1)", (task.id, agent.name))
    task = _set(
        conn,
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
    add_event(conn, task.id, "rejected", agent.name, now, {"reason": reason})
    effects.note("rejected", task.type, task.priority.label)
    return to_api(conn, task)


def cancel(conn: Connection, *, task_id: str, caller: Caller, now: float) -> dict[str, Any]:
    task = must_get(conn, task_id)
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can cancel a task", code="not_submitter")
    if task.state.terminal:
        raise Conflict(f"task is already {task.state.value}", code="already_terminal")
    _cancel_tree(conn, task, caller.actor, now)
    settle_parent(conn, task.parent_id, now)
    return show(conn, task.id)


def cancel_step(conn: Connection, task: Task, actor: str, now: float) -> None:
    """Cancel one unfinished task (a workflow's step) and its fanout children, as `cancel` does."""
    _cancel_tree(conn, task, actor, now)
    settle_parent(conn, task.parent_id, now)


def _cancel_tree(conn: Connection, task: Task, actor: str, now: float) -> None:
    held = task.state in (TaskState.ASSIGNED, TaskState.CLAIMED) and task.assigned_to is not None
    canceled = _set(conn, task, now, state=TaskState.CANCELED, lease_expires_at=None)
    add_event(conn, task.id, "canceled", actor, now)
    if held:  # the agent holding it learns of it (its SDK cancels the handler), signed like task.assigned
        outbox_rows.enqueue(
            conn,
            kind="webhook",
            agent=task.assigned_to,
            task_id=task.id,
            body={"type": "task.canceled", "timestamp": iso(now), "data": {"task": to_api(conn, canceled)}},
            now=now,
        )
    rows = conn.execute(
        f"SELECT * FROM tasks WHERE parent_id = ? AND state IN ({','.join('?' * len(NON_TERMINAL))})",
        (task.id, *NON_TERMINAL),
    ).fetchall()
    for row in rows:
        _cancel_tree(conn, Task.from_row(row), actor, now)


def fail_routed_to(conn: Connection, *, agent: str, error: str, actor: str, now: float) -> list[str]:
    """End every unfinished task routed to `agent` by name, failed with `error` (an alert each)."""
    rows = conn.execute(
        f"SELECT * FROM tasks WHERE route = ? AND state IN ({','.join('?' * len(NON_TERMINAL))})",
        (agent, *NON_TERMINAL),
    ).fetchall()
    for row in rows:
        task = _set(conn, Task.from_row(row), now, state=TaskState.FAILED, error=error, lease_expires_at=None)
        add_event(conn, task.id, "failed", actor, now, {"error": error, "retryable": False})
        _alert_failed(conn, task, now)
        settle_parent(conn, task.parent_id, now)
    return [r["id"] for r in rows]


def settle_parent(conn: Connection, parent_id: str | None, now: float) -> None:
    """When the last child of a fanout ends, the parent ends with every child's outcome: completed when
    any child completed, canceled when none did and some were canceled, failed when every child failed.
    With `aggregate: "consensus"` the result also merges the children's findings (`mcs.consensus`)."""
    if parent_id is None:
        return
    parent = get(conn, parent_id)
    if parent is None or parent.state is not TaskState.WAITING:
        return
    rows = conn.execute("SELECT * FROM tasks WHERE parent_id = ? ORDER BY assigned_to, seq", (parent_id,)).fetchall()
    kids = [Task.from_row(r) for r in rows]
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
        _set(conn, parent, now, state=TaskState.COMPLETED, result=outcome)
        add_event(conn, parent.id, "completed", "mcs", now, {"children": len(kids)})
    elif any(k.state is TaskState.CANCELED for k in kids):  # nothing completed and someone canceled: no alert
        _set(conn, parent, now, state=TaskState.CANCELED, result=outcome)
        add_event(conn, parent.id, "canceled", "mcs", now, {"children": len(kids)})
    else:
        parent = _set(conn, parent, now, state=TaskState.FAILED, result=outcome, error="every child task failed")
        add_event(conn, parent.id, "failed", "mcs", now, {"children": len(kids)})
        _alert_failed(conn, parent, now)
    settle_parent(conn, parent.parent_id, now)


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


# ---------------------------------------------------------------- gates: approvals, concurrency keys, redrive

RUNNING = ("assigned", "claimed")  # the states a concurrency key's limit counts

# How many tasks with one concurrency key run now, on the partial index tasks_concurrency (0011).
KEY_RUNNING_SQL = "SELECT count(*) FROM tasks WHERE concurrency_key = ? AND state IN ('assigned', 'claimed')"


def _key_full(conn: Connection, key: str | None, limit: int | None) -> bool:
    """Whether `key` already has `limit` tasks assigned or claimed (a task without a key never is)."""
    if key is None:
        return False
    return int(conn.execute(KEY_RUNNING_SQL, (key,)).fetchone()[0]) >= (limit or 1)


def _key_blocks(conn: Connection, key: str, limit: int | None, full_keys: set[tuple[str, int | None]]) -> bool:
    """`_key_full` for the dispatcher's pass, remembering the keys found full so a long queue of tasks
    waiting on one key costs one count, not one per task."""
    if (key, limit) in full_keys:  # with its limit: tasks sharing a key may (oddly) give different ones
        return True
    if _key_full(conn, key, limit):
        full_keys.add((key, limit))
        return True
    return False


def _start_waiting_for_approval(conn: Connection, task: Task, actor: str, now: float) -> Task:
    """An approval gate waits for a person: `waiting`, never routed, and an alert says how to decide it."""
    task = _set(conn, task, now, state=TaskState.WAITING)
    add_event(conn, task.id, "waiting", actor, now, {"for": APPROVAL})
    payload = task.payload if isinstance(task.payload, dict) else {}
    data: dict[str, Any] = {"task_id": task.id, "submitted_by": task.submitted_by}
    if task.workflow_id is not None:  # a workflow step: say which workflow and step waits on a person
        row = conn.execute("SELECT name FROM workflows WHERE id = ?", (task.workflow_id,)).fetchone()
        data["workflow_id"] = task.workflow_id
        data["workflow"] = row[0] if row is not None else None
        data["step"] = task.step_id
    for key in ("title", "summary"):
        if isinstance(payload.get(key), str):
            data[key] = payload[key][:500]
    data["approve"] = f"mcs task approve {task.id}"
    data["deny"] = f"mcs task deny {task.id} --reason ..."
    outbox_rows.alert(conn, event="approval.waiting", task_id=task.id, data=data, now=now)
    return task


def _decidable(conn: Connection, task_id: str, caller: Caller) -> Task:
    task = must_get(conn, task_id)
    if task.type != APPROVAL:
        raise Conflict(f"task is of type {task.type!r}, not an approval", code="not_approval")
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can decide an approval", code="not_submitter")
    if task.state is not TaskState.WAITING:
        raise Conflict(f"approval is {task.state.value}, not waiting", code="not_waiting")
    return task


def approve(conn: Connection, *, task_id: str, caller: Caller, note: str | None, now: float) -> dict[str, Any]:
    """A waiting approval, approved: completed with `{approved, by, note}`."""
    task = _decidable(conn, task_id, caller)
    result = {"approved": True, "by": caller.actor, "note": note}
    task = _set(conn, task, now, state=TaskState.COMPLETED, result=result)
    add_event(conn, task.id, "approved", caller.actor, now, {"note": note})
    add_event(conn, task.id, "completed", caller.actor, now)
    settle_parent(conn, task.parent_id, now)
    return to_api(conn, task)


def deny(conn: Connection, *, task_id: str, caller: Caller, reason: str, now: float) -> dict[str, Any]:
    """A waiting approval, denied: failed with the reason as its error (no failure alert: a person did it)."""
    task = _decidable(conn, task_id, caller)
    task = _set(conn, task, now, state=TaskState.FAILED, error=reason, result={"approved": False, "by": caller.actor})
    add_event(conn, task.id, "denied", caller.actor, now, {"reason": reason})
    add_event(conn, task.id, "failed", caller.actor, now, {"error": reason, "retryable": False})
    settle_parent(conn, task.parent_id, now)
    return to_api(conn, task)


def retry(conn: Connection, *, task_id: str, caller: Caller, now: float) -> dict[str, Any]:
    """A failed or canceled task back to the queue, attempts reset and error cleared (event
    `retried_by_hand`). An approval goes back to waiting (and alerts again). A fanout parent: its failed
    and canceled children are retried and it waits for them again (completed children keep their
    results); one that never fanned out is queued. A fanout child alone is refused: retry its parent."""
    task = must_get(conn, task_id)
    if not caller.is_admin and caller.name != task.submitted_by:
        raise Forbidden("only the submitter or the admin can retry a task", code="not_submitter")
    if task.state not in (TaskState.FAILED, TaskState.CANCELED):
        raise Conflict(f"task is {task.state.value}; only failed or canceled can be retried", code="not_retryable")
    if task.parent_id is not None:
        raise Conflict(f"task is part of fanout {task.parent_id}; retry that one", code="retry_parent")
    _redrive(conn, task, caller.actor, now)
    return show(conn, task.id)


def _redrive(conn: Connection, task: Task, actor: str, now: float) -> None:
    kids = [Task.from_row(r) for r in conn.execute("SELECT * FROM tasks WHERE parent_id = ?", (task.id,)).fetchall()]
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
    conn.execute("DELETE FROM task_avoid WHERE task_id = ?", (task.id,))
    state = TaskState.WAITING if kids else TaskState.QUEUED
    task = _set(conn, task, now, state=state, **reset)
    add_event(conn, task.id, "retried_by_hand", actor, now, {"children": len(kids)} if kids else None)
    effects.note("redriven", task.type, task.priority.label)
    if task.type == APPROVAL and not kids:
        _start_waiting_for_approval(conn, task, actor, now)
    for kid in kids:
        if kid.state in (TaskState.FAILED, TaskState.CANCELED):
            _redrive(conn, kid, actor, now)
