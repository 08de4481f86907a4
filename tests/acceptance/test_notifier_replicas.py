"""Several notifiers on one SQLite database (issue 16, docs/design/engines.md 4.2): each leases the outbox
rows it takes, so no webhook goes out twice while the notifiers live, and the rows a killed notifier held
go out from another one once its lease lapses, with the same webhook-id.

The processes are started one by one (`mcs api`, `mcs dispatcher`, `mcs notifier` twice), not through
`mcs up`, which runs exactly one of each.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcs.client import Client

from .conftest import DEFAULT_ENV, StartedProcesses, free_ports, uid, wait_until

# Like conftest's LAUNCH_MCS_UP: the kernel SIGTERMs the process if pytest dies.
LAUNCH = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM); "
    "os.execv(sys.executable, [sys.executable, '-m', 'mcs', sys.argv[1]])"
)
START_TIMEOUT = 30.0


@dataclass
class Replicas(StartedProcesses):
    """An api, a dispatcher and any number of notifiers started one by one on one database."""

    root: Path
    env: dict[str, str]
    url: str
    admin: Client
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return Path(self.env["MCS_DB"])

    def start(self, name: str, process: str, **overrides: str) -> subprocess.Popen[bytes]:
        (port,) = free_ports(1)
        env = self.env | {"MCS_NOTIFIER_METRICS_PORT": str(port), "MCS_DISPATCHER_METRICS_PORT": str(port)}
        env |= overrides
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process, at teardown
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
        self.procs[name], self.ports[name] = proc, port
        url = self.url if process == "api" else f"http://127.0.0.1:{port}"
        wait_until(lambda: self._healthy(url, proc), timeout=START_TIMEOUT, what=f"{name} to answer /healthz")
        return proc

    def _healthy(self, url: str, proc: subprocess.Popen[bytes]) -> bool:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{self.logs()}"
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def delivered(self, name: str) -> float:
        """Webhooks notifier `name` delivered, from its own /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5).text
        found = re.search(r'^mcs_webhook_deliveries_total\{kind="webhook",outcome="delivered"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute(query, args).fetchall()
        finally:
            conn.close()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., Replicas]]:
    made: list[Replicas] = []

    def make(**overrides: str) -> Replicas:
        (api,) = free_ports(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")} | DEFAULT_ENV
        env |= {
            "MCS_DB": str(tmp_path / "data" / "mcs.db"),
            "MCS_PORT": str(api),
            "MCS_ADMIN_TOKEN": "acceptance-" + secrets.token_urlsafe(16),
            "PYTHONUNBUFFERED": "1",
        }
        env |= overrides
        (tmp_path / "data").mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "mcs", "migrate"], env=env, check=True, capture_output=True)
        url = f"http://127.0.0.1:{api}"
        mesh = Replicas(root=tmp_path, env=env, url=url, admin=Client(url, admin_token=env["MCS_ADMIN_TOKEN"]))
        made.append(mesh)
        mesh.start("api", "api")
        mesh.start("dispatcher", "dispatcher")
        return mesh

    yield make
    for mesh in made:
        mesh.stop()


def test_two_notifiers_deliver_each_webhook_exactly_once(replicas, agents):
    """Both notifiers send (each has rows a slow receiver keeps under way), neither sends a row twice."""
    mesh = replicas()
    mesh.start("notifier-1", "notifier")
    mesh.start("notifier-2", "notifier")  # no MCS_INSTANCE: each leases as host:pid
    cap = f"slow-{uid()}"
    agent = agents(mesh, capabilities=[cap], answer_delay=0.3, concurrency=40, workers=4)
    tasks = [mesh.admin.submit(cap, {"n": i})["id"] for i in range(40)]
    for task_id in tasks:
        assert mesh.admin.wait_for(task_id, timeout=60)["state"] == "completed"
    with agent.lock:
        ids = Counter(w.webhook_id for w in agent.webhooks)
        per_task = Counter(w.task_id for w in agent.webhooks)
    assert sorted(per_task) == sorted(tasks)
    assert set(per_task.values()) == {1}, per_task  # exactly one webhook per assignment
    assert set(ids.values()) == {1} and len(ids) == 40
    one, two = mesh.delivered("notifier-1"), mesh.delivered("notifier-2")
    assert one + two == 40 and one > 0 and two > 0, (one, two)  # both took part
    # Every row settled and no lease left behind.
    assert mesh.sql("SELECT state, count(*), max(lease_owner) FROM outbox GROUP BY state") == [("delivered", 40, None)]


def test_rows_a_killed_notifier_held_go_out_from_the_other_after_its_lease(replicas, agents):
    mesh = replicas(MCS_OUTBOX_LEASE="2")
    first = mesh.start("notifier-a", "notifier", MCS_INSTANCE="a")
    cap = f"hang-{uid()}"
    # The receiver keeps notifier a's requests open, so a still holds the rows when it is killed.
    agent = agents(mesh, capabilities=[cap], answer_delay=8.0, concurrency=3, workers=3)
    tasks = [mesh.admin.submit(cap, {"n": i})["id"] for i in range(3)]
    wait_until(lambda: len(agent.webhook_task_ids()) == 3, timeout=30, what="notifier a to send three webhooks")
    held = mesh.sql("SELECT id, message_id FROM outbox WHERE kind = 'webhook' AND lease_owner = 'a'")
    assert len(held) == 3
    # A second notifier, started while a's leases live (a renews them), leaves those rows alone.
    mesh.start("notifier-b", "notifier", MCS_INSTANCE="b")
    wait_until(
        lambda: mesh.sql("SELECT 1 FROM heartbeats WHERE process = 'notifier' AND instance = 'b'"),
        timeout=30,
        what="notifier b's first passes",
    )
    assert mesh.sql("SELECT count(*) FROM outbox WHERE lease_owner = 'b'") == [(0,)]
    assert len(agent.webhook_task_ids()) == 3

    agent.answer_delay = 0.0
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)

    for task_id in tasks:
        assert mesh.admin.wait_for(task_id, timeout=60)["state"] == "completed"
    with agent.lock:
        seen = Counter(w.webhook_id for w in agent.webhooks)
    assert seen == {message_id: 2 for _, message_id in held}  # once from a, once again from b: same ids
    assert mesh.delivered("notifier-b") == 3
    assert mesh.sql("SELECT state, count(*), max(lease_owner) FROM outbox GROUP BY state") == [("delivered", 3, None)]
