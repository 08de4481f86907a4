"""The agent's webhook receiver: a tiny ASGI app served by Hypercorn on one socket.

It accepts `POST` (any path) signed per Standard Webhooks with the agent's `webhook_secret`, answers 204 at
once and hands the task to the agent. It answers:

- 400 when the webhook headers are missing or malformed, or the body is not the JSON MCS sends;
- 401 when the timestamp is more than five minutes from our clock or no signature matches;
- 503 while the agent shuts down (the notifier retries; the task is rerouted if nobody claims it).

A rejected webhook never leads to a claim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from mcs.webhooks import TOLERANCE, InvalidSignature, verify

log = logging.getLogger("mcs.agent")

MAX_BODY = 2 * 1024 * 1024  # bytes; a task.assigned body is the task as the API shows it
REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
GRACEFUL_TIMEOUT = 2.0  # seconds Hypercorn waits for open connections when the receiver stops

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`, or `:port` for all interfaces) -> (host, port). ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ValueError(f"listen address must be HOST:PORT, not {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class WebhookApp:
    """The ASGI app. `on_task(task, sent_at)` is called for every genuine `task.assigned` webhook (`sent_at`: its
    signed webhook-timestamp, the server's clock when it was sent), `on_cancel(task)`
    for every genuine `task.canceled` one (a task this agent holds was canceled, e.g. with its workflow)."""

    def __init__(
        self,
        *,
        webhook_secret: str,
        on_task: Callable[[dict[str, Any], float], None],
        on_cancel: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.webhook_secret = webhook_secret
        self.on_task = on_task
        self.on_cancel = on_cancel
        self.closing = False
        self.accepted = 0
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, why = await self._handle(scope, receive)
        body = b"" if status == 204 else json.dumps({"error": why}).encode()
        headers = [] if status == 204 else [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, str]:
        if scope["method"] != "POST":
            return 405, "webhooks are POSTed"
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if len(raw) > MAX_BODY:
                return 413, "body too large"
            if not message.get("more_body"):
                break
        if self.closing:
            return 503, "agent is shutting down"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
        if missing or not headers.get("webhook-timestamp", "").strip().isdigit():
            self.rejected += 1
            log.warning("rejected a webhook: missing or malformed headers", extra={"action": "reject_webhook"})
            return 400, "missing or malformed webhook headers"
        try:
            body = raw.decode()
            verify(secret=self.webhook_secret, headers=headers, body=body)
        except (InvalidSignature, UnicodeDecodeError) as exc:
            self.rejected += 1
            log.warning(
                "rejected a webhook: %s: check MCS_WEBHOOK_SECRET (the agent's webhook_secret, shown by "
                "`mcs admin agent create` or `rotate`; rotating changes it) and this machine's clock",
                exc,
                extra={"action": "reject_webhook"},
            )
            return 401, f"{exc} (timestamps may differ from ours by {TOLERANCE} s at most)"
        try:
            event = json.loads(body)
            kind, task = event.get("type"), event.get("data", {}).get("task")
        except (ValueError, AttributeError):
            return 400, "body is not a JSON webhook event"
        if kind not in ("task.assigned", "task.canceled"):
            return 204, ""  # an event this agent does not act on; answering 2xx stops retries
        if not isinstance(task, dict) or not isinstance(task.get("id"), str):
            return 400, f"{kind} without a task id"
        self.accepted += 1
        if kind == "task.assigned":
            self.on_task(task, float(headers["webhook-timestamp"]))
        elif self.on_cancel is not None:
            self.on_cancel(task)
        return 204, ""


class Receiver:
    """Serves a WebhookApp on `host:port` (port 0: the kernel picks one; see `.port`)."""

    def __init__(self, app: WebhookApp, *, host: str, port: int) -> None:
        self.app = app
        self.host, self.port = host, port
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket from here on
        config.accesslog = None
        errorlog = logging.getLogger("mcs.agent.receiver")
        errorlog.setLevel(logging.WARNING)  # Hypercorn's "Running on ... (CTRL + C to quit)" is not ours to say
        config.errorlog = errorlog
        config.graceful_timeout = GRACEFUL_TIMEOUT
        self._task = asyncio.create_task(serve(self.app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
