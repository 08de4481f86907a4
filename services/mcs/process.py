"""What every MCS process shares: logging, stop signals, the heartbeat row, and the small HTTP server on
which the dispatcher, watchdog and notifier expose /metrics and /healthz."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from mcs.engines.sqlite.engine import Store, sqlite_version
from mcs.errors import McsError
from mcs.state import outbox as outbox_state

if TYPE_CHECKING:
    from mcs.engines.postgres.engine import PostgresEngine

HEARTBEAT_INTERVAL = 5.0  # seconds between heartbeat rows
STATUS_THREADS = 16  # connections the /metrics and /healthz server serves at once; more are closed at once
STATUS_READ_TIMEOUT = 5.0  # seconds a connection may take to send its request before it is closed

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class EventFormatter(logging.Formatter):
    """`time level logger message key=value ...`: a human line that still greps by action."""

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name} {record.getMessage()}"
        if extras:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))  # Docker's and Podman's


def in_container() -> bool:
    """Whether this process runs in a container, where 127.0.0.1 is the container's own loopback."""
    return any(marker.exists() for marker in CONTAINER_MARKERS)


def network_namespace() -> str | None:
    """An id of this process's network namespace (Linux), or None: two processes with the same id share one
    loopback, so a 127.0.0.1 URL means the same thing to both."""
    try:
        st = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EventFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("MCS_LOG_LEVEL", "INFO").upper())
    # httpx logs every request at INFO; the notifier's own events say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def engine_identity(store: Store | PostgresEngine) -> dict[str, str]:
    """What /healthz says of the database: `engine` and `engine_version`, and on SQLite `sqlite_version` too
    (the linked library, as before). On PostgreSQL this asks the server (one round trip): call it once."""
    if isinstance(store, Store):
        version = sqlite_version()
        return {"engine": "sqlite", "engine_version": version, "sqlite_version": version}
    try:
        version = store.version()
    except Exception:  # noqa: BLE001 - the server went away since the engine opened: health says so elsewhere
        version = "unknown"
    return {"engine": "postgres", "engine_version": version}


def on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask the process to finish its pass and exit."""

    def handler(signum: int, frame: Any) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def instance_name(configured: str | None) -> str:
    """This replica's name: MCS_INSTANCE, or host:pid (unique on one database whatever runs where). It
    names the process's heartbeat row and, in the notifier, the owner of the outbox rows it leases."""
    return configured or f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def gone_here(beats: list[Any], process: str, instance: str) -> list[str]:
    """Rows of earlier replicas of `process` on this host that no longer run (a restart under a new pid),
    and the row from before replicas (instance ''): the new replica's first beat removes them."""
    host = socket.gethostname() + ":"
    return [
        b.instance
        for b in beats
        if b.name == process
        and b.instance != instance
        and (b.instance == "" or (b.instance.startswith(host) and not _alive(b.pid)))
    ]


class Heartbeat:
    """Writes this replica's liveness row every few seconds, from whatever loop calls `maybe_beat`."""

    def __init__(self, store: Store | PostgresEngine, process: str, *, instance: str | None = None) -> None:
        self.store, self.process = store, process
        self.instance = instance_name(instance)
        self.started_at = time.time()
        self.last = 0.0
        self._first = True

    @property
    def first(self) -> bool:
        """No beat written yet: the next one wants the heartbeat rows, to forget earlier replicas' rows."""
        return self._first

    def row(self, now: float, beats: list[Any] | None = None) -> dict[str, Any]:
        """The arguments of `mcs.state.outbox.beat` for a beat at `now`; the first one (given `beats`, every
        heartbeat row) also forgets the rows of this process's earlier replicas on this host that are gone."""
        forget: list[str] = []
        if self._first:
            if beats is None:
                beats = self.store.read(outbox_state.heartbeats)
            forget = gone_here(beats, self.process, self.instance)
            self._first = False
        return {
            "process": self.process,
            "instance": self.instance,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "now": now,
            "forget": forget,
        }

    def maybe_beat(self, now: float | None = None) -> None:
        now = now or time.time()
        if now - self.last >= HEARTBEAT_INTERVAL:
            self.store.write(outbox_state.beat, **self.row(now))
            self.last = now

    def stopped(self) -> None:
        """On the way out: mark this process's row stopped, best effort (the database may be gone or busy)."""
        try:
            self.store.write(outbox_state.mark_stopped, process=self.process, instance=self.instance, pid=os.getpid())
        except McsError as exc:
            logging.getLogger("mcs").warning(
                "could not mark the heartbeat stopped", extra={"action": "mark_stopped", "error": str(exc)}
            )


class _QuietHandler(WSGIRequestHandler):
    timeout = STATUS_READ_TIMEOUT  # StreamRequestHandler sets it on the socket: an idle client is dropped

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class _StatusHTTPServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most STATUS_THREADS at once, so one slow or idle client (a half-open
    scrape, a port scan) cannot keep /healthz from answering; beyond the bound a connection is closed at
    once rather than queued behind the others."""

    daemon_threads = True  # a stuck connection never holds up the process's exit
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(STATUS_THREADS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a client that timed out or went away: nothing to report
            return
        super().handle_error(request, client_address)


class StatusServer:
    """/metrics (Prometheus text) and /healthz (200 while the process's loop is alive and the database path
    still names the file it opened, or the PostgreSQL database is the one it opened) on their own port."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        process: str,
        alive: Callable[[], bool],
        store: Store | PostgresEngine | None = None,
    ) -> None:
        metrics_app = make_wsgi_app()
        self.process = process
        engine = engine_identity(store) if store is not None else {"sqlite_version": sqlite_version()}

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO") == "/healthz":
                same_file = store is None or store.same_file()
                ok = same_file and alive()
                status = "ok" if ok else "stalled" if same_file else "database_replaced"
                body = json.dumps({"status": status, "process": process, **engine}).encode()
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
                return [body]
            return metrics_app(environ, start_response)

        self.server: WSGIServer = make_server(
            host, port, app, server_class=_StatusHTTPServer, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"{process}-status", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
