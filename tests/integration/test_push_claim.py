"""Push-claim (`claim_on_push`) and complete-and-next over HTTP, on a real SQLite file, with the dispatcher
and watchdog run pass by pass: the claim made at assignment keeps every promise a claim request keeps."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytestmark = pytest.mark.asyncio


async def push_agent(mesh: Any, name: str, caps: list[str], *, concurrency: int | None = None) -> dict[str, str]:
    """An agent registered with claim_on_push (what the SDK does), with a notify_url nobody serves."""
    who: dict[str, str] = await mesh.agent(name, caps, concurrency=concurrency)
    body: dict[str, Any] = {"capabilities": caps, "notify_url": "http://127.0.0.1:9/hook", "claim_on_push": True}
    if concurrency is not None:
        body["concurrency"] = concurrency
    answer = await mesh.ok("POST", "/v1/agents/register", who=who, json=body)
    assert answer["claim_on_push"] is True
    return who


def webhooks(mesh: Any, task_id: str) -> list[dict[str, Any]]:
    rows = mesh.db.sql(
        "SELECT body FROM outbox WHERE task_id = ? AND kind = 'webhook' ORDER BY id", (task_id,)
    ).fetchall()
    return [json.loads(r["body"])["data"]["task"] for r in rows]


async def events(mesh: Any, task_id: str) -> list[dict[str, Any]]:
    body = await mesh.ok("GET", f"/v1/tasks/{task_id}/events", who="admin")
    return list(body["events"])


async def test_the_dispatcher_claims_at_assignment_and_the_webhook_carries_the_claim(mesh):
    a = await push_agent(mesh, "a", ["x"])
    task = await mesh.submit(type="x", claim_ttl=60)
    mesh.dispatch()
    held = await mesh.task(task["id"])
    assert (held["state"], held["assigned_to"], held["attempts"]) == ("claimed", "a", 1)
    assert held["lease_expires_at"] is not None
    [sent] = webhooks(mesh, task["id"])
    assert sent["state"] == "claimed" and sent["lease_expires_at"] == held["lease_expires_at"]
    token = sent["claim_token"]
    assert len(token) == 32
    kinds = await events(mesh, task["id"])
    assert [e["kind"] for e in kinds] == ["submitted", "claimed"]
    assert kinds[1]["actor"] == "dispatcher" and kinds[1]["detail"]["push"] is True
    assert kinds[1]["detail"]["agent"] == "a"
    # One request: complete with the token the webhook brought.
    done = await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=a, json={"claim_token": token, "result": 7})
    assert (done["state"], done["result"], done["attempts"]) == ("completed", 7, 1)
    # A claim request on top is refused: the task was never claimable twice.
    again = await mesh.call("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    assert again.status_code == 409


async def test_an_expired_push_claim_is_reclaimed_and_delivered_again_with_a_new_token(mesh):
    a = await push_agent(mesh, "a", ["x"])
    task = await mesh.submit(type="x", claim_ttl=30)
    mesh.dispatch()
    old = webhooks(mesh, task["id"])[0]["claim_token"]
    assert mesh.watchdog.run_once(now=time.time() + 31).expired_leases == [task["id"]]
    retrying = await mesh.task(task["id"])
    assert (retrying["state"], retrying["attempts"]) == ("retrying", 1)
    mesh.dispatcher.run_once(now=time.time() + 60)  # its backoff has passed
    again = await mesh.task(task["id"])
    assert (again["state"], again["attempts"]) == ("claimed", 2)
    first, second = webhooks(mesh, task["id"])
    assert second["claim_token"] not in (None, old)
    stale = await mesh.call("POST", f"/v1/tasks/{task['id']}/complete", who=a, json={"claim_token": old})
    assert stale.status_code == 409
    assert (await stale.get_json())["error"]["code"] == "stale_claim_token"
    done = await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=a, json={"claim_token": second["claim_token"]})
    assert (done["state"], done["attempts"]) == ("completed", 2)


async def test_reject_of_a_push_claim_sends_it_to_another_agent_and_spends_no_attempt(mesh):
    a = await push_agent(mesh, "a", ["x"])
    task = await mesh.submit(type="x")
    mesh.dispatch()
    token = webhooks(mesh, task["id"])[0]["claim_token"]
    await push_agent(mesh, "b", ["x"])
    body = {"claim_token": token, "reason": "busy"}
    rejected = await mesh.ok("POST", f"/v1/tasks/{task['id']}/reject", who=a, json=body)
    assert (rejected["state"], rejected["attempts"]) == ("queued", 0)
    mesh.dispatch()
    now = await mesh.task(task["id"])
    assert (now["state"], now["assigned_to"], now["attempts"]) == ("claimed", "b", 1)
    assert webhooks(mesh, task["id"])[-1]["claim_token"] != token


async def test_a_push_agent_gets_no_more_than_its_concurrency(mesh):
    a = await push_agent(mesh, "a", ["x"], concurrency=2)
    tasks = [await mesh.submit(type="x") for _ in range(3)]
    mesh.dispatch()
    states = [(await mesh.task(t["id"]))["state"] for t in tasks]
    assert states == ["claimed", "claimed", "queued"]
    token = webhooks(mesh, tasks[0]["id"])[0]["claim_token"]
    await mesh.ok("POST", f"/v1/tasks/{tasks[0]['id']}/complete", who=a, json={"claim_token": token})
    mesh.dispatch()
    assert (await mesh.task(tasks[2]["id"]))["state"] == "claimed"


async def test_a_concurrency_key_holds_for_push_claims(mesh):
    await push_agent(mesh, "a", ["x"], concurrency=5)
    await push_agent(mesh, "b", ["x"], concurrency=5)
    tasks = [await mesh.submit(type="x", concurrency_key="k", max_concurrency=1) for _ in range(2)]
    mesh.dispatch()
    states = [(await mesh.task(t["id"]))["state"] for t in tasks]
    assert states == ["claimed", "queued"]


async def test_fanout_children_are_claimed_for_push_agents(mesh):
    a = await push_agent(mesh, "a", ["x"])
    b = await push_agent(mesh, "b", ["x"])
    parent = await mesh.submit(type="x", route="all")
    mesh.dispatch()
    kids = (await mesh.task(parent["id"]))["children"]
    assert len(kids) == 2
    for kid, who in zip(kids, (a, b), strict=True):
        child = await mesh.task(kid)
        assert child["state"] == "claimed"
        token = webhooks(mesh, kid)[0]["claim_token"]
        await mesh.ok("POST", f"/v1/tasks/{kid}/complete", who=who, json={"claim_token": token, "result": 1})
    assert (await mesh.task(parent["id"]))["state"] == "completed"


async def test_an_undelivered_push_claim_goes_back_to_the_queue_with_its_token_revoked(mesh):
    a = await push_agent(mesh, "a", ["x"])
    task = await mesh.submit(type="x")
    mesh.dispatch()
    token = webhooks(mesh, task["id"])[0]["claim_token"]
    # The notifier gave up on the webhook (its outcome as the notifier records it).
    mesh.db.sql("UPDATE outbox SET state = 'dead' WHERE task_id = ?", (task["id"],))
    assert mesh.sweep().rerouted == [task["id"]]
    back = await mesh.task(task["id"])
    assert (back["state"], back["attempts"], back["assigned_to"]) == ("queued", 0, None)
    late = await mesh.call("POST", f"/v1/tasks/{task['id']}/complete", who=a, json={"claim_token": token})
    assert late.status_code == 409
    await push_agent(mesh, "b", ["x"])
    mesh.dispatch()
    assert (await mesh.task(task["id"]))["assigned_to"] == "b"  # another agent is preferred


async def test_a_webhook_whose_claim_is_gone_is_not_held_any_more(mesh):
    """What the notifier asks before it retries a webhook carrying a claim."""
    from mcs.state import tasks as tasks_store

    a = await push_agent(mesh, "a", ["x"])
    task = await mesh.submit(type="x")
    mesh.dispatch()
    token = webhooks(mesh, task["id"])[0]["claim_token"]
    assert mesh.store.read(tasks_store.holds_claim, task_id=task["id"], agent="a", token=token)
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=a, json={"claim_token": token})
    assert not mesh.store.read(tasks_store.holds_claim, task_id=task["id"], agent="a", token=token)


async def test_claim_on_push_is_set_at_creation_by_patch_and_by_registration(mesh):
    created = await mesh.ok(
        "POST", "/v1/agents", who="admin", json={"name": "p", "capabilities": ["x"], "claim_on_push": True}, status=201
    )
    assert created["claim_on_push"] is True
    assert (await mesh.ok("GET", "/v1/agents/p", who="admin"))["claim_on_push"] is True
    off = await mesh.ok("PATCH", "/v1/agents/p", who="admin", json={"claim_on_push": False})
    assert off["claim_on_push"] is False and off["notify_host"] is None
    pinned = await mesh.ok("PATCH", "/v1/agents/p", who="admin", json={"notify_host": "127.0.0.1"})
    assert (pinned["claim_on_push"], pinned["notify_host"]) == (False, "127.0.0.1")
    nothing = await mesh.call("PATCH", "/v1/agents/p", who="admin", json={})
    assert nothing.status_code == 422
    who = {"X-Agent-ID": "p", "X-Agent-Secret": created["secret"]}
    reg = await mesh.ok("POST", "/v1/agents/register", who=who, json={"capabilities": ["x"], "claim_on_push": True})
    assert reg["claim_on_push"] is True
    # A heartbeat that does not say keeps what is stored.
    beat = await mesh.ok("POST", "/v1/agents/register", who=who, json={"capabilities": ["x"]})
    assert beat["claim_on_push"] is True
    bad = await mesh.call("POST", "/v1/agents/register", who=who, json={"capabilities": ["x"], "claim_on_push": 1})
    assert bad.status_code == 422


async def test_turning_it_on_reaches_the_dispatcher_at_once(mesh):
    await mesh.agent("a", ["x"], concurrency=5)
    first = await mesh.submit(type="x")
    mesh.dispatch()
    assert (await mesh.task(first["id"]))["state"] == "assigned"
    assert "claim_token" not in webhooks(mesh, first["id"])[0]  # an agent without it claims, as before
    await mesh.ok("PATCH", "/v1/agents/a", who="admin", json={"claim_on_push": True})
    second = await mesh.submit(type="x")
    mesh.dispatch()
    assert (await mesh.task(second["id"]))["state"] == "claimed"


# ---------------------------------------------------------------- complete and next


async def test_complete_with_next_answers_the_completion_and_the_next_task_claimed(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    first, second = await mesh.submit(type="x"), await mesh.submit(type="x", priority="urgent")
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=a, json={})
    assert claimed["id"] == second["id"]
    body = {"claim_token": claimed["claim_token"], "result": 1, "next": True}
    answer = await mesh.ok("POST", f"/v1/tasks/{second['id']}/complete", who=a, json=body)
    assert set(answer) == {"task", "next"}
    assert (answer["task"]["id"], answer["task"]["state"]) == (second["id"], "completed")
    nxt = answer["next"]
    assert (nxt["id"], nxt["state"], nxt["assigned_to"]) == (first["id"], "claimed", "a")
    assert nxt["claim_token"]
    last = {"claim_token": nxt["claim_token"], "result": 2, "next": True}
    answer = await mesh.ok("POST", f"/v1/tasks/{first['id']}/complete", who=a, json=last)
    assert answer["task"]["state"] == "completed" and answer["next"] is None
    # Without next, the answer is the task, as before.
    third = await mesh.submit(type="x")
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=a, json={})
    plain = await mesh.ok(
        "POST", f"/v1/tasks/{third['id']}/complete", who=a, json={"claim_token": claimed["claim_token"]}
    )
    assert plain["id"] == third["id"] and "next" not in plain


async def test_complete_with_next_claims_nothing_when_the_completion_is_refused(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    first, second = await mesh.submit(type="x"), await mesh.submit(type="x")
    await mesh.ok("POST", "/v1/tasks/claim", who=a, json={})
    body = {"claim_token": "stale", "next": True}
    refused = await mesh.call("POST", f"/v1/tasks/{first['id']}/complete", who=a, json=body)
    assert refused.status_code == 409
    assert (await mesh.task(second["id"]))["state"] == "queued"
    bad = await mesh.call("POST", f"/v1/tasks/{first['id']}/complete", who=a, json={"claim_token": "t", "wait": 31})
    assert bad.status_code == 422


async def test_complete_with_next_and_wait_holds_the_answer_until_work_comes(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    first = await mesh.submit(type="x")
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=a, json={})

    async def submit_soon() -> dict[str, Any]:
        await asyncio.sleep(0.3)
        return await mesh.submit(type="x")

    later = asyncio.create_task(submit_soon())
    body = {"claim_token": claimed["claim_token"], "result": 1, "next": True, "wait": 5}
    answer = await mesh.ok("POST", f"/v1/tasks/{first['id']}/complete", who=a, json=body)
    submitted = await later
    assert answer["task"]["state"] == "completed"
    assert answer["next"]["id"] == submitted["id"] and answer["next"]["state"] == "claimed"


async def test_a_stored_retry_is_sent_only_while_its_claim_is_held(mesh):
    """A webhook with an attempt behind it (a notifier restarted since, say) is sent again with the same
    claim while the agent holds it, and dropped, not sent, once the task was completed."""
    from dataclasses import replace

    from mcs.engines import open_engine
    from mcs.notifier import Notifier

    calls: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            calls.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    who = await mesh.agent("a", ["x"], notify_url=url, concurrency=2)
    await mesh.ok("POST", "/v1/agents/register", who=who, json={"capabilities": ["x"], "notify_url": url,
                                                                 "concurrency": 2, "claim_on_push": True})  # fmt: skip
    done, held = await mesh.submit(type="x"), await mesh.submit(type="x")
    mesh.dispatch()
    token = webhooks(mesh, done["id"])[0]["claim_token"]
    await mesh.ok("POST", f"/v1/tasks/{done['id']}/complete", who=who, json={"claim_token": token})
    mesh.db.sql("UPDATE outbox SET attempts = 1 WHERE kind = 'webhook'")  # each tried once before
    settings = replace(mesh.settings, webhook_retry_base=0.05, webhook_retry_max=0.2)
    store = open_engine(settings)
    notifier = Notifier(store, settings)
    runner = asyncio.create_task(notifier.run())
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = dict(mesh.db.sql("SELECT task_id, state FROM outbox WHERE kind = 'webhook'"))
            if states == {done["id"]: "superseded", held["id"]: "delivered"}:
                break
            await asyncio.sleep(0.02)
        assert states == {done["id"]: "superseded", held["id"]: "delivered"}
    finally:
        notifier.stop()
        await asyncio.wait_for(runner, 10)
        store.close()
        server.shutdown()
        server.server_close()
    assert [c["data"]["task"]["id"] for c in calls] == [held["id"]]
    assert calls[0]["data"]["task"]["claim_token"] == webhooks(mesh, held["id"])[0]["claim_token"]


async def test_deleting_an_agent_requeues_its_push_claimed_tasks_with_their_tokens_revoked(mesh):
    """A deleted agent can never complete what it holds: its claims go back to the queue at once (not at
    lease expiry), the attempt given back, the token refused, the requeue audited."""
    await push_agent(mesh, "a", ["x"])
    task = await mesh.submit(type="x", claim_ttl=3600)
    mesh.dispatch()
    token = webhooks(mesh, task["id"])[0]["claim_token"]
    assert (await mesh.task(task["id"]))["state"] == "claimed"
    gone = await mesh.ok("DELETE", "/v1/agents/a", who="admin")
    assert gone["tasks_requeued"] == 1
    back = await mesh.task(task["id"])
    assert (back["state"], back["assigned_to"], back["attempts"], back["lease_expires_at"]) == ("queued", None, 0, None)
    kinds = await events(mesh, task["id"])
    assert kinds[-1]["kind"] == "requeued" and kinds[-1]["actor"] == "admin"
    assert kinds[-1]["detail"] == {"reason": "agent a was deleted", "claimed": True}
    assert not mesh.store.read(tasks_store_holds(), task_id=task["id"], agent="a", token=token)
    b = await push_agent(mesh, "b", ["x"])
    mesh.dispatch()
    now_held = await mesh.task(task["id"])
    assert (now_held["state"], now_held["assigned_to"], now_held["attempts"]) == ("claimed", "b", 1)
    new_token = webhooks(mesh, task["id"])[-1]["claim_token"]
    assert new_token != token
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=b, json={"claim_token": new_token})


def tasks_store_holds() -> Any:
    from mcs.state import tasks as tasks_store

    return tasks_store.holds_claim


async def test_a_repeated_complete_with_next_answers_the_same_next_task_and_claims_no_other(mesh):
    """The SDK repeats a completion whose answer was lost (a proxy's 504, a restart): the repeat must hand
    back the task the first one claimed, not claim a second one and leave the first to a lease nobody
    will ever extend (its attempt spent on nothing)."""
    a = await mesh.agent("a", ["x"], notify_url=None)
    first = await mesh.submit(type="x")
    second, third = await mesh.submit(type="x"), await mesh.submit(type="x")
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=a, json={})
    assert claimed["id"] == first["id"]
    body = {"claim_token": claimed["claim_token"], "result": 1, "next": True}
    lost = await mesh.ok("POST", f"/v1/tasks/{first['id']}/complete", who=a, json=body)
    again = await mesh.ok("POST", f"/v1/tasks/{first['id']}/complete", who=a, json=body)
    assert again["task"]["state"] == "completed"
    assert again["next"] is not None and again["next"]["id"] == lost["next"]["id"] == second["id"]
    assert again["next"]["claim_token"] == lost["next"]["claim_token"]
    assert (await mesh.task(third["id"]))["state"] == "queued"  # no second claim
    # Once that task moved on (completed), a repeat claims nothing in its name either.
    nxt = lost["next"]
    await mesh.ok("POST", f"/v1/tasks/{nxt['id']}/complete", who=a, json={"claim_token": nxt["claim_token"]})
    late = await mesh.ok("POST", f"/v1/tasks/{first['id']}/complete", who=a, json=body)
    assert late["next"] is None and (await mesh.task(third["id"]))["state"] == "queued"
