"""The agent runtime: registration, the webhook receiver or the pull loop, leases, results, shutdown."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mcs.agent.receiver import Receiver, WebhookApp, parse_listen
from mcs.client import (
    DEFAULT_URL,
    AsyncClient,
    ConflictError,
    ForbiddenError,
    McsApiError,
    McsUnavailable,
    NotFoundError,
    UnprocessableError,
)
from mcs.errors import ConfigError
from mcs.process import network_namespace

log = logging.getLogger("mcs.agent")

LOOPBACK_HOSTS = ("localhost", "::1")


def _is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0]
    host = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")


HEARTBEAT_INTERVAL = 240.0  # seconds between registrations (each is also the heartbeat)
REGISTER_TTL = 300.0  # seconds MCS keeps the agent online after each registration
PULL_WAIT = 10.0  # seconds one pull-mode claim waits on the server for work (the API allows 30)
SHUTDOWN_GRACE = 30.0  # seconds running handlers get to finish on shutdown before their tasks are released
EXTEND_FRACTION = 1 / 3  # extend the lease after this fraction of it has passed
MIN_EXTEND_INTERVAL = 0.05  # seconds
REPORT_PATIENCE = 120.0  # seconds to keep trying to report a result while MCS cannot be reached
BACKOFF_MAX = 30.0  # seconds between attempts while MCS cannot be reached
OFFLINE_TTL = 1.0  # seconds: the registration sent on shutdown, so MCS stops offering work at once
SEEN_CLAIMS_MAX = 4096  # claim tokens remembered, so a webhook delivered twice runs its task once


def _transient(exc: McsUnavailable | McsApiError) -> bool:
    """MCS unreachable, or saying it is busy right now (503, a proxy's 502/504, 429), or that the task changed
    under a concurrent change and the same call should be tried again (409 task_changed): worth retrying."""
    if isinstance(exc, McsUnavailable):
        return True
    return exc.status in (429, 502, 503, 504) or (exc.status == 409 and exc.code == "task_changed")


class PermanentError(Exception):
    """Raise it from a handler to fail the task for good: MCS will not retry it."""


class RetryableError(Exception):
    """Raise it from a handler for an expected, passing failure (a busy upstream): the task fails retryably,
    like with any other exception, but the agent logs one line instead of a traceback."""


@dataclass(frozen=True, kw_only=True)
class Task:
    """A claimed task as a handler sees it. `raw` is the API's whole JSON for the task."""

    id: str
    type: str
    payload: Any
    attempts: int
    priority: str
    max_retries: int = 0
    claim_ttl: float = 0.0
    parent_id: str | None = None
    capabilities: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)  # its dependencies' results, by step or task id
    workflow_id: str | None = None
    step_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # Set by the runtime for the claimed task: sends progress (see `progress`).
    reporter: Callable[[str | None, float | None], None] | None = field(default=None, repr=False, compare=False)

    def progress(self, message: str | None = None, percent: float | None = None) -> None:
        """Report how far the handler got (`percent` 0-100, a short `message`): a `progress` event on the task,
        seen live by `mcs watch`. Returns at once, from a sync handler's thread or an async handler; it is
        sent in the background, and when reports come faster than they can be sent only the latest is sent.
        Outside the runtime (a Task built by hand, in a unit test) it does nothing."""
        if self.reporter is not None:
            self.reporter(message, percent)

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Task:
        public = {k: v for k, v in body.items() if k != "claim_token"}
        return cls(
            id=body["id"],
            type=body["type"],
            payload=body.get("payload"),
            attempts=int(body.get("attempts") or 0),
            priority=body.get("priority") or "normal",
            max_retries=int(body.get("max_retries") or 0),
            claim_ttl=float(body.get("claim_ttl") or 0),
            parent_id=body.get("parent_id"),
            capabilities=tuple(body.get("capabilities") or ()),
            inputs=body.get("inputs") or {},
            workflow_id=body.get("workflow_id"),
            step_id=body.get("step_id"),
            raw=public,
        )


Handler = Callable[[Task], Any]  # returns a JSON value, or an awaitable of one

PROGRESS_FLUSH_TIMEOUT = 5.0  # seconds the last progress report may take before the result is reported


class _ProgressReporter:
    """Sends one task's progress reports from any thread, one request at a time, latest wins."""

    def __init__(self, client: AsyncClient, task_id: str, token: str, agent: str) -> None:
        self.client = client
        self.task_id = task_id
        self.token = token
        self.agent = agent
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self._pending: tuple[str | None, float | None] | None = None
        self._sender: asyncio.Task[None] | None = None

    def __call__(self, message: str | None, percent: float | None) -> None:
        if threading.get_ident() == self.loop_thread:
            self._kick(message, percent)
            return
        try:
            self.loop.call_soon_threadsafe(self._kick, message, percent)
        except RuntimeError:
            pass  # the loop is gone: the agent stopped

    def _kick(self, message: str | None, percent: float | None) -> None:
        self._pending = (message, percent)
        if self._sender is None or self._sender.done():
            self._sender = self.loop.create_task(self._send())

    async def _send(self) -> None:
        while self._pending is not None:
            message, percent = self._pending
            self._pending = None
            try:
                await self.client.progress(self.task_id, self.token, message=message, percent=percent)
            except (McsApiError, McsUnavailable) as exc:
                log.warning("agent %s: progress on %s not recorded: %s", self.agent, self.task_id, exc)

    async def flush(self) -> None:
        """Wait (a little) for the reports still being sent, so they come before the result."""
        if self._sender is not None and not self._sender.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), PROGRESS_FLUSH_TIMEOUT)
            except TimeoutError:
                self._sender.cancel()
                await asyncio.gather(self._sender, return_exceptions=True)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _pushed_lease_left(claimed: Mapping[str, Any], sent_at: float) -> float | None:
    """What is left of a lease MCS started at assignment (claim_on_push) when its webhook was sent: both
    times are the server's clock, so clock skew does not matter (a retried webhook may come late)."""
    try:
        end = datetime.fromisoformat(str(claimed["lease_expires_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None
    return max(end - sent_at, MIN_EXTEND_INTERVAL)


def _lease_seconds(claimed: Mapping[str, Any]) -> float:
    """How long the lease just granted lasts, from the server's own clock (so clock skew does not matter)."""
    ttl = claimed.get("claim_ttl")
    if isinstance(ttl, int | float) and ttl > 0:
        return float(ttl)
    try:
        end = datetime.fromisoformat(str(claimed["lease_expires_at"]).replace("Z", "+00:00")).timestamp()
        return max(end - time.time(), 1.0)
    except (KeyError, ValueError):
        return REGISTER_TTL


async def _run_in_thread(fn: Callable[[Task], Any], task: Task) -> Any:
    """Run a sync handler on a daemon thread: a handler stuck forever must not keep the process alive."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            outcome = (True, fn(task))
        except BaseException as exc:  # handed to the event loop, which decides
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop is gone (the agent stopped without waiting for this handler)

    threading.Thread(target=target, name=f"mcs-handler-{task.id[:8]}", daemon=True).start()
    return await future


@dataclass
class _Running:
    task: Task
    token: str
    job: asyncio.Task[Any]
    released: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: the lease is gone, or MCS canceled it
    canceled: bool = False


class Agent:
    """A Python function as a mesh agent.

        from mcs.agent import Agent, PermanentError

        def handle(task):                 # or: async def handle(task)
            return {"echo": task.payload}  # any JSON value: the task's result

        Agent(handle, capabilities=["echo"]).run()

    The handler's return value completes the task. `PermanentError` fails it for good; any other exception
    fails it retryably (MCS retries with backoff until `max_retries` is spent). While a handler runs, the
    lease is extended every third of its length. Credentials default to $MCS_AGENT_ID, $MCS_AGENT_SECRET and
    $MCS_WEBHOOK_SECRET, the server to $MCS_URL.

    `listen="host:port"` (default `127.0.0.1:0`, a free port) serves a webhook receiver and registers its
    URL (or `notify_url`, when MCS must call another address, e.g. through a proxy or tunnel);
    `listen=None` pulls instead: long-polling `claim` with `wait`, no inbound connections needed.
    `concurrency` handlers run at once at most. With webhooks the agent registers `claim_on_push` (default):
    MCS claims each task for it as it assigns it and the webhook carries the claim, so a task costs one
    request (complete), not two; against a server without it the agent claims as before; with
    `claim_on_push=False` it registers `claim_on_push: false` and claims each webhook's task itself. Pulling, each
    completion also claims the next task (`complete` with `next`), so a busy agent makes one request a task.

    A handler object with an async `aclose()` method is closed when the agent stops.

    `run()` blocks until SIGINT/SIGTERM; async code uses `await agent.serve()` / `await agent.stop()` or
    `async with agent: ...`. Shutdown stops taking work, tells MCS the agent is going offline, lets running
    handlers finish for up to `shutdown_grace` seconds, then releases what is still running (a retryable
    failure, so MCS hands the task out again).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        capabilities: list[str] | tuple[str, ...],
        url: str | None = None,
        name: str | None = None,
        secret: str | None = None,
        webhook_secret: str | None = None,
        listen: str | None = "127.0.0.1:0",
        notify_url: str | None = None,
        concurrency: int = 1,
        ttl: float = REGISTER_TTL,
        heartbeat: float = HEARTBEAT_INTERVAL,
        shutdown_grace: float = SHUTDOWN_GRACE,
        pull_wait: float = PULL_WAIT,
        claim_on_push: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        e = os.environ if env is None else env
        if not callable(handler):
            raise ConfigError(f"the handler must be callable, not {type(handler).__name__}")
        self.handler = handler
        self.capabilities = list(dict.fromkeys(capabilities))
        if not self.capabilities:
            raise ConfigError("an agent needs at least one capability")
        self.url = (url or e.get("MCS_URL") or DEFAULT_URL).rstrip("/")
        self.name = name or e.get("MCS_AGENT_ID") or ""
        self.secret = secret or e.get("MCS_AGENT_SECRET") or ""
        if not self.name or not self.secret:
            raise ConfigError("agent credentials missing: set MCS_AGENT_ID and MCS_AGENT_SECRET (or name=, secret=)")
        self.webhook_secret = webhook_secret or e.get("MCS_WEBHOOK_SECRET") or ""
        self.listen = listen
        if listen is not None:
            try:
                self._host, self._port = parse_listen(listen)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if not self.webhook_secret:
                raise ConfigError(
                    "MCS_WEBHOOK_SECRET is not set: it is needed to verify webhooks (or pull instead: listen=None)"
                )
        self._notify_url = notify_url
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.ttl, self.heartbeat, self.shutdown_grace, self.pull_wait = ttl, heartbeat, shutdown_grace, pull_wait
        self.claim_on_push = claim_on_push and listen is not None  # (a pulling agent gets no webhooks)
        self._server_claims_on_push = True  # False once an older server refused the field
        self._complete_next = True  # pull mode: complete with next (False once an older server refused it)
        self._is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__  # an object with an async __call__
        )
        self.client: AsyncClient | None = None
        self.receiver: Receiver | None = None
        # Tasks announced, with when their webhook was sent (claimed already, with push).
        self._inbox: asyncio.Queue[tuple[dict[str, Any], float]] = asyncio.Queue()
        self._pending: set[str] = set()  # task ids announced by webhook and not yet done with
        self._seen_claims: dict[str, None] = {}  # claim tokens webhooks brought (oldest first, bounded)
        self._backlog: list[dict[str, Any]] = []  # tasks claimed at start, before any webhook
        self._handoff: list[dict[str, Any]] = []  # pull mode: next tasks a completion claimed, not begun
        self._running: dict[str, _Running] = {}
        self._background: list[asyncio.Task[None]] = []
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: release running tasks now
        self._stopping = False
        self._started = False
        self._shutdown_done: asyncio.Event | None = None
        # What happened, for logs and tests.
        self.completed = 0
        self.failed = 0
        self.released = 0
        self.canceled = 0  # handlers stopped because MCS canceled their task (a task.canceled webhook)

    # ------------------------------------------------------------ lifecycle

    @property
    def pull(self) -> bool:
        return self.listen is None

    @property
    def notify_url(self) -> str | None:
        """The URL MCS calls with webhooks (None in pull mode)."""
        if self.pull:
            return None
        if self._notify_url:
            return self._notify_url
        if self.receiver is None:
            return None
        host = self._host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # listening everywhere; loopback reaches it from this machine
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.receiver.port}/"

    async def start(self) -> None:
        """Register with MCS and start taking work; returns once running (see `stop`)."""
        if self._started:
            return
        self._started = True
        self.client = AsyncClient(self.url, agent_id=self.name, agent_secret=self.secret, timeout=self.pull_wait + 20)
        try:
            if not self.pull:
                app = WebhookApp(webhook_secret=self.webhook_secret, on_task=self._announce, on_cancel=self._canceled)
                self.receiver = Receiver(app, host=self._host, port=self._port)
                await self.receiver.start()
            await self._register()
            if not self.pull:
                await self._warn_if_unreachable()
                await self._catch_up()
        except BaseException:
            await self._close_resources()
            raise
        log.info(
            "agent %s online: %s, capabilities %s, concurrency %d",
            self.name,
            "pulling" if self.pull else f"webhooks at {self.notify_url}",
            ",".join(self.capabilities),
            self.concurrency,
            extra={"action": "agent_online", "agent": self.name},
        )
        self._background.append(asyncio.create_task(self._heartbeat_loop()))
        for i in range(self.concurrency):
            worker = self._pull_worker(i) if self.pull else self._push_worker(i)
            self._background.append(asyncio.create_task(worker))

    async def serve(self) -> None:
        """Run until `stop()` is called (or the task running this is canceled), then shut down cleanly."""
        await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self._shutdown()

    async def stop(self) -> None:
        """Shut down cleanly: no new work, running handlers finish (or are released after the grace)."""
        self._stop_requested.set()
        if self._started:
            await self._shutdown()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def run(self) -> None:
        """Block and serve until SIGINT or SIGTERM, then shut down cleanly (a second signal: at once).

        When the program has set up no logging, this logs the agent's INFO lines (online, one per task) to
        stderr, so `python my_agent.py` says what it does."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s")
            logging.getLogger("httpx").setLevel(logging.WARNING)
        asyncio.run(self.serve_until_signal())

    async def serve_until_signal(self) -> None:
        """`run()` inside a running event loop (for a program that sets up more around the agent, such as
        `mcs agent mcp`'s MCP session): serve until SIGINT or SIGTERM, then shut down cleanly."""
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info("agent %s: %s, shutting down", self.name, signal.Signals(signum).name)
                self._stop_requested.set()
            else:
                log.info("agent %s: second signal, releasing running tasks now", self.name)
                self._hurry.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.serve()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _shutdown(self) -> None:
        if self._shutdown_done is not None:
            await self._shutdown_done.wait()
            return
        self._shutdown_done = asyncio.Event()
        self._stopping = True
        try:
            if self.receiver is not None:
                self.receiver.app.closing = True
            for bg in self._background:
                bg.cancel()  # workers wait for work or poll; running handlers live in their own tasks
            await asyncio.gather(*self._background, return_exceptions=True)
            self._background.clear()
            for claimed in [*self._backlog, *self._handoff]:  # claimed, never begun
                await self._release_unstarted(claimed)
            self._backlog.clear()
            self._handoff.clear()
            await self._go_offline()
            if self._running:
                log.info(
                    "agent %s: waiting up to %g s for %d running task(s)",
                    self.name,
                    self.shutdown_grace,
                    len(self._running),
                    extra={"action": "agent_draining", "agent": self.name},
                )
                running = list(self._running.values())
                all_done = asyncio.gather(*(r.job for r in running), return_exceptions=True)
                hurry = asyncio.create_task(self._hurry.wait())
                waiters: set[asyncio.Future[Any]] = {all_done, hurry}
                await asyncio.wait(waiters, timeout=self.shutdown_grace, return_when=asyncio.FIRST_COMPLETED)
                hurry.cancel()
                for r in running:
                    if not r.job.done():
                        await self._release(r)
                await all_done
            for claimed in self._handoff:  # (a completion under way as shutdown began may have claimed one)
                await self._release_unstarted(claimed)
            self._handoff.clear()
        finally:
            await self._close_resources()
            log.info("agent %s stopped", self.name, extra={"action": "agent_stopped", "agent": self.name})
            self._shutdown_done.set()

    async def _close_resources(self) -> None:
        if self.receiver is not None:
            await self.receiver.stop()
        if self.client is not None:
            await self.client.aclose()
        closer = getattr(self.handler, "aclose", None)  # a handler object may hold connections of its own
        if callable(closer):
            try:
                await closer()
            except Exception:
                log.exception("agent %s: closing the handler failed", self.name)

    # ------------------------------------------------------------ registration

    async def _warn_if_unreachable(self) -> None:
        """Say so at once when MCS cannot call our notify URL back: a loopback address only works when MCS runs
        on this host and not in a container (the classic: `docker compose up` + an agent beside it)."""
        notify = self.notify_url or ""
        if not _is_loopback_url(notify):
            return
        assert self.client is not None
        try:
            health = await self.client.health()
        except (McsApiError, McsUnavailable):
            return  # registration just worked; a health check that fails says nothing about reachability
        health = health if isinstance(health, dict) else {}
        if not _is_loopback_url(self.url):
            where: str | None = f"MCS runs on another host ({self.url})"
        elif health.get("container") and (not health.get("netns") or health.get("netns") != network_namespace()):
            where = "MCS runs in a container"  # its 127.0.0.1 is the container's own, not this machine's
        else:
            where = None
        if where:
            log.warning(
                "agent %s: %s, so it cannot reach this agent's notify URL %s (a loopback address): webhooks will "
                "fail and tasks stay assigned until their claim TTL runs out. Pull instead (--pull), or give a "
                "--notify-url that MCS can reach (e.g. this host's LAN or tailnet address, or "
                "http://host.docker.internal:PORT/ with compose's extra_hosts)",
                self.name,
                where,
                notify,
                extra={"action": "notify_unreachable", "agent": self.name},
            )

    async def _register(self) -> None:
        assert self.client is not None
        # Said on every registration, either way: the server keeps the stored setting when the field is
        # absent, so an agent that once ran with push-claim would otherwise keep it after opting out.
        push = self.claim_on_push if self.listen is not None and self._server_claims_on_push else None
        try:
            await self.client.register(
                self.capabilities,
                notify_url=self.notify_url,
                ttl=self.ttl,
                concurrency=self.concurrency,
                claim_on_push=push,
            )
        except UnprocessableError as exc:
            if push is None or "claim_on_push" not in exc.message:
                raise
            # An older server: it claims nothing for us, so we claim on each webhook as before.
            if self.claim_on_push:
                log.info("agent %s: the server does not claim on push; claiming on each webhook", self.name)
            self.claim_on_push = False
            self._server_claims_on_push = False
            await self._register()

    async def _heartbeat_loop(self) -> None:
        delay = self.heartbeat
        while True:
            await asyncio.sleep(delay)
            try:
                await self._register()
                delay = self.heartbeat
            except (McsUnavailable, McsApiError) as exc:
                delay = min(self.heartbeat, 5.0)
                log.warning("agent %s: heartbeat failed: %s", self.name, exc, extra={"action": "heartbeat_failed"})

    async def _go_offline(self) -> None:
        """One last registration without a notify URL and with a short TTL: MCS offers us nothing new."""
        try:
            assert self.client is not None
            await self.client.register(self.capabilities, notify_url=None, ttl=OFFLINE_TTL)
        except (McsUnavailable, McsApiError) as exc:
            log.warning("agent %s: could not sign off: %s", self.name, exc, extra={"action": "sign_off_failed"})

    # ------------------------------------------------------------ taking work

    def _announce(self, task: dict[str, Any], sent_at: float) -> None:
        """A verified webhook offered us this task (claimed for us already when it carries a claim_token)."""
        task_id = task["id"]
        token = task.get("claim_token")
        if isinstance(token, str):
            if token in self._seen_claims:
                return  # the same webhook again (its answer was lost): the task ran or runs already
            self._seen_claims[token] = None
            if len(self._seen_claims) > SEEN_CLAIMS_MAX:
                del self._seen_claims[next(iter(self._seen_claims))]
        if self._stopping or task_id in self._pending:
            return
        self._pending.add(task_id)
        self._inbox.put_nowait((task, sent_at))

    def _canceled(self, task: dict[str, Any]) -> None:
        """A verified task.canceled webhook: stop the handler running that task (async handlers are
        cancelled; a sync one is abandoned like a lost lease, its result ignored)."""
        running = self._running.get(task["id"])
        if running is not None and not running.stop.is_set():
            running.canceled = True
            self.canceled += 1
            running.stop.set()

    async def _push_worker(self, index: int) -> None:
        assert self.client is not None
        while self._backlog:
            claimed = self._backlog.pop(0)
            try:
                await self._run_claimed(claimed)
            finally:
                self._pending.discard(claimed["id"])
        while True:
            offered, sent_at = await self._inbox.get()
            task_id = offered["id"]
            if isinstance(offered.get("claim_token"), str):  # claimed for us at assignment (claim_on_push)
                try:
                    await self._run_claimed(offered, lease_left=_pushed_lease_left(offered, sent_at))
                finally:
                    self._pending.discard(task_id)
                continue
            try:
                claimed = await self.client.claim(task_id)
            except (ConflictError, ForbiddenError, NotFoundError) as exc:
                # Someone else has it, it was canceled, or this is a repeated webhook: normal at-least-once.
                log.info("agent %s: did not claim %s: %s", self.name, task_id, exc.message)
                self._pending.discard(task_id)
                continue
            except (McsUnavailable, McsApiError) as exc:
                log.warning("agent %s: claim of %s failed: %s", self.name, task_id, exc)
                self._pending.discard(task_id)
                continue
            try:
                await self._run_claimed(claimed)
            finally:
                self._pending.discard(task_id)

    async def _catch_up(self) -> None:
        """At start, claim what MCS assigned to this agent before a restart (those webhooks went nowhere), or
        what waits in the queue for it: up to `concurrency` tasks, run by the workers first."""
        assert self.client is not None
        for _ in range(self.concurrency):
            try:
                claimed = await self.client.claim_next(wait=0)
            except (McsUnavailable, McsApiError) as exc:
                log.warning("agent %s: catch-up claim failed: %s", self.name, exc)
                return
            if claimed is None:
                return
            self._pending.add(claimed["id"])
            self._backlog.append(claimed)

    async def _pull_worker(self, index: int) -> None:
        assert self.client is not None
        failures = 0
        while True:
            if self._handoff:  # the last completion brought the next task, claimed: no claim request
                await self._run_claimed(self._handoff.pop(0), want_next=True)
                continue
            try:
                claimed = await self.client.claim_next(wait=self.pull_wait)
                failures = 0
            except (McsUnavailable, McsApiError) as exc:
                failures += 1
                delay = min(BACKOFF_MAX, 0.5 * 2**failures)
                log.warning("agent %s: claim failed (%s); again in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            if claimed is not None:
                await self._run_claimed(claimed, want_next=True)

    # ------------------------------------------------------------ running one task

    async def _run_claimed(
        self, claimed: dict[str, Any], *, want_next: bool = False, lease_left: float | None = None
    ) -> None:
        """Run the handler on a claimed task in its own asyncio task: when shutdown cancels the worker, the
        task runs on and shutdown waits for it. `want_next`: complete it with `next`, so the answer brings
        this agent's next task, claimed (into `_handoff`). `lease_left`: what is left of the lease when it
        was handed to us, if less than a whole one (the first extension comes sooner)."""
        token = str(claimed["claim_token"])
        assert self.client is not None
        reporter = _ProgressReporter(self.client, str(claimed["id"]), token, self.name)
        task = replace(Task.from_api(claimed), reporter=reporter)
        stop = asyncio.Event()
        lease = _lease_seconds(claimed)
        first = min(lease, lease_left) if lease_left is not None else lease
        job = asyncio.create_task(self._execute(task, token, (lease, first), stop, want_next))
        self._running[task.id] = _Running(task=task, token=token, job=job, stop=stop)

        def finished(j: asyncio.Task[Any]) -> None:
            if self._running.get(task.id) is not None and self._running[task.id].job is j:
                del self._running[task.id]
            if not j.cancelled() and j.exception() is not None:
                log.error("agent %s: bug while running %s", self.name, task.id, exc_info=j.exception())

        job.add_done_callback(finished)
        await asyncio.shield(job)

    async def _execute(
        self, task: Task, token: str, lease: tuple[float, float], lease_lost: asyncio.Event, want_next: bool = False
    ) -> None:
        """Run the handler until it returns, or `lease_lost` is set (the lease is gone, or MCS canceled it)."""
        log.info(
            "agent %s: running %s (%s, attempt %d)",
            self.name,
            task.id,
            task.type,
            task.attempts,
            extra={"action": "task_started", "task_id": task.id},
        )
        started = time.monotonic()
        keeper = asyncio.create_task(self._keep_lease(task, token, lease, lease_lost))
        work: asyncio.Task[Any] = asyncio.create_task(self._invoke(task))
        lost = asyncio.create_task(lease_lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
            if isinstance(task.reporter, _ProgressReporter):
                await task.reporter.flush()
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            keeper.cancel()
            lost.cancel()
        if not work.done():
            running = self._running.get(task.id)
            if running is not None and running.canceled:
                log.warning(
                    "agent %s: MCS canceled %s; stopping its handler",
                    self.name,
                    task.id,
                    extra={"action": "task_canceled", "task_id": task.id},
                )
            else:
                log.warning(
                    "agent %s: lost the lease on %s (canceled or taken back); abandoning it",
                    self.name,
                    task.id,
                    extra={"action": "lease_lost", "task_id": task.id},
                )
            if self._is_async:
                work.cancel()
            else:
                # A thread cannot be stopped: it keeps its slot until it returns, so `concurrency` holds.
                await asyncio.wait({work})
                if not work.cancelled():
                    work.exception()  # retrieved: its result or error is ignored
            return
        exc = work.exception()
        took = time.monotonic() - started
        if exc is None:
            await self._report_result(task, token, work.result(), took=took, want_next=want_next)
        elif isinstance(exc, PermanentError):
            await self._report_failure(task, token, _error_text(exc), retryable=False, exc=exc, took=took)
        else:
            await self._report_failure(task, token, _error_text(exc), retryable=True, exc=exc, took=took)

    async def _invoke(self, task: Task) -> Any:
        if self._is_async:
            return await self.handler(task)
        result = await _run_in_thread(self.handler, task)
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            return await result
        return result

    async def _keep_lease(self, task: Task, token: str, lease: tuple[float, float], lost: asyncio.Event) -> None:
        """Extend every third of the lease (`lease`: its whole length, and what was left of it at the start)."""
        assert self.client is not None
        interval = max(MIN_EXTEND_INTERVAL, lease[0] * EXTEND_FRACTION)
        wait = max(MIN_EXTEND_INTERVAL, lease[1] * EXTEND_FRACTION)
        while True:
            await asyncio.sleep(wait)
            wait = interval
            try:
                await self.client.extend(task.id, token)
                log.debug("agent %s: extended the lease on %s", self.name, task.id)
            except (ConflictError, ForbiddenError, NotFoundError) as exc:
                log.warning("agent %s: cannot extend %s: %s", self.name, task.id, exc.message)
                lost.set()
                return
            except (McsUnavailable, McsApiError) as exc:
                log.warning("agent %s: extending %s failed (%s); trying again", self.name, task.id, exc)

    # ------------------------------------------------------------ reporting

    async def _report_result(
        self, task: Task, token: str, result: Any, *, took: float = 0.0, want_next: bool = False
    ) -> None:
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            await self._report_failure(
                task, token, f"the handler returned a value that is not JSON: {exc}", retryable=False
            )
            return
        assert self.client is not None
        client = self.client
        with_next = want_next and self._complete_next and not self._stopping
        try:
            if with_next:
                answer = await self._complete_with_next(task.id, token, result)
            else:
                answer = await self._with_patience(lambda: client.complete(task.id, token, result))
        except (McsUnavailable, McsApiError) as exc:
            if _transient(exc):
                return  # logged; the lease runs out and MCS retries the task
            assert isinstance(exc, McsApiError)
            if isinstance(exc, ConflictError):
                log.warning("agent %s: %s was taken back before we finished: %s", self.name, task.id, exc.message)
                return
            # The server would not store this result (too large, ...): say so in the task's error.
            await self._report_failure(task, token, f"MCS refused the result: {exc.message}", retryable=False)
            return
        self.completed += 1
        upcoming = answer.get("next") if with_next and isinstance(answer, dict) and "next" in answer else None
        if isinstance(upcoming, dict):
            if self._stopping:  # shutdown began meanwhile: give it back rather than start it
                await self._release_unstarted(upcoming)
            else:
                self._handoff.append(upcoming)
        log.info(
            "agent %s: completed %s (%s) in %.2f s",
            self.name,
            task.id,
            task.type,
            took,
            extra={"action": "task_completed", "task_id": task.id},
        )

    async def _report_failure(
        self,
        task: Task,
        token: str,
        error: str,
        *,
        retryable: bool,
        exc: BaseException | None = None,
        took: float = 0.0,
    ) -> None:
        log.warning(
            "agent %s: %s failed%s: %s (after %.2f s)",
            self.name,
            task.id,
            "" if retryable else " for good",
            error,
            took,
            exc_info=exc if exc is not None and not isinstance(exc, PermanentError | RetryableError) else None,
            extra={"action": "task_failed", "task_id": task.id},
        )
        assert self.client is not None
        client = self.client
        try:
            await self._with_patience(lambda: client.fail(task.id, token, error, retryable=retryable))
        except McsUnavailable:
            return  # logged; the lease runs out and MCS retries the task
        except McsApiError as api_exc:
            log.warning("agent %s: could not report the failure of %s: %s", self.name, task.id, api_exc.message)
            return
        self.failed += 1

    async def _complete_with_next(self, task_id: str, token: str, result: Any) -> Any:
        """Complete with `next` (one request: the completion and the next task). An older server refuses the
        field (422, nothing stored): complete plainly from then on."""
        assert self.client is not None
        client = self.client
        try:
            return await self._with_patience(lambda: client.complete_and_next(task_id, token, result))
        except UnprocessableError as exc:
            if "next" not in exc.message:
                raise
            log.info("agent %s: the server does not complete with next; claiming separately", self.name)
            self._complete_next = False
            return await self._with_patience(lambda: client.complete(task_id, token, result))

    async def _release_unstarted(self, claimed: Mapping[str, Any]) -> None:
        """Give back a task claimed for us that no handler began."""
        job = asyncio.create_task(asyncio.sleep(0))
        await self._release(_Running(task=Task.from_api(claimed), token=str(claimed["claim_token"]), job=job))

    async def _release(self, running: _Running) -> None:
        """Give a task back at shutdown: a retryable failure, so MCS hands it out again."""
        running.released = True
        running.job.cancel()
        assert self.client is not None
        error = f"released: agent {self.name} shut down before the handler finished"
        try:
            await self.client.fail(running.task.id, running.token, error, retryable=True)
            self.released += 1
            log.info(
                "agent %s: released %s",
                self.name,
                running.task.id,
                extra={"action": "task_released", "task_id": running.task.id},
            )
        except (McsUnavailable, McsApiError) as exc:
            log.warning("agent %s: could not release %s: %s", self.name, running.task.id, exc)

    async def _with_patience(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Call, retrying for up to REPORT_PATIENCE seconds while MCS is unreachable (a restart) or says it
        is busy (503, a proxy's 502/504, 429): complete and fail repeat safely with the same token, and a
        finished result must not be thrown away for a moment's trouble."""
        deadline = time.monotonic() + REPORT_PATIENCE
        delay = 0.5
        while True:
            try:
                return await call()
            except (McsUnavailable, McsApiError) as exc:
                if not _transient(exc):
                    raise
                if time.monotonic() > deadline:
                    log.error("agent %s: gave up reporting: %s", self.name, exc)
                    raise
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)
