"""Domain models: frozen dataclasses built from database rows, and the string enums they use."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from functools import cached_property
from typing import Any


class TaskState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    CLAIMED = "claimed"
    RETRYING = "retrying"
    BLOCKED = "blocked"  # waiting for its dependencies to finish (or for its run_at)
    WAITING = "waiting"  # a fanout parent whose children are running
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED})
# The states a task is in until it ends, in the order counts and the queue metrics show them.
UNFINISHED_STATES = ("queued", "assigned", "claimed", "retrying", "waiting", "blocked")


class Priority(IntEnum):
    """Stored as a number so `ORDER BY priority` puts urgent first."""

    URGENT = 0
    NORMAL = 1
    LOW = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Priority:
        return cls[label.upper()]


class AgentStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch -> RFC 3339 UTC with milliseconds, as the API shows times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


HEARTBEAT_MAX_AGE = 60.0  # seconds: a process whose heartbeat row is older is unhealthy (mcs check, mcs status)


def _json(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


@dataclass(frozen=True, kw_only=True)
class Agent:
    name: str
    capabilities: tuple[str, ...]  # what it registered
    granted: tuple[str, ...] | None  # what the admin granted at creation; None: unrestricted
    notify_url: str | None
    concurrency: int
    status: AgentStatus
    expires_at: float | None
    last_seen: float | None
    created_at: float
    notify_host: str | None = None  # pinned by the admin: the only host its notify_url may name
    claim_on_push: bool = False  # the dispatcher claims for it at assignment; the webhook carries the claim

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Agent:
        return cls(
            name=row["name"],
            capabilities=tuple(json.loads(row["capabilities"])),
            granted=None if row["granted"] is None else tuple(json.loads(row["granted"])),
            notify_url=row["notify_url"],
            concurrency=row["concurrency"],
            status=AgentStatus(row["status"]),
            expires_at=row["expires_at"],
            last_seen=row["last_seen"],
            created_at=row["created_at"],
            notify_host=row["notify_host"],
            claim_on_push=bool(row["claim_on_push"]),
        )

    @property
    def usable_capabilities(self) -> tuple[str, ...]:
        """What it may take work for: what it registered, within its grant (registration keeps it inside;
        this also holds if a grant is narrowed after the agent registered)."""
        if self.granted is None:
            return self.capabilities
        return tuple(c for c in self.capabilities if c in self.granted)

    def effective_status(self, now: float) -> AgentStatus:
        """Online only while the TTL runs, even before the watchdog has marked it offline."""
        if self.status is AgentStatus.ONLINE and self.expires_at is not None and self.expires_at > now:
            return AgentStatus.ONLINE
        return AgentStatus.OFFLINE

    def to_api(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "capabilities": list(self.capabilities),
            "granted": None if self.granted is None else list(self.granted),
            "status": self.effective_status(now).value,
            "last_seen": iso(self.last_seen),
            "expires_at": iso(self.expires_at) if self.effective_status(now) is AgentStatus.ONLINE else None,
            "notify_url": self.notify_url,
            "concurrency": self.concurrency,
            "claim_on_push": self.claim_on_push,
        }

    def to_admin_api(self, now: float) -> dict[str, Any]:
        """What the admin sees: also the pinned notify host."""
        return self.to_api(now) | {"notify_host": self.notify_host}


@dataclass(frozen=True, kw_only=True)
class NewAgent:
    """An agent row as the admin creates it, before it ever registered (offline, no notify_url)."""

    name: str
    secret_hash: str
    webhook_secret: str
    capabilities: tuple[str, ...]
    granted: tuple[str, ...] | None  # None: it may register any capability
    created_at: float
    notify_host: str | None = None
    claim_on_push: bool = False


@dataclass(frozen=True, kw_only=True)
class AgentSecrets:
    """An agent's two secrets, shown once: when it is created (with what was set) or rotated."""

    name: str
    secret: str
    webhook_secret: str
    claim_on_push: bool | None = None  # set when created; None when rotated
    notify_host: str | None = None

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "secret": self.secret, "webhook_secret": self.webhook_secret}
        if self.claim_on_push is not None:
            out["claim_on_push"] = self.claim_on_push
        return out | ({"notify_host": self.notify_host} if self.notify_host else {})


@dataclass(frozen=True, kw_only=True)
class AgentRemoved:
    """What deleting an agent removed: its memory keys per namespace and the work it held or was routed."""

    name: str
    memory_keys: dict[str, int]
    tasks_requeued: int
    tasks_failed: int

    def detail(self) -> dict[str, Any]:
        """The `deleted` audit event's detail."""
        return {
            "memory_keys": self.memory_keys,
            "tasks_requeued": self.tasks_requeued,
            "tasks_failed": self.tasks_failed,
        }

    def to_api(self) -> dict[str, Any]:
        return {"deleted": self.name} | self.detail()


@dataclass(frozen=True, kw_only=True)
class RoutableAgent:
    """An online agent as the dispatcher's routing view reads it (the columns routing needs, nothing more)."""

    name: str
    capabilities: tuple[str, ...]
    granted: tuple[str, ...] | None
    notify_url: str | None
    last_assigned_at: float | None
    concurrency: int
    expires_at: float
    claim_on_push: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RoutableAgent:
        return cls(
            name=row["name"],
            capabilities=tuple(json.loads(row["capabilities"])),
            granted=None if row["granted"] is None else tuple(json.loads(row["granted"])),
            notify_url=row["notify_url"],
            last_assigned_at=row["last_assigned_at"],
            concurrency=row["concurrency"],
            expires_at=row["expires_at"],
            claim_on_push=bool(row["claim_on_push"]),
        )


APPROVAL = "approval"  # the task type a person decides (approve / deny); never routed to an agent
SUBMIT_BATCH_MAX = 1000  # tasks one POST /v1/tasks/batch may hold (the CLI sends files in batches of this)


@dataclass(frozen=True, kw_only=True)
class Task:
    seq: int
    id: str
    type: str
    payload: Any
    priority: Priority
    capabilities: tuple[str, ...]
    route: str
    aggregate: str | None
    state: TaskState
    assigned_to: str | None
    attempts: int
    max_retries: int
    claim_ttl: float
    not_before: float | None
    lease_expires_at: float | None
    claim_token: str | None
    assigned_at: float | None
    result: Any
    error: Any
    parent_id: str | None
    submitted_by: str
    created_at: float
    updated_at: float
    concurrency_key: str | None = None
    max_concurrency: int | None = None
    run_if: str = "success"  # "success": runs when every dependency completed; "always": once all ended
    workflow_id: str | None = None
    step_id: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Task:
        keys = row.keys()
        return cls(
            run_if=row["run_if"] if "run_if" in keys else "success",
            workflow_id=row["workflow_id"] if "workflow_id" in keys else None,
            step_id=row["step_id"] if "step_id" in keys else None,
            seq=row["seq"],
            id=row["id"],
            type=row["type"],
            payload=_json(row["payload"]),
            priority=Priority(row["priority"]),
            capabilities=tuple(json.loads(row["capabilities"])),
            route=row["route"],
            aggregate=row["aggregate"],
            state=TaskState(row["state"]),
            assigned_to=row["assigned_to"],
            attempts=row["attempts"],
            max_retries=row["max_retries"],
            claim_ttl=row["claim_ttl"],
            not_before=row["not_before"],
            lease_expires_at=row["lease_expires_at"],
            claim_token=row["claim_token"],
            assigned_at=row["assigned_at"],
            result=_json(row["result"]),
            error=_json(row["error"]),
            parent_id=row["parent_id"],
            submitted_by=row["submitted_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            concurrency_key=row["concurrency_key"],
            max_concurrency=row["max_concurrency"],
        )

    def to_api(self, children: list[str] | None = None) -> dict[str, Any]:
        """The task as the API shows it. The claim token is never part of it: only the claimer sees it."""
        return {
            "id": self.id,
            "type": self.type,
            "payload": self.payload,
            "priority": self.priority.label,
            "capabilities": list(self.capabilities),
            "route": self.route,
            "aggregate": self.aggregate,
            "state": self.state.value,
            "assigned_to": self.assigned_to,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "claim_ttl": self.claim_ttl,
            "not_before": iso(self.not_before),
            "lease_expires_at": iso(self.lease_expires_at) if self.state is TaskState.CLAIMED else None,
            "result": self.result,
            "error": self.error,
            "parent_id": self.parent_id,
            "children": children if children is not None else [],
            "submitted_by": self.submitted_by,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "concurrency_key": self.concurrency_key,
            "max_concurrency": self.max_concurrency,
            "run_if": self.run_if,
            "workflow_id": self.workflow_id,
            "step_id": self.step_id,
        }


@dataclass(frozen=True, kw_only=True)
class TaskEvent:
    at: float
    kind: str
    actor: str
    detail: Any

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TaskEvent:
        return cls(at=row["at"], kind=row["kind"], actor=row["actor"], detail=_json(row["detail"]))

    def to_api(self) -> dict[str, Any]:
        return {"at": iso(self.at), "kind": self.kind, "actor": self.actor, "detail": self.detail}


@dataclass(frozen=True, kw_only=True)
class OutboxItem:
    id: int
    kind: str  # "webhook" to an agent, or "alert" to people
    message_id: str
    agent: str | None
    task_id: str | None
    body: str
    attempts: int
    notify_url: str | None = None  # the agent's, read with the row
    webhook_secret: str | None = field(default=None, repr=False)
    agent_exists: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OutboxItem:
        keys = row.keys()
        return cls(
            notify_url=row["notify_url"] if "notify_url" in keys else None,
            webhook_secret=row["webhook_secret"] if "webhook_secret" in keys else None,
            agent_exists=bool(row["agent_exists"]) if "agent_exists" in keys else False,
            id=row["id"],
            kind=row["kind"],
            message_id=row["message_id"],
            agent=row["agent"],
            task_id=row["task_id"],
            body=row["body"],
            attempts=row["attempts"],
        )


@dataclass(frozen=True, kw_only=True)
class NewOutbox:
    """A row to deliver, committed with the change that causes it (the notifier sends it)."""

    kind: str  # "webhook" (to `agent`), "alert", "a2a_push"
    message_id: str  # stable across retries: the webhook-id
    agent: str | None
    task_id: str | None
    body: str  # JSON text, sent as it is
    now: float


@dataclass(frozen=True, kw_only=True)
class OutboxOutcome:
    """What became of one leased outbox row: delivered, superseded, dead, or retry (at next_attempt_at).
    `final`: the delivery is over in this notifier, so its lease is given back."""

    id: int
    state: str
    attempts: int
    error: str | None = None
    next_attempt_at: float | None = None
    final: bool = True


STOPPED_PID = 0  # a heartbeat row's pid once its process stopped cleanly


@dataclass(frozen=True, kw_only=True)
class ProcessBeat:
    """One replica's heartbeat row: `instance` names the replica ('' when it is the only one, as before
    replicas; otherwise MCS_INSTANCE, or host:pid)."""

    name: str
    instance: str
    pid: int
    started_at: float
    beat_at: float

    def to_api(self, now: float) -> dict[str, Any]:
        age = max(0.0, now - self.beat_at)
        return {
            "name": self.name,
            "instance": self.instance,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "beat_at": iso(self.beat_at),
            "age_seconds": round(age, 3),
            "healthy": age <= HEARTBEAT_MAX_AGE,
        }


@dataclass(frozen=True)
class Unreachable:
    """An agent whose most recent webhook failed (still retrying, or given up)."""

    agent: str
    notify_url: str | None
    error: str | None
    attempts: int
    gave_up: bool
    at: float
    task_id: str | None

    def to_api(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "notify_url": self.notify_url,
            "error": self.error,
            "attempts": self.attempts,
            "gave_up": self.gave_up,
            "at": iso(self.at),
            "task_id": self.task_id,
        }


@dataclass(frozen=True)
class Event:
    """One audit row as the stream sends it. `owner`/`submitter` decide which agents may see it."""

    id: int
    stream: str  # task | workflow | agent
    at: float
    kind: str
    actor: str
    raw_detail: str | None  # the row's detail as stored (JSON text): the frame sends it as it is
    subject: str  # the task id, workflow id or agent name
    type: str | None  # a task's type; a workflow's name
    state: str | None  # the task's or workflow's state when read
    owner: str | None
    submitter: str | None
    workflow_id: str | None = None

    @cached_property
    def detail(self) -> Any:
        return None if self.raw_detail is None else json.loads(self.raw_detail)

    def as_json(self) -> dict[str, Any]:
        body = self.as_json_without_detail()
        body["detail"] = self.detail
        return body

    def as_json_without_detail(self) -> dict[str, Any]:
        key = {"task": "task_id", "workflow": "workflow_id", "agent": "agent"}[self.stream]
        body: dict[str, Any] = {"id": self.id, "at": iso(self.at), "kind": self.kind, "actor": self.actor}
        body[key] = self.subject
        if self.type is not None:
            body["type"] = self.type
        if self.state is not None:
            body["state"] = self.state
        return body

    @cached_property
    def frame(self) -> bytes:
        """The event as one Server-Sent Event, rendered once however many streams send it. The detail goes
        out as stored (written by json.dumps: one line), not decoded only to be encoded again."""
        raw = self.raw_detail
        if raw is None or "\n" in raw or "\r" in raw:
            data = json.dumps(self.as_json())
        else:
            body = self.as_json_without_detail()
            data = f'{json.dumps(body)[:-1]}, "detail": {raw}}}'
        return f"id: {self.id}\nevent: {self.stream}\ndata: {data}\n\n".encode()

    def visible_to(self, agent: str | None) -> bool:
        """Admins (None) see all; an agent its own tasks' and workflows' events and every agent change."""
        if agent is None or self.stream == "agent":
            return True
        return agent in (self.owner, self.submitter) or self.actor == agent


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who is making a request: an agent (by name) or the admin ("admin", or "admin (console)" through the
    web console, so the audit trail says which)."""

    name: str
    is_admin: bool = False

    @property
    def actor(self) -> str:
        return self.name


ADMIN = Caller(name="admin", is_admin=True)


@dataclass(frozen=True, kw_only=True)
class MemoryItem:
    """One key of shared memory; `value` (JSON text) is None where it was not read (listings)."""

    ns: str
    key: str
    version: int
    tags: tuple[str, ...]
    expires_at: float | None
    updated_by: str
    updated_at: float
    value: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MemoryItem:
        return cls(
            ns=row["ns"],
            key=row["key"],
            version=row["version"],
            tags=tuple(json.loads(row["tags"])),
            expires_at=row["expires_at"],
            updated_by=row["updated_by"],
            updated_at=row["updated_at"],
            value=row["value"] if "value" in row.keys() else None,
        )

    def to_api(self, *, with_value: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "ns": self.ns,
            "key": self.key,
            "version": self.version,
            "tags": list(self.tags),
            "expires_at": iso(self.expires_at),
            "updated_by": self.updated_by,
            "updated_at": iso(self.updated_at),
        }
        if with_value:
            item["value"] = None if self.value is None else json.loads(self.value)
        return item


@dataclass(frozen=True, kw_only=True)
class MemoryPage:
    """Keys in key order without their values; `next_cursor` continues after the last one."""

    items: list[MemoryItem]
    next_cursor: str | None

    def to_api(self) -> dict[str, Any]:
        return {"items": [i.to_api(with_value=False) for i in self.items], "next_cursor": self.next_cursor}


@dataclass(frozen=True, kw_only=True)
class MemoryBulkResult:
    """A bulk request's outcome: each get (None: not found), each put as stored, each delete (found?)."""

    got: list[tuple[str, MemoryItem | None]]
    put: list[MemoryItem]
    deleted: list[tuple[str, bool]]

    def to_api(self) -> dict[str, Any]:
        return {
            "get": [
                {"key": k, "found": False} if i is None else {"found": True} | i.to_api(with_value=True)
                for k, i in self.got
            ],
            "put": [i.to_api(with_value=False) for i in self.put],
            "delete": [{"key": k, "deleted": d} for k, d in self.deleted],
        }


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """A validated submission, defaults filled in."""

    type: str
    payload: Any
    priority: Priority
    capabilities: tuple[str, ...]
    route: str
    max_retries: int
    claim_ttl: float
    aggregate: str | None
    concurrency_key: str | None = None
    max_concurrency: int | None = None
    depends_on: tuple[str, ...] = ()
    run_if: str = "success"
    not_before: float | None = None  # run_at, or now + delay

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, max_retries: int, claim_ttl: float) -> TaskSpec:
        """A spec from a validated submit body (`SubmitTask`), with the server's defaults for what it omits."""
        route = body.get("route") or "any"
        capabilities = body.get("capabilities")
        return cls(
            type=body["type"],
            payload=body.get("payload"),
            priority=Priority.parse(body.get("priority") or "normal"),
            capabilities=tuple(dict.fromkeys(capabilities if capabilities is not None else [body["type"]])),
            route=route,
            max_retries=body["max_retries"] if body.get("max_retries") is not None else max_retries,
            claim_ttl=body["claim_ttl"] if body.get("claim_ttl") is not None else claim_ttl,
            aggregate=body.get("aggregate") or ("collect" if route == "all" else None),
            concurrency_key=body.get("concurrency_key"),
            max_concurrency=(body.get("max_concurrency") or 1) if body.get("concurrency_key") else None,
        )


@dataclass(frozen=True, kw_only=True)
class Workflow:
    """A workflow's own row: a DAG of steps (tasks) submitted together; its state follows its steps."""

    seq: int
    id: str
    name: str
    state: str  # "running", "completed", "failed" or "canceled"
    inputs: Any
    submitted_by: str
    created_at: float
    updated_at: float
    finished_at: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Workflow:
        return cls(
            seq=row["seq"],
            id=row["id"],
            name=row["name"],
            state=row["state"],
            inputs=_json(row["inputs"]),
            submitted_by=row["submitted_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
        )


@dataclass(frozen=True, kw_only=True)
class WorkflowView:
    """A workflow with its steps, each under its step id as the tasks area shows a task."""

    workflow: Workflow
    steps: Mapping[str, Any]

    def to_api(self) -> dict[str, Any]:
        w = self.workflow
        return {
            "id": w.id,
            "name": w.name,
            "state": w.state,
            "inputs": w.inputs,
            "submitted_by": w.submitted_by,
            "created_at": iso(w.created_at),
            "updated_at": iso(w.updated_at),
            "finished_at": iso(w.finished_at),
            "steps": dict(self.steps),
        }


@dataclass(frozen=True)
class Origin:
    """What the A2A face recorded when it created a task: its context and the client's message (JSON)."""

    context_id: str
    message: dict[str, Any] | None


@dataclass(frozen=True, kw_only=True)
class PushConfig:
    """An A2A push-notification config set on a task."""

    task_id: str
    id: str
    url: str
    token: str | None
    auth_scheme: str | None
    auth_credentials: str | None = field(repr=False)
    owner: str  # who set it: an agent's notifications are signed with its webhook_secret; the admin's are not

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PushConfig:
        return cls(
            task_id=row["task_id"],
            id=row["id"],
            url=row["url"],
            token=row["token"],
            auth_scheme=row["auth_scheme"],
            auth_credentials=row["auth_credentials"],
            owner=row["owner"],
        )


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A cron schedule that submits a task (or a workflow) at each tick."""

    name: str
    cron: str
    timezone: str
    kind: str  # "task" or "workflow"
    body: Any
    overlap: str  # "skip" or "allow"
    catch_up: str  # "one" or "none"
    paused: bool
    next_run_at: float
    last_tick_at: float | None
    last_task_id: str | None
    created_by: str
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Schedule:
        return cls(
            name=row["name"],
            cron=row["cron"],
            timezone=row["timezone"],
            kind=row["kind"],
            body=json.loads(row["body"]),
            overlap=row["overlap"],
            catch_up=row["catch_up"],
            paused=bool(row["paused"]),
            next_run_at=row["next_run_at"],
            last_tick_at=row["last_tick_at"],
            last_task_id=row["last_task_id"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            self.kind: self.body,
            "overlap": self.overlap,
            "catch_up": self.catch_up,
            "paused": self.paused,
            "next_run_at": None if self.paused else iso(self.next_run_at),
            "last_run_at": iso(self.last_tick_at),
            "last_task_id": self.last_task_id,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, kw_only=True)
class ScheduleRun:
    """What a schedule did at one tick: fired (with the task it submitted) or skipped (and why)."""

    schedule: str
    tick_at: float
    outcome: str  # "fired" or "skipped"
    task_id: str | None
    at: float
    detail: Any = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ScheduleRun:
        return cls(
            schedule=row["schedule"],
            tick_at=row["tick_at"],
            outcome=row["outcome"],
            task_id=row["task_id"],
            at=row["at"],
            detail=_json(row["detail"]),
        )

    def to_api(self) -> dict[str, Any]:
        return {"tick": iso(self.tick_at), "outcome": self.outcome, "task_id": self.task_id, "at": iso(self.at)} | (
            {"detail": self.detail} if self.detail is not None else {}
        )


# ---------------------------------------------------------------- the queue as the dispatcher reads it


@dataclass(frozen=True, kw_only=True)
class QueuedRow:
    """A queued task as one page of a dispatch pass reads it: only what routing needs."""

    id: str
    type: str
    route: str
    capabilities: tuple[str, ...]
    priority: int
    seq: int
    concurrency_key: str | None
    max_concurrency: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> QueuedRow:
        return cls(
            id=row["id"],
            type=row["type"],
            route=row["route"],
            capabilities=tuple(json.loads(row["capabilities"])),
            priority=row["priority"],
            seq=row["seq"],
            concurrency_key=row["concurrency_key"],
            max_concurrency=row["max_concurrency"],
        )


@dataclass(frozen=True, kw_only=True)
class QueueGroup:
    """Queued tasks that need the same capabilities on the same route: they are unparked together.
    `key` is the capabilities as stored (the JSON text), which names the group back to the engine."""

    capabilities: tuple[str, ...]
    route: str
    key: str


# ---------------------------------------------------------------- task views (state -> render)


@dataclass(frozen=True, kw_only=True)
class TaskView:
    """A task as a read or a transition returns it: the task, its fanout children's ids (a fanout parent
    only), its dependencies' ids and the inputs they hand it; `claim_token` only for the claimer's answer.
    `mcs.render.task` turns it into the API's JSON."""

    task: Task
    children: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)
    claim_token: str | None = None

    @property
    def id(self) -> str:
        return self.task.id


@dataclass(frozen=True, kw_only=True)
class TaskReplay:
    """A submit answered from its Idempotency-Key: the response stored the first time, as it was."""

    body: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.body["id"])


@dataclass(frozen=True, kw_only=True)
class ProgressNote:
    """A holder's progress report, as recorded on its task (`message` and `percent` each optional)."""

    task_id: str
    state: TaskState
    detail: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class TaskPage:
    """One page of a task listing, newest first; `next_seq` is where the next page starts (None: the last)."""

    tasks: tuple[TaskView, ...]
    next_seq: int | None


@dataclass(frozen=True, kw_only=True)
class IdemRecord:
    """A stored Idempotency-Key: the body it came with (a hash) and the response it got."""

    caller: str
    key: str
    body_hash: str
    response: str  # the response's JSON text, replayed byte for byte
    expires_at: float
    status: int = 201
