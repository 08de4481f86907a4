"""The faces the protocols' SDKs serve in front of the Quart routes: MCP at /mcp (mcs.faces.mcp_http) and
A2A at /a2a with its agent card (mcs.a2a.face). Each is imported and started on its first request, in a
thread so the event loop never waits on the import: the two SDKs (starlette, protobuf, pydantic models,
opentelemetry ...) cost the api about 40 MiB, paid only by a mesh that uses them. Both are closed with
the api, before its store."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from quart import Quart

MCP_PATH = "/mcp"
A2A_RPC_PATH = "/a2a"
ARRIVED = "mcs.arrived"  # the scope key: time.monotonic() when the request reached the api, before any start-up
A2A_CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")  # the second: 0.2/0.3 clients

Asgi = Callable[[Any, Any, Any], Awaitable[None]]


class Face(Protocol):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None: ...

    async def aclose(self) -> None: ...


# path -> the module whose `start(app, quart_asgi)` makes the face that answers it
ROUTES = {
    MCP_PATH: "mcs.faces.mcp_http",
    A2A_RPC_PATH: "mcs.a2a.face",
    **dict.fromkeys(A2A_CARD_PATHS, "mcs.a2a.face"),
}


class LazyFaces:
    """ASGI: a face's paths to the face (started on first use), everything else to Quart."""

    def __init__(self, app: Quart, inner: Asgi) -> None:
        self.app = app
        self.inner = inner
        self.started: dict[str, Face] = {}
        self.lock = asyncio.Lock()
        self.closed = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        module = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if module is None:
            await self.inner(scope, receive, send)
            return
        scope[ARRIVED] = time.monotonic()
        face = self.started.get(module) or await self._start(module)
        await face(scope, receive, send)

    async def _start(self, module: str) -> Face:
        async with self.lock:
            face = self.started.get(module)
            if face is None:
                if self.closed:
                    raise RuntimeError("the api is shutting down")
                loaded = await asyncio.to_thread(importlib.import_module, module)
                face = self.started[module] = await loaded.start(self.app, self.inner)
            return face

    async def aclose(self) -> None:
        async with self.lock:
            self.closed = True
            faces, self.started = list(self.started.values()), {}
        for face in faces:
            await face.aclose()


def mount(app: Quart) -> LazyFaces:
    faces = LazyFaces(app, app.asgi_app)
    app.asgi_app = faces  # type: ignore[method-assign,assignment]
    return faces
