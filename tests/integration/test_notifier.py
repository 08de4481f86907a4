"""The notifier against real HTTP receivers on loopback: signing, retries, give-up, isolation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from mcs.engines import open_engine
from mcs.engines.sqlite.engine import Store
from mcs.notifier import PER_AGENT_IN_FLIGHT, UNDELIVERED, Notifier
from mcs.state import outbox as outbox_store

pytestmark = pytest.mark.asyncio


class Receiver:
    """A webhook endpoint on 127.0.0.1 whose answers a test scripts: a list of status codes (or 'slow')."""

    def __init__(self, script=None, delay=0.0, hold=None):
        self.script = list(script or [])
        self.delay = delay
        self.hold = hold  # a threading.Event: each answer waits for it (at most 10 s)
        self.calls = []  # (monotonic time, headers, body)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                receiver.calls.append((time.monotonic(), dict(self.headers), body))
                status = receiver.script.pop(0) if receiver.script else 204
                if status == "slow":  # longer than the notifier's timeout: it gives up on this attempt
                    time.sleep(1.0)
                    status = 204
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.hold is not None:
                    receiver.hold.wait(10)
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(script=None, delay=0.0, hold=None):
        made.append(Receiver(script, delay, hold))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
async def notifier(mesh):
    settings = replace(
        mesh.settings, webhook_timeout=0.5, webhook_attempts=3, webhook_retry_base=0.05, webhook_retry_max=0.2
    )
    store = open_engine(settings)
    n = Notifier(store, settings)
    runner = asyncio.create_task(n.run())
    yield n
    n.stop()
    await asyncio.wait_for(runner, 10)
    store.close()


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.02)
    return False


async def assign(mesh, name, url, **task):
    who = await mesh.agent(name, ["x"], notify_url=url)
    submitted = await mesh.submit(type="x", route=name, **task)
    mesh.dispatch()
    return who, submitted


async def test_signed_webhook_verifies_with_the_reference_implementation(mesh, notifier, receivers):
    r = receivers()
    who, task = await assign(mesh, "a", r.url, payload={"q": "é"})
    assert await until(lambda: asyncio.sleep(0, bool(r.calls)))
    _, headers, body = r.calls[0]
    verified = Webhook(who["_whsec"]).verify(body, headers)
    assert verified["type"] == "task.assigned" and verified["data"]["task"]["id"] == task["id"]
    assert verified["data"]["task"]["payload"] == {"q": "é"}

    async def notified():
        return "notified" in await mesh.kinds(task["id"])

    assert await until(notified)


async def test_retries_5xx_and_timeouts_with_the_same_webhook_id(mesh, notifier, receivers):
    r = receivers(script=[500, 503, 204])
    _, task = await assign(mesh, "a", r.url)
    assert await until(lambda: asyncio.sleep(0, len(r.calls) >= 3))
    ids = {c[1]["webhook-id"] for c in r.calls}
    assert len(ids) == 1 and next(iter(ids)).startswith("msg_")
    gaps = [b[0] - a[0] for a, b in zip(r.calls, r.calls[1:], strict=False)]
    assert all(g >= 0.04 for g in gaps), gaps  # backoff, not a hot loop

    async def delivered():
        row = mesh.db.sql("SELECT state, attempts FROM outbox WHERE task_id = ?", (task["id"],)).fetchone()
        return tuple(row) == ("delivered", 3)

    assert await until(delivered)


async def test_gives_up_after_bounded_attempts_and_records_it(mesh, notifier, receivers):
    r = receivers(script=[500] * 10)
    _, task = await assign(mesh, "a", r.url)

    async def failed():
        return "webhook_failed" in await mesh.kinds(task["id"])

    assert await until(failed)
    assert len(r.calls) == 3
    events = (await mesh.ok("GET", f"/v1/tasks/{task['id']}/events", who="admin"))["events"]
    # Any agent can read the events: they say it was not delivered, not what answered (no port scanner).
    assert events[-1]["detail"]["error"] == UNDELIVERED
    row = mesh.db.sql("SELECT last_error FROM outbox WHERE task_id = ?", (task["id"],)).fetchone()
    assert row[0] == "HTTP 500"  # the operator's copy keeps the reason
    assert (await mesh.task(task["id"]))["state"] == "assigned"  # the notifier never changes task state
    assert mesh.sweep().rerouted == [task["id"]]  # the watchdog does, without waiting out the claim TTL
    assert (await mesh.task(task["id"]))["state"] == "queued"


async def test_redirects_are_not_followed_and_4xx_is_final(mesh, notifier, receivers):
    r = receivers(script=[302])
    _, task = await assign(mesh, "a", r.url)

    async def failed():
        return "webhook_failed" in await mesh.kinds(task["id"])

    assert await until(failed)
    assert len(r.calls) == 1
    row = mesh.db.sql("SELECT last_error FROM outbox WHERE task_id = ?", (task["id"],)).fetchone()
    assert "redirects are not followed" in row[0]


async def test_a_dead_agent_does_not_delay_the_others(mesh, notifier, receivers):
    slow = receivers(delay=0.4, script=[204] * 20)
    fast = receivers()
    await mesh.agent("slow", ["x"], notify_url=slow.url)
    await mesh.agent("fast", ["x"], notify_url=fast.url)
    for _ in range(10):
        await mesh.submit(type="x", route="slow")
    fast_task = await mesh.submit(type="x", route="fast")
    mesh.dispatch()
    assert await until(lambda: asyncio.sleep(0, bool(fast.calls)), timeout=3)
    # Ordering, not a stopwatch: the fast agent got its webhook before the slow one answered even its first.
    assert slow.calls and fast.calls[0][0] < slow.calls[0][0] + slow.delay
    assert json.loads(fast.calls[0][2])["data"]["task"]["id"] == fast_task["id"]


async def test_a_timeout_is_retried(mesh, notifier, receivers):
    r = receivers(script=["slow", 204])
    _, task = await assign(mesh, "a", r.url)

    async def delivered():
        row = mesh.db.sql("SELECT state, attempts FROM outbox WHERE task_id = ?", (task["id"],)).fetchone()
        return tuple(row) == ("delivered", 2)

    assert await until(delivered)
    assert len({c[1]["webhook-id"] for c in r.calls}) == 1


async def test_connection_refused_is_retried_then_given_up(mesh, notifier, receivers):
    closed = receivers()
    url = closed.url
    closed.close()  # nothing listens there any more
    _, task = await assign(mesh, "a", url)

    async def failed():
        return "webhook_failed" in await mesh.kinds(task["id"])

    assert await until(failed)
    row = mesh.db.sql("SELECT attempts, last_error FROM outbox WHERE task_id = ?", (task["id"],)).fetchone()
    assert row[0] == 3 and "connection failed" in row[1]


async def test_a_backlog_for_one_slow_agent_does_not_hide_the_others(mesh, notifier, receivers):
    slow = receivers(delay=0.5, script=[204] * 1000)
    fast = receivers()
    await mesh.agent("slow", ["x"], notify_url=slow.url)
    now = time.time()
    mesh.store.write(
        lambda conn: conn.executemany(
            "INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)"
            " VALUES ('webhook', ?, 'slow', NULL, '{}', ?, ?, ?)",
            [(f"msg_backlog_{i}", now, now, now) for i in range(600)],
        )
    )
    started = time.monotonic()
    _, task = await assign(mesh, "fast", fast.url)
    assert await until(lambda: asyncio.sleep(0, bool(fast.calls)), timeout=3)
    assert fast.calls[0][0] - started < 1.0


@pytest.fixture
async def patient_notifier(mesh):
    """A notifier that waits 30 s for an answer: the held delivery below must not time out meanwhile."""
    settings = replace(
        mesh.settings, webhook_timeout=30, webhook_attempts=3, webhook_retry_base=0.05, webhook_retry_max=0.2
    )
    store = open_engine(settings)
    n = Notifier(store, settings)
    runner = asyncio.create_task(n.run())
    yield n
    n.stop()
    await asyncio.wait_for(runner, 10)
    store.close()


async def test_a_pass_over_a_backlog_never_stalls_deliveries_under_way(mesh, patient_notifier, receivers, monkeypatch):
    """50,000 pending webhooks for an agent nobody can reach, and one for an agent that answers. While the
    notifier reads the outbox, deliveries already under way go on: its SQLite reads run on a thread of
    their own, never on the event loop. The pass is made to last until the good agent's delivery finishes
    (at most 10 s), so the order proves it, whatever the machine's load: on the loop, the delivery could not
    finish until the pass returned."""
    notifier = patient_notifier
    answered = threading.Event()
    good = receivers(hold=answered)
    closed = receivers()
    dead_url = closed.url
    closed.close()  # nothing listens there any more
    await mesh.agent("dead", ["x"], notify_url=dead_url)
    now = time.time()
    mesh.store.write(
        lambda conn: conn.executemany(
            "INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)"
            " VALUES ('webhook', ?, 'dead', NULL, '{}', ?, ?, ?)",
            [(f"msg_backlog_{i}", now, now, now) for i in range(50_000)],
        )
    )
    loop_thread = threading.current_thread()
    opened_on: set[threading.Thread] = set()
    original_open = Store._open

    def recording_open(store):
        if store is notifier.store:
            opened_on.add(threading.current_thread())
        return original_open(store)

    monkeypatch.setattr(Store, "_open", recording_open)
    real_due = outbox_store.due
    per_pass: list[int] = []  # the dead agent's rows each pass took
    finished_during_pass: list[bool] = []

    def slow_due(conn, **kwargs):
        if good.calls and not finished_during_pass:  # the good webhook is under way: hold this pass
            answered.set()  # ...and let the good agent answer now
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(o.get("agent") == "good" for o in notifier.outcomes):
                time.sleep(0.01)
            finished_during_pass.append(any(o.get("agent") == "good" for o in notifier.outcomes))
        rows = real_due(conn, **kwargs)
        per_pass.append(sum(1 for r in rows if r.agent == "dead"))
        return rows

    monkeypatch.setattr(outbox_store, "due", slow_due)
    _, task = await assign(mesh, "good", good.url)
    assert await until(lambda: asyncio.sleep(0, bool(finished_during_pass)), timeout=30)
    assert finished_during_pass == [True]  # the delivery finished while the pass was still reading
    assert len(good.calls) == 1
    assert json.loads(good.calls[0][2])["data"]["task"]["id"] == task["id"]
    assert per_pass and max(per_pass) <= PER_AGENT_IN_FLIGHT  # a pass takes a few of the backlog, not all
    if mesh.db.kind == "sqlite":  # no SQLite connection on the event loop's thread (the delivery order
        # above shows the same for PostgreSQL, whose jobs run on AsyncPostgres's threads)
        assert opened_on and loop_thread not in opened_on
