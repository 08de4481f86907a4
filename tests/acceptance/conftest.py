"""Acceptance fixtures: the real `mcs up` (four OS processes over one SQLite file) and fake agents that
receive real, signed webhooks on loopback and act through the real Python client.

    def test_something(mesh, agent_factory):
        worker = agent_factory(mesh, capabilities=["echo"])       # created, registered, listening
        task = mesh.admin.submit("echo", {"n": 1})
        done = mesh.admin.wait_for(task["id"], timeout=10)

`mesh` is one mesh per test module (tests isolate themselves with unique capability and agent names);
`mesh_factory` starts a fresh one per call, for tests that kill processes. Every agent checks every
webhook it receives with the `standardwebhooks` package, and the test fails at teardown if any did not
verify.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from mcs.client import Client, McsApiError
from tests.polling import wait_until  # noqa: F401 - the tests import it from here

from .streams import RetryingClient

PROCESSES = ("api", "dispatcher", "watchdog", "notifier")
START_TIMEOUT = 30.0  # seconds for all four processes to answer /healthz (a busy 2-core machine)
STOP_TIMEOUT = 15.0  # seconds `mcs up` may take to stop on SIGTERM
LOG_TAIL = 12_000  # characters of the `mcs up` log attached to a failing test's report

# Runs `python -m mcs up` in place (same pid, same command line) after asking the kernel to SIGTERM it if
# pytest dies, so a killed test run leaves no mesh busy-polling on a shared machine.
LAUNCH_MCS_UP = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG
    "os.execv(sys.executable, [sys.executable, '-m', 'mcs', 'up'])"
)

# Fast but realistic settings: every duration the tests wait on is a fraction of a second.
DEFAULT_ENV = {
    "MCS_HOST": "127.0.0.1",
    "MCS_WATCHDOG_INTERVAL": "0.2",
    "MCS_RETRY_BASE": "0.25",
    "MCS_RETRY_MAX": "5",
    "MCS_WEBHOOK_RETRY_BASE": "0.1",
    "MCS_WEBHOOK_RETRY_MAX": "1",
    # Longer than any test: a webhook that never arrives must show up as a stuck task, not be papered
    # over by the watchdog routing the assignment again.
    "MCS_CLAIM_TTL": "120",
    "MCS_LOG_LEVEL": "INFO",
}


# ---------------------------------------------------------------- small helpers


def uid() -> str:
    return uuid.uuid4().hex[:8]


def free_ports(n: int) -> list[int]:
    """`n` distinct ports the kernel says are free now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, starttime) of a process, or None when it no longer exists."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def alive(pid: int, starttime: int | None = None) -> bool:
    """Whether this process still runs (a zombie does not; a reused pid with another start time does not)."""
    stat = _proc_stat(pid)
    if stat is None or stat[1] in ("Z", "X"):
        return False
    return starttime is None or stat[2] == starttime


# ---------------------------------------------------------------- the mesh


@dataclass
class Mesh:
    """A running `mcs up`: its url, an admin client, its files, and its child processes."""

    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str
    admin: Client
    ports: dict[str, int]
    alerts: Receiver | None = None
    stopped: bool = False
    exit_code: int | None = None

    @property
    def db(self) -> Path:
        return Path(self.env["MCS_DB"])

    @property
    def admin_token(self) -> str:
        return self.env["MCS_ADMIN_TOKEN"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> dict[str, int]:
        """The live child processes of the supervisor, by the command they run (`-m mcs dispatcher`...)."""
        found: dict[str, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            stat = _proc_stat(pid)
            if stat is None or stat[0] != self.proc.pid or stat[1] in ("Z", "X"):
                continue
            argv = _cmdline(pid)
            if len(argv) >= 4 and argv[1:3] == ["-m", "mcs"] and argv[3] in PROCESSES:
                found[argv[3]] = pid
        return found

    def child_pid(self, name: str) -> int:
        return wait_until(lambda: self.children().get(name), timeout=10, what=f"a running `mcs {name}`")

    def kill_child(self, name: str, sig: int = signal.SIGKILL) -> int:
        pid = self.child_pid(name)
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, name: str, old_pid: int, *, timeout: float = 10.0) -> int:
        """The new pid of `mcs NAME` once the supervisor has started it again."""

        def new_pid() -> int | None:
            pid = self.children().get(name)
            return pid if pid is not None and pid != old_pid else None

        return wait_until(new_pid, timeout=timeout, what=f"`mcs up` to restart {name} (was pid {old_pid})")

    def healthy(self) -> bool:
        """The api and the three workers' status ports all answer /healthz with 200."""
        urls = [f"{self.url}/healthz"] + [
            f"http://127.0.0.1:{self.ports[p]}/healthz" for p in ("dispatcher", "watchdog", "notifier")
        ]
        try:
            return all(httpx.get(u, timeout=2).status_code == 200 for u in urls)
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM to `mcs up`; asserts it exits 0 in time and that none of its four children outlive it."""
        if self.stopped:
            assert self.exit_code is not None
            return self.exit_code
        self.stopped = True
        self.admin.close()
        children = {name: (pid, _proc_stat(pid)) for name, pid in self.children().items()}
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise AssertionError(f"`mcs up` did not stop within {timeout} s of SIGTERM") from None
        deadline = time.monotonic() + 5
        left = {n: pid for n, (pid, st) in children.items() if alive(pid, st[2] if st else None)}
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {n: pid for n, (pid, st) in children.items() if alive(pid, st[2] if st else None)}
        if left:
            self.kill_all(left.values())
        assert self.exit_code == 0, f"`mcs up` exited {self.exit_code} on SIGTERM"
        assert not left, f"processes still running after `mcs up` exited: {left}"
        return self.exit_code

    def kill_all(self, pids: Any = ()) -> None:
        """Last resort after a failed stop: SIGKILL what this mesh started, by pid."""
        for pid in list(pids) or list(self.children().values()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


_LIVE_MESHES: list[Mesh] = []


@contextmanager
def running_mesh(root: Path, **overrides: str) -> Iterator[Mesh]:
    """Start `mcs up` in `root` with free ports; stop it (and check it stopped cleanly) on exit."""
    root.mkdir(parents=True, exist_ok=True)
    api, dispatcher, watchdog, notifier = free_ports(4)
    ports = {"api": api, "dispatcher": dispatcher, "watchdog": watchdog, "notifier": notifier}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= DEFAULT_ENV
    env |= {
        "MCS_DB": str(root / "data" / "mcs.db"),
        "MCS_PORT": str(api),
        "MCS_DISPATCHER_METRICS_PORT": str(dispatcher),
        "MCS_WATCHDOG_METRICS_PORT": str(watchdog),
        "MCS_NOTIFIER_METRICS_PORT": str(notifier),
        "MCS_ADMIN_TOKEN": "acceptance-" + secrets.token_urlsafe(16),
        "PYTHONUNBUFFERED": "1",
    }
    env |= overrides
    log_path = root / "mcs-up.log"
    url = f"http://127.0.0.1:{api}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH_MCS_UP]
            if sys.platform.startswith("linux")
            else [sys.executable, "-m", "mcs", "up"],
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal reaches pytest, not the mesh directly
        )
    mesh = Mesh(
        root=root,
        env=env,
        proc=proc,
        log_path=log_path,
        url=url,
        admin=Client(url, admin_token=env["MCS_ADMIN_TOKEN"], timeout=15),
        ports=ports,
    )
    _LIVE_MESHES.append(mesh)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not mesh.healthy():
            if proc.poll() is not None:
                raise AssertionError(f"`mcs up` exited {proc.returncode} at start-up:\n{mesh.log()[-LOG_TAIL:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"`mcs up` not healthy after {START_TIMEOUT} s:\n{mesh.log()[-LOG_TAIL:]}")
            time.sleep(0.05)
        assert sorted(mesh.children()) == sorted(PROCESSES), mesh.children()
        yield mesh
    finally:
        _LIVE_MESHES.remove(mesh)
        try:
            mesh.stop()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- mcs up log ---\n{mesh.log()[-LOG_TAIL:]}") from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the log of every running mesh to a failing test's report."""
    report = yield
    if report.failed:
        for i, mesh in enumerate(_LIVE_MESHES):
            report.sections.append((f"mcs up log #{i} ({mesh.root})", mesh.log()[-LOG_TAIL:]))
    return report


# ---------------------------------------------------------------- receivers and fake agents


class Receiver:
    """A plain HTTP receiver on loopback that records every JSON body POSTed to it (alerts)."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def default_result(agent: FakeAgent, task: dict[str, Any]) -> Any:
    return {"task_id": task["id"], "agent": agent.name, "payload": task["payload"]}


@dataclass
class Delivery:
    webhook_id: str
    task_id: str
    attempt: str | None
    at: float = field(default_factory=time.time)  # when it arrived (submit -> webhook latencies)


@dataclass
class FakeAgent:
    """An agent with real credentials. In push mode (the default) it serves a notify_url, verifies each
    webhook with `standardwebhooks`, answers 204 at once and then, on a worker thread, acts on the task:

    - "complete": claim, then complete with `result(agent, task)`;
    - "fail": claim, then fail (retryable) with `error`;
    - "next": treat the webhook as a doorbell: claim *next* (the most urgent task for it), then complete;
    - "hold": claim and then never finish (an agent that died holding the lease);
    - "ignore": never claim.

    `refuse_first=N` answers 503 to the first N webhooks (after verifying them), so MCS must retry.
    `answer_delay` seconds pass before each answer (a slow network keeps deliveries in flight).
    `concurrency` is what it registers (how many tasks MCS may hand it at once; server default 1).
    `persistent=True` gives it a `RetryingClient` (tests/acceptance/streams.py): it rides out an api that
    is killed, busy or out of disk by retrying, as a real agent must.

    Without push it has no notify_url and the test drives it (claim_next, claim, ...) via `client`.
    """

    mesh: Mesh
    name: str
    capabilities: list[str]
    mode: str = "complete"
    push: bool = True
    workers: int = 1
    result: Callable[[FakeAgent, dict[str, Any]], Any] = default_result
    error: Any = "agent says no"
    refuse_first: int = 0
    answer_delay: float = 0.0
    concurrency: int | None = None
    persistent: bool = False
    secret: str = ""
    webhook_secret: str = ""
    client: Client = field(init=False)
    webhooks: list[Delivery] = field(default_factory=list)  # every verified webhook, refused ones too
    refused: list[Delivery] = field(default_factory=list)
    verify_failures: list[str] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)  # task ids, once per successful claim
    completed: dict[str, list[Any]] = field(default_factory=dict)  # task id -> results stored by this agent
    failed: list[str] = field(default_factory=list)  # task ids, once per reported failure
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (task id, error code) of refused calls
    errors: list[str] = field(default_factory=list)  # anything unexpected; must stay empty
    truncated: int = 0  # requests whose sender hung up before the whole body arrived (never acted on)

    def __post_init__(self) -> None:
        creds = self.mesh.admin.create_agent(self.name, self.capabilities)
        assert creds["name"] == self.name and creds["webhook_secret"].startswith("whsec_")
        self.secret, self.webhook_secret = creds["secret"], creds["webhook_secret"]
        client_class = RetryingClient if self.persistent else Client
        self.client = client_class(self.mesh.url, agent_id=self.name, agent_secret=self.secret, timeout=15)
        self.lock = threading.Lock()
        self.jobs: queue.Queue[str | None] = queue.Queue()
        self.server: ThreadingHTTPServer | None = None
        self.threads: list[threading.Thread] = []
        if self.push:
            self._serve()
            for i in range(self.workers):
                t = threading.Thread(target=self._work, name=f"{self.name}-worker-{i}", daemon=True)
                t.start()
                self.threads.append(t)

    # ------------------------------------------------------------ webhooks in

    @property
    def notify_url(self) -> str | None:
        return f"http://127.0.0.1:{self.server.server_port}/hook" if self.server else None

    def _serve(self) -> None:
        agent = self
        verifier = Webhook(self.webhook_secret)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (a killed notifier): no delivery
                    with agent.lock:
                        agent.truncated += 1
                    self.close_connection = True
                    return
                try:
                    event = verifier.verify(body, dict(self.headers.items()))
                except Exception as exc:  # any verification error is a failure the test reports
                    with agent.lock:
                        agent.verify_failures.append(f"{type(exc).__name__}: {exc} ({length} bytes)")
                    self.send_response(401)
                    self.end_headers()
                    return
                task_id = event["data"]["task"]["id"]
                with agent.lock:
                    delivery = Delivery(self.headers["webhook-id"], task_id, self.headers.get("webhook-attempt"))
                    agent.webhooks.append(delivery)
                    refuse = len(agent.webhooks) <= agent.refuse_first
                    if refuse:
                        agent.refused.append(delivery)
                if agent.answer_delay:
                    time.sleep(agent.answer_delay)
                if refuse:
                    self.send_response(503)
                    self.end_headers()
                    return
                self.send_response(204)  # answer at once, then work: what the contract asks of agents
                self.end_headers()
                if event.get("type") != "task.assigned":
                    agent._record_error(f"unexpected webhook type {event.get('type')!r}")
                    return
                agent.jobs.put(task_id)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        t = threading.Thread(target=self.server.serve_forever, name=f"{self.name}-http", daemon=True)
        t.start()
        self.threads.append(t)

    def webhook_task_ids(self) -> list[str]:
        with self.lock:
            return [w.task_id for w in self.webhooks]

    # ------------------------------------------------------------ acting on tasks

    def _record_error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def _work(self) -> None:
        while (task_id := self.jobs.get()) is not None:
            try:
                self.handle(task_id)
            except McsApiError as exc:
                if exc.status == 409:  # lost a race or a duplicate webhook: normal under at-least-once
                    with self.lock:
                        self.conflicts.append((task_id, exc.code))
                else:
                    self._record_error(f"{task_id}: {exc}")
            except Exception as exc:  # record it; never let the worker thread die
                self._record_error(f"{task_id}: {type(exc).__name__}: {exc}")

    def handle(self, task_id: str) -> None:
        if self.mode == "ignore":
            return
        if self.mode == "next":
            task = self.client.claim_next()
            if task is None:
                return
            task_id = task["id"]
        else:
            task = self.client.claim(task_id)
        with self.lock:
            self.claimed.append(task_id)
        if self.mode == "hold":
            return
        if self.mode == "fail":
            self.client.fail(task_id, task["claim_token"], self.error)
            with self.lock:
                self.failed.append(task_id)
            return
        result = self.result(self, task)
        done = self.client.complete(task_id, task["claim_token"], result)
        assert done["state"] == "completed", done
        with self.lock:
            self.completed.setdefault(task_id, []).append(result)

    def register(self, ttl: float | None = None) -> dict[str, Any]:
        """Come online (registration is also the heartbeat)."""
        answer = self.client.register(
            self.capabilities, notify_url=self.notify_url, ttl=ttl, concurrency=self.concurrency
        )
        assert answer["status"] == "online", answer
        return answer

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.persistent:  # a worker still retrying (the test failed) gives up instead of waiting it out
            self.client.close()
        for _ in range(self.workers if self.push else 0):
            self.jobs.put(None)
        for t in self.threads:
            t.join(timeout=5)
        self.client.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One running mesh for the whole module, with an alert receiver wired in (MCS_ALERT_WEBHOOK_URL)."""
    alerts = Receiver()
    try:
        with running_mesh(tmp_path_factory.mktemp("mesh"), MCS_ALERT_WEBHOOK_URL=alerts.url) as m:
            m.alerts = alerts
            yield m
    finally:
        alerts.close()


@pytest.fixture
def mesh_factory(tmp_path: Path) -> Iterator[Callable[..., Mesh]]:
    """Start a fresh mesh per call (`mesh_factory(MCS_CLAIM_TTL="1")`); each is stopped and checked at
    teardown: exit 0 within 15 s of SIGTERM and no child process left."""
    with ExitStack() as stack:
        count = itertools.count()

        def start(**overrides: str) -> Mesh:
            return stack.enter_context(running_mesh(tmp_path / f"mesh{next(count)}", **overrides))

        yield start


@pytest.fixture
def agent_factory() -> Iterator[Callable[..., FakeAgent]]:
    """`agent_factory(mesh, capabilities=[...], mode=..., push=True, register=True)` -> a FakeAgent.

    At teardown: every webhook any agent of the test received verified (zero signature failures), and no
    agent hit an unexpected error."""
    made: list[FakeAgent] = []

    def make(
        mesh: Mesh, *, capabilities: list[str], name: str | None = None, register: bool = True, **kw: Any
    ) -> FakeAgent:
        agent = FakeAgent(mesh=mesh, name=name or f"agent-{uid()}", capabilities=capabilities, **kw)
        made.append(agent)
        if register:
            agent.register()
        return agent

    yield make
    for agent in made:
        agent.close()
    failures = {a.name: a.verify_failures for a in made if a.verify_failures}
    errors = {a.name: a.errors for a in made if a.errors}
    assert not failures, f"webhooks that failed Standard Webhooks verification: {failures}"
    assert not errors, f"agents hit unexpected errors: {errors}"


def event_kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events]


class StartedProcesses:
    """What a test's own set of MCS processes shares: their logs (for a failure's message) and stopping
    them all (SIGTERM, then a kill after 15 s). Subclasses have `root` (the logs' folder), `admin` (a
    Client) and `procs` (name -> Popen)."""

    root: Path
    admin: Any
    procs: dict[str, subprocess.Popen[bytes]]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.root.glob("*.log"))

    def stop(self) -> None:
        self.admin.close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def agents() -> Iterator[Callable[..., FakeAgent]]:
    """`agents(mesh, **kw)`: registered FakeAgents on a test's own set of processes (StartedProcesses);
    each is closed at teardown, and every webhook it got must have verified, with no handler error."""
    made: list[FakeAgent] = []

    def make(mesh: StartedProcesses, **kw: Any) -> FakeAgent:
        agent = FakeAgent(mesh=mesh, name=f"agent-{uid()}", **kw)  # type: ignore[arg-type]
        made.append(agent)
        agent.register()
        return agent

    yield make
    for agent in made:
        agent.close()
    assert not [a.verify_failures for a in made if a.verify_failures]
    assert not [a.errors for a in made if a.errors]
