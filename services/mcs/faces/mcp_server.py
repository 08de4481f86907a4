"""MCS as an MCP server: tools to orchestrate the mesh (submit, wait, read, cancel, shared memory) and to work
on it as an agent (claim, complete, fail), built on the official `mcp` SDK's `MCPServer`.

Every tool is one call (or, for `wait_task`, a few) to the MCS HTTP API through `mcs.client.AsyncClient`, so
the API decides who may do what exactly as for the CLI: an admin token orchestrates, agent credentials act
as that agent. Where the client comes from is a `Backend`:

- `mcs mcp` (stdio, `run_stdio`): one client with the credentials the CLI would use (MCS_URL, MCS_ADMIN_TOKEN
  or MCS_AGENT_ID + MCS_AGENT_SECRET, the config file's profile), and `wait_task` follows GET /v1/events.
- `/mcp` on the api (mcs.faces.mcp_http): a client per call carrying the caller's own credentials, sent
  straight into the api app in process.

An MCS error becomes a tool error (`isError: true`) whose text is its code and message (`not_found: no such
task`; also as structured content `{"error": {code, message}}`), never a protocol error or a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol

import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from mcs import __version__, metrics
from mcs.api.schemas import Capability, Route, TaskType, WorkflowStep
from mcs.client import TERMINAL, AsyncClient, McsApiError, McsUnavailable

log = logging.getLogger("mcs.mcp")

SERVER_NAME = "mcs"
WAIT_DEFAULT = 60.0  # seconds wait_task waits when not told
WAIT_MAX = 3600.0  # seconds wait_task may be asked to wait at most
WAIT_HEARTBEAT = 5.0  # seconds between progress notifications (and task re-reads) while nothing happens
POLL_INTERVAL = 1.0  # seconds between task re-reads when the event stream cannot be followed
SSE_TIMEOUT = httpx.Timeout(10.0, read=60.0)  # seconds; the server sends a keep-alive every 15 s
WATCH_BUFFER = 100  # events a wait keeps while it re-reads the task; older ones only count as "changed"

INSTRUCTIONS = """\
MCS (Mesh Coordination Server) shares work, state and results between AI agents.
Orchestrate: submit_task (type = the capability an agent must have; route "all" fans out to every capable
agent, aggregate "consensus" merges their reviews), then wait_task until it ends and read its result.
list_agents shows who is online and what they can do. Shared memory: memory_* (namespaces: mesh, agent:NAME,
private:NAME). Working as an agent (with agent credentials): claim_next, then complete_task or fail_task with
the claim_token it returned. Errors read "<code>: <message>"."""

Namespace = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="`mesh` (everyone reads and writes), `agent:NAME` (NAME writes, all read) or "
        "`private:NAME` (NAME only)",
    ),
]
Key = Annotated[str, Field(min_length=1, max_length=512, description="the key within the namespace")]
TaskId = Annotated[str, Field(min_length=1, max_length=64, description="a task id")]
ClaimToken = Annotated[str, Field(min_length=1, max_length=200, description="the claim_token claim_next returned")]
TaskState = Literal[
    "queued", "assigned", "claimed", "retrying", "waiting", "blocked", "completed", "failed", "canceled"
]

# What every tool returns: its answer (a JSON object, published as the output schema), or an error result.
ToolResult = Annotated[CallToolResult, dict[str, Any]]

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


class Backend(Protocol):
    """Where a tool call's MCS client comes from, and how `wait_task` hears that a task changed."""

    def max_wait(self, ctx: Context) -> float | None:
        """Seconds this call's wait_task may last at most (None: as long as asked)."""
        ...

    def client(self, ctx: Context) -> contextlib.AbstractAsyncContextManager[AsyncClient]:
        """A client acting for whoever called the tool."""
        ...

    def watch(self, client: AsyncClient, task_id: str) -> contextlib.AbstractAsyncContextManager[Watch]:
        """Changes to one task from now on (entered before the task is read, so none is missed)."""
        ...


class Watch(Protocol):
    async def next(self, timeout: float) -> list[dict[str, Any]] | None:
        """The task's events that came (an empty list: something may have changed), or None when nothing
        came within `timeout` seconds."""
        ...


class PollWatch:
    """No event stream: every POLL_INTERVAL counts as a possible change."""

    async def next(self, timeout: float) -> list[dict[str, Any]] | None:
        await asyncio.sleep(min(timeout, POLL_INTERVAL))
        return [] if timeout >= POLL_INTERVAL else None


class SseWatch:
    """Follows GET /v1/events?task=ID over HTTP on a task of its own (started and ended by `open`); the
    events wait in a bounded buffer. Falls back to polling when the stream cannot be opened or breaks."""

    def __init__(self) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=WATCH_BUFFER)
        self.changed = asyncio.Event()
        self.broken = False

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, client: AsyncClient, task_id: str) -> AsyncIterator[Watch]:
        watch = cls()
        opened = asyncio.Event()
        reader = asyncio.create_task(watch._read(client, task_id, opened))
        waiter = asyncio.create_task(opened.wait())
        try:
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            yield watch if not watch.broken else PollWatch()
        finally:
            for task in (reader, waiter):
                task.cancel()
            await asyncio.gather(reader, waiter, return_exceptions=True)

    async def _read(self, client: AsyncClient, task_id: str, opened: asyncio.Event) -> None:
        last: str | None = None  # the last event id seen: a reconnection resumes after it, losing nothing
        try:
            while True:  # the server ends each response after a while (MCS_API_READ_TIMEOUT): reconnect
                headers = {"Last-Event-ID": last} if last is not None else {}
                async with client.http.stream(
                    "GET", "/v1/events", params={"task": task_id}, headers=headers, timeout=SSE_TIMEOUT
                ) as resp:
                    if resp.status_code != 200:
                        raise McsUnavailable(f"GET /v1/events answered {resp.status_code}")
                    data: list[str] = []
                    async for line in resp.aiter_lines():
                        if line.startswith(": connected"):
                            opened.set()  # the server now sends every event from here on
                        elif line.startswith("id:"):
                            last = line[3:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            self.events.append(json.loads("\n".join(data)))
                            data = []
                            self.changed.set()
        except (httpx.HTTPError, McsUnavailable, ValueError) as exc:
            log.info("event stream for wait_task unavailable, polling: %s", exc, extra={"action": "mcp_wait_poll"})
        self.broken = True
        opened.set()
        self.changed.set()

    async def next(self, timeout: float) -> list[dict[str, Any]] | None:
        if self.broken and not self.events:
            return await PollWatch().next(timeout)
        try:
            async with asyncio.timeout(timeout):
                await self.changed.wait()
        except TimeoutError:
            return None
        taken = list(self.events)
        self.events.clear()
        self.changed.clear()
        return taken


def tool_error(code: str, message: str) -> CallToolResult:
    """A tool error the model can read and act on: `code: message`, and the same as structured content."""
    return CallToolResult(
        content=[TextContent(type="text", text=f"{code}: {message}")],
        structured_content={"error": {"code": code, "message": message}},
        is_error=True,
    )


def _event_text(event: dict[str, Any]) -> str:
    """One task event as a short line for a progress notification."""
    detail = event.get("detail")
    if event.get("kind") == "progress" and isinstance(detail, dict):
        pct = detail.get("percent")
        text = str(detail.get("message") or "")
        return f"progress{f' {pct:g}%' if isinstance(pct, int | float) else ''}: {text}".rstrip(": ")
    actor = event.get("actor")
    return f"{event.get('kind')}{f' by {actor}' if actor else ''}"  # (its `state` is the task's when read)


def build_server(backend: Backend) -> MCPServer[Any]:
    """The MCP server with every MCS tool, acting through `backend`."""
    server: MCPServer[Any] = MCPServer(SERVER_NAME, version=__version__, instructions=INSTRUCTIONS)

    async def call(tool: str, ctx: Context, fn: Callable[[AsyncClient], Awaitable[Any]]) -> CallToolResult:
        """Run one tool's MCS calls; an MCS error is the tool's error result, never an exception."""
        outcome = "error"
        try:
            async with backend.client(ctx) as c:
                result: dict[str, Any] = await fn(c)
            outcome = "ok"
            text = json.dumps(result, indent=2, ensure_ascii=False)
            return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=result)
        except McsApiError as exc:
            return tool_error(exc.code, exc.message)
        except McsUnavailable as exc:
            return tool_error("unavailable", str(exc))
        finally:
            metrics.mcp_tool_calls.labels(tool, outcome).inc()

    # ------------------------------------------------------------ orchestrating

    @server.tool(annotations=WRITE)
    async def submit_task(
        ctx: Context,
        type: Annotated[TaskType, Field(description="what kind of work; the capability needed, unless given")],
        payload: Annotated[Any, Field(description="any JSON value the agent gets")] = None,
        route: Annotated[
            Route | None,
            Field(
                description='"any" (one capable online agent, the default), "all" (fan out: one child task '
                "per capable online agent; the parent ends when every child has) or an agent's name"
            ),
        ] = None,  # fmt: skip
        aggregate: Annotated[
            Literal["collect", "consensus"] | None,
            Field(
                description='with route "all": "collect" the children\'s results (default) or merge their '
                'review findings into a "consensus"'
            ),
        ] = None,  # fmt: skip
        capabilities: Annotated[
            list[Capability] | None, Field(max_length=100, description="what an agent needs (default: [type])")
        ] = None,
        priority: Literal["urgent", "normal", "low"] | None = None,
        max_retries: Annotated[int | None, Field(ge=0, le=100)] = None,
        claim_ttl: Annotated[float | None, Field(gt=0, description="seconds an agent's lease lasts")] = None,
        depends_on: Annotated[
            list[str] | None, Field(max_length=100, description="task ids that must complete first")
        ] = None,
        run_if: Literal["success", "always"] | None = None,
        delay: Annotated[float | None, Field(ge=0, description="seconds before it may run")] = None,
        run_at: Annotated[str | None, Field(description="RFC 3339 time before which it does not run")] = None,
        idempotency_key: Annotated[
            str | None, Field(max_length=200, description="the same key and body return the first task again")
        ] = None,
    ) -> ToolResult:
        """Submit a task to the mesh; returns it (its `id` for wait_task). Nothing runs it until a capable
        agent is online: list_agents shows who is."""
        return await call(
            "submit_task",
            ctx,
            lambda c: c.submit(
                type,
                payload,
                route=route,
                aggregate=aggregate,
                capabilities=capabilities,
                priority=priority,
                max_retries=max_retries,
                claim_ttl=claim_ttl,
                depends_on=depends_on,
                run_if=run_if,
                delay=delay,
                run_at=run_at,
                idempotency_key=idempotency_key,
            ),
        )

    @server.tool(annotations=WRITE)
    async def submit_workflow(
        ctx: Context,
        name: Annotated[str, Field(min_length=1, max_length=64, description="the workflow's name")],
        steps: Annotated[
            list[WorkflowStep],
            Field(min_length=1, max_length=200, description="tasks by step id; depends_on names earlier steps"),
        ],
        inputs: Annotated[Any, Field(description="any JSON value every step sees as inputs.workflow")] = None,
    ) -> ToolResult:
        """Submit a workflow (a DAG of steps); returns `{id, name, state, steps: {step id: task}}`. Each
        step runs once the steps it depends on completed, with their results in its payload's inputs."""
        body = [s.model_dump(exclude_none=True) for s in steps]
        return await call("submit_workflow", ctx, lambda c: c.submit_workflow(name, body, inputs=inputs))

    @server.tool(annotations=READ)
    async def get_task(ctx: Context, task_id: TaskId) -> ToolResult:
        """A task: state, assigned_to, result or error, children (of a fan-out), timestamps."""
        return await call("get_task", ctx, lambda c: c.get_task(task_id))

    @server.tool(annotations=READ)
    async def wait_task(
        ctx: Context,
        task_id: TaskId,
        timeout: Annotated[
            float, Field(ge=0, le=WAIT_MAX, description="seconds to wait at most (then the current state)")
        ] = WAIT_DEFAULT,
    ) -> ToolResult:
        """Wait until the task is completed, failed or canceled, or `timeout` seconds passed; returns
        `{done, task}` with the task as it is then. Sends progress notifications while it waits. Over
        HTTP (/mcp) one wait lasts at most two thirds of the api's read timeout (60 s): call it again."""

        cap = backend.max_wait(ctx)
        limit = timeout if cap is None else max(min(timeout, cap), 0.0)

        async def wait(c: AsyncClient) -> dict[str, Any]:
            started = noted = time.monotonic()
            sent = -1.0

            async def notify(message: str) -> None:
                nonlocal sent, noted
                noted = time.monotonic()
                sent = max(sent + 0.001, noted - started)  # progress must increase
                await ctx.report_progress(round(sent, 3), limit, message)

            async with backend.watch(c, task_id) as watch:
                task: dict[str, Any] = await c.get_task(task_id)
                while task["state"] not in TERMINAL:
                    left = limit - (time.monotonic() - started)
                    if left <= 0:
                        break
                    events = await watch.next(min(left, WAIT_HEARTBEAT))
                    for event in events or []:
                        await notify(_event_text(event))
                    task = await c.get_task(task_id)
                    if task["state"] not in TERMINAL and time.monotonic() - noted >= WAIT_HEARTBEAT:
                        await notify(f"still {task['state']}")  # a client may count this as alive
            return {"done": task["state"] in TERMINAL, "task": task}

        return await call("wait_task", ctx, wait)

    @server.tool(annotations=READ)
    async def list_tasks(
        ctx: Context,
        state: TaskState | None = None,
        type: Annotated[str | None, Field(max_length=100)] = None,
        agent: Annotated[str | None, Field(max_length=64, description="assigned to this agent")] = None,
        parent: Annotated[str | None, Field(max_length=64, description="children of this fan-out task")] = None,
        workflow: Annotated[str | None, Field(max_length=64, description="steps of this workflow")] = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Field(max_length=200, description="next_cursor of the page before")] = None,
    ) -> ToolResult:
        """Tasks, newest first: `{tasks, next_cursor}`."""
        filters = {"state": state, "type": type, "agent": agent, "parent": parent, "workflow": workflow}
        return await call("list_tasks", ctx, lambda c: c.list_tasks(limit=limit, cursor=cursor, **filters))

    @server.tool(annotations=DESTRUCTIVE)
    async def cancel_task(ctx: Context, task_id: TaskId) -> ToolResult:
        """Cancel a task that has not ended (its children too); the submitter or the admin."""
        return await call("cancel_task", ctx, lambda c: c.cancel(task_id))

    @server.tool(annotations=READ)
    async def list_agents(ctx: Context) -> ToolResult:
        """Every agent: name, status (online/offline), capabilities, last_seen."""

        async def agents(c: AsyncClient) -> dict[str, Any]:
            return {"agents": await c.list_agents()}

        return await call("list_agents", ctx, agents)

    # ------------------------------------------------------------ shared memory

    @server.tool(annotations=READ)
    async def memory_get(ctx: Context, namespace: Namespace, key: Key) -> ToolResult:
        """A key's value with its version, tags, expires_at, updated_by (not_found when absent)."""
        return await call("memory_get", ctx, lambda c: c.mem_get(namespace, key))

    @server.tool(annotations=WRITE)
    async def memory_put(
        ctx: Context,
        namespace: Namespace,
        key: Key,
        value: Annotated[Any, Field(description="any JSON value")],
        ttl: Annotated[float | None, Field(gt=0, description="seconds until it expires")] = None,
        tags: Annotated[list[str] | None, Field(max_length=20)] = None,
        if_match: Annotated[
            int | None, Field(ge=1, description="write only if the key is at this version (else precondition_failed)")
        ] = None,
    ) -> ToolResult:
        """Write a key; returns its new version and metadata."""
        return await call(
            "memory_put", ctx, lambda c: c.mem_put(namespace, key, value, ttl=ttl, tags=tags, if_match=if_match)
        )

    @server.tool(annotations=READ)
    async def memory_list(
        ctx: Context,
        namespace: Namespace,
        prefix: Annotated[str | None, Field(max_length=512)] = None,
        tag: Annotated[str | None, Field(max_length=64)] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Field(max_length=1000)] = None,
    ) -> ToolResult:
        """Keys of a namespace (without values): `{items, next_cursor}`."""
        return await call(
            "memory_list", ctx, lambda c: c.mem_list(namespace, prefix=prefix, tag=tag, limit=limit, cursor=cursor)
        )

    @server.tool(annotations=DESTRUCTIVE)
    async def memory_delete(
        ctx: Context,
        namespace: Namespace,
        key: Key,
        if_match: Annotated[int | None, Field(ge=1, description="delete only if at this version")] = None,
    ) -> ToolResult:
        """Delete a key."""

        async def delete(c: AsyncClient) -> dict[str, Any]:
            await c.mem_delete(namespace, key, if_match=if_match)
            return {"deleted": True, "namespace": namespace, "key": key}

        return await call("memory_delete", ctx, delete)

    # ------------------------------------------------------------ working as an agent

    @server.tool(annotations=WRITE)
    async def claim_next(
        ctx: Context,
        wait: Annotated[float, Field(ge=0, le=30, description="seconds to wait for work")] = 0,
    ) -> ToolResult:
        """(Agent credentials) Claim the next task for this agent: `{task}` with its claim_token, or
        `{task: null}` when there is none. Finish it with complete_task or fail_task."""

        async def claim(c: AsyncClient) -> dict[str, Any]:
            return {"task": await c.claim_next(wait=wait)}

        return await call("claim_next", ctx, claim)

    @server.tool(annotations=WRITE)
    async def complete_task(
        ctx: Context,
        task_id: TaskId,
        claim_token: ClaimToken,
        result: Annotated[Any, Field(description="any JSON value: the task's result")] = None,
    ) -> ToolResult:
        """(Agent credentials) Complete a task this agent claimed."""
        return await call("complete_task", ctx, lambda c: c.complete(task_id, claim_token, result))

    @server.tool(annotations=WRITE)
    async def fail_task(
        ctx: Context,
        task_id: TaskId,
        claim_token: ClaimToken,
        error: Annotated[str, Field(min_length=1, max_length=10_000, description="what went wrong")],
        retryable: Annotated[bool, Field(description="false: fail for good, no retry")] = True,
    ) -> ToolResult:
        """(Agent credentials) Fail a task this agent claimed: MCS retries it with backoff unless retryable
        is false or its retries are spent."""
        return await call("fail_task", ctx, lambda c: c.fail(task_id, claim_token, error, retryable=retryable))

    return server


class ClientBackend:
    """One client for the whole server (stdio: one user), and the event stream over HTTP for waits."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def max_wait(self, ctx: Context) -> float | None:
        return None  # stdio: no read timeout between the client and this process

    @contextlib.asynccontextmanager
    async def client(self, ctx: Context) -> AsyncIterator[AsyncClient]:
        yield self._client

    def watch(self, client: AsyncClient, task_id: str) -> contextlib.AbstractAsyncContextManager[Watch]:
        return SseWatch.open(client, task_id)


async def run_stdio(client: AsyncClient) -> None:
    """Serve the tools on stdin/stdout until the client closes them."""
    try:
        await build_server(ClientBackend(client)).run_stdio_async()
    finally:
        await client.aclose()
