"""Push-claim and complete-and-next against the real `mcs up`: the dispatcher claims for an agent with
`claim_on_push` as it assigns, the webhook carries the claim, and the agent completes with one request; a
pulling SDK agent completes and gets its next task in one request. Requests are counted at the api (its
own /metrics), leases, fencing, reject and concurrency are exercised through real processes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcs import webhooks
from mcs.agent import Agent, Task
from mcs.client import Client, ConflictError

from .conftest import Mesh, event_kinds, uid, wait_until
from .test_agent_sdk import AgentThread

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0  # seconds for anything the mesh does on its own (a busy 2-core machine)


def api_requests(mesh: Mesh) -> dict[tuple[str, str], float]:
    """(method, route) -> requests the api answered, from its own /metrics."""
    text = httpx.get(f"{mesh.url}/metrics", timeout=10).text
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mcs_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["method"], sample.labels["route"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def api_counter(mesh: Mesh, name: str, process: str = "api") -> float:
    """A counter's value on one process's /metrics (the api's, or a worker's status port)."""
    base = mesh.url if process == "api" else f"http://127.0.0.1:{mesh.ports[process]}"
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


CLAIM_BY_ID = ("POST", "/v1/tasks/<task_id>/claim")
CLAIM_NEXT = ("POST", "/v1/tasks/claim")
COMPLETE = ("POST", "/v1/tasks/<task_id>/complete")


def delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], key: tuple[str, str]) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def sdk_agent(mesh: Mesh) -> Iterator[Callable[..., AgentThread]]:
    """`sdk_agent(handler, capabilities=[...], **agent_kwargs)`: an SDK agent with its defaults; stopped at
    teardown."""
    started: list[AgentThread] = []

    def make(handler: Any, *, capabilities: list[str], **kw: Any) -> AgentThread:
        name = f"sdk-{uid()}"
        creds = mesh.admin.create_agent(name, capabilities)
        kw.setdefault("webhook_secret", creds["webhook_secret"])
        agent = Agent(handler, capabilities=capabilities, url=mesh.url, name=name, secret=creds["secret"], env={}, **kw)
        runner = AgentThread(agent)
        started.append(runner)
        return runner

    yield make
    for runner in started:
        runner.stop()


class PushAgent:
    """A hand-written agent registered with claim_on_push: a loopback receiver that checks each webhook's
    signature, records the task it carries, answers with `status(n)` for the n-th delivery, and calls
    `on_task(task)` first (on the receiver's thread)."""

    def __init__(
        self,
        mesh: Mesh,
        capabilities: list[str],
        *,
        on_task: Callable[[PushAgent, dict[str, Any]], None] = lambda agent, task: None,
        status: Callable[[int], int] = lambda n: 204,
        concurrency: int | None = None,
    ) -> None:
        self.name = f"push-{uid()}"
        creds = mesh.admin.create_agent(self.name, capabilities, claim_on_push=True)
        assert creds["claim_on_push"] is True
        self.client = Client(mesh.url, agent_id=self.name, agent_secret=creds["secret"], timeout=15)
        self.deliveries: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, the task it carried)
        self.lock = threading.Lock()
        outer, secret = self, creds["webhook_secret"]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                webhooks.verify(secret=secret, headers={k.lower(): v for k, v in self.headers.items()}, body=body)
                event = json.loads(body)
                task = event["data"]["task"]
                with outer.lock:
                    outer.deliveries.append((self.headers["webhook-id"], task))
                    n = len(outer.deliveries)
                if event["type"] == "task.assigned":
                    on_task(outer, task)
                self.send_response(status(n))
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        url = f"http://127.0.0.1:{self.server.server_port}/hook"
        answer = self.client.register(capabilities, notify_url=url, concurrency=concurrency)
        assert answer["claim_on_push"] is True

    def tasks(self) -> list[dict[str, Any]]:
        with self.lock:
            return [t for _, t in self.deliveries]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


@pytest.fixture
def push_agent(mesh: Mesh) -> Iterator[Callable[..., PushAgent]]:
    made: list[PushAgent] = []

    def make(capabilities: list[str], **kw: Any) -> PushAgent:
        agent = PushAgent(mesh, capabilities, **kw)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def outbox_states(mesh: Mesh, task_id: str) -> list[str]:
    conn = sqlite3.connect(f"file:{mesh.db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT state FROM outbox WHERE task_id = ? AND kind = 'webhook' ORDER BY id", (task_id,))
        return [r[0] for r in rows]
    finally:
        conn.close()


# ---------------------------------------------------------------- push-claim


def test_an_sdk_agent_completes_each_task_with_one_request(mesh, sdk_agent):
    kind = f"one-{uid()}"
    runner = sdk_agent(lambda task: {"n": task.payload["n"]}, capabilities=[kind], concurrency=2)
    assert mesh.admin.get_agent(runner.agent.name)["claim_on_push"] is True  # the SDK's default
    before = api_requests(mesh)  # (after start-up, whose catch-up claim asks once per slot)
    pushed = api_counter(mesh, "mcs_tasks_push_claimed_total", "dispatcher")
    tasks = [mesh.admin.submit(kind, {"n": i}) for i in range(6)]
    for i, t in enumerate(tasks):
        done = mesh.admin.wait_for(t["id"], timeout=DEADLINE)
        assert (done["state"], done["result"], done["attempts"]) == ("completed", {"n": i}, 1), done
    after = api_requests(mesh)
    assert delta(before, after, CLAIM_BY_ID) == 0 and delta(before, after, CLAIM_NEXT) == 0
    assert delta(before, after, COMPLETE) == 6
    assert api_counter(mesh, "mcs_tasks_push_claimed_total", "dispatcher") == pushed + 6
    for t in tasks:
        events = mesh.admin.events(t["id"])
        claims = [e for e in events if e["kind"] == "claimed"]
        assert [(e["actor"], e["detail"]["push"]) for e in claims] == [("dispatcher", True)]
        assert "assigned" not in event_kinds(events)
    assert runner.agent.completed == 6


def test_a_webhook_retried_after_the_agent_completed_mints_no_second_claim(mesh, push_agent):
    kind = f"retry-{uid()}"

    def complete_then_fail_the_answer(agent: PushAgent, task: dict[str, Any]) -> None:
        if len(agent.deliveries) == 1:  # work first, then answer 503: the notifier must try again
            agent.client.complete(task["id"], task["claim_token"], {"done": True})

    agent = push_agent([kind], on_task=complete_then_fail_the_answer, status=lambda n: 503 if n == 1 else 204)
    skipped = api_counter(mesh, "mcs_webhooks_superseded_total", "notifier")
    task = mesh.admin.submit(kind, {})
    done = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
    assert done["state"] == "completed" and done["attempts"] == 1
    # The retry finds the claim it carries gone: not sent, and no second claim anywhere.
    wait_until(lambda: outbox_states(mesh, task["id"]) == ["superseded"], timeout=DEADLINE, what="the retry dropped")
    assert len(agent.deliveries) == 1
    assert api_counter(mesh, "mcs_webhooks_superseded_total", "notifier") == skipped + 1
    kinds = event_kinds(mesh.admin.events(task["id"]))
    assert kinds.count("claimed") == 1 and kinds[-1] == "completed", kinds


def test_the_sdk_runs_a_repeated_webhook_once(mesh, sdk_agent):
    """The same signed webhook delivered twice (its first answer lost): the handler runs once."""
    kind = f"twice-{uid()}"
    calls: list[str] = []
    runner = sdk_agent(lambda task: calls.append(task.id) or "ok", capabilities=[kind])
    task = mesh.admin.submit(kind, {})
    assert mesh.admin.wait_for(task["id"], timeout=DEADLINE)["state"] == "completed"
    conn = sqlite3.connect(f"file:{mesh.db}?mode=ro", uri=True, timeout=10)
    try:
        message_id, body = conn.execute(
            "SELECT message_id, body FROM outbox WHERE task_id = ?", (task["id"],)
        ).fetchone()
    finally:
        conn.close()
    assert json.loads(body)["data"]["task"]["claim_token"]
    headers = webhooks.headers(
        secret=runner.agent.webhook_secret, message_id=message_id, timestamp=int(time.time()), body=body
    )
    url = runner.agent.notify_url
    assert url is not None
    assert httpx.post(url, content=body, headers=headers, timeout=10).status_code == 204
    # One handler slot, tasks run in the order they came: had the repeat been taken, it would run first.
    later = mesh.admin.submit(kind, {})
    assert mesh.admin.wait_for(later["id"], timeout=DEADLINE)["state"] == "completed"
    assert calls == [task["id"], later["id"]] and runner.agent.completed == 2


def test_an_expired_push_claim_is_delivered_again_with_a_new_token_and_the_old_one_is_fenced(mesh, push_agent):
    kind = f"lapse-{uid()}"
    agent = push_agent([kind])  # holds what it gets and never finishes (until the test does)
    task = mesh.admin.submit(kind, {}, claim_ttl=1)
    wait_until(lambda: len(agent.tasks()) >= 2, timeout=DEADLINE, what="the task delivered a second time")
    first, second = agent.tasks()[:2]
    assert first["claim_token"] != second["claim_token"]
    assert (first["attempts"], second["attempts"]) == (1, 2)
    kinds = event_kinds(mesh.admin.events(task["id"]))
    assert kinds[:5] == ["submitted", "claimed", "notified", "lease_expired", "retrying"], kinds
    with pytest.raises(ConflictError) as stale:
        agent.client.complete(task["id"], first["claim_token"], "late")
    assert stale.value.code == "stale_claim_token"
    mesh.admin.cancel(task["id"])  # (it would go on lapsing until its retries are spent)


def test_a_rejected_push_claim_goes_to_another_agent(mesh, push_agent):
    kind = f"reject-{uid()}"

    def decline(agent: PushAgent, task: dict[str, Any]) -> None:
        agent.client.reject(task["id"], "not today", claim_token=task["claim_token"])

    def finish(agent: PushAgent, task: dict[str, Any]) -> None:
        agent.client.complete(task["id"], task["claim_token"], {"by": agent.name})

    picky = push_agent([kind], on_task=decline)
    task = mesh.admin.submit(kind, {})
    wait_until(lambda: "rejected" in event_kinds(mesh.admin.events(task["id"])), timeout=DEADLINE, what="the rejection")
    assert mesh.admin.get_task(task["id"])["state"] == "queued"  # and never offered to picky again
    worker = push_agent([kind], on_task=finish)
    done = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
    assert done["state"] == "completed" and done["result"] == {"by": worker.name}
    assert done["attempts"] == 1  # a declined claim spends no attempt
    assert [t["id"] for t in picky.tasks()] == [task["id"]]


def test_push_claims_respect_the_agents_concurrency(mesh, sdk_agent):
    kind = f"conc-{uid()}"
    running, most = 0, 0
    lock = threading.Lock()
    release = threading.Event()

    def slow(task: Task) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(DEADLINE)
        with lock:
            running -= 1
        return "ok"

    runner = sdk_agent(slow, capabilities=[kind], concurrency=2)
    before = api_requests(mesh)
    tasks = [mesh.admin.submit(kind, {"i": i}) for i in range(5)]
    wait_until(lambda: running == 2, timeout=DEADLINE, what="two handlers running")
    states = sorted(mesh.admin.get_task(t["id"])["state"] for t in tasks)
    assert states == ["claimed", "claimed", "queued", "queued", "queued"]
    release.set()
    for t in tasks:
        assert mesh.admin.wait_for(t["id"], timeout=DEADLINE)["state"] == "completed"
    assert most == 2 and runner.agent.completed == 5
    after = api_requests(mesh)  # every one of them claimed at assignment, within the agent's concurrency
    assert delta(before, after, CLAIM_BY_ID) == 0 and delta(before, after, CLAIM_NEXT) == 0


# ---------------------------------------------------------------- complete and next


def test_a_pulling_sdk_agent_gets_its_next_task_with_each_completion(mesh, sdk_agent):
    kind = f"pull-{uid()}"
    tasks = [mesh.admin.submit(kind, {"i": i}) for i in range(6)]
    before = api_requests(mesh)
    handed = api_counter(mesh, "mcs_claims_with_completion_total")
    runner = sdk_agent(lambda task: task.payload["i"], capabilities=[kind], listen=None)
    for i, t in enumerate(tasks):
        done = mesh.admin.wait_for(t["id"], timeout=DEADLINE)
        assert (done["state"], done["result"]) == ("completed", i), done
    after = api_requests(mesh)
    # One claim to start; every later task came with the completion before it.
    assert api_counter(mesh, "mcs_claims_with_completion_total") - handed == 5
    assert delta(before, after, CLAIM_NEXT) <= 2  # the first, and perhaps the long poll after the last
    assert delta(before, after, COMPLETE) == 6
    assert runner.agent.completed == 6
