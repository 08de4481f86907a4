"""GET /v1/events: the mesh's task, workflow and agent changes as Server-Sent Events.

Fed from the committed audit rows (table event_log, one id space over the three audit tables), so it shows
changes whichever process made them. One `EventHub` per api process polls PRAGMA data_version on its own
connection and reads each new page of events once, fanning them out to every open stream's bounded queue;
a stream whose queue fills (a client too slow to read) is dropped, so it never slows the others. A client
resumes where it left off with Last-Event-ID (or ?last_event_id=), across api restarts too: ids are
database ids, never reused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from quart import Blueprint, Response, current_app, request

from mcs import metrics
from mcs.api.auth import credentials, verify
from mcs.api.openapi import EVENT_STREAM, documented
from mcs.engines.sqlite.engine import Store
from mcs.errors import BadRequest
from mcs.models import Event
from mcs.state import events as events_store

log = logging.getLogger("mcs.api")

bp = Blueprint("events", __name__, url_prefix="/v1/events")

POLL_INTERVAL = 0.1  # seconds between commit checks while a stream is open and the mesh is quiet
# Seconds after a check that found events before the next: under load each write to a stream carries the
# events of this long (a write costs far more than an event in it), while the first event after a quiet
# spell still goes out within POLL_INTERVAL.
BUSY_INTERVAL = 0.3
KEEPALIVE = 15.0  # seconds between keep-alive comments on a quiet stream
RETRY_MS = 1000  # what an EventSource waits before reconnecting after the server ends a stream


@dataclass(eq=False)
class Subscriber:
    """One open stream: the events not sent yet (at most `limit`), and whether the hub gave up on it."""

    limit: int
    pending: deque[Event] = field(default_factory=deque)
    dropped: bool = False
    writing: bool = False  # its last events are still being written to the client (a slow one blocks here)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, events: list[Event]) -> bool:
        """Queue the events and wake the stream; False (nothing queued) when the stream is still busy with
        what it had (not taken, or still being written) and these would make more than the limit. One batch
        to a stream keeping up always goes: a client is dropped for being slow, not because many events came
        at once."""
        if (self.pending or self.writing) and len(self.pending) + len(events) > self.limit:
            return False
        self.pending.extend(events)
        self.wake.set()
        return True

    def take(self) -> list[Event]:
        taken = list(self.pending)
        self.pending.clear()
        self.wake.clear()
        return taken


class EventHub:
    """One reader per api process: polls for commits while streams are open and fans new events out."""

    def __init__(self, store: Store, *, buffer: int) -> None:
        self.store = store
        self.buffer = buffer
        self.last = 0  # the newest event id handed to subscribers
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        # One thread, so PRAGMA data_version is always asked of the same connection.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcs-events")

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def subscribe(self) -> tuple[Subscriber, int]:
        """A new subscriber and the id it will get events after (older ones it reads itself)."""
        async with self._starting:  # streams opening together start one reader, not one each
            if self._task is None or self._task.done():
                await self._sequence()
                self.last = await self._call(self.store.read, events_store.last_id)
                self._task = asyncio.create_task(self._run())
        sub = Subscriber(limit=self.buffer)
        self._subscribers.add(sub)
        metrics.event_streams.set(len(self._subscribers))
        return sub, self.last

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        metrics.event_streams.set(len(self._subscribers))

    async def _sequence(self) -> None:
        """On PostgreSQL, give ids to the events committed since (docs/design/engines.md 5.3): until then
        they have none, so a reader past id N never misses one that committed late. SQLite: nothing to do."""
        sequence = getattr(self.store, "sequence_events", None)  # the PostgreSQL engine's
        if sequence is not None:
            await self._call(sequence)

    async def newest(self) -> int:
        newest: int = await self._call(self.store.read, events_store.last_id)
        return newest

    async def read(self, after: int, upto: int) -> list[Event]:
        result: list[Event] = await self._call(self.store.read, events_store.after, after, upto=upto)
        return result

    async def _run(self) -> None:
        seen = await self._call(self.store.data_version)
        busy = False
        try:
            while self._subscribers:
                await asyncio.sleep(BUSY_INTERVAL if busy else POLL_INTERVAL)
                busy = False
                version = await self._call(self.store.data_version)
                if version == seen:
                    continue
                seen = version
                await self._sequence()
                while True:
                    page: list[Event] = await self._call(self.store.read, events_store.after, self.last)
                    if not page:
                        break
                    self._fan_out(page)
                    busy = True
                    self.last = page[-1].id
                    if len(page) < events_store.PAGE:
                        break
        except Exception:
            log.exception("event hub failed; streams are closed", extra={"action": "events_failed"})
            for sub in list(self._subscribers):
                self._drop(sub)

    def _fan_out(self, page: list[Event]) -> None:
        for sub in list(self._subscribers):
            if not sub.push(page):
                self._drop(sub)
                metrics.event_streams_dropped.inc()

    def _drop(self, sub: Subscriber) -> None:
        sub.dropped = True
        sub.wake.set()
        self.unsubscribe(sub)

    async def close(self) -> None:
        for sub in list(self._subscribers):
            self._drop(sub)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=False)


@dataclass(frozen=True)
class Filters:
    task: str | None = None
    workflow: str | None = None
    type: str | None = None
    agent: str | None = None
    viewer: str | None = None  # the agent watching; None for the admin (sees everything)

    @property
    def everything(self) -> bool:
        """The admin, unfiltered: every event matches (no per-event check)."""
        return (
            self.task is None
            and self.workflow is None
            and self.type is None
            and self.agent is None
            and (self.viewer is None)
        )

    def select(self, events: list[Event], after: int | None) -> list[bytes]:
        """The frames of the events this stream sends (those after `after`, when given)."""
        if after is not None:
            events = [e for e in events if e.id > after]
        if self.everything:
            return [e.frame for e in events]
        return [e.frame for e in events if self.match(e)]

    def match(self, e: Event) -> bool:
        if not e.visible_to(self.viewer):
            return False
        if self.task is not None and not (e.stream == "task" and e.subject == self.task):
            return False
        if self.workflow is not None and not (
            (e.stream == "workflow" and e.subject == self.workflow) or e.workflow_id == self.workflow
        ):
            return False
        if self.type is not None and not (e.stream == "task" and e.type == self.type):
            return False
        if self.agent is not None and not (self.agent in (e.subject, e.owner, e.actor) and e.stream != "workflow"):
            return False
        return True


async def viewer() -> str | None:
    """Who watches: None for the admin (the bearer token, or a console session once verified), else the
    verified agent's name (401 otherwise)."""
    creds = credentials()
    if creds.is_admin:
        return None
    caller, _ = await current_app.config["MCS_DB"].read(verify, creds)
    if caller.is_admin:  # the web console's session cookie: the admin, once its session is checked
        return None
    name: str = caller.name
    return name


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest("Last-Event-ID must be an event id (a whole number)", code="bad_last_event_id") from exc
    if value < 0:
        raise BadRequest("Last-Event-ID must be an event id (a whole number)", code="bad_last_event_id")
    return value


@bp.get("")
@documented(ok={200: EVENT_STREAM}, errors=(400,))
async def stream() -> Response:
    """Task, workflow and agent changes as Server-Sent Events (`event: task|workflow|agent`, `id:` the
    event id, `data:` the event as JSON), filtered by `task`, `workflow`, `type` (a task type) and `agent`.
    Agents see their own tasks' events (assigned to or submitted by them) and every agent change; the admin
    everything. Send Last-Event-ID (or ?last_event_id=) to resume after that event; without it the stream
    starts now. Keep-alive comments every 15 s; a client that falls 1000 events behind is dropped, and
    each response ends after two thirds of MCS_API_READ_TIMEOUT: reconnect with Last-Event-ID."""
    who = await viewer()
    args = request.args
    filters = Filters(
        task=args.get("task") or None,
        workflow=args.get("workflow") or None,
        type=args.get("type") or None,
        agent=args.get("agent") or None,
        viewer=who,
    )
    resume = _last_event_id()
    settings = current_app.config["MCS_SETTINGS"]
    hub: EventHub = current_app.config["MCS_EVENTS"]
    sub, upto = await hub.subscribe()
    # Without Last-Event-ID the stream starts at the newest committed event (the hub may not have read it).
    start = resume if resume is not None else await hub.newest()
    deadline = None if settings.events_stream_max is None else time.monotonic() + settings.events_stream_max

    async def body() -> AsyncIterator[bytes]:
        try:
            yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
            cursor = start
            while cursor < upto:  # what happened before this stream opened (after Last-Event-ID)
                page = await hub.read(cursor, upto)
                if not page:
                    break
                chunk = filters.select(page, None)
                if chunk:
                    metrics.events_streamed.inc(len(chunk))
                    yield b"".join(chunk)
                cursor = page[-1].id
            while True:
                if sub.dropped:
                    yield b": dropped: this client fell too far behind; reconnect with Last-Event-ID\n\n"
                    return
                wait = KEEPALIVE if deadline is None else min(KEEPALIVE, deadline - time.monotonic())
                if wait <= 0:
                    yield b": stream ends; reconnect with Last-Event-ID\n\n"
                    return
                if not sub.pending:
                    try:
                        async with asyncio.timeout(wait):
                            await sub.wake.wait()
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if sub.dropped:
                        continue
                # All that is queued, in one write: under load one send carries many events.
                chunk = filters.select(sub.take(), start if start > upto else None)  # the hub sends ids > upto
                if chunk:
                    metrics.events_streamed.inc(len(chunk))
                    sub.writing = True  # until the server asks for more: the client has taken these
                    yield b"".join(chunk)
                    sub.writing = False
        finally:
            hub.unsubscribe(sub)

    response = Response(body(), content_type=EVENT_STREAM)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response
