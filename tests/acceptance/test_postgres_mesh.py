"""The whole mesh on PostgreSQL (issue 16, docs/design/engines.md 4.2 and 5): `mcs api`, `mcs dispatcher`,
`mcs watchdog` and `mcs notifier` as real processes with MCS_DATABASE_URL pointing at a database of the
test's own on a real PostgreSQL 15 server (tests/pg.py), migrated with `mcs migrate`.

What a user would notice: webhooks arrive (plain and push-claim) and the work completes; a long-polling
agent is answered when work arrives; GET /v1/events streams a task's events in order; a schedule's tick
fires once with two watchdogs; with two dispatchers and two notifiers, 200 tasks each get exactly one
webhook and no agent ever holds more than its concurrency. The submit -> webhook p50 is printed (run
with -s to see it), never asserted: speed targets live in bench/.
"""

from __future__ import annotations

import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from mcs.client import Client

from .conftest import DEFAULT_ENV, StartedProcesses, free_ports, uid, wait_until
from .test_events import Watcher
from .test_push_claim import PushAgent

pytestmark = pytest.mark.acceptance

# Like conftest's LAUNCH_MCS_UP: the kernel SIGTERMs the process if pytest dies.
LAUNCH = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM); "
    "os.execv(sys.executable, [sys.executable, '-m', 'mcs', sys.argv[1]])"
)
START_TIMEOUT = 30.0  # seconds for a process to answer /healthz (a busy 2-core machine)
DEADLINE = 30.0  # seconds for anything the mesh does on its own
METRICS_PORT = {
    "dispatcher": "MCS_DISPATCHER_METRICS_PORT",
    "watchdog": "MCS_WATCHDOG_METRICS_PORT",
    "notifier": "MCS_NOTIFIER_METRICS_PORT",
}


@dataclass
class PgMesh(StartedProcesses):
    """Processes started one by one (several of a kind where the test asks) on one PostgreSQL database."""

    root: Path
    env: dict[str, str]
    database_url: str
    url: str
    admin: Client
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, process: str, **overrides: str) -> subprocess.Popen[bytes]:
        env = dict(self.env)
        if process in METRICS_PORT:
            (port,) = free_ports(1)
            env[METRICS_PORT[process]] = str(port)
            self.ports[name] = port
        env |= overrides
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it; closed here at once
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, process],
            env=env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        url = self.url if process == "api" else f"http://127.0.0.1:{self.ports[name]}"
        wait_until(lambda: self._healthy(url, proc), timeout=START_TIMEOUT, what=f"{name} to answer /healthz")
        return proc

    def _healthy(self, url: str, proc: subprocess.Popen[bytes]) -> bool:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{self.logs()}"
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, metric: str, labels: str = "") -> float:
        """The sum of a metric's samples (whose labels contain `labels`) on process `name`'s /metrics."""
        base = self.url if name == "api" else f"http://127.0.0.1:{self.ports[name]}"
        total = 0.0
        for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
            found = re.match(rf"^{metric}(\{{[^}}]*\}})? (\S+)$", line)
            if found and labels in (found.group(1) or ""):
                total += float(found.group(2))
        return total

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query.replace("?", "%s").encode(), args).fetchall()


@pytest.fixture
def pg_mesh(pg_database: str, tmp_path: Path) -> Iterator[Callable[..., PgMesh]]:
    """`pg_mesh(dispatchers=1, watchdogs=1, notifiers=1, **env)`: migrate the test's database with
    `mcs migrate`, then start one api and the processes asked for. Logs are printed at teardown (pytest
    shows them for a failing test)."""
    made: list[PgMesh] = []

    def make(*, dispatchers: int = 1, watchdogs: int = 1, notifiers: int = 1, **overrides: str) -> PgMesh:
        (api,) = free_ports(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")} | DEFAULT_ENV
        env |= {
            "MCS_DATABASE_URL": pg_database,
            "MCS_DB": str(tmp_path / "data" / "unused.db"),  # (set so nothing looks in the working folder)
            "MCS_PORT": str(api),
            "MCS_ADMIN_TOKEN": "acceptance-" + secrets.token_urlsafe(16),
            "PYTHONUNBUFFERED": "1",
        }
        env |= overrides
        migrated = subprocess.run(
            [sys.executable, "-m", "mcs", "migrate", "--json"], env=env, capture_output=True, text=True, timeout=120
        )
        assert migrated.returncode == 0 and '"engine": "postgres"' in migrated.stdout, migrated.stderr
        url = f"http://127.0.0.1:{api}"
        admin = Client(url, admin_token=env["MCS_ADMIN_TOKEN"], timeout=15)
        mesh = PgMesh(root=tmp_path, env=env, database_url=pg_database, url=url, admin=admin)
        made.append(mesh)
        mesh.start("api", "api")
        for kind, count in (("dispatcher", dispatchers), ("watchdog", watchdogs), ("notifier", notifiers)):
            for i in range(1, count + 1):
                mesh.start(f"{kind}-{i}", kind, MCS_INSTANCE=f"{kind}-{i}")
        return mesh

    yield make
    for mesh in made:
        mesh.stop()
        print(mesh.logs())


def p50_ms(latencies: list[float]) -> str:
    return f"p50 {statistics.median(latencies) * 1000:.1f} ms over {len(latencies)}"


def test_webhooks_long_polls_and_the_event_stream_on_postgresql(pg_mesh, agents):
    mesh = pg_mesh()
    stream = Watcher(mesh)  # type: ignore[arg-type] - it needs only .url and .env

    # Plain webhooks: one task at a time, each to the agent's notify_url, each completed by the agent.
    cap = f"pg-push-{uid()}"
    worker = agents(mesh, capabilities=[cap])
    latencies: list[float] = []
    pushed: list[str] = []
    for i in range(20):
        submitted = time.time()
        task_id = mesh.admin.submit(cap, {"n": i})["id"]
        wait_until(lambda n=i: len(worker.webhooks) > n, timeout=DEADLINE, what=f"the webhook of task {i}")
        assert worker.webhooks[i].task_id == task_id
        latencies.append(worker.webhooks[i].at - submitted)
        pushed.append(task_id)
    for task_id in pushed:
        assert mesh.admin.wait_for(task_id, timeout=DEADLINE)["state"] == "completed"
    assert len({w.webhook_id for w in worker.webhooks}) == 20
    print(f"\nPostgreSQL submit -> webhook, one task at a time: {p50_ms(latencies)}")

    # Push-claim: the webhook carries the claim; the agent completes with it, never claiming itself.
    claim_cap = f"pg-claim-{uid()}"

    def complete(agent: PushAgent, task: dict[str, Any]) -> None:
        agent.client.complete(task["id"], task["claim_token"], {"by": agent.name})

    pusher = PushAgent(mesh, [claim_cap], on_task=complete)  # type: ignore[arg-type]
    try:
        claimed = mesh.admin.submit(claim_cap, {"n": 1})
        done = mesh.admin.wait_for(claimed["id"], timeout=DEADLINE)
        assert done["state"] == "completed" and done["result"] == {"by": pusher.name}
        (carried,) = pusher.tasks()
        assert carried["id"] == claimed["id"] and carried["claim_token"]
    finally:
        pusher.close()

    # A pulling agent waits in a long poll; the task submitted meanwhile wakes it (well before its wait ends).
    pull_cap = f"pg-pull-{uid()}"
    creds = mesh.admin.create_agent(f"puller-{uid()}", [pull_cap])
    puller = Client(mesh.url, agent_id=creds["name"], agent_secret=creds["secret"], timeout=60)
    puller.register([pull_cap])
    answers: list[Any] = []
    poll = threading.Thread(target=lambda: answers.append(puller.claim_next(wait=25)))
    poll.start()
    try:
        wait_until(lambda: mesh.metric("api", "mcs_claims_waiting") == 1, timeout=DEADLINE, what="the claim to wait")
        woken = mesh.metric("api", "mcs_claim_wakeups_total", 'outcome="claimed"')
        pulled = mesh.admin.submit(pull_cap, {"n": 2})
        wait_until(lambda: answers, timeout=15, what="the waiting claim to get the task (it waits 25 s)")
    finally:
        poll.join(timeout=30)
    (got,) = answers
    assert got is not None and got["id"] == pulled["id"] and got["state"] == "claimed"
    assert mesh.metric("api", "mcs_claim_wakeups_total", 'outcome="claimed"') == woken + 1
    puller.complete(got["id"], got["claim_token"], {"pulled": True})
    puller.close()

    # The event stream delivered every one of these tasks' events, in commit order: the ids PostgreSQL's
    # sequencer gives events once they commit (design 5.3). The audit trail lists them in insertion order,
    # which may differ only for events no one waited on (the notifier's "notified" commits on its own
    # time: before or after the agent's claim); every other event follows the one it needed.
    def audit(task_id: str) -> list[str]:
        return [e["kind"] for e in mesh.admin.events(task_id)]

    for task_id in [*pushed, claimed["id"], pulled["id"]]:
        stream.wait_for(
            lambda events, t=task_id: sorted(e["kind"] for e in events if e.get("task_id") == t) == sorted(audit(t)),
            f"the stream to show every event of {task_id}",
        )
        caused = [kind for kind in stream.kinds(task_id) if kind != "notified"]
        assert caused == [kind for kind in audit(task_id) if kind != "notified"], task_id
        assert caused[0] == "submitted" and caused[-1] == "completed", caused
    assert stream.kinds(pulled["id"]) == ["submitted", "claimed", "completed"]
    ids = [e["id"] for e in stream.events]
    assert ids == sorted(set(ids)), "event ids are unique and increasing"


def test_a_schedule_fires_each_tick_once_with_two_watchdogs(pg_mesh, agents):
    # Sweeps 30 s apart: every tick must come from a watchdog waking at its time (and for the new schedule).
    mesh = pg_mesh(watchdogs=2, MCS_WATCHDOG_INTERVAL="30")
    kind, name = f"pg-tick-{uid()}", f"every-2s-{uid()}"
    agents(mesh, capabilities=[kind])
    mesh.admin.create_schedule(name, "* * * * * */2", task={"type": kind, "payload": {"what": "tick"}})

    def fired() -> list[tuple[Any, ...]]:
        return mesh.sql("SELECT tick_at, task_id FROM schedule_runs WHERE schedule = ? AND outcome = 'fired'", name)

    wait_until(lambda: len(fired()) >= 4, timeout=DEADLINE, what="four ticks (well before the next sweep)")
    mesh.admin.pause_schedule(name)
    runs = fired()
    ticks = sorted(tick for tick, _ in runs)
    assert all(b - a >= 2 for a, b in zip(ticks, ticks[1:], strict=False)), ticks
    tasks = mesh.sql("SELECT id FROM tasks WHERE type = ?", kind)
    assert sorted(t for (t,) in tasks) == sorted(task_id for _, task_id in runs)  # one task per tick, no more

    def fires_counted() -> float:
        return sum(mesh.metric(f"watchdog-{i}", "mcs_schedule_ticks_total", 'outcome="fired"') for i in (1, 2))

    # Each tick was fired by exactly one of the two watchdogs (their own counters add up to the ticks).
    wait_until(lambda: fires_counted() >= len(runs), timeout=DEADLINE, what="both watchdogs' counters")
    assert fires_counted() == len(runs)
    for task_id in (t for (t,) in tasks):
        assert mesh.admin.wait_for(task_id, timeout=DEADLINE)["state"] == "completed"


def test_two_dispatchers_and_two_notifiers_deliver_each_webhook_once_within_concurrency(pg_mesh, agents):
    mesh = pg_mesh(dispatchers=2, notifiers=2)
    cap = f"pg-load-{uid()}"
    limits = {}
    workers = []
    for concurrency in (1, 2, 3):
        agent = agents(mesh, capabilities=[cap], concurrency=concurrency, workers=concurrency)
        limits[agent.name] = concurrency
        workers.append(agent)
    submitted: dict[str, float] = {}
    for i in range(200):
        at = time.time()
        submitted[mesh.admin.submit(cap, {"n": i})["id"]] = at

    def completed() -> int:
        return mesh.sql("SELECT count(*) FROM tasks WHERE type = ? AND state = 'completed'", cap)[0][0]

    wait_until(lambda: completed() == 200, timeout=180, what="200 tasks completed")

    # Each task's webhook went out exactly once, to one agent, with a webhook-id of its own.
    deliveries = [w for agent in workers for w in agent.webhooks]
    per_task = Counter(w.task_id for w in deliveries)
    assert sorted(per_task) == sorted(submitted) and set(per_task.values()) == {1}, per_task.most_common(3)
    assert len({w.webhook_id for w in deliveries}) == 200
    assert mesh.sql("SELECT state, count(*), max(lease_owner) FROM outbox WHERE kind = 'webhook' GROUP BY state") == [
        ("delivered", 200, None)
    ]
    sent = [
        mesh.metric(n, "mcs_webhook_deliveries_total", 'kind="webhook",outcome="delivered"')
        for n in ("notifier-1", "notifier-2")
    ]
    routed = [mesh.metric(n, "mcs_tasks_dispatched_total") for n in ("dispatcher-1", "dispatcher-2")]
    assert sum(sent) == 200 and sum(routed) == 200, (sent, routed)

    # No agent ever held more tasks than its concurrency. The audit trail in insertion order is a valid
    # order for this: a dispatcher assigns past an agent's finished task only after reading that
    # completion committed, so the assignment's event is inserted after the completion's.
    held: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    holder: dict[str, str] = {}
    rows = mesh.sql(
        "SELECT e.task_id, e.kind, e.detail FROM task_events e JOIN tasks t ON t.id = e.task_id"
        " WHERE t.type = ? ORDER BY e.id",
        cap,
    )
    for task_id, kind, detail in rows:
        if kind == "assigned":
            agent = re.search(r'"agent": ?"([^"]+)"', detail).group(1)
            holder[task_id] = agent
            held[agent] += 1
            peak[agent] = max(peak[agent], held[agent])
        elif kind in ("completed", "failed", "requeued", "canceled") and task_id in holder:
            held[holder.pop(task_id)] -= 1
    assert all(peak[name] <= limit for name, limit in limits.items()), (dict(peak), limits)
    assert sum(1 for _, kind, _ in rows if kind == "assigned") == 200

    latencies = [w.at - submitted[w.task_id] for w in deliveries]
    print(
        f"\nPostgreSQL submit -> webhook, 200 tasks at once (2 dispatchers, 2 notifiers): {p50_ms(latencies)};"
        f" delivered by notifier 1/2: {sent}; routed by dispatcher 1/2: {routed}; peak held {dict(peak)} of {limits}"
    )
    assert all(n > 0 for n in sent), sent  # both notifiers took part
