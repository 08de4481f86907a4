"""`mcs up`: the embedded default. Runs api, dispatcher, watchdog and notifier as four OS processes over one
database, restarts one that dies (with backoff), and stops all four on Ctrl-C or SIGTERM."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from mcs import auth
from mcs.config import Settings
from mcs.errors import DiskFull
from mcs.store import Store

log = logging.getLogger("mcs.up")

PROCESSES = ("api", "dispatcher", "watchdog", "notifier")
RESTART_BASE = 0.5  # seconds before the first restart of a crashed process
RESTART_MAX = 30.0  # seconds: the longest wait between restarts
STABLE_AFTER = 30.0  # seconds of uptime after which a process's crash count starts again
STOP_GRACE = 10.0  # seconds to wait after SIGTERM before SIGKILL
TICK = 0.2  # seconds between checks on the children
EXIT_CANNOT_START = 78  # a child's "restarting will not help" (see mcs.cli)


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
    def __init__(self, settings: Settings, *, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.children = {name: Child(name) for name in PROCESSES}
        self.stopping = False
        self.failed: str | None = None

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


def main(settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    store = Store(settings.db, synchronous=settings.synchronous, write_lock_timeout=settings.write_lock_timeout)
    applied = store.migrate()
    store.close()
    token, created = ensure_admin_token(settings)
    env = dict(os.environ)
    env["MCS_ADMIN_TOKEN"] = token
    env["MCS_DB"] = str(settings.db)
    env.setdefault("PYTHONUNBUFFERED", "1")
    url = f"http://{settings.host}:{settings.port}"
    where = "MCS_ADMIN_TOKEN" if settings.admin_token else str(settings.admin_token_file)
    print(
        f"MCS {url}  database {settings.db}" + (f"  (migrated: {', '.join(applied)})" if applied else ""),
        file=sys.stderr,
    )
    print(f"admin token {'created in' if created else 'from'} {where}", file=sys.stderr)
    print("Ctrl-C stops all four processes.", file=sys.stderr)
    return Supervisor(settings, env=env).run()
