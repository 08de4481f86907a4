"""What /openapi.json says beyond the request bodies: every response a route gives (errors included, in
their one shape), who may call it, and paths with custom converters rendered right.

Each handler carries `@documented(ok={status: model}, errors=(...), auth=...)`; `Provider` turns that into
response objects and security requirements. The Schemathesis test (tests/acceptance/test_openapi_fuzz.py)
holds every real response against this document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, RootModel
from quart_schema import document_response
from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing.rules import Rule

from mcs.api.schemas import TaskView
from mcs.namespaces import AGENT_NAME, MAX_KEY_CHARS, NAMESPACE

T = TypeVar("T", bound=Callable[..., Any])
Auth = Literal["admin", "agent", "any"] | None

ATTRIBUTE = "_mcs_openapi"
NO_CONTENT = None  # a response without a body (204)
TEXT = "text/plain"  # a plain-text body (/metrics)
EVENT_STREAM = "text/event-stream"  # Server-Sent Events (/v1/events)

# Correct where quart-schema's own pattern is not: its `<(?:[^:]*:)?...>` runs across `>` and turns
# `/<ns>/<memkey:key>` into `/{key}`.
_PATH_PARAM = re.compile(r"<(?:[^<>:]*:)?([^<>]+)>")

# What a path parameter may hold, so generated and hand-written requests can reach past the router.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "ns": {"type": "string", "pattern": NAMESPACE, "description": "mesh, agent:NAME or private:NAME"},
    "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
    "name": {"type": "string", "pattern": f"^{AGENT_NAME}$"},
    "task_id": {"type": "string"},
    "workflow_id": {"type": "string"},
}

ERRORS = {
    400: "Bad request: the body is not JSON, or a parameter or header is malformed.",
    401: "No credentials, an unknown agent, a wrong secret or a wrong admin token.",
    403: "Signed in, but not allowed to do this.",
    404: "No such object (or route).",
    405: "Method not allowed here.",
    409: "Conflict with the object's state (e.g. a stale claim token, a name taken).",
    412: "If-Match did not match the current version.",
    413: "The body, or a value in it, is too large.",
    422: "The body does not match the schema, or names something that does not exist.",
    429: "Over a rate limit or quota; Retry-After says when to try again.",
    503: "The database is busy or unavailable; try again (Retry-After says when).",
    507: "The disk holding the database is full.",
}
AUTH_ERRORS: dict[Auth, tuple[int, ...]] = {None: (), "any": (401,), "admin": (401, 403), "agent": (401, 403)}
BODY_ERRORS = (400, 413, 422)  # any route that reads a JSON body
STORE_ERRORS = (503,)  # any route that touches the database
WRITE_ERRORS = (429, 503, 507)  # any route that writes to it (quotas count writes)

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "admin": {"type": "http", "scheme": "bearer", "description": "MCS_ADMIN_TOKEN"},
    "agentId": {"type": "apiKey", "in": "header", "name": "X-Agent-ID", "description": "The agent's name"},
    "agentSecret": {"type": "apiKey", "in": "header", "name": "X-Agent-Secret", "description": "Its secret"},
}
_AGENT: dict[str, list[str]] = {"agentId": [], "agentSecret": []}
SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    None: [],
    "admin": [{"admin": []}],
    "agent": [_AGENT],
    "any": [{"admin": []}, _AGENT],
}


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable slug, e.g. `not_found`, `validation_error`, `disk_full`.")
    message: str = Field(description="What went wrong, for a human.")


class Error(BaseModel):
    """Every error the API answers with."""

    error: ErrorDetail


# ---------------------------------------------------------------- response bodies (documented, not validated)


class Health(BaseModel):
    """The api is up and its database answers (200), or the database file was replaced (503)."""

    status: str
    engine: Literal["sqlite", "postgres"]
    engine_version: str
    sqlite_version: str | None = Field(default=None, description="SQLite only: the linked library's version.")
    version: str


class AgentView(BaseModel):
    """An agent as the API shows it (never its secrets); the admin also sees its pinned notify host."""

    name: str
    capabilities: list[str]
    granted: list[str] | None = Field(description="What the admin granted at creation; null: unrestricted.")
    status: Literal["online", "offline"]
    last_seen: str | None
    expires_at: str | None
    notify_url: str | None
    concurrency: int
    claim_on_push: bool = Field(
        description="The dispatcher claims its tasks for it at assignment; the webhook carries the claim."
    )
    notify_host: str | None = Field(default=None, description="Admin only: the host notify_url must name.")


class Registered(AgentView):
    """The agent after registering (or heartbeating), with the TTL it registered for."""

    ttl: float


class AgentList(BaseModel):
    agents: list[AgentView]
    next_cursor: str | None


class AgentDeleted(BaseModel):
    """What deleting the agent removed."""

    deleted: str
    memory_keys: dict[str, int] = Field(description="Keys deleted, by namespace (private:NAME, agent:NAME).")
    tasks_requeued: int
    tasks_failed: int


class ScheduleRunView(BaseModel):
    """What a schedule did at one tick."""

    tick: str
    outcome: Literal["fired", "skipped"]
    task_id: str | None
    at: str
    detail: dict[str, Any] | None = Field(default=None, description="tick_local, missed, catch_up, reason")


class ScheduleView(BaseModel):
    """A cron schedule; `runs` (its latest ticks) only on GET /v1/schedules/{name}."""

    name: str
    cron: str
    timezone: str
    task: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    overlap: Literal["skip", "allow"]
    catch_up: Literal["one", "none"]
    paused: bool
    next_run_at: str | None = Field(description="null while paused")
    last_run_at: str | None
    last_task_id: str | None
    created_by: str
    created_at: str
    updated_at: str
    runs: list[ScheduleRunView] | None = None


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]


class AgentSecrets(BaseModel):
    """The agent's secrets: shown once, never again."""

    name: str
    secret: str
    webhook_secret: str
    notify_host: str | None = None
    claim_on_push: bool | None = Field(default=None, description="On creation: as given.")


class ClaimedTask(TaskView):
    """A task this agent holds: the task plus the claim token that fences its lease."""

    claim_token: str


class CompletedAndNext(BaseModel):
    """With `next: true`: the completed task and this agent's next task, claimed (null: none came)."""

    task: TaskView
    next: ClaimedTask | None


class CompleteAnswer(RootModel[TaskView | CompletedAndNext]):
    """The completed task; with `next: true`, `{task, next}`."""


class TaskPage(BaseModel):
    tasks: list[TaskView] = Field(description="Newest first.")
    next_cursor: str | None


class BatchItemResult(BaseModel):
    """One item of a batch, by its place in the request: the task (201 created, 200 replayed for an
    idempotency key seen before), or why this item alone was refused (its status, as POST /v1/tasks
    would have answered it, and the error)."""

    index: int
    status: int
    task: TaskView | None = None
    error: ErrorDetail | None = None


class BatchResult(BaseModel):
    """One result per task sent, in order; the created ones were stored in one transaction."""

    results: list[BatchItemResult]


class TaskEvent(BaseModel):
    at: str
    kind: str
    actor: str
    detail: Any


class TaskEvents(BaseModel):
    """The task's audit trail, one event per state change."""

    events: list[TaskEvent]


class WorkflowEvents(BaseModel):
    """The workflow's audit trail: submitted, then how it ended (its steps keep their own)."""

    events: list[TaskEvent]


class TaskProgress(BaseModel):
    """The progress recorded (as a `progress` event on the task)."""

    task_id: str
    state: str
    message: str | None = None
    percent: float | None = None


class MemoryMeta(BaseModel):
    """A key's metadata after a write."""

    ns: str
    key: str
    version: int
    tags: list[str]
    expires_at: str | None
    updated_by: str
    updated_at: str


class MemoryItem(MemoryMeta):
    """A key with its value."""

    value: Any


class MemoryPage(BaseModel):
    items: list[MemoryMeta]
    next_cursor: str | None


class BulkGot(BaseModel):
    key: str
    found: bool


class BulkDeleted(BaseModel):
    key: str
    deleted: bool


class BulkResult(BaseModel):
    """Gets (as before this request's writes), then puts, then deletes, all in one transaction."""

    get: list[BulkGot | MemoryItem]
    put: list[MemoryMeta]
    delete: list[BulkDeleted]


# ---------------------------------------------------------------- the decorator and the provider


@dataclass(frozen=True)
class Doc:
    ok: dict[int, Any]
    errors: tuple[int, ...]
    auth: Auth


def documented(
    *, ok: dict[int, Any], errors: Iterable[int] = (), auth: Auth = "any", body: bool = False, writes: bool = False
) -> Callable[[T], T]:
    """Document a route's responses: `ok` maps each success status to its model (or NO_CONTENT, TEXT);
    `errors` lists the route's own error statuses; those that come with its auth, its JSON body (`body`)
    and its database access (`writes` for routes that write) are added here."""
    common = AUTH_ERRORS[auth] + (BODY_ERRORS if body else ()) + (WRITE_ERRORS if writes else STORE_ERRORS)
    if auth is None and not writes:
        common = ()
    all_errors = tuple(sorted(set(errors) | set(common)))

    def decorator(func: T) -> T:
        for status, model in ok.items():
            if isinstance(model, type) and issubclass(model, BaseModel):
                func = document_response(model, status)(func)
        for status in all_errors:
            func = document_response(Error, status)(func)
        setattr(func, ATTRIBUTE, Doc(ok, all_errors, auth))
        return func

    return decorator


class Provider(OpenAPIProvider):
    """quart-schema's provider, plus: right paths for custom converters, error descriptions, bodiless and
    plain-text responses, security requirements, and the security schemes."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return document

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        right = _PATH_PARAM.sub(r"{\1}", rule.rule)
        paths = {right: next(iter(paths.values()))}  # one path per rule
        doc: Doc | None = getattr(self._app.view_functions[rule.endpoint], ATTRIBUTE, None)
        if doc is None:
            return paths, components
        for op in paths[right].values():
            for parameter in op["parameters"]:
                if parameter["in"] == "path" and parameter["name"] in PATH_PARAMETERS:
                    parameter["schema"] = PATH_PARAMETERS[parameter["name"]]
            responses = op["responses"] = dict(op["responses"])
            for status, model in doc.ok.items():
                if model is NO_CONTENT:
                    responses[status] = {"description": "Done; no body."}
                elif model == TEXT:
                    responses[status] = {"description": "Text.", "content": {TEXT: {"schema": {"type": "string"}}}}
                elif model == EVENT_STREAM:
                    responses[status] = {
                        "description": "Server-Sent Events, one per audit row, until the client leaves.",
                        "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
                    }
            for status in doc.errors:
                content = responses[status]["content"]["application/json"]
                components["Error"] = content["schema"]  # one shared schema, not a copy per response
                responses[status] = {
                    "description": ERRORS[status],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            op["security"] = SECURITY[doc.auth]
        return paths, components
