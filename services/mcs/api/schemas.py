"""Request bodies, validated by quart-schema (pydantic) and published in /openapi.json."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from mcs import egress
from mcs.models import SUBMIT_BATCH_MAX

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# Words that mean something else where an agent name goes (routes, actors in the audit trail).
RESERVED_NAMES = frozenset({"admin", "any", "all", "mcs", "dispatcher", "watchdog", "notifier"})
Capability = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")]
TaskType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")]
Route = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    """A JSON request body: unknown fields refused, and no coercion (pydantic's strict mode): `true`, `"10"`
    or `1` where a number, a string or a choice goes is a 422, not a guess. Whole numbers stay valid where
    a float goes (`claim_ttl: 10`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """A query string: every value arrives as text, so numbers are parsed from it (lax mode)."""

    model_config = ConfigDict(extra="forbid")


def _notify_host(value: str | None) -> str | None:
    if value is None:
        return None
    return egress.valid_host(value)  # its ValueError is the 422's message


NotifyHost = Annotated[str, StringConstraints(min_length=1, max_length=253)]


_CLAIM_ON_PUSH = (
    "The dispatcher claims each task for the agent when it assigns it: the task.assigned webhook carries"
    " claim_token and lease_expires_at, so the agent completes without a claim request."
)


class CreateAgent(Strict):
    name: Name
    capabilities: list[Capability] = Field(default_factory=list, max_length=100)
    notify_host: NotifyHost | None = Field(
        default=None, description="Pin the host its notify_url must name (a DNS name or an IP address)."
    )
    claim_on_push: bool = Field(default=False, description=_CLAIM_ON_PUSH)

    @field_validator("notify_host")
    @classmethod
    def valid_notify_host(cls, value: str | None) -> str | None:
        return _notify_host(value)

    @field_validator("name")
    @classmethod
    def not_reserved(cls, name: str) -> str:
        if name.lower() in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})")
        return name


class UpdateAgent(Strict):
    """Only the fields given change (at least one)."""

    notify_host: NotifyHost | None = Field(default=None, description="The host its notify_url must name; null unpins.")
    claim_on_push: bool | None = Field(default=None, description=_CLAIM_ON_PUSH)

    @model_validator(mode="after")
    def something_to_change(self) -> UpdateAgent:
        if not self.model_fields_set:
            raise ValueError("give notify_host or claim_on_push")
        if "claim_on_push" in self.model_fields_set and self.claim_on_push is None:
            raise ValueError("claim_on_push is true or false")
        return self

    def changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("notify_host", "claim_on_push") if k in self.model_fields_set}

    @field_validator("notify_host")
    @classmethod
    def valid_notify_host(cls, value: str | None) -> str | None:
        return _notify_host(value)


class Register(Strict):
    capabilities: list[Capability] = Field(default_factory=list, max_length=100)
    notify_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)] | None = None
    ttl: float | None = Field(default=None, gt=0, le=86400)
    concurrency: int = Field(default=1, ge=1, le=1000)
    claim_on_push: bool | None = Field(default=None, description=_CLAIM_ON_PUSH + " Absent: as stored.")


class SubmitTask(Strict):
    type: TaskType
    payload: Any = None
    priority: Literal["urgent", "normal", "low"] = "normal"
    capabilities: list[Capability] | None = Field(default=None, max_length=100)
    route: Route = "any"
    max_retries: int | None = Field(default=None, ge=0, le=100)
    claim_ttl: float | None = Field(default=None, gt=0, le=7 * 86400)
    aggregate: Literal["collect", "consensus"] | None = None
    concurrency_key: str | None = Field(
        default=None, min_length=1, max_length=200, description="tasks sharing it run at most max_concurrency at once"
    )
    max_concurrency: int | None = Field(default=None, ge=1, le=10000, description="default 1 with a concurrency_key")
    depends_on: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=100
    )
    run_if: Literal["success", "always"] = "success"
    run_at: str | None = Field(default=None, max_length=64, description="RFC 3339, with a zone")
    delay: float | None = Field(default=None, ge=0, le=366 * 86400)

    @field_validator("run_at")
    @classmethod
    def valid_run_at(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = datetime.fromisoformat(value)  # a ValueError is a 422 naming the field
            if parsed.tzinfo is None:
                raise ValueError("run_at needs a time zone (e.g. Z)")
        return value

    def not_before(self, now: float) -> float | None:
        """When the task may run at the earliest: run_at, or `delay` seconds after `now`."""
        if self.run_at is not None:
            return datetime.fromisoformat(self.run_at).timestamp()
        return None if self.delay is None else now + self.delay


class BatchTask(SubmitTask):
    """One task of a batch: a `POST /v1/tasks` body, plus the Idempotency-Key that request would send."""

    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, description="As the Idempotency-Key header of POST /v1/tasks"
    )


class SubmitBatch(Strict):
    tasks: list[BatchTask] = Field(min_length=1, max_length=SUBMIT_BATCH_MAX)


class Approve(Strict):
    note: str | None = Field(default=None, max_length=2000)


class Deny(Strict):
    reason: str = Field(min_length=1, max_length=2000)


StepId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class WorkflowStep(Strict):
    id: StepId
    type: TaskType
    payload: Any = None
    capabilities: list[Capability] | None = Field(default=None, max_length=100)
    route: Route = "any"
    aggregate: Literal["collect", "consensus"] | None = None
    depends_on: list[StepId] = Field(default_factory=list, max_length=100)
    run_if: Literal["success", "always"] = "success"
    priority: Literal["urgent", "normal", "low"] = "normal"
    max_retries: int | None = Field(default=None, ge=0, le=100)
    claim_ttl: float | None = Field(default=None, gt=0, le=7 * 86400)
    concurrency_key: str | None = Field(default=None, min_length=1, max_length=200)
    max_concurrency: int | None = Field(default=None, ge=1, le=10000)


class SubmitWorkflow(Strict):
    name: Name
    steps: list[WorkflowStep] = Field(min_length=1, max_length=200)
    inputs: Any = None


class WorkflowQuery(Query):
    state: Literal["running", "completed", "failed", "canceled"] | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


class ClaimNext(Strict):
    wait: float = Field(default=0, ge=0, le=30)


class Extend(Strict):
    claim_token: str = Field(min_length=1, max_length=200)
    ttl: float | None = Field(default=None, gt=0, le=7 * 86400)


class Progress(Strict):
    claim_token: str = Field(min_length=1, max_length=200)
    message: str | None = Field(default=None, max_length=2000)
    percent: float | None = Field(default=None, ge=0, le=100)


class Complete(Strict):
    claim_token: str = Field(min_length=1, max_length=200)
    result: Any = None
    next: bool = Field(
        default=False,
        description="Also claim this agent's next task: the answer is {task, next} (next: the claimed task or null).",
    )
    wait: float = Field(default=0, ge=0, le=30, description="With next: wait up to this long for one, as a claim does.")


class Fail(Strict):
    claim_token: str = Field(min_length=1, max_length=200)
    error: Any
    retryable: bool = True


class Reject(Strict):
    claim_token: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)


class TaskQuery(Query):
    state: (
        Literal["queued", "assigned", "claimed", "retrying", "waiting", "blocked", "completed", "failed", "canceled"]
        | None
    ) = None
    type: str | None = None
    agent: str | None = None
    parent: str | None = None
    workflow: str | None = Field(default=None, max_length=64)
    id_prefix: str | None = Field(default=None, min_length=8, max_length=64)  # the CLI's short ids
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)
    updated_after: str | None = Field(
        default=None, max_length=64, description="RFC 3339 time, or seconds/minutes/hours/days ago: 90s, 30m, 1h, 2d"
    )
    q: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="text the payload, result or error contains (case-insensitive), among the newest tasks",
    )


class AgentQuery(Query):
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=200)


Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
MemoryKey = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class MemoryPut(Strict):
    value: Any
    ttl: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)
    tags: list[Tag] = Field(default_factory=list, max_length=32)


class BulkPut(MemoryPut):
    key: MemoryKey
    if_match: int | None = Field(default=None, ge=1)
    if_none_match: Literal["*"] | None = None


class MemoryBulk(Strict):
    get: list[MemoryKey] = Field(default_factory=list, max_length=1000)
    put: list[BulkPut] = Field(default_factory=list, max_length=1000)
    delete: list[MemoryKey] = Field(default_factory=list, max_length=1000)


class MemoryQuery(Query):
    prefix: str | None = Field(default=None, max_length=512)
    tag: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=1000)


# ---------------------------------------------------------------- documented results (not validated)
# A fanout with `aggregate: "consensus"` expects each child's result to be a ReviewResult and ends with a
# ConsensusResult (see mcs.consensus for how findings merge). These models only document the shapes in
# /openapi.json; results are stored as the agents sent them.

Severity = Literal["critical", "recommendation", "observation"]


class ReviewFinding(BaseModel):
    """One problem an agent found."""

    file: str = Field(description="Path relative to the reviewed root, e.g. `mcs/cli.py`.")
    line: int | None = Field(default=None, ge=0, description="1-based line; null or 0 for the whole file.")
    severity: Severity
    title: str = Field(description="Short name of the problem; merged with similar titles of other agents.")
    detail: str = ""


class ReviewResult(BaseModel):
    """The result a child of a consensus fanout completes with."""

    findings: list[ReviewFinding]


class RaisedBy(BaseModel):
    agent: str
    line: int | None
    severity: Severity
    title: str
    detail: str


class MergedFinding(BaseModel):
    """Findings of several agents that name the same problem: same file, lines at most 3 apart, titles
    with a word (Jaccard) similarity of at least 0.6 or one title's words (2 or more) all in the other."""

    id: str = Field(description="F1, F2, ... in the order listed.")
    file: str
    line: int | None = Field(description="The first line any agent gave.")
    lines: list[int]
    severity: Severity = Field(description="The most severe of the agents' severities.")
    title: str
    detail: str
    agents: list[str] = Field(description="The agents that raised it, by name.")
    consensus: int = Field(description="How many agents raised it.")
    raised: list[RaisedBy] = Field(description="Each agent's own report.")


class AgentCounts(BaseModel):
    """One child's contribution, like a row of the write-up's table."""

    agent: str
    task_id: str
    state: str
    status: Literal["ok", "malformed", "failed", "canceled"] = Field(
        description="malformed: completed, but the result was not `{findings: [...]}` (see reason)."
    )
    reason: str | None = None
    findings: int
    critical: int
    recommendation: int
    observation: int
    invalid: int = Field(description="Findings dropped as invalid (see invalid_reasons).")
    invalid_reasons: list[str] = Field(default_factory=list)
    truncated: int = Field(default=0, description="Findings beyond 2000 per agent, not merged.")


class ConsensusSummary(BaseModel):
    findings: int
    consensus: int = Field(description="Merged findings raised by two or more agents.")
    critical: int
    recommendation: int
    observation: int
    agents: int
    agents_reporting: int


class ChildOutcome(BaseModel):
    agent: str
    task_id: str
    state: str
    result: ReviewResult | Any = Field(default=None, description="The child's result, when it completed.")
    error: Any = None


class CollectResult(BaseModel):
    """A fanout parent's result with `aggregate: "collect"` (the default)."""

    children: list[ChildOutcome]


class ConsensusResult(BaseModel):
    """A fanout parent's result with `aggregate: "consensus"`: findings by consensus (most agents first),
    then severity, file and line."""

    aggregate: Literal["consensus"]
    summary: ConsensusSummary
    findings: list[MergedFinding]
    agents: list[AgentCounts]
    children: list[ChildOutcome]


class TaskView(BaseModel):
    """A task as the API returns it."""

    id: str
    type: str
    payload: Any
    priority: str
    capabilities: list[str]
    route: str
    aggregate: Literal["collect", "consensus"] | None
    state: str
    assigned_to: str | None
    attempts: int
    max_retries: int
    claim_ttl: float
    not_before: str | None
    lease_expires_at: str | None
    result: ConsensusResult | CollectResult | Any = Field(
        description="The agent's result; for a fanout parent a CollectResult or a ConsensusResult."
    )
    error: Any
    parent_id: str | None
    children: list[str]
    submitted_by: str
    created_at: str
    updated_at: str
    concurrency_key: str | None = None
    max_concurrency: int | None = None
    run_if: Literal["success", "always"] = "success"
    workflow_id: str | None = None
    step_id: str | None = None
    depends_on: list[str] = Field(default_factory=list, description="The tasks it waits for.")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="Each finished dependency's result by its step id (or task id); 'workflow': the workflow's inputs.",
    )


class WorkflowView(BaseModel):
    """A workflow as the API returns it: its steps, each a task."""

    id: str
    name: str
    state: Literal["running", "completed", "failed", "canceled"]
    inputs: Any
    submitted_by: str
    created_at: str
    updated_at: str
    finished_at: str | None
    steps: dict[str, TaskView]


class WorkflowPage(BaseModel):
    workflows: list[WorkflowView]
    next_cursor: str | None


class CreateSchedule(Strict):
    """A cron schedule (admin): at each tick it submits `task` (a `POST /v1/tasks` body)."""

    name: Name
    cron: str = Field(min_length=1, max_length=200, description="five-field cron ('0 3 * * *'); a sixth: seconds")
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="an IANA zone, e.g. Europe/Berlin")
    task: SubmitTask | None = None
    workflow: dict[str, Any] | None = None
    overlap: Literal["skip", "allow"] = "skip"
    catch_up: Literal["one", "none"] = "one"
