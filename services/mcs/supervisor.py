"""`mcs up`: the embedded default. Runs api, dispatcher, watchdog and notifier as four OS processes over one
database, restarts one that dies (with backoff), and stops all four on Ctrl-C or SIGTERM."""

from __future__ import annotations

import ctypes
import errno
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcs import auth, profiles
from mcs.config import Settings
from mcs.engines import open_engine
from mcs.errors import DiskFull

log = logging.getLogger("mcs.up")

PROCESSES = ("api", "dispatcher", "watchdog", "notifier")
RESTART_BASE = 0.5  # seconds before the first restart of a crashed process
RESTART_MAX = 30.0  # seconds: the longest wait between restarts
STABLE_AFTER = 30.0  # seconds of uptime after which a process's crash count starts again
STOP_GRACE = 10.0  # seconds to wait after SIGTERM before SIGKILL
TICK = 0.2  # seconds between checks on the children
READY_PROBE_TIMEOUT = 0.2  # seconds for one look at the api's /healthz while waiting for it to listen
EXIT_CANNOT_START = 78  # EX_CONFIG: restarting will not help; `mcs up` stops everything on it
EXIT_RESTART = 75  # EX_TEMPFAIL: restarting will help (the database file was replaced, or stayed locked)


def ensure_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token: from the environment, else from the data folder's file, else a new one written
    there with mode 0600. Returns (token, whether it was created now)."""
    if settings.admin_token:
        return settings.admin_token, False
    path = settings.admin_token_file
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = auth.new_admin_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    except OSError as exc:  # an empty token file would mean "no admin" at the next start: leave none
        path.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"no space left on the disk to write {path}") from exc
        raise
    return token, True


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `mcs up` itself dies, so no process is left orphaned."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0
    restart_at: float = 0.0
    history: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, *, env: dict[str, str], on_ready: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.env = env
        self.children = {name: Child(name) for name in PROCESSES}
        self.stopping = False
        self.failed: str | None = None
        self.on_ready = on_ready  # called once, when the api first accepts a connection

    def _api_listening(self) -> bool:
        api = self.children["api"].proc
        if api is None or api.poll() is not None:
            return False
        host, port = _loopback_for(self.settings.host, self.settings.port)
        conn = http.client.HTTPConnection(host, port, timeout=READY_PROBE_TIMEOUT)
        try:  # our /healthz, not just an open port: something else may accept connections there
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            return response.status == 200 and json.loads(response.read()).get("status") == "ok"
        except (OSError, ValueError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def start(self, child: Child) -> None:
        command = [sys.executable, "-m", "mcs", child.name]
        child.proc = subprocess.Popen(command, env=self.env, preexec_fn=_die_with_parent)  # noqa: PLW1509
        child.started = time.monotonic()
        log.info("started", extra={"action": "start_process", "child": child.name, "pid": child.proc.pid})

    def stop(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for child in self.children.values():
            self.start(child)
        while not self.stopping:
            if self.on_ready is not None and self._api_listening():
                ready, self.on_ready = self.on_ready, None
                ready()
            now = time.monotonic()
            for child in self.children.values():
                if child.proc is None:
                    if now >= child.restart_at:
                        self.start(child)
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                if code == EXIT_CANNOT_START:
                    log.error(
                        "process cannot start (its message is above); stopping",
                        extra={"action": "cannot_start", "child": child.name},
                    )
                    self.failed = f"mcs {child.name} cannot start"
                    self.stopping = True
                    break
                if now - child.started > STABLE_AFTER:
                    child.crashes = 0
                child.crashes += 1
                child.history.append(code)
                delay = min(RESTART_MAX, RESTART_BASE * 2 ** (child.crashes - 1))
                log.warning(
                    "process exited; restarting",
                    extra={"action": "restart_process", "child": child.name, "exit_code": code, "in": delay},
                )
                child.proc = None
                child.restart_at = now + delay
            time.sleep(TICK)
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("stopping", extra={"action": "stop"})
        running = [c.proc for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("did not stop in time; killing", extra={"action": "kill", "pid": proc.pid})
                proc.kill()
                proc.wait()
        log.info("stopped", extra={"action": "stopped"})
        if self.failed:
            print(f"mcs up: {self.failed}; everything stopped", file=sys.stderr)
            return 1
        return 0


def _port_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port now (SO_REUSEADDR: a closing connection does not count). Other
    problems (an address this host does not have) count as free: the process that binds it says what is wrong."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def _any_free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


METRICS_PORTS = {
    "dispatcher": "MCS_DISPATCHER_METRICS_PORT",
    "watchdog": "MCS_WATCHDOG_METRICS_PORT",
    "notifier": "MCS_NOTIFIER_METRICS_PORT",
}


def pick_metrics_ports(settings: Settings, env: dict[str, str]) -> list[str]:
    """Fill env with the three metrics ports the children use: the configured ones as they are (a busy one
    makes that child say so), the defaults when free, else a free port the kernel picks (a second mesh on
    this host). Returns a line for each port that moved."""
    notes = []
    host = settings.bind_metrics_host
    for name, var in METRICS_PORTS.items():
        port = getattr(settings, f"{name}_metrics_port")
        if not env.get(var) and not _port_free(host, port):
            moved = _any_free_port(host)
            notes.append(f"{name} metrics on port {moved} ({port} is in use; set {var} to choose)")
            port = moved
        env[var] = str(port)
    return notes


def _loopback_for(host: str, port: int) -> tuple[str, int]:
    """Where a client on this host connects: a wildcard bind address is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port  # noqa: S104


def client_url(settings: Settings) -> str:
    """The URL a client on this host uses."""
    host, port = _loopback_for(settings.host, settings.port)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def profile_name(settings: Settings) -> str:
    """The config file's name for this mesh: "local" on the default port, else "local-PORT"."""
    default = profiles.DEFAULT_PROFILE
    return default if settings.port == Settings().port else f"{default}-{settings.port}"


def _redacted(url: str) -> str:
    from mcs.engines.migrations.connection import redact

    return redact(url)


def main(settings: Settings | None = None, *, profile: str | None = None) -> int:
    settings = settings or Settings.from_env()
    if not _port_free(settings.host, settings.port):
        print(
            f"mcs up: cannot start: the port is already in use: {settings.host}:{settings.port} "
            "(another MCS? `mcs up --port N` picks another)",
            file=sys.stderr,
        )
        return 1
    # Migrate once here, so the four start on a current schema (each still checks: a no-op then).
    store = open_engine(settings, process="up")  # SQLite's file in the data folder, or MCS_DATABASE_URL
    try:
        applied = store.migrate()
    finally:
        store.close()
    database = str(settings.db) if settings.database_url is None else _redacted(settings.database_url)
    token, created = ensure_admin_token(settings)
    env = dict(os.environ)
    env["MCS_ADMIN_TOKEN"] = token
    env["MCS_DB"] = str(settings.db)
    env["MCS_PORT"] = str(settings.port)
    env.setdefault("PYTHONUNBUFFERED", "1")
    moved = pick_metrics_ports(settings, env)
    url = client_url(settings)
    where = "MCS_ADMIN_TOKEN" if settings.admin_token else str(settings.admin_token_file)
    print(
        f"MCS {url}  database {database}" + (f"  (migrated: {', '.join(applied)})" if applied else ""),
        file=sys.stderr,
    )
    print(f"admin token {'created in' if created else 'from'} {where}", file=sys.stderr)
    for line in moved:
        print(line, file=sys.stderr)
    print("Ctrl-C stops all four processes.", file=sys.stderr)

    def remember() -> None:
        """Once the api listens (not before: a mesh that never started must not become a profile)."""
        if settings.admin_token:  # a token given in the environment has no file to point at
            print(
                "CLI config left alone: the admin token comes from MCS_ADMIN_TOKEN (clients need it too, or a "
                f"profile with it in {profiles.config_path()})",
                file=sys.stderr,
            )
            return
        try:
            name = profile or profile_name(settings)
            print(profiles.remember_mesh(name, url=url, token_file=settings.admin_token_file), file=sys.stderr)
        except OSError as exc:
            print(f"CLI config not written: {exc.strerror or exc}", file=sys.stderr)

    return Supervisor(settings, env=env, on_ready=remember).run()
