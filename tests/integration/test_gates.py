"""Approval gates, concurrency keys and redrive, over HTTP on a real SQLite file, the dispatcher and
watchdog run pass by pass."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from mcs.alerts import Alert
from mcs.engines.sql.tasks import KEY_RUNNING_SQL
from mcs.state import dispatch as dispatch_state
from tests.integration.test_alerts import TOKEN, alert_row, start_notifier, telegram  # noqa: F401
from tests.integration.test_notifier import until

pytestmark = pytest.mark.asyncio


def alerts(mesh):
    rows = mesh.store.read(lambda c: c.execute("SELECT body FROM outbox WHERE kind = 'alert' ORDER BY id").fetchall())
    return [json.loads(r["body"]) for r in rows]


# ---------------------------------------------------------------- approvals


async def test_an_approval_waits_for_a_person_and_no_agent_ever_gets_it(mesh):
    worker = await mesh.agent("worker", ["approval"], notify_url=None)
    gate = await mesh.submit(type="approval", payload={"title": "ship 1.2", "summary": "to prod"})
    assert gate["state"] == "waiting"
    mesh.dispatch()
    assert (await mesh.task(gate["id"]))["state"] == "waiting"
    claim = await mesh.call("POST", f"/v1/tasks/{gate['id']}/claim", who=worker)
    assert claim.status_code == 409
    nothing = await mesh.call("POST", "/v1/tasks/claim", who=worker, json={})
    assert nothing.status_code == 204
    approved = await mesh.ok("POST", f"/v1/tasks/{gate['id']}/approve", who="admin", json={"note": "looks fine"})
    assert approved["state"] == "completed"
    assert approved["result"] == {"approved": True, "by": "admin", "note": "looks fine"}
    assert await mesh.kinds(gate["id"]) == ["submitted", "waiting", "approved", "completed"]
    again = await mesh.call("POST", f"/v1/tasks/{gate['id']}/approve", who="admin", json={})
    assert again.status_code == 409 and (await again.get_json())["error"]["code"] == "not_waiting"


async def test_waiting_raises_an_alert_with_the_title_submitter_and_commands(mesh):
    gate = await mesh.submit(type="approval", payload={"title": "deploy api", "summary": "v2", "secret": "no"})
    (alert,) = alerts(mesh)
    assert alert["type"] == "approval.waiting"
    data = alert["data"]
    assert data["task_id"] == gate["id"] and data["submitted_by"] == "admin"
    assert (data["title"], data["summary"]) == ("deploy api", "v2") and "secret" not in json.dumps(data)
    assert data["approve"] == f"mcs task approve {gate['id']}"
    assert data["deny"] == f"mcs task deny {gate['id']} --reason ..."


async def test_an_approval_step_alert_names_its_workflow_and_step(mesh):
    body = {
        "name": "ship-api",
        "steps": [{"id": "build", "type": "x"}, {"id": "go-live", "type": "approval", "depends_on": ["build"]}],
    }
    agent = await mesh.agent("builder", ["x"], notify_url=None)
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json=body, status=201)
    assert alerts(mesh) == []  # the gate is blocked behind the build: nothing waits on a person yet
    build = wf["steps"]["build"]["id"]
    claimed = await mesh.ok("POST", f"/v1/tasks/{build}/claim", who=agent)
    done = {"claim_token": claimed["claim_token"], "result": "wheel"}
    await mesh.ok("POST", f"/v1/tasks/{build}/complete", who=agent, json=done)
    mesh.dispatch()
    (alert,) = alerts(mesh)
    data = alert["data"]
    assert (data["workflow"], data["workflow_id"], data["step"]) == ("ship-api", wf["id"], "go-live")
    text = Alert.from_body(json.dumps(alert)).text().splitlines()
    assert text[0] == "MCS: approval waiting: go-live (workflow ship-api)"
    assert f"workflow: ship-api ({wf['id']})" in text and "step: go-live" in text


async def test_deny_fails_the_gate_with_the_reason_and_only_submitter_or_admin_decide(mesh):
    alice = await mesh.agent("alice", ["x"], notify_url=None)
    bob = await mesh.agent("bob", ["x"], notify_url=None)
    gate = await mesh.submit(who=alice, type="approval")
    for path, body in (("approve", {}), ("deny", {"reason": "no"})):
        refused = await mesh.call("POST", f"/v1/tasks/{gate['id']}/{path}", who=bob, json=body)
        assert refused.status_code == 403
    no_reason = await mesh.call("POST", f"/v1/tasks/{gate['id']}/deny", who=alice, json={})
    assert no_reason.status_code in (400, 422)
    denied = await mesh.ok("POST", f"/v1/tasks/{gate['id']}/deny", who=alice, json={"reason": "not on a Friday"})
    assert (denied["state"], denied["error"]) == ("failed", "not on a Friday")
    assert await mesh.kinds(gate["id"]) == ["submitted", "waiting", "denied", "failed"]
    assert [a["type"] for a in alerts(mesh)] == ["approval.waiting"]  # a person decided: no failure alert


async def test_approve_refuses_a_task_that_is_not_an_approval(mesh):
    task = await mesh.submit(type="x")
    r = await mesh.call("POST", f"/v1/tasks/{task['id']}/approve", who="admin", json={})
    assert r.status_code == 409 and (await r.get_json())["error"]["code"] == "not_approval"
    missing = await mesh.call("POST", "/v1/tasks/nope/approve", who="admin", json={})
    assert missing.status_code == 404


async def test_the_approval_alert_reaches_telegram_escaped(mesh, telegram, start_notifier):  # noqa: F811
    await start_notifier(telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api=telegram.url)
    gate = await mesh.submit(type="approval", payload={"title": "<b>ship</b> & go", "summary": "1 < 2"})
    assert await until(lambda: asyncio.sleep(0, bool(telegram.calls)))
    text = telegram.calls[0][2]["text"]
    assert "approval waiting: &lt;b&gt;ship&lt;/b&gt; &amp; go" in text and "1 &lt; 2" in text
    assert f"<code>mcs task approve {gate['id']}</code>" in text
    assert f"<code>mcs task deny {gate['id']} --reason ...</code>" in text
    assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "delivered"))


# ---------------------------------------------------------------- concurrency keys


async def running(mesh, ids):
    return [t for t in ids if (await mesh.task(t))["state"] in ("assigned", "claimed")]


async def test_the_dispatcher_runs_at_most_max_concurrency_per_key_in_order(mesh):
    await mesh.agent("a", ["deploy"], concurrency=10)
    await mesh.agent("b", ["deploy"], concurrency=10)
    prod = [(await mesh.submit(type="deploy", concurrency_key="env:prod"))["id"] for _ in range(3)]
    staging = [
        (await mesh.submit(type="deploy", concurrency_key="env:staging", max_concurrency=2))["id"] for _ in range(3)
    ]
    free = (await mesh.submit(type="deploy"))["id"]
    mesh.dispatch()
    assert await running(mesh, prod) == prod[:1]
    assert await running(mesh, staging) == staging[:2]
    assert (await mesh.task(free))["state"] == "assigned"
    from tests.integration.test_metrics import scrape, value

    assert value(await scrape(mesh), "mcs_queue_keyed") == 3  # 2 of prod, 1 of staging held back
    task = await mesh.task(prod[0])
    assert (task["concurrency_key"], task["max_concurrency"]) == ("env:prod", 1)
    mesh.dispatch()  # a second pass changes nothing while the first still runs
    assert await running(mesh, prod) == prod[:1]


async def test_a_key_slot_frees_when_its_task_ends_and_the_next_goes_out(mesh):
    who = await mesh.agent("a", ["deploy"], concurrency=10)
    ids = [(await mesh.submit(type="deploy", concurrency_key="k"))["id"] for _ in range(3)]
    mesh.dispatch()
    for expected in ids:
        assert await running(mesh, ids) == [expected]
        claimed = await mesh.ok("POST", f"/v1/tasks/{expected}/claim", who=who)
        await mesh.ok("POST", f"/v1/tasks/{expected}/complete", who=who, json={"claim_token": claimed["claim_token"]})
        mesh.dispatch()
    assert [(await mesh.task(t))["state"] for t in ids] == ["completed"] * 3


async def test_claim_by_id_is_refused_past_the_limit_and_claim_next_skips(mesh):
    who = await mesh.agent("puller", ["deploy", "x"], notify_url=None, concurrency=10)
    first = await mesh.submit(type="deploy", concurrency_key="k", priority="urgent")
    second = await mesh.submit(type="deploy", concurrency_key="k", priority="urgent")
    other = await mesh.submit(type="x")
    got = await mesh.ok("POST", "/v1/tasks/claim", who=who, json={})
    assert got["id"] == first["id"]
    refused = await mesh.call("POST", f"/v1/tasks/{second['id']}/claim", who=who)
    assert refused.status_code == 409 and (await refused.get_json())["error"]["code"] == "concurrency_limit"
    nxt = await mesh.ok("POST", "/v1/tasks/claim", who=who, json={})
    assert nxt["id"] == other["id"]  # the keyed one is skipped, not lost
    assert (await mesh.task(second["id"]))["state"] == "queued"
    await mesh.ok("POST", f"/v1/tasks/{first['id']}/complete", who=who, json={"claim_token": got["claim_token"]})
    last = await mesh.ok("POST", "/v1/tasks/claim", who=who, json={})
    assert last["id"] == second["id"]


async def test_max_concurrency_needs_a_key_and_must_be_positive(mesh):
    for body in ({"max_concurrency": 2}, {"concurrency_key": "k", "max_concurrency": 0}, {"concurrency_key": ""}):
        r = await mesh.call("POST", "/v1/tasks", who="admin", json={"type": "x", **body})
        assert r.status_code in (400, 422), body
        assert set((await r.get_json())["error"]) == {"code", "message"}


@pytest.mark.sqlite_only  # EXPLAIN QUERY PLAN
async def test_the_key_count_uses_its_index(mesh):
    plan = mesh.store.read(lambda c: c.execute("EXPLAIN QUERY PLAN " + KEY_RUNNING_SQL, ("k",)).fetchall())
    detail = " ".join(r["detail"] for r in plan)
    assert "USING COVERING INDEX tasks_concurrency" in detail or "USING INDEX tasks_concurrency" in detail, detail


# ---------------------------------------------------------------- redrive


async def fail(mesh, who, task_id):
    claimed = await mesh.ok("POST", f"/v1/tasks/{task_id}/claim", who=who)
    body = {"claim_token": claimed["claim_token"], "error": "boom", "retryable": False}
    return await mesh.ok("POST", f"/v1/tasks/{task_id}/fail", who=who, json=body)


async def test_retry_puts_a_failed_task_back_with_attempts_reset(mesh):
    who = await mesh.agent("w", ["x"], notify_url=None)
    task = await mesh.submit(who=who, type="x", max_retries=0)
    failed = await fail(mesh, who, task["id"])
    assert (failed["state"], failed["attempts"]) == ("failed", 1)
    again = await mesh.ok("POST", f"/v1/tasks/{task['id']}/retry", who=who)
    assert (again["state"], again["attempts"], again["error"], again["assigned_to"]) == ("queued", 0, None, None)
    body = await mesh.ok("GET", f"/v1/tasks/{task['id']}/events", who="admin")
    assert body["events"][-1]["kind"] == "retried_by_hand" and body["events"][-1]["actor"] == "w"
    done = await mesh.ok("POST", "/v1/tasks/claim", who=who, json={})
    assert done["id"] == task["id"] and done["attempts"] == 1


async def test_retry_of_a_canceled_task_and_refusals(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    b = await mesh.agent("b", ["x"], notify_url=None)
    task = await mesh.submit(who=a, type="x")
    queued = await mesh.call("POST", f"/v1/tasks/{task['id']}/retry", who=a)
    assert queued.status_code == 409 and (await queued.get_json())["error"]["code"] == "not_retryable"
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/cancel", who=a)
    assert (await mesh.call("POST", f"/v1/tasks/{task['id']}/retry", who=b)).status_code == 403
    assert (await mesh.ok("POST", f"/v1/tasks/{task['id']}/retry", who="admin"))["state"] == "queued"
    assert (await mesh.call("POST", "/v1/tasks/nope/retry", who="admin")).status_code == 404


async def test_retry_of_a_denied_approval_waits_again_and_alerts_again(mesh):
    gate = await mesh.submit(type="approval")
    await mesh.ok("POST", f"/v1/tasks/{gate['id']}/deny", who="admin", json={"reason": "later"})
    again = await mesh.ok("POST", f"/v1/tasks/{gate['id']}/retry", who="admin")
    assert (again["state"], again["error"], again["result"]) == ("waiting", None, None)
    assert [a["type"] for a in alerts(mesh)] == ["approval.waiting", "approval.waiting"]


async def test_retry_of_a_fanout_parent_retries_its_failed_children_and_waits_again(mesh):
    who = {name: await mesh.agent(name, ["r"], notify_url=None) for name in ("p", "q")}
    parent = await mesh.submit(type="r", route="all", max_retries=0)
    mesh.dispatch()
    kids = {(await mesh.task(k))["route"]: k for k in (await mesh.task(parent["id"]))["children"]}
    claimed = await mesh.ok("POST", f"/v1/tasks/{kids['p']}/claim", who=who["p"])
    await mesh.ok(
        "POST",
        f"/v1/tasks/{kids['p']}/complete",
        who=who["p"],
        json={"claim_token": claimed["claim_token"], "result": 1},
    )
    await fail(mesh, who["q"], kids["q"])
    assert (await mesh.task(parent["id"]))["state"] == "completed"
    child = await mesh.call("POST", f"/v1/tasks/{kids['q']}/retry", who="admin")
    assert child.status_code == 409 and (await child.get_json())["error"]["code"] == "retry_parent"
    # a completed parent is not retried; cancel-then-retry shows the parent path with a failed child
    parent2 = await mesh.submit(type="r", route="all", max_retries=0)
    mesh.dispatch()
    kids2 = {(await mesh.task(k))["route"]: k for k in (await mesh.task(parent2["id"]))["children"]}
    await fail(mesh, who["p"], kids2["p"])
    await fail(mesh, who["q"], kids2["q"])
    assert (await mesh.task(parent2["id"]))["state"] == "failed"
    again = await mesh.ok("POST", f"/v1/tasks/{parent2['id']}/retry", who="admin")
    assert again["state"] == "waiting"
    assert [(await mesh.task(k))["state"] for k in kids2.values()] == ["queued", "queued"]
    for name, kid in kids2.items():
        c = await mesh.ok("POST", f"/v1/tasks/{kid}/claim", who=who[name])
        await mesh.ok("POST", f"/v1/tasks/{kid}/complete", who=who[name], json={"claim_token": c["claim_token"]})
    assert (await mesh.task(parent2["id"]))["state"] == "completed"


async def test_list_filters_by_updated_after(mesh):
    old = await mesh.submit(type="x")
    mesh.store.write(
        lambda c: c.execute("UPDATE tasks SET updated_at = ? WHERE id = ?", (time.time() - 7200, old["id"]))
    )
    new = await mesh.submit(type="x")
    for since in ("1h", "60m", "3600s"):
        body = await mesh.ok("GET", f"/v1/tasks?updated_after={since}", who="admin")
        assert [t["id"] for t in body["tasks"]] == [new["id"]], since
    body = await mesh.ok("GET", "/v1/tasks?updated_after=2000-01-01T00:00:00Z", who="admin")
    assert len(body["tasks"]) == 2
    for bad in ("yesterday", "2000-01-01T00:00:00", "1w"):
        r = await mesh.call("GET", f"/v1/tasks?updated_after={bad}", who="admin")
        assert r.status_code == 400 and (await r.get_json())["error"]["code"] == "bad_updated_after"


async def test_metrics_count_waiting_approvals_and_the_oldest_wait_and_redrives(settings, mesh):
    from mcs.state_metrics import MeshStateCollector
    from tests.integration.test_metrics import scrape, value

    collector = MeshStateCollector(mesh.store, cache_seconds=0, clock=lambda: time.time() + 5400)
    empty = {m.name: m.samples[0].value for m in collector.collect() if m.name.startswith("mcs_approval")}
    assert empty == {"mcs_approvals_waiting": 0, "mcs_approval_oldest_wait_seconds": 0}
    first = await mesh.submit(type="approval")
    await mesh.submit(type="approval")
    decided = await mesh.submit(type="approval")
    await mesh.ok("POST", f"/v1/tasks/{decided['id']}/deny", who="admin", json={"reason": "no"})
    got = {m.name: m.samples[0].value for m in collector.collect() if m.name.startswith("mcs_approval")}
    assert got["mcs_approvals_waiting"] == 2
    assert 5400 <= got["mcs_approval_oldest_wait_seconds"] < 5460  # the clock is 90 minutes on
    before = value(await scrape(mesh), "mcs_tasks_redriven_total", type="approval", priority="normal") or 0
    await mesh.ok("POST", f"/v1/tasks/{decided['id']}/retry", who="admin")
    text = await scrape(mesh)
    assert value(text, "mcs_tasks_redriven_total", type="approval", priority="normal") == before + 1
    assert first["id"] not in text


async def test_fanout_children_inherit_the_key_and_run_one_at_a_time(mesh):
    for name in ("p", "q", "r"):
        await mesh.agent(name, ["scan"], concurrency=5)
    parent = await mesh.submit(type="scan", route="all", concurrency_key="scanner")
    mesh.dispatch()
    kids = (await mesh.task(parent["id"]))["children"]
    assert len(kids) == 3
    assert {(await mesh.task(k))["concurrency_key"] for k in kids} == {"scanner"}
    assert len(await running(mesh, kids)) == 1


async def test_an_approval_queued_by_another_path_is_never_claimed_and_the_dispatcher_parks_it_waiting(mesh):
    worker = await mesh.agent("worker", ["approval"], notify_url=None)
    gate = await mesh.submit(type="approval")
    # as a met dependency or any future path would leave it: queued
    mesh.store.write(lambda c: c.execute("UPDATE tasks SET state = 'queued' WHERE id = ?", (gate["id"],)))
    refused = await mesh.call("POST", f"/v1/tasks/{gate['id']}/claim", who=worker)
    assert refused.status_code == 409
    assert (await mesh.call("POST", "/v1/tasks/claim", who=worker, json={})).status_code == 204
    mesh.dispatch()
    assert (await mesh.task(gate["id"]))["state"] == "waiting"
    assert [a["type"] for a in alerts(mesh)] == ["approval.waiting", "approval.waiting"]
    assert (await mesh.kinds(gate["id"]))[-1] == "waiting"


async def test_a_key_hands_its_slot_out_by_priority_then_age(mesh):
    who = await mesh.agent("a", ["deploy"], concurrency=10)
    old = (await mesh.submit(type="deploy", concurrency_key="k", priority="low"))["id"]
    mid = (await mesh.submit(type="deploy", concurrency_key="k"))["id"]
    late = (await mesh.submit(type="deploy", concurrency_key="k"))["id"]
    urgent = (await mesh.submit(type="deploy", concurrency_key="k", priority="urgent"))["id"]
    order = []
    mesh.dispatch()
    for _ in range(4):
        (now_running,) = await running(mesh, [old, mid, late, urgent])
        order.append(now_running)
        claimed = await mesh.ok("POST", f"/v1/tasks/{now_running}/claim", who=who)
        body = {"claim_token": claimed["claim_token"]}
        await mesh.ok("POST", f"/v1/tasks/{now_running}/complete", who=who, json=body)
        mesh.dispatch()
    assert order == [urgent, mid, late, old]


async def test_a_long_backlog_on_a_full_key_does_not_hide_the_work_behind_it(mesh, monkeypatch):
    await mesh.agent("a", ["deploy"], concurrency=10)
    monkeypatch.setattr(dispatch_state, "DISPATCH_SCAN_MAX", 4)  # a pass reads at most 4 queued rows
    keyed = [(await mesh.submit(type="deploy", concurrency_key="k"))["id"] for _ in range(8)]
    free = (await mesh.submit(type="deploy"))["id"]
    view = mesh.dispatcher.view
    result = mesh.store.write(dispatch_state.dispatch, now=time.time(), view=view, unparked_at=-1, limit=2)
    assert await running(mesh, keyed) == keyed[:1]
    assert (await mesh.task(free))["state"] == "assigned"  # behind 7 blocked rows, past the scan limit
    assert not result.more
