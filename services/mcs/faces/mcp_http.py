"""The MCP server at POST /mcp on the api (streamable HTTP, stateless), in front of the Quart app.

mcs.api.faces routes requests for exactly `/mcp` here (`start`, on the first one) and everything else to
Quart as before (so /openapi.json and every other route are untouched); here they go to the `mcp` SDK's
Starlette app. Each /mcp request is authenticated as /a2a authenticates (`Authorization: Bearer <admin
token>`, `Bearer NAME:SECRET` for an agent, or `X-Agent-ID` + `X-Agent-Secret`; an agent's secret checked
against the stored hash: mcs.api.auth.face_credentials) before the SDK sees it: 401 with the api's JSON
error otherwise. A tool then acts with that caller's credentials: its MCS calls go straight into the
Quart app in process (httpx's ASGI transport, no socket), where the api checks and audits them like any
other request.

Stateless (no MCP session kept between requests): nothing to expire, and any api replica can answer. The
SDK's session manager runs from the first /mcp request until the api stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import httpx
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from quart import Quart

from mcs import metrics
from mcs.api.auth import FACE_CREDENTIALS, face_credentials, verify
from mcs.api.events import EventHub
from mcs.api.faces import ARRIVED, MCP_PATH
from mcs.client import AsyncClient
from mcs.config import Settings
from mcs.errors import ApiError, PayloadTooLarge, StoreError, Unauthorized
from mcs.faces.mcp_server import PollWatch, Watch, build_server

PATH = MCP_PATH
CALLER = "mcs.caller_headers"  # the ASGI scope key holding the verified caller's credential headers
INTERNAL_URL = "http://mcs.internal"  # the base URL of in-process calls (never resolved: no socket)


class _CallerClient(AsyncClient):
    """An AsyncClient sending one caller's credentials over the api's shared in-process HTTP client."""

    def __init__(self, http: httpx.AsyncClient, headers: Mapping[str, str]) -> None:  # noqa: D107
        self.url = INTERNAL_URL
        self.agent_id = headers.get("x-agent-id")
        self.retries = 0  # in process: there is no connection to retry
        self.http = http
        self._caller = dict(headers)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return await super().request(method, path, json=json, params=params, headers=self._caller | dict(headers or {}))

    async def aclose(self) -> None:
        pass  # the shared client belongs to the app


class HubWatch:
    """A task's changes from the api's own event hub (no HTTP stream needed in process)."""

    def __init__(self, hub: EventHub, task_id: str, viewer: str | None) -> None:
        self.hub, self.task_id, self.viewer = hub, task_id, viewer
        self.sub: Any = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Watch]:
        self.sub, _ = await self.hub.subscribe()
        try:
            yield self
        finally:
            self.hub.unsubscribe(self.sub)

    async def next(self, timeout: float) -> list[dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        while True:
            if self.sub.dropped:  # fell behind (a flood of events elsewhere): re-read the task now and then
                return await PollWatch().next(max(deadline - time.monotonic(), 0))
            if not self.sub.pending:
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                        await self.sub.wake.wait()
                except TimeoutError:
                    return None
            mine = [
                e.as_json()
                for e in self.sub.take()
                if e.stream == "task" and e.subject == self.task_id and e.visible_to(self.viewer)
            ]
            if mine:
                return mine


class ApiBackend:
    """Tools act as the caller of each /mcp request, through the Quart app in process."""

    def __init__(self, app: Quart, settings: Settings) -> None:
        self.app = app
        self.http: httpx.AsyncClient | None = None
        # Hypercorn's read timeout counts while a response streams: a wait ends before it would cut it.
        self.stream_max = settings.events_stream_max

    def max_wait(self, ctx: Context) -> float | None:
        """What is left of the request's budget: the read timeout counts from its arrival, which the first
        /mcp request reaches only after the face's start-up (mcs.api.faces stamps ARRIVED)."""
        request = ctx.request_context.request
        scope = getattr(request, "scope", None) or {}
        arrived = scope.get(ARRIVED)
        if self.stream_max is None:  # no read timeout
            return None
        spent = time.monotonic() - arrived if arrived is not None else 0.0
        return self.stream_max - spent

    def _caller(self, ctx: Context) -> dict[str, str]:
        request = ctx.request_context.request
        scope = getattr(request, "scope", None) or {}
        caller: dict[str, str] | None = scope.get(CALLER)
        if caller is None:  # cannot happen behind `mount`'s check; refuse rather than act as nobody
            raise Unauthorized(FACE_CREDENTIALS)
        return caller

    @contextlib.asynccontextmanager
    async def client(self, ctx: Context) -> AsyncIterator[AsyncClient]:
        assert self.http is not None, "the api is not serving"
        yield _CallerClient(self.http, self._caller(ctx))

    def watch(self, client: AsyncClient, task_id: str) -> contextlib.AbstractAsyncContextManager[Watch]:
        viewer = client.agent_id  # None: the admin, who sees every event
        return HubWatch(self.app.config["MCS_EVENTS"], task_id, viewer).open()


async def authenticate(app: Quart, headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's credential headers once verified (Unauthorized otherwise): the forms /a2a takes
    (`face_credentials`), as the headers the api's routes take for the in-process calls."""
    settings: Settings = app.config["MCS_SETTINGS"]
    creds = face_credentials(headers, settings.admin_token)
    if creds.is_admin:
        return {"authorization": f"Bearer {settings.admin_token}"}
    await app.config["MCS_DB"].read(verify, creds)
    return {"x-agent-id": creds.name, "x-agent-secret": creds.secret}


def _decoded(scope: Mapping[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def start(app: Quart, quart_asgi: Any) -> McpFace:
    """The MCP face at /mcp in front of `app`, serving: mcs.api.faces starts it on the first request."""
    face = McpFace(app, quart_asgi)
    await face.open()
    return face


class McpFace:
    """ASGI for /mcp (see the module's docstring): auth, then the SDK's streamable-HTTP app."""

    def __init__(self, app: Quart, quart_asgi: Any) -> None:
        settings: Settings = app.config["MCS_SETTINGS"]
        # The SDK logs each stateless request's end at INFO: one line per request costs more than the request.
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
        self.app = app
        self.quart_asgi = quart_asgi
        self.backend = ApiBackend(app, settings)
        self.server = build_server(self.backend)
        self.mcp_app = self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            max_request_body_size=settings.max_body_bytes,
            # Every request carries a bearer token or agent secret, which a page in a browser cannot add: the
            # SDK's Host/Origin allow-list (DNS-rebinding protection) would only refuse tunnels and proxies.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.stop = asyncio.Event()
        self.runner: asyncio.Task[None] | None = None
        self.http: httpx.AsyncClient | None = None

    async def open(self) -> None:
        # The session manager's task group lives in a task of its own, entered and left there: the request
        # that started the face may end long before the api stops.
        started = asyncio.Event()

        async def run_sessions() -> None:
            async with self.server.session_manager.run():
                started.set()
                await self.stop.wait()

        self.runner = asyncio.create_task(run_sessions(), name="mcp-sessions")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({self.runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        if self.runner.done():
            self.runner.result()  # it failed to start: say why
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=cast(Any, self.quart_asgi)),
            base_url=INTERNAL_URL,
            trust_env=False,
            timeout=None,
        )
        self.backend.http = self.http

    async def aclose(self) -> None:
        self.backend.http = None
        self.stop.set()
        if self.runner is not None:
            await asyncio.gather(self.runner, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status = 500

        async def counted(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        method = scope["method"] if scope["method"] in ("GET", "POST", "DELETE") else "other"
        try:
            headers = _decoded(scope)
            try:
                caller = await authenticate(self.app, headers)
                _check_length(headers, self.app.config["MCS_SETTINGS"].max_body_bytes)
            except (ApiError, StoreError) as exc:
                await _refuse(counted, exc)
                return
            await self.mcp_app(dict(scope) | {CALLER: caller}, receive, counted)
        finally:
            metrics.http_requests.labels(method, PATH, str(status)).inc()
            metrics.http_duration.labels(method, PATH).observe(time.perf_counter() - started)


def _check_length(headers: Mapping[str, str], limit: int) -> None:
    """A declared body over MCS_MAX_BODY_BYTES is the api's JSON 413 (the SDK's own, for a body that
    declares no length, is plain text)."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")


async def _refuse(send: Any, exc: ApiError | StoreError) -> None:
    message = exc.message if isinstance(exc, ApiError) or type(exc) is not StoreError else "the database is busy"
    body = json.dumps({"error": {"code": exc.code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="mcs"'))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
