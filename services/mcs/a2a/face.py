"""The api's A2A face: the mesh as one A2A agent, on the `a2a-sdk` server.

- `GET /.well-known/agent-card.json`: the card (public, as A2A discovery expects). Its skills are the
  capabilities online agents serve, read from the database (cached for CARD_CACHE seconds), so they come
  and go with the agents.
- `POST /a2a`: JSON-RPC, protocol 1.0 (`SendMessage`, `SendStreamingMessage`, `GetTask`, `ListTasks`,
  `CancelTask`, `SubscribeToTask`, the push-config methods) and the 0.3 names the SDK serves on the same URL
  (`message/send`, `message/stream`, `tasks/get`, `tasks/cancel`, `tasks/pushNotificationConfig/*`).
  Bearer auth: the admin token, or an agent as `Bearer NAME:SECRET` (or X-Agent-ID/X-Agent-Secret); the
  task is submitted as that caller. Anything else is a 401 before JSON-RPC is looked at.

A message creates an MCS task: `metadata.capability` (or `metadata.skill`, a skill id from the card) names
the capability and so the task type; with one skill online it may be left out. Its parts become the
payload (`convert.payload_of`). A message with a `taskId` continues that task: it decides a waiting
approval (input-required) with "approve [note]" or "deny: reason". Streaming follows the api's EventHub
(the committed event log, whichever process made the change), never this process's memory.

`A2aMount` wraps the Quart app's ASGI callable: these two paths go to the SDK's Starlette routes, every
other request (and the lifespan) to Quart, which owns the store and the event hub.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers import RequestHandler
from a2a.server.routes import DefaultServerCallContextBuilder, create_agent_card_routes, create_jsonrpc_routes
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    AuthenticationInfo,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0
from a2a.utils.errors import (
    A2AError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotCancelableError,
    TaskNotFoundError,
)
from google.protobuf.json_format import MessageToDict
from pydantic import ValidationError
from quart import Quart
from starlette.applications import Starlette
from starlette.requests import Request

from mcs import __version__, egress, metrics
from mcs.a2a import convert
from mcs.api import MAX_JSON_DEPTH, too_deep
from mcs.api.auth import face_credentials as request_credentials
from mcs.api.auth import verify
from mcs.api.events import EventHub, Subscriber
from mcs.api.faces import A2A_CARD_PATHS, A2A_RPC_PATH
from mcs.api.schemas import SubmitTask
from mcs.errors import ApiError, QuotaExceeded, StoreError, Unauthorized
from mcs.models import APPROVAL, Caller, PushConfig, TaskSpec
from mcs.models import Task as McsTask
from mcs.models import TaskState as McsState
from mcs.state import a2a as a2a_state
from mcs.state import tasks as tasks_store

RPC_PATH = A2A_RPC_PATH
CARD_PATHS = A2A_CARD_PATHS
assert AGENT_CARD_WELL_KNOWN_PATH in CARD_PATHS  # the SDK's path, which mcs.api.faces routes here
CARD_CACHE = 1.0  # seconds the card's skills are reused before the agents table is read again
RECHECK = 5.0  # seconds a stream waits for an event about its task before it reads the task anyway
LIST_PAGE = 50  # tasks one ListTasks page holds unless pageSize says otherwise
LIST_PAGE_MAX = 100
PAGE_TOKEN_DIGITS = 18  # a task's seq, as ListTasks gives it: more digits would overflow SQLite's INTEGER
DEFAULT_PUSH_ID = "default"  # a push config's id when the client gives none
CALLER_KEY = "mcs.caller"  # where A2aMount leaves the verified caller in the ASGI scope

_base_url: contextvars.ContextVar[str] = contextvars.ContextVar("mcs_a2a_base_url", default="http://127.0.0.1")


# ---------------------------------------------------------------- auth


def _json_error(status: int, code: str, message: str, extra: dict[str, str] | None = None) -> tuple[Any, ...]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    return status, headers, body


class A2aMount:
    """ASGI: the A2A paths to the SDK's Starlette app (after auth and the body limit), the rest to Quart."""

    def __init__(self, quart_app: Quart, inner: Callable[..., Awaitable[None]], a2a_app: Starlette) -> None:
        self.quart_app = quart_app
        self.inner = inner
        self.a2a_app = a2a_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (path != RPC_PATH and path not in CARD_PATHS):
            await self.inner(scope, receive, send)
            return
        scheme = scope.get("scheme", "http")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host") or "127.0.0.1"
        allowed = "POST" if path == RPC_PATH else "GET"
        if scope.get("method") not in (allowed, "HEAD" if allowed == "GET" else allowed):
            await _respond(send, *_json_error(405, "method_not_allowed", f"{path} takes {allowed}", {"allow": allowed}))
            return
        token = _base_url.set(f"{scheme}://{host}")
        try:
            if path == RPC_PATH:
                refusal = await self._admit(scope, headers)
                if refusal is not None:
                    await _respond(send, *refusal)
                    return
                body = await self._bounded_body(receive, headers)
                if body is None:
                    limit = self.quart_app.config["MCS_SETTINGS"].max_body_bytes
                    await _respond(
                        send,
                        *_json_error(413, "payload_too_large", f"the request body is larger than {limit} bytes"),
                    )
                    return
                if _nests_too_deep(body):
                    await _respond(send, *_rpc_error(-32600, f"the request nests deeper than {MAX_JSON_DEPTH} levels"))
                    return
                receive = _replay(body, receive)
            await self.a2a_app(scope, receive, send)
        finally:
            _base_url.reset(token)

    async def aclose(self) -> None:
        pass  # nothing of its own runs between requests

    async def _admit(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[Any, ...] | None:
        """Verify the caller (None: admitted, the Caller left in the scope) or the 401/503 to answer."""
        settings = self.quart_app.config["MCS_SETTINGS"]
        www = {"www-authenticate": 'Bearer realm="mcs"'}
        try:
            creds = request_credentials(headers, settings.admin_token)
            caller, _ = await self.quart_app.config["MCS_DB"].read(verify, creds)
        except Unauthorized as exc:
            metrics.a2a_requests.labels("-", "unauthorized").inc()
            return _json_error(401, exc.code, exc.message, www)
        except StoreError:
            return _json_error(503, "database_unavailable", "the database is busy or unavailable; try again")
        scope[CALLER_KEY] = caller
        return None

    async def _bounded_body(self, receive: Any, headers: dict[str, str]) -> bytes | None:
        """The whole body (at most MCS_MAX_BODY_BYTES, else None)."""
        limit = self.quart_app.config["MCS_SETTINGS"].max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive callable handing on the body read in one message, then what the client sends after it."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        after: dict[str, Any] = await receive()  # after the body: the disconnect, when it comes
        return after

    return replay


def _nests_too_deep(body: bytes) -> bool:
    """Whether the body is JSON nesting deeper than the api allows (MAX_JSON_DEPTH): the SDK's parser would
    answer an internal error with a RecursionError traceback in the log, or pass it on to be stored. Not
    JSON at all is left to the SDK, which says so."""
    try:
        value = json.loads(body)
    except RecursionError:
        return True
    except ValueError:
        return False
    return too_deep(value, MAX_JSON_DEPTH)


def _rpc_error(code: int, message: str) -> tuple[Any, ...]:
    """A JSON-RPC error answered before the SDK sees the request (HTTP 200, as the SDK answers its own)."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    return 200, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _ContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's context, with the caller A2aMount verified."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["caller"] = request.scope.get(CALLER_KEY)
        return context


def _caller(context: ServerCallContext | None) -> Caller:
    caller = context.state.get("caller") if context is not None else None
    if not isinstance(caller, Caller):  # never: A2aMount admits no request without one
        raise InvalidRequestError(message="no verified caller")
    return caller


def _a2a_error(exc: ApiError | StoreError, *, not_cancelable: bool = False) -> A2AError:
    """An MCS refusal as the A2A error that fits, keeping MCS's code in `data`."""
    data = {"code": getattr(exc, "code", "database_unavailable"), "status": getattr(exc, "status", 503)}
    status = data["status"]
    if status == 404:
        return TaskNotFoundError(message=exc.message, data=data)
    if status == 409 and not_cancelable:
        return TaskNotCancelableError(message=exc.message, data=data)
    if status in (400, 422):
        return InvalidParamsError(message=exc.message, data=data)
    if type(exc) is StoreError:  # a driver error: say only what to do
        return InternalError(message="the database is busy or unavailable; try again", data=data)
    if isinstance(exc, QuotaExceeded) and exc.retry_after is not None:
        data["retry_after"] = exc.retry_after
    return InvalidRequestError(message=exc.message, data=data)


# ---------------------------------------------------------------- the card


class Card:
    """The agent card, its skills refreshed from the agents table at most every CARD_CACHE seconds."""

    def __init__(self, app: Quart) -> None:
        self.app = app
        self._skills: list[AgentSkill] = []
        self._read_at = -CARD_CACHE
        self._lock = asyncio.Lock()

    async def skills(self) -> list[AgentSkill]:
        async with self._lock:
            if time.monotonic() - self._read_at >= CARD_CACHE:
                serving = await self.app.config["MCS_DB"].read(a2a_state.online_capabilities, now=time.time())
                self._skills = [
                    AgentSkill(
                        id=capability,
                        name=capability,
                        description=f"MCS capability {capability!r}, served by {len(agents)} online agent(s).",
                        tags=["mcs", capability.split(":", 1)[0]],
                    )
                    for capability, agents in serving.items()
                ]
                self._read_at = time.monotonic()
            return self._skills

    async def render(self, base: AgentCard) -> AgentCard:
        card = AgentCard()
        card.CopyFrom(base)
        url = _base_url.get() + RPC_PATH
        del card.supported_interfaces[:]
        for version in (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3):
            card.supported_interfaces.append(
                AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version=version)
            )
        card.skills.extend(await self.skills())
        return card


def base_card() -> AgentCard:
    return AgentCard(
        name="MCS mesh",
        description=(
            "A mesh of agents behind one Mesh Coordination Server. Each skill is a capability online agents "
            "serve; name it in the message's metadata as `capability` (or `skill`), and the message's parts "
            "become the task's payload."
        ),
        version=__version__,
        supported_interfaces=[AgentInterface(url=RPC_PATH, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=True, push_notifications=True),
        default_input_modes=["text/plain", "application/json"],
        default_output_modes=["text/plain", "application/json"],
        security_schemes={
            "bearer": SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="bearer", description="the MCS admin token, or NAME:SECRET of an MCS agent"
                )
            )
        },
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
    )


# ---------------------------------------------------------------- the handler


def _decision(message: Message) -> tuple[bool, str | None]:
    """An answer to an approval: text "approve [note]" / "deny[:] reason" (yes/no too), or a data part
    `{"approve": bool, "note"|"reason": str}`."""
    for part in message.parts:
        data = convert.data_of(part)
        if isinstance(data, dict) and isinstance(data.get("approve"), bool):
            why = data.get("note") if data["approve"] else data.get("reason")
            return bool(data["approve"]), why if isinstance(why, str) else None
    text = " ".join(p.text for p in message.parts if p.HasField("text")).strip()
    first, _, rest = text.replace(":", " ", 1).partition(" ")
    word, why = first.lower(), rest.strip() or None
    if word in ("approve", "approved", "yes", "ok"):
        return True, why
    if word in ("deny", "denied", "no", "reject"):
        return False, why
    raise InvalidParamsError(message="answer an approval with 'approve [note]' or 'deny: reason'")


class MeshHandler(RequestHandler):
    """The SDK's RequestHandler over MCS: every call reads or writes the store; nothing lives in memory."""

    def __init__(self, app: Quart) -> None:
        self.app = app

    @property
    def db(self) -> Any:
        return self.app.config["MCS_DB"]

    @property
    def settings(self) -> Any:
        return self.app.config["MCS_SETTINGS"]

    async def _call(self, method: str, fn: Any, *args: Any, write: bool = False, **kwargs: Any) -> Any:
        """A store call, its MCS errors as A2A errors, counted per method."""
        try:
            result = await (self.db.write if write else self.db.read)(fn, *args, **kwargs)
        except (ApiError, StoreError) as exc:
            metrics.a2a_requests.labels(method, "error").inc()
            raise _a2a_error(exc, not_cancelable=method == "CancelTask") from None
        return result

    async def _task(self, method: str, task_id: str) -> tuple[McsTask, convert.Origin | None]:
        found: tuple[McsTask, convert.Origin | None] = await self._call(
            method, a2a_state.task_with_origin, task_id=task_id
        )
        return found

    # -------------------------------------------------------- messages

    async def _capability(self, meta: dict[str, Any]) -> str:
        chosen = meta.get("capability") or meta.get("skill") or meta.get("skillId") or meta.get("skill_id")
        if chosen is not None:
            if not isinstance(chosen, str):
                raise InvalidParamsError(message="metadata.capability must be a string")
            return chosen
        serving: dict[str, list[str]] = await self.db.read(a2a_state.online_capabilities, now=time.time())
        if len(serving) == 1:
            return next(iter(serving))
        raise InvalidParamsError(
            message="name the capability in the message's metadata (`capability`, or `skill`): one of "
            + convert.capability_choices(serving)
        )

    async def _push_config(self, config: TaskPushNotificationConfig, task_id: str) -> PushConfig:
        """A client's push config, its URL checked against the egress policy for notify URLs."""
        url = config.url
        policy: egress.Policy = self.app.config["MCS_NOTIFY_POLICY"]
        if not url.startswith(("http://", "https://")):
            raise InvalidParamsError(message="a push config's url must be an http:// or https:// URL")
        try:
            await policy.check_url(url)
        except egress.EgressRefused as exc:
            metrics.egress_refusals.labels("notify_url").inc()
            raise InvalidParamsError(message=f"push url refused: {exc}", data={"code": "egress_refused"}) from None
        except egress.Unresolvable as exc:
            raise InvalidParamsError(message=f"push url host: {exc}", data={"code": "egress_refused"}) from None
        has_auth = config.HasField("authentication")
        return PushConfig(
            task_id=task_id,
            id=config.id or DEFAULT_PUSH_ID,
            url=url,
            token=config.token or None,
            auth_scheme=config.authentication.scheme or None if has_auth else None,
            auth_credentials=config.authentication.credentials or None if has_auth else None,
            owner="",
        )

    async def _start(
        self, method: str, params: SendMessageRequest, context: ServerCallContext
    ) -> tuple[McsTask, convert.Origin | None]:
        """The task a message creates, or the one it continues (by taskId)."""
        caller = _caller(context)
        message = params.message
        if message.task_id:
            return await self._continue(method, message, caller)
        if not message.parts:
            raise InvalidParamsError(message="the message has no parts: send the work as text or data parts")
        meta = convert.metadata(message, params.metadata if params.HasField("metadata") else None)
        capability = await self._capability(meta)
        try:
            payload = convert.payload_of(message)
        except ValueError as exc:
            raise InvalidParamsError(message=str(exc)) from None
        body: dict[str, Any] = {"type": capability, "payload": payload}
        for key in ("priority", "route", "max_retries", "claim_ttl"):
            if key in meta:
                body[key] = meta[key]
        try:
            data = SubmitTask.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
            raise InvalidParamsError(message=problems) from None
        spec = TaskSpec.from_body(
            data.model_dump(), max_retries=self.settings.max_retries, claim_ttl=self.settings.claim_ttl
        )
        push = None
        if params.configuration.HasField("task_push_notification_config"):
            push = await self._push_config(params.configuration.task_push_notification_config, "")
        context_id = message.context_id or str(uuid.uuid4())
        stored = MessageToDict(message)
        rate = self.app.config["MCS_SUBMIT_RATE"]
        try:
            if not caller.is_admin:
                rate.take(caller.name, time.monotonic())
        except ApiError as exc:
            metrics.a2a_requests.labels(method, "error").inc()
            raise _a2a_error(exc) from None
        created: tuple[McsTask, convert.Origin] = await self._call(
            method,
            a2a_state.submit,
            write=True,
            caller=caller,
            spec=spec,
            context_id=context_id,
            message=stored,
            push=push,
            now=time.time(),
            max_queued=self.settings.quota_queued_tasks,
        )
        return created

    async def _continue(self, method: str, message: Message, caller: Caller) -> tuple[McsTask, convert.Origin | None]:
        task, origin = await self._task(method, message.task_id)
        if task.state is McsState.WAITING and task.type == APPROVAL:
            approve, why = _decision(message)
            if approve:
                await self._call(
                    method, tasks_store.approve, write=True, task_id=task.id, caller=caller, note=why, now=time.time()
                )
            else:
                reason = why or f"denied by {caller.actor} over A2A"
                await self._call(
                    method, tasks_store.deny, write=True, task_id=task.id, caller=caller, reason=reason, now=time.time()
                )
            return await self._task(method, task.id)
        state = convert.state_name(convert.a2a_state(task.state, task.type))
        raise InvalidRequestError(
            message=f"task {task.id} is {state}: only an input-required task takes a message; "
            "send a new message without taskId for new work",
            data={"code": "not_input_required"},
        )

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        task, origin = await self._start("SendMessage", params, context)
        history = params.configuration.history_length if params.configuration.HasField("history_length") else None
        if not params.configuration.return_immediately:
            task, origin = await self._wait(task, origin, timeout=self.settings.api_keep_alive)
        metrics.a2a_requests.labels("SendMessage", "ok").inc()
        return convert.to_task(task, origin, history_length=history)

    async def _wait(
        self, task: McsTask, origin: convert.Origin | None, *, timeout: float
    ) -> tuple[McsTask, convert.Origin | None]:
        """The task once it ended or needs input, or as it is after `timeout` seconds (a blocking
        SendMessage is held no longer than a long poll)."""
        async for _ in self._follow(task.id, deadline=time.monotonic() + timeout):
            pass
        return await self._task("SendMessage", task.id)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        task, origin = await self._start("SendStreamingMessage", params, context)
        metrics.a2a_requests.labels("SendStreamingMessage", "ok").inc()
        async for event in self._follow(task.id, deadline=self._stream_deadline()):
            yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        _caller(context)
        await self._task("SubscribeToTask", params.id)  # TaskNotFound before the stream starts
        metrics.a2a_requests.labels("SubscribeToTask", "ok").inc()
        async for event in self._follow(params.id, deadline=self._stream_deadline()):
            yield event

    def _stream_deadline(self) -> float | None:
        """A stream ends before Hypercorn's read timeout would cut it (the client resubscribes)."""
        seconds = self.settings.events_stream_max
        return None if seconds is None else time.monotonic() + seconds

    async def _follow(self, task_id: str, *, deadline: float | None) -> AsyncGenerator[Event]:
        """The Task, then a status update each time its A2A state changes (progress reports as working
        updates with their message), the result artifact before `completed`; ends once the task ended or
        needs input, or at `deadline`. Woken by the EventHub (the committed event log); the task is read
        again when an event names it, and every RECHECK seconds regardless."""
        hub: EventHub = self.app.config["MCS_EVENTS"]
        sub, _ = await hub.subscribe()
        try:
            task, origin = await self._task("stream", task_id)  # read after subscribing: nothing falls between
            context_id = origin.context_id if origin is not None else task.id
            yield convert.to_task(task, origin)
            last = convert.a2a_state(task.state, task.type)
            while last not in convert.INTERRUPTED:
                wait = RECHECK if deadline is None else min(RECHECK, deadline - time.monotonic())
                if wait <= 0:
                    return
                sub = await self._wait_for_events(hub, sub, wait)
                progress = [
                    e for e in sub.take() if e.stream == "task" and e.subject == task_id and e.kind == "progress"
                ]
                for event in progress:
                    detail = event.detail if isinstance(event.detail, dict) else {}
                    percent = f"{detail['percent']:g}%" if isinstance(detail.get("percent"), int | float) else None
                    text = " ".join(str(x) for x in (percent, detail.get("message")) if x)
                    status = convert.status_of(task, context_id)
                    status.state = TaskState.TASK_STATE_WORKING
                    status.message.CopyFrom(
                        convert.agent_message(
                            task_id, context_id, text or "progress", message_id=f"progress-{event.id}"
                        )
                    )
                    yield TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=status)
                task, origin = await self._task("stream", task_id)
                state = convert.a2a_state(task.state, task.type)
                if state == last:
                    continue
                if state == TaskState.TASK_STATE_COMPLETED:
                    for artifact in convert.result_artifacts(task.result):
                        yield TaskArtifactUpdateEvent(
                            task_id=task_id, context_id=context_id, artifact=artifact, last_chunk=True
                        )
                yield TaskStatusUpdateEvent(
                    task_id=task_id, context_id=context_id, status=convert.status_of(task, context_id)
                )
                last = state
        finally:
            hub.unsubscribe(sub)

    async def _wait_for_events(self, hub: EventHub, sub: Subscriber, timeout: float) -> Subscriber:
        if not sub.pending:
            try:
                async with asyncio.timeout(timeout):
                    await sub.wake.wait()
            except TimeoutError:
                pass
        if sub.dropped:  # fell behind the hub: start again (the task is read again at once anyway)
            sub, _ = await hub.subscribe()
        return sub

    # -------------------------------------------------------- tasks

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        _caller(context)
        task, origin = await self._task("GetTask", params.id)
        metrics.a2a_requests.labels("GetTask", "ok").inc()
        history = params.history_length if params.HasField("history_length") else None
        return convert.to_task(task, origin, history_length=history)

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        caller = _caller(context)
        await self._call(
            "CancelTask", tasks_store.cancel, write=True, task_id=params.id, caller=caller, now=time.time()
        )
        task, origin = await self._task("CancelTask", params.id)
        metrics.a2a_requests.labels("CancelTask", "ok").inc()
        return convert.to_task(task, origin)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        """Tasks newest first (every task, as GET /v1/tasks shows anyone signed in), by A2A status and
        context; `pageToken` continues a listing."""
        _caller(context)
        size = params.page_size if params.HasField("page_size") else LIST_PAGE
        if not 1 <= size <= LIST_PAGE_MAX:
            raise InvalidParamsError(message=f"pageSize must be 1 to {LIST_PAGE_MAX}")
        before = None
        if params.page_token:
            if not params.page_token.isdigit() or len(params.page_token) > PAGE_TOKEN_DIGITS:
                raise InvalidParamsError(message="pageToken is not one this server gave")
            before = int(params.page_token)
        states = convert.mcs_filter(params.status) if params.status else []
        found: tuple[list[tuple[McsTask, convert.Origin | None]], int, int | None] = await self._call(
            "ListTasks",
            a2a_state.list_tasks,
            states=states,
            context_id=params.context_id or None,
            limit=size,
            before_seq=before,
        )
        page, total, more = found
        history = params.history_length if params.HasField("history_length") else None
        metrics.a2a_requests.labels("ListTasks", "ok").inc()
        return ListTasksResponse(
            tasks=[convert.to_task(t, o, history_length=history) for t, o in page],
            next_page_token="" if more is None else str(more),
            page_size=size,
            total_size=total,
        )

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError(message="the public card is the whole card")

    # -------------------------------------------------------- push configs

    @staticmethod
    def _config_proto(config: PushConfig) -> TaskPushNotificationConfig:
        out = TaskPushNotificationConfig(task_id=config.task_id, id=config.id, url=config.url, token=config.token or "")
        if config.auth_scheme:
            out.authentication.CopyFrom(AuthenticationInfo(scheme=config.auth_scheme))  # never echo credentials
        return out

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        caller = _caller(context)
        if not params.task_id:
            raise InvalidParamsError(message="taskId is required")
        config = await self._push_config(params, params.task_id)
        stored: PushConfig = await self._call(
            "CreateTaskPushNotificationConfig",
            a2a_state.set_push,
            write=True,
            caller=caller,
            config=config,
            now=time.time(),
        )
        metrics.a2a_requests.labels("CreateTaskPushNotificationConfig", "ok").inc()
        return self._config_proto(stored)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        caller = _caller(context)
        config: PushConfig = await self._call(
            "GetTaskPushNotificationConfig",
            a2a_state.get_push,
            caller=caller,
            task_id=params.task_id,
            config_id=params.id,
        )
        metrics.a2a_requests.labels("GetTaskPushNotificationConfig", "ok").inc()
        return self._config_proto(config)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        caller = _caller(context)
        configs: list[PushConfig] = await self._call(
            "ListTaskPushNotificationConfigs", a2a_state.list_push, caller=caller, task_id=params.task_id
        )
        metrics.a2a_requests.labels("ListTaskPushNotificationConfigs", "ok").inc()
        return ListTaskPushNotificationConfigsResponse(configs=[self._config_proto(c) for c in configs])

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        caller = _caller(context)
        await self._call(
            "DeleteTaskPushNotificationConfig",
            a2a_state.delete_push,
            write=True,
            caller=caller,
            task_id=params.task_id,
            config_id=params.id,
            now=time.time(),
        )
        metrics.a2a_requests.labels("DeleteTaskPushNotificationConfig", "ok").inc()


class _QuietEmptySkills(logging.Filter):
    """The SDK warns on every card without skills (the spec wants one): a mesh with no agent online has
    none, which is the truth, not a fault to log at each request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "missing or empty: skills." not in record.getMessage()


_QUIET = _QuietEmptySkills()


async def start(app: Quart, inner: Callable[..., Awaitable[None]]) -> A2aMount:
    """The A2A face in front of the Quart app (its store, settings and event hub): mcs.api.faces starts it
    on the first request for one of its paths."""
    sdk_log = logging.getLogger("a2a.utils.proto_utils")
    if _QUIET not in sdk_log.filters:
        sdk_log.addFilter(_QUIET)
    card = Card(app)
    base = base_card()

    async def modify(_: AgentCard) -> AgentCard:
        return await card.render(base)

    routes = []
    for path in CARD_PATHS:
        routes += create_agent_card_routes(base, card_modifier=modify, card_url=path, cache_control="no-cache")
    routes += create_jsonrpc_routes(
        MeshHandler(app), RPC_PATH, context_builder=_ContextBuilder(), enable_v0_3_compat=True
    )
    return A2aMount(app, inner, Starlette(routes=routes))
