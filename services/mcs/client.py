"""The Python clients for the MCS HTTP API: `Client` (sync; the `mcs` CLI uses it) and `AsyncClient` (the
agent SDK uses it). Both have the same methods; the async one's are coroutines.

    from mcs.client import Client
    mcs = Client.from_env()                      # MCS_URL, MCS_AGENT_ID, MCS_AGENT_SECRET
    task = mcs.claim_next(wait=30)
    if task:
        mcs.complete(task["id"], task["claim_token"], {"ok": True})

Errors (all derive from `mcs.errors.McsError`):

McsError
├── McsUnavailable             the server could not be reached (after retrying the connection)
└── McsApiError                the server answered with an error; `.status`, `.code`, `.message`
    ├── BadRequestError            400
    ├── UnauthorizedError          401
    ├── ForbiddenError             403
    ├── NotFoundError              404
    ├── ConflictError              409  (not claimable, stale claim token, ...)
    ├── PreconditionFailedError    412
    ├── PayloadTooLargeError       413
    ├── UnprocessableError         422
    ├── RateLimitedError           429
    └── ServerError                5xx

A request that never reached the server (connection refused, connect timeout) is retried with backoff
(`retries` times, default 3) whatever its method: nothing happened on the server yet. Other transport
errors are retried only for GET/PUT/DELETE, which are safe to repeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from mcs import routing
from mcs.errors import McsError
from mcs.profiles import DEFAULT_URL as DEFAULT_URL  # (re-exported: the SDK's default)

TERMINAL = frozenset({"completed", "failed", "canceled"})
DEFAULT_RETRIES = 3  # extra attempts after a connection error
RETRY_WAIT_INITIAL = 0.1  # seconds before the first retry; doubles, with jitter
RETRY_WAIT_MAX = 2.0  # seconds between retries at most
_RETRY_WAIT = wait_exponential(multiplier=RETRY_WAIT_INITIAL, max=RETRY_WAIT_MAX) + wait_random(0, RETRY_WAIT_INITIAL)
AGENTS_PAGE = 1000  # agents per request when listing them all (the server's maximum)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def serves(agent: Mapping[str, Any], capabilities: list[str], route: str = "any") -> bool:
    """Whether this agent (as GET /v1/agents lists it) could take a task with these capabilities and route,
    were it online: the rule the dispatcher routes by, for warnings before a task waits."""
    has = agent.get("capabilities", [])
    return routing.allowed(route, str(agent.get("name"))) and routing.capable(has, capabilities)


def _q(segment: str) -> str:
    """One path segment, encoded: an id like `../agents` (or `..`: URL parsers resolve dot segments) must not
    walk to another endpoint."""
    return _no_dots(quote(segment, safe=""))


def _no_dots(segment: str) -> str:
    """A `.` or `..` segment percent-encoded, which URL parsers leave alone and the api reads back as is."""
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


class McsApiError(McsError):
    """The server refused a request; `status`, `code` and `message` come from its JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self._message = status, code, message

    @property
    def message(self) -> str:
        return self._message


class BadRequestError(McsApiError):
    """The request is malformed (400)."""


class UnauthorizedError(McsApiError):
    """Missing or invalid credentials (401)."""


class ForbiddenError(McsApiError):
    """The caller may not do that (403)."""


class NotFoundError(McsApiError):
    """No such object (404)."""


class ConflictError(McsApiError):
    """The object is not in a state that allows this, e.g. a task already claimed or a stale token (409)."""


class PreconditionFailedError(McsApiError):
    """The object changed since it was read (412)."""


class PayloadTooLargeError(McsApiError):
    """The request body is too large (413)."""


class UnprocessableError(McsApiError):
    """The values are not acceptable (422)."""


class RateLimitedError(McsApiError):
    """Too many requests (429)."""


class ServerError(McsApiError):
    """The server failed (5xx)."""


_ERRORS: dict[int, type[McsApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def api_error(status: int, code: str, message: str) -> McsApiError:
    """The typed error for an HTTP error status."""
    cls = _ERRORS.get(status) or (ServerError if status >= 500 else McsApiError)
    return cls(status, code, message)


class McsUnavailable(McsError):
    """The server could not be reached."""


def _error_from(response: httpx.Response, body: Any) -> McsApiError:
    err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        err = {}
    return api_error(
        response.status_code,
        str(err.get("code", "http_error")),
        str(err.get("message", response.text[:200] or response.reason_phrase)),
    )


def _decode(response: httpx.Response) -> Any:
    """The JSON body of a response (None for 204), or the typed error it carries."""
    if response.status_code == 204:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise _error_from(response, body)
    return body


def _should_retry(method: str) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # the request never reached the server
        return method.upper() in IDEMPOTENT_METHODS and isinstance(exc, httpx.TransportError)

    return check


def _as_obj(body: Any) -> dict[str, Any]:
    return body if isinstance(body, dict) else {}


def _as_opt_obj(body: Any) -> dict[str, Any] | None:
    return body if isinstance(body, dict) else None


def _field(name: str) -> Callable[[Any], Any]:
    return lambda body: body[name]


def _identity(body: Any) -> Any:
    return body


def _credentials_headers(agent_id: str | None, agent_secret: str | None, admin_token: str | None) -> dict[str, str]:
    headers = {"user-agent": "mcs-client"}
    if admin_token:
        headers["authorization"] = f"Bearer {admin_token}"
    elif agent_id and agent_secret:
        headers["x-agent-id"] = agent_id
        headers["x-agent-secret"] = agent_secret
    return headers


R = TypeVar("R")


class Unset:
    """The default of an optional argument whose None means something (unpin), to tell 'not given' apart."""


UNSET = Unset()


class _Endpoints(Generic[R]):
    """Every API call, once: `_call` sends it (sync or async) and shapes the answer."""

    url: str

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        shape: Callable[[Any], Any] = _as_obj,
    ) -> R:
        raise NotImplementedError

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, profile: str | None = None, **overrides: Any) -> Self:
        """A client for the mesh the user means. Per value, the first of: `overrides` (explicit options),
        the environment (MCS_URL; MCS_ADMIN_TOKEN, or MCS_AGENT_ID + MCS_AGENT_SECRET), the config file's
        profile (`profile`, else MCS_PROFILE, else its default_profile; see mcs.profiles), and the defaults
        (DEFAULT_URL; the admin token file `mcs up` writes beside MCS_DB, default ./data/admin-token).
        Credentials come as a whole from one of those levels."""
        from mcs import profiles

        e = os.environ if env is None else env
        explicit = {k: v for k, v in overrides.items() if v is not None}
        levels: list[dict[str, Any]] = [
            explicit,
            {
                "url": e.get("MCS_URL") or None,
                "admin_token": e.get("MCS_ADMIN_TOKEN") or None,
                "agent_id": e.get("MCS_AGENT_ID") or None,
                "agent_secret": e.get("MCS_AGENT_SECRET") or None,
            },
        ]

        def has_credentials(level: Mapping[str, Any]) -> bool:
            return bool(level.get("admin_token") or (level.get("agent_id") and level.get("agent_secret")))

        needs_profile = profile or e.get(profiles.PROFILE_ENV) or not any(lv.get("url") for lv in levels)
        if needs_profile or not any(has_credentials(lv) for lv in levels):
            chosen = profiles.load(profile, e)
            if chosen is not None:
                url = next((lv["url"] for lv in levels if lv.get("url")), None)
                same_mesh = url is None or chosen.url is None or url.rstrip("/") == chosen.url.rstrip("/")
                level: dict[str, Any] = {"url": chosen.url}
                # The profile's secrets go to the profile's mesh only, and its token file is read only
                # when nothing else gave credentials.
                if same_mesh and not any(has_credentials(lv) for lv in levels):
                    level |= {
                        "admin_token": chosen.admin_token(),
                        "agent_id": chosen.agent_id,
                        "agent_secret": chosen.agent_secret,
                    }
                levels.append(level)
        kwargs: dict[str, Any] = {"url": next((lv["url"] for lv in levels if lv.get("url")), DEFAULT_URL)}
        source = next((lv for lv in levels if has_credentials(lv)), None)
        if source is not None:
            kwargs |= {k: source.get(k) for k in ("admin_token", "agent_id", "agent_secret")}
        else:
            kwargs["agent_id"] = next((lv["agent_id"] for lv in levels if lv.get("agent_id")), None)
            token_file = Path(e.get("MCS_DB") or "data/mcs.db").parent / "admin-token"
            if token_file.exists():
                kwargs["admin_token"] = token_file.read_text().strip()
        kwargs |= {k: v for k, v in explicit.items() if k not in ("url", "admin_token", "agent_id", "agent_secret")}
        return cls(**kwargs)

    # ------------------------------------------------------------ agents

    def health(self) -> R:
        return self._call("GET", "/healthz")

    def status(self) -> R:
        """The mesh at a glance (admin): processes, queue, agents, unserved work, unreachable agents."""
        return self._call("GET", "/v1/status")

    def create_agent(
        self,
        name: str,
        capabilities: list[str] | None = None,
        notify_host: str | None = None,
        *,
        claim_on_push: bool | None = None,
    ) -> R:
        """A new agent (admin); `notify_host` pins the only host its notify_url may name; `claim_on_push`:
        the dispatcher claims its tasks for it and the webhook carries the claim."""
        body: dict[str, Any] = {"name": name, "capabilities": capabilities or []}
        if notify_host is not None:
            body["notify_host"] = notify_host
        if claim_on_push is not None:
            body["claim_on_push"] = claim_on_push
        return self._call("POST", "/v1/agents", json=body)

    def update_agent(
        self, name: str, *, notify_host: str | None | Unset = UNSET, claim_on_push: bool | None = None
    ) -> R:
        """Change an agent (admin): pin its notify host, or unpin it with None; set `claim_on_push`. What is
        not given stays."""
        body: dict[str, Any] = {}
        if not isinstance(notify_host, Unset):
            body["notify_host"] = notify_host
        if claim_on_push is not None:
            body["claim_on_push"] = claim_on_push
        return self._call("PATCH", f"/v1/agents/{_q(name)}", json=body)

    def rotate_agent(self, name: str) -> R:
        return self._call("POST", f"/v1/agents/{_q(name)}/rotate")

    def delete_agent(self, name: str) -> R:
        """Delete an agent and its `private:NAME` and `agent:NAME` memory; says what was removed."""
        return self._call("DELETE", f"/v1/agents/{_q(name)}")

    def register(
        self,
        capabilities: list[str],
        notify_url: str | None = None,
        ttl: float | None = None,
        concurrency: int | None = None,
        claim_on_push: bool | None = None,
    ) -> R:
        """Registration and heartbeat in one: online for `ttl` seconds (server default 300). `claim_on_push`
        (None: as stored): webhooks carry a claim, so no claim request is needed."""
        body: dict[str, Any] = {"capabilities": capabilities, "notify_url": notify_url}
        if ttl is not None:
            body["ttl"] = ttl
        if concurrency is not None:
            body["concurrency"] = concurrency
        if claim_on_push is not None:
            body["claim_on_push"] = claim_on_push
        return self._call("POST", "/v1/agents/register", json=body)

    def agents_page(self, *, limit: int | None = None, cursor: str | None = None) -> R:
        """One page of agents by name: `{agents, next_cursor}` (`list_agents` follows the cursors)."""
        params = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        return self._call("GET", "/v1/agents", params=params)

    def get_agent(self, name: str) -> R:
        return self._call("GET", f"/v1/agents/{_q(name)}")

    # ------------------------------------------------------------ tasks

    def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        priority: str | None = None,
        capabilities: list[str] | None = None,
        route: str | None = None,
        max_retries: int | None = None,
        claim_ttl: float | None = None,
        aggregate: str | None = None,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
        max_concurrency: int | None = None,
        depends_on: list[str] | None = None,
        run_if: str | None = None,
        run_at: str | None = None,
        delay: float | None = None,
    ) -> R:
        body: dict[str, Any] = {"type": type, "payload": payload}
        for key, value in (
            ("priority", priority),
            ("capabilities", capabilities),
            ("route", route),
            ("max_retries", max_retries),
            ("claim_ttl", claim_ttl),
            ("aggregate", aggregate),
            ("concurrency_key", concurrency_key),
            ("max_concurrency", max_concurrency),
            ("depends_on", depends_on),
            ("run_if", run_if),
            ("run_at", run_at),
            ("delay", delay),
        ):
            if value is not None:
                body[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._call("POST", "/v1/tasks", json=body, headers=headers)

    def submit_batch(self, tasks: list[dict[str, Any]]) -> R:
        """Up to SUBMIT_BATCH_MAX tasks (each a `submit` body, with `idempotency_key` where wanted) in one
        request and one transaction: `{"results": [{"index", "status", "task"} or {"index", "status",
        "error"}, ...]}` in order. An item refused alone (422, 429, ...) does not stop the others."""
        return self._call("POST", "/v1/tasks/batch", json={"tasks": tasks})

    def get_task(self, task_id: str) -> R:
        return self._call("GET", f"/v1/tasks/{_q(task_id)}")

    def list_tasks(self, **filters: Any) -> R:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._call("GET", "/v1/tasks", params=params)

    def events(self, task_id: str) -> R:
        return self._call("GET", f"/v1/tasks/{_q(task_id)}/events", shape=_field("events"))

    def claim(self, task_id: str) -> R:
        """Claim a task by id: the task plus `claim_token` and `lease_expires_at` (ConflictError when it is
        not claimable)."""
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/claim")

    def claim_next(self, wait: float = 0) -> R:
        """The next task for this agent, claimed, or None when there is none (after waiting `wait` s)."""
        return self._call("POST", "/v1/tasks/claim", json={"wait": wait}, shape=_as_opt_obj)

    def extend(self, task_id: str, claim_token: str, ttl: float | None = None) -> R:
        body: dict[str, Any] = {"claim_token": claim_token}
        if ttl is not None:
            body["ttl"] = ttl
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/extend", json=body)

    def progress(
        self, task_id: str, claim_token: str, *, message: str | None = None, percent: float | None = None
    ) -> R:
        body: dict[str, Any] = {"claim_token": claim_token}
        if message is not None:
            body["message"] = message
        if percent is not None:
            body["percent"] = percent
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/progress", json=body)

    def complete(self, task_id: str, claim_token: str, result: Any = None) -> R:
        return self._call(
            "POST", f"/v1/tasks/{_q(task_id)}/complete", json={"claim_token": claim_token, "result": result}
        )

    def complete_and_next(self, task_id: str, claim_token: str, result: Any = None, *, wait: float = 0) -> R:
        """Complete, and claim this agent's next task in the same request: `{task, next}` (next: the claimed
        task, or None when none came within `wait` seconds)."""
        body = {"claim_token": claim_token, "result": result, "next": True, "wait": wait}
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/complete", json=body)

    def fail(self, task_id: str, claim_token: str, error: Any, *, retryable: bool = True) -> R:
        return self._call(
            "POST",
            f"/v1/tasks/{_q(task_id)}/fail",
            json={"claim_token": claim_token, "error": error, "retryable": retryable},
        )

    def reject(self, task_id: str, reason: str = "", claim_token: str | None = None) -> R:
        body: dict[str, Any] = {"reason": reason}
        if claim_token:
            body["claim_token"] = claim_token
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/reject", json=body)

    def cancel(self, task_id: str) -> R:
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/cancel")

    def approve(self, task_id: str, note: str | None = None) -> R:
        """Approve a waiting approval task (the admin or its submitter)."""
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/approve", json={"note": note} if note else {})

    def deny(self, task_id: str, reason: str) -> R:
        """Deny a waiting approval task: it fails with `reason`."""
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/deny", json={"reason": reason})

    def retry(self, task_id: str) -> R:
        """Put a failed or canceled task back to the queue, attempts reset."""
        return self._call("POST", f"/v1/tasks/{_q(task_id)}/retry")

    # ------------------------------------------------------------ workflows

    def submit_workflow(self, name: str, steps: list[dict[str, Any]], *, inputs: Any = None) -> R:
        """A DAG of steps (`depends_on` by step id) in one go: `{id, name, state, steps: {step id: task}}`."""
        body: dict[str, Any] = {"name": name, "steps": steps}
        if inputs is not None:
            body["inputs"] = inputs
        return self._call("POST", "/v1/workflows", json=body)

    def get_workflow(self, workflow_id: str) -> R:
        return self._call("GET", f"/v1/workflows/{_q(workflow_id)}")

    def list_workflows(self, **filters: Any) -> R:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._call("GET", "/v1/workflows", params=params)

    def workflow_events(self, workflow_id: str) -> R:
        return self._call("GET", f"/v1/workflows/{_q(workflow_id)}/events", shape=_field("events"))

    def cancel_workflow(self, workflow_id: str) -> R:
        return self._call("POST", f"/v1/workflows/{_q(workflow_id)}/cancel")

    # ------------------------------------------------------------ shared memory

    # ---------------------------------------------------------------- schedules (admin)

    def create_schedule(
        self,
        name: str,
        cron: str,
        *,
        task: dict[str, Any] | None = None,
        workflow: dict[str, Any] | None = None,
        timezone: str = "UTC",
        overlap: str = "skip",
        catch_up: str = "one",
    ) -> R:
        body: dict[str, Any] = {"name": name, "cron": cron, "timezone": timezone, "overlap": overlap,
                                "catch_up": catch_up}  # fmt: skip
        body |= {"task": task} if task is not None else {}
        body |= {"workflow": workflow} if workflow is not None else {}
        return self._call("POST", "/v1/schedules", json=body)

    def list_schedules(self) -> R:
        return self._call("GET", "/v1/schedules")

    def get_schedule(self, name: str) -> R:
        return self._call("GET", f"/v1/schedules/{_q(name)}")

    def delete_schedule(self, name: str) -> R:
        return self._call("DELETE", f"/v1/schedules/{_q(name)}", shape=_identity)

    def pause_schedule(self, name: str) -> R:
        return self._call("POST", f"/v1/schedules/{_q(name)}/pause")

    def resume_schedule(self, name: str) -> R:
        return self._call("POST", f"/v1/schedules/{_q(name)}/resume")

    @staticmethod
    def _mem_path(ns: str, key: str | None = None) -> str:
        # A key may hold `/`, but a `.` or `..` segment (of it or as the namespace) would walk to another
        # endpoint (httpx, as any URL parser, resolves dot segments): sent percent-encoded, the api reads
        # them back as written (and refuses such a namespace).
        segments = [quote(ns, safe=":"), *([] if key is None else quote(key, safe="/").split("/"))]
        return "/v1/memory/" + "/".join(map(_no_dots, segments))

    def mem_get(self, ns: str, key: str) -> R:
        """The key's value and metadata (NotFoundError when absent)."""
        return self._call("GET", self._mem_path(ns, key))

    def mem_put(
        self,
        ns: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        tags: list[str] | None = None,
        if_match: int | None = None,
        if_none_match: bool = False,
    ) -> R:
        """Write a key. `if_match`: only if it is at that version; `if_none_match`: only if it is absent
        (both answer PreconditionFailedError otherwise)."""
        body: dict[str, Any] = {"value": value, "tags": tags or []}
        if ttl is not None:
            body["ttl"] = ttl
        headers = {}
        if if_match is not None:
            headers["If-Match"] = str(if_match)
        if if_none_match:
            headers["If-None-Match"] = "*"
        return self._call("PUT", self._mem_path(ns, key), json=body, headers=headers)

    def mem_delete(self, ns: str, key: str, *, if_match: int | None = None) -> R:
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        return self._call("DELETE", self._mem_path(ns, key), headers=headers, shape=_identity)

    def mem_list(
        self,
        ns: str,
        *,
        prefix: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> R:
        params = {k: v for k, v in (("prefix", prefix), ("tag", tag), ("limit", limit), ("cursor", cursor)) if v}
        return self._call("GET", self._mem_path(ns), params=params)

    def mem_bulk(
        self,
        ns: str,
        *,
        get: list[str] | None = None,
        put: list[dict[str, Any]] | None = None,
        delete: list[str] | None = None,
    ) -> R:
        body = {"get": get or [], "put": put or [], "delete": delete or []}
        return self._call("POST", self._mem_path(ns) + "/_bulk", json=body)


EVENTS_RECONNECT_DELAY = 0.5  # seconds before reconnecting to GET /v1/events after a dropped connection


def _sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Server-Sent Events from response lines: each event's data (JSON) with `event` added."""
    name, ident = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data and ident is not None:
                event = _as_obj(json.loads("\n".join(data)))
                event["event"] = name
                yield event
            name, data, ident = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                ident = value


class Client(_Endpoints[Any]):
    """The synchronous client."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        agent_id: str | None = None,
        agent_secret: str | None = None,
        admin_token: str | None = None,
        timeout: float = 40.0,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.agent_id = agent_id
        self.retries = retries
        headers = _credentials_headers(agent_id, agent_secret, admin_token)
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _obj(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request whose answer is a JSON object."""
        return _as_obj(self.request(method, path, **kwargs))

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        shape: Callable[[Any], Any] = _as_obj,
    ) -> Any:
        return shape(self.request(method, path, json=json, params=params, headers=headers))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request (retrying connection errors); its JSON answer, or a typed McsApiError."""
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=_RETRY_WAIT,
            retry=retry_if_exception(_should_retry(method)),
            reraise=True,
        )
        try:
            response = retrying(self.http.request, method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise McsUnavailable(f"cannot reach MCS at {self.url}: {exc}") from exc
        return _decode(response)

    def list_agents(self, *, page_size: int = AGENTS_PAGE) -> list[dict[str, Any]]:
        """Every agent, following the pages."""
        agents: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.agents_page(limit=page_size, cursor=cursor)
            agents += page["agents"]
            cursor = page.get("next_cursor")
            if not cursor:
                return agents

    def stream_events(
        self,
        *,
        last_event_id: int | None = None,
        reconnect: bool = True,
        on_open: Callable[[], None] | None = None,
        **filters: str | None,
    ) -> Iterator[dict[str, Any]]:
        """GET /v1/events as a generator of events (`data` plus `event`), reconnecting with Last-Event-ID
        when the connection drops or the server ends the response (never, with `reconnect=False`), so no
        event is lost or repeated. Filters: task, workflow, type, agent. `on_open` runs once each time the
        stream is open (events from then on will come), before the first event is waited for."""
        params = {k: v for k, v in filters.items() if v is not None}
        last = last_event_id
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                with self.http.stream(
                    "GET", "/v1/events", params=params, headers=headers, timeout=httpx.Timeout(10.0, read=60.0)
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        if reconnect and response.status_code in (429, 502, 503, 504):  # restarting, busy
                            time.sleep(EVENTS_RECONNECT_DELAY)
                            continue
                        _decode(response)
                    if on_open is not None:
                        on_open()
                    for event in _sse(response.iter_lines()):
                        last = int(event["id"])
                        yield event
            except httpx.TransportError as exc:
                if not reconnect:
                    raise McsUnavailable(f"cannot reach MCS at {self.url}: {exc}") from exc
                time.sleep(EVENTS_RECONNECT_DELAY)
                continue
            if not reconnect:
                return

    def wait_for(self, task_id: str, *, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Follow a task until it is completed, failed or canceled; returns it. TimeoutError past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(poll, 0.05)
        while True:
            task: dict[str, Any] = self.get_task(task_id)
            if task["state"] in TERMINAL:
                return task
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {task['state']} after {timeout} s")
            time.sleep(delay)
            delay = min(poll * 5, delay * 1.5)

    def wait_for_workflow(self, workflow_id: str, *, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Follow a workflow until it is completed, failed or canceled; returns it. TimeoutError past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(poll, 0.05)
        while True:
            workflow: dict[str, Any] = self.get_workflow(workflow_id)
            if workflow["state"] != "running":
                return workflow
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"workflow {workflow_id} is still running after {timeout} s")
            time.sleep(delay)
            delay = min(poll * 5, delay * 1.5)


class AsyncClient(_Endpoints[Awaitable[Any]]):
    """The asyncio client: the same methods as `Client`, as coroutines. Use `async with AsyncClient(...)`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        agent_id: str | None = None,
        agent_secret: str | None = None,
        admin_token: str | None = None,
        timeout: float = 40.0,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.agent_id = agent_id
        self.retries = retries
        headers = _credentials_headers(agent_id, agent_secret, admin_token)
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        shape: Callable[[Any], Any] = _as_obj,
    ) -> Any:
        return shape(await self.request(method, path, json=json, params=params, headers=headers))

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request (retrying connection errors); its JSON answer, or a typed McsApiError."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=_RETRY_WAIT,
            retry=retry_if_exception(_should_retry(method)),
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(
                self.http.request, method, path, json=json, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise McsUnavailable(f"cannot reach MCS at {self.url}: {exc}") from exc
        return _decode(response)

    async def list_agents(self, *, page_size: int = AGENTS_PAGE) -> list[dict[str, Any]]:
        """Every agent, following the pages."""
        agents: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.agents_page(limit=page_size, cursor=cursor)
            agents += page["agents"]
            cursor = page.get("next_cursor")
            if not cursor:
                return agents

    async def wait_for(self, task_id: str, *, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Follow a task until it is completed, failed or canceled; returns it. TimeoutError past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(poll, 0.05)
        while True:
            task: dict[str, Any] = await self.get_task(task_id)
            if task["state"] in TERMINAL:
                return task
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {task['state']} after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(poll * 5, delay * 1.5)

    async def wait_for_workflow(
        self, workflow_id: str, *, timeout: float | None = None, poll: float = 0.2
    ) -> dict[str, Any]:
        """Follow a workflow until it is completed, failed or canceled; returns it. TimeoutError past `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(poll, 0.05)
        while True:
            workflow: dict[str, Any] = await self.get_workflow(workflow_id)
            if workflow["state"] != "running":
                return workflow
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"workflow {workflow_id} is still running after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(poll * 5, delay * 1.5)
