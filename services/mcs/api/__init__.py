"""The api process: every HTTP request from agents, the CLI and admins. It writes rows; it never calls out
(it only looks up the host of a notify URL an agent registers, for the egress policy)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from quart import Quart, Request, Response, request
from quart_schema import QuartSchema, RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from mcs import __version__, egress, metrics, quotas
from mcs.api import agents, console, events, faces, memory, schedules, status, tasks, workflows
from mcs.api.openapi import TEXT, Health, Provider, documented
from mcs.api.responses import respond
from mcs.config import Settings
from mcs.engines import open_engine
from mcs.engines.sqlite.engine import AsyncStore, Store, disk_free
from mcs.errors import ApiError, BadRequest, DiskFull, QuotaExceeded, StoreError
from mcs.process import engine_identity, in_container, network_namespace
from mcs.state_metrics import state_registry

log = logging.getLogger("mcs.api")

CHANGE_POLL_INTERVAL = 0.01  # seconds between PRAGMA data_version checks while a long poll waits


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_JSON_DEPTH = 64  # nesting levels a request body may have


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused when it overflows a double (`1e999` is inf):
    it could be stored but never rendered as JSON again."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range (non-finite numbers are not JSON)")
    return value


def too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` (iterative: a deep value must not exhaust the stack here)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


class LenientJsonRequest(Request):
    """Parse the body as JSON whatever the Content-Type (curl -d sends form encoding); empty means {}.
    Strict about the JSON itself: UTF-8, no NaN or Infinity, no number that overflows to one (`1e999`),
    integers of at most 4300 digits (Python's limit), at most MAX_JSON_DEPTH levels deep; anything
    else is a 400 before a handler runs, so nothing unserialisable is ever stored."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        body = await self.get_data(cache=cache, as_text=False)
        if not body.strip():
            return {}
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        except UnicodeDecodeError as exc:
            raise BadRequest("the request body is not UTF-8", code="bad_json") from exc
        except RecursionError as exc:
            raise BadRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels", code="bad_json") from exc
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}", code="bad_json") from exc
        if too_deep(value, MAX_JSON_DEPTH):
            raise BadRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels", code="bad_json")
        return value


class ChangeWatcher:
    """Lets long-polling requests sleep until another process commits, by watching PRAGMA data_version.
    It polls only while someone waits."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.version = 0
        self._waiters = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def wait_for_change(self, seen: int, *, timeout: float) -> bool:
        """Wait until a commit after `seen` (a `version` read earlier): True, or False after `timeout`."""
        self._waiters += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.version != seen), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(None, self.store.data_version)
        while self._waiters > 0:
            await asyncio.sleep(CHANGE_POLL_INTERVAL)
            current = await loop.run_in_executor(None, self.store.data_version)
            if current != last:
                last = current
                async with self._changed:
                    self.version += 1
                    self._changed.notify_all()


def _error(status: int, code: str, message: str, retry_after: float | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return Response(body, status=status, headers=headers, content_type="application/json")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            parts.append(f"{where}: {err.get('msg')}")
        return "; ".join(parts)
    return str(exc) or "the request body does not match the schema"


def create_app(settings: Settings, store: Store | None = None) -> Quart:
    """The api app. Opens the store while serving (and closes it after); a given store is used as is."""
    app = Quart("mcs")
    app.request_class = LenientJsonRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if settings.api_read_timeout:  # a body still arriving after this (trickled: no read timeout) is a 408
        app.config["BODY_TIMEOUT"] = min(app.config["BODY_TIMEOUT"], settings.api_read_timeout)
    app.config["MCS_SETTINGS"] = settings
    app.config["MCS_SUBMIT_RATE"] = quotas.SubmitRate(rate=settings.rate_submits, burst=settings.rate_submits_burst)
    for quota in quotas.QUOTAS:
        metrics.quota_refusals.labels(quota)  # every series from 0, so the first refusal is an increase
    app.config["MCS_NOTIFY_POLICY"] = egress.notify_policy(settings)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    QuartSchema(
        app,
        info={"title": "MCS — Mesh Coordination Server", "version": __version__},
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=Provider,
    )
    app.url_map.converters["memkey"] = memory.KeyConverter
    app.register_blueprint(agents.bp)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(memory.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(schedules.bp)
    app.register_blueprint(workflows.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(events.bp)
    served_faces = faces.mount(app)  # /mcp and /a2a (and its card), started on their first request

    @app.while_serving
    async def lifespan() -> Any:
        own = store is None
        s: Any = store or open_engine(settings, process="api")  # Store or PostgresEngine (same calls)
        if isinstance(s, Store):
            db: Any = AsyncStore(s)
        else:  # PostgreSQL (MCS_DATABASE_URL): psycopg is imported only here
            from mcs.engines.postgres.asyncio import AsyncPostgres

            db = AsyncPostgres(s)
        app.config["MCS_DB"] = db
        app.config["MCS_ENGINE"] = await asyncio.to_thread(engine_identity, s)  # /healthz's engine fields
        app.config["MCS_CHANGES"] = ChangeWatcher(s)
        app.config["MCS_STATE_METRICS"] = state_registry(s)
        hub = app.config["MCS_EVENTS"] = events.EventHub(s, buffer=settings.events_buffer)
        yield
        await served_faces.aclose()  # before the store: an MCP call in flight still ends cleanly
        await hub.close()
        db.shutdown()
        if own:
            s.close()

    @app.before_request
    async def start_timer() -> None:
        request.environ_started = time.perf_counter()  # type: ignore[attr-defined]

    @app.after_request
    async def observe(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"  # labels stay bounded
        started = getattr(request, "environ_started", None)
        metrics.http_requests.labels(method, rule, str(response.status_code)).inc()
        if started is not None:
            metrics.http_duration.labels(method, rule).observe(time.perf_counter() - started)
        return response

    container = settings.container if settings.container is not None else in_container()
    netns = network_namespace()

    @app.get("/healthz")
    @documented(ok={200: Health, 503: Health}, auth=None)  # 503: status "database_replaced"
    async def healthz() -> Response:
        """ok; 503 database_replaced when the database file was deleted or replaced under this process (it
        restarts), or the PostgreSQL database was; 503 disk_full when the data folder's disk has less than
        MCS_DISK_MIN_FREE_BYTES free (SQLite: PostgreSQL's disk is the server's). `engine` ("sqlite" or
        "postgres") and `engine_version`; `sqlite_version` on SQLite. `container` and `netns`: an agent
        learns whether a 127.0.0.1 notify URL reaches it from here."""
        body: dict[str, Any] = {
            "status": "ok",
            **app.config["MCS_ENGINE"],
            "version": __version__,
            "container": container,
            "netns": netns,
        }
        db: AsyncStore = app.config["MCS_DB"]
        if not await asyncio.to_thread(db.store.same_file):
            return respond(body | {"status": "database_replaced"}, 503)
        if body["engine"] != "sqlite":
            return respond(body)
        free = await asyncio.to_thread(disk_free, settings.data_dir)
        if free is not None and free < settings.disk_min_free_bytes:
            body |= {"status": "disk_full", "free_bytes": free, "min_free_bytes": settings.disk_min_free_bytes}
            return respond(body, 503)
        return respond(body)

    @app.get("/metrics")
    @documented(ok={200: TEXT}, auth=None)
    async def prometheus_metrics() -> Response:
        # The process's own counters, then the mesh state read from the database (off the event loop).
        on_sqlite = app.config["MCS_ENGINE"]["engine"] == "sqlite"
        free = await asyncio.to_thread(disk_free, settings.data_dir) if on_sqlite else None
        if free is not None:  # SQLite's data folder only
            metrics.disk_free_bytes.labels(str(settings.db)).set(free)
        own = generate_latest()
        state = await asyncio.to_thread(generate_latest, app.config["MCS_STATE_METRICS"])
        return Response(own + state, content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        if isinstance(exc, QuotaExceeded):
            metrics.quota_refusals.labels(exc.quota).inc()
        return _error(exc.status, exc.code, exc.message, exc.retry_after)

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_body(exc: RequestSchemaValidationError) -> Response:
        return _error(422, "validation_error", _describe(exc.validation_error))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            408: "request_timeout",
            413: "payload_too_large",
        }.get(exc.code or 500, "http_error")
        messages = {
            400: "the request body is not valid JSON",
            404: "no such endpoint",
            408: "the request body did not arrive in time",
            413: f"the request body is larger than {settings.max_body_bytes} bytes",
        }
        return _error(exc.code or 500, code, messages.get(exc.code or 500, exc.description or "request refused"))

    @app.errorhandler(StoreError)
    async def store_error(exc: StoreError) -> Response:
        log.error("database error", extra={"action": "store_error", "error": str(exc)})
        if isinstance(exc, DiskFull):
            metrics.disk_full_refusals.inc()
        if type(exc) is StoreError:  # a driver error: its text may hold SQL, so say only what to do
            return _error(503, "database_unavailable", "the database is busy or unavailable; try again", 1.0)
        return _error(exc.status, exc.code, exc.message, exc.retry_after)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error", extra={"action": "internal_error"})
        return _error(500, "internal_error", "internal error; the server log has the details")

    return app
