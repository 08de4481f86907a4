"""The task contract over HTTP, on a real SQLite file, with the dispatcher and watchdog run pass by pass."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytestmark = pytest.mark.asyncio


async def test_submit_defaults_capabilities_to_type_and_ids_are_random(mesh):
    t1 = await mesh.submit(type="mcs-review", payload={"pr": 1})
    t2 = await mesh.submit(type="mcs-review")
    assert t1["capabilities"] == ["mcs-review"]
    assert (t1["state"], t1["priority"], t1["route"], t1["attempts"]) == ("queued", "normal", "any", 0)
    assert t1["max_retries"] == 3 and t1["payload"] == {"pr": 1} and t1["submitted_by"] == "admin"
    assert len(t1["id"]) == 36 and t1["id"] != t2["id"]
    assert await mesh.kinds(t1["id"]) == ["submitted"]


async def test_routing_by_capability_and_waiting_for_a_capable_agent(mesh):
    await mesh.agent("shell", ["shell"])
    task = await mesh.submit(type="review", capabilities=["review", "gpu"])
    mesh.dispatch()
    assert (await mesh.task(task["id"]))["state"] == "queued"
    await mesh.agent("partial", ["review"])
    mesh.dispatch()
    assert (await mesh.task(task["id"]))["state"] == "queued"
    await mesh.agent("gpu-box", ["review", "gpu", "shell"])
    mesh.dispatch()
    routed = await mesh.task(task["id"])
    assert (routed["state"], routed["assigned_to"]) == ("assigned", "gpu-box")
    assert await mesh.kinds(task["id"]) == ["submitted", "assigned"]


async def test_dispatch_writes_the_webhook_outbox_row_in_the_same_transaction(mesh):
    await mesh.agent("a", ["x"])
    task = await mesh.submit(type="x")
    mesh.dispatch()
    rows = mesh.db.sql("SELECT kind, agent, task_id, body FROM outbox").fetchall()
    assert [(r["kind"], r["agent"], r["task_id"]) for r in rows] == [("webhook", "a", task["id"])]
    body = json.loads(rows[0]["body"])
    assert body["type"] == "task.assigned" and body["data"]["task"]["id"] == task["id"]


async def test_any_prefers_the_least_loaded_agent(mesh):
    await mesh.agent("a", ["x"], concurrency=5)
    await mesh.agent("b", ["x"], concurrency=5)
    tasks = [await mesh.submit(type="x") for _ in range(4)]
    mesh.dispatch()
    owners = [(await mesh.task(t["id"]))["assigned_to"] for t in tasks]
    assert sorted(owners) == ["a", "a", "b", "b"]


async def test_agents_get_no_more_than_their_concurrency_and_the_backlog_goes_out_in_priority_order(mesh):
    agent = await mesh.agent("a", ["x"], notify_url=None)
    await mesh.agent("solo", ["x"])  # concurrency 1 by default
    low = await mesh.submit(type="x", priority="low")
    normal = await mesh.submit(type="x")
    urgent = await mesh.submit(type="x", priority="urgent")
    order = []
    for _ in range(3):
        mesh.dispatch()
        held = [t for t in (await mesh.ok("GET", "/v1/tasks?state=assigned", who="admin"))["tasks"]]
        assert len(held) == 1 and held[0]["assigned_to"] == "solo"
        order.append(held[0]["id"])
        # solo declines it, so it frees up; the declined task goes to the polling agent
        await mesh.ok("POST", f"/v1/tasks/{held[0]['id']}/reject", who=mesh.last_agent, json={"reason": "next"})
    assert order == [urgent["id"], normal["id"], low["id"]]
    assert agent  # the polling agent is never pushed to


async def test_named_route_and_unknown_agent(mesh):
    await mesh.agent("a", ["x"])
    await mesh.agent("b", ["x"])
    task = await mesh.submit(type="x", route="b")
    mesh.dispatch()
    assert (await mesh.task(task["id"]))["assigned_to"] == "b"
    response = await mesh.call("POST", "/v1/tasks", who="admin", json={"type": "x", "route": "nobody"})
    assert response.status_code == 422
    assert (await response.get_json())["error"]["code"] == "unknown_agent"


async def test_claim_next_takes_urgent_first_then_oldest(mesh):
    poller = await mesh.agent("poller", ["x"], notify_url=None)
    order = []
    for priority in ("low", "normal", "urgent", "normal", "low", "urgent"):
        order.append(((await mesh.submit(type="x", priority=priority))["id"], priority))
    mesh.dispatch()  # a polling agent is never pushed to: everything stays queued
    taken = []
    for _ in order:
        t = await mesh.ok("POST", "/v1/tasks/claim", who=poller, json={})
        taken.append(t["id"])
    rank = {"urgent": 0, "normal": 1, "low": 2}
    expected = [tid for tid, _ in sorted(order, key=lambda p: rank[p[1]])]
    assert taken == expected
    empty = await mesh.call("POST", "/v1/tasks/claim", who=poller, json={})
    assert empty.status_code == 204


async def test_claim_next_waits_for_work(mesh):
    poller = await mesh.agent("poller", ["x"], notify_url=None)

    async def submit_later():
        await asyncio.sleep(0.3)
        return await mesh.submit(type="x")

    started = time.monotonic()
    later = asyncio.create_task(submit_later())
    response = await mesh.call("POST", "/v1/tasks/claim", who=poller, json={"wait": 5})
    submitted = await later
    assert response.status_code == 200
    assert (await response.get_json())["id"] == submitted["id"]
    assert time.monotonic() - started < 4


async def test_claim_rules(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    b = await mesh.agent("b", ["y"], notify_url=None)
    c = await mesh.agent("c", ["x"], notify_url=None)
    task = await mesh.submit(type="x", route="a")
    denied = await mesh.call("POST", f"/v1/tasks/{task['id']}/claim", who=b)
    assert (denied.status_code, (await denied.get_json())["error"]["code"]) == (403, "routed_elsewhere")
    other = await mesh.submit(type="x")
    lacking = await mesh.call("POST", f"/v1/tasks/{other['id']}/claim", who=b)
    assert (lacking.status_code, (await lacking.get_json())["error"]["code"]) == (403, "missing_capability")
    claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    assert claimed["state"] == "claimed" and claimed["claim_token"] and claimed["lease_expires_at"]
    again = await mesh.call("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    assert again.status_code == 409
    stolen = await mesh.call(
        "POST", f"/v1/tasks/{task['id']}/complete", who=c, json={"claim_token": claimed["claim_token"]}
    )
    assert stolen.status_code == 403
    missing = await mesh.call("POST", "/v1/tasks/00000000-0000-0000-0000-000000000000/claim", who=a)
    assert missing.status_code == 404


async def test_complete_is_idempotent_with_the_same_token(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    task = await mesh.submit(type="x")
    claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    body = {"claim_token": claimed["claim_token"], "result": {"answer": 42}}
    done = await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=a, json=body)
    again = await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=a, json=body | {"result": "other"})
    assert done["result"] == again["result"] == {"answer": 42}
    assert (await mesh.kinds(task["id"])).count("completed") == 1


async def test_stale_claim_token_gets_409_and_changes_nothing(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    b = await mesh.agent("b", ["x"], notify_url=None)
    task = await mesh.submit(type="x", claim_ttl=0.05)
    first = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    await asyncio.sleep(0.1)
    mesh.sweep()  # lease expired -> retrying
    await asyncio.sleep(0.1)
    mesh.dispatch()  # due -> queued
    second = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=b)
    assert second["claim_token"] != first["claim_token"]
    before = await mesh.task(task["id"])
    for action, body in (("complete", {"result": 1}), ("fail", {"error": "x"}), ("extend", {})):
        stale = await mesh.call(
            "POST", f"/v1/tasks/{task['id']}/{action}", who=a, json={"claim_token": first["claim_token"], **body}
        )
        assert stale.status_code == 409, action
        assert (await stale.get_json())["error"]["code"] == "stale_claim_token"
    assert await mesh.task(task["id"]) == before


async def test_extend_moves_the_lease(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    task = await mesh.submit(type="x", claim_ttl=60)
    claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    extended = await mesh.ok(
        "POST", f"/v1/tasks/{task['id']}/extend", who=a, json={"claim_token": claimed["claim_token"], "ttl": 3600}
    )
    assert extended["lease_expires_at"] > claimed["lease_expires_at"]


async def test_fail_backs_off_exponentially_then_fails_and_raises_an_alert(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    task = await mesh.submit(type="x", max_retries=2)
    delays = []
    for attempt in range(1, 4):
        claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
        assert claimed["attempts"] == attempt
        failed = await mesh.ok(
            "POST",
            f"/v1/tasks/{task['id']}/fail",
            who=a,
            json={"claim_token": claimed["claim_token"], "error": f"boom {attempt}"},
        )
        if attempt < 3:
            assert failed["state"] == "retrying" and failed["not_before"]
            early = await mesh.call("POST", f"/v1/tasks/{task['id']}/claim", who=a)
            assert early.status_code == 409  # not before its backoff
            events = (await mesh.ok("GET", f"/v1/tasks/{task['id']}/events", who="admin"))["events"]
            delays.append(events[-1]["detail"]["delay"])
            await asyncio.sleep(delays[-1] + 0.02)
            mesh.dispatch()
    assert delays == [pytest.approx(0.05), pytest.approx(0.1)]
    final = await mesh.task(task["id"])
    assert (final["state"], final["attempts"], final["error"]) == ("failed", 3, "boom 3")
    alert = mesh.db.sql("SELECT body FROM outbox WHERE kind = 'alert'").fetchone()
    data = json.loads(alert["body"])["data"]
    assert data["task_id"] == task["id"] and data["error"] == "boom 3" and "payload" not in data


async def test_non_retryable_failure_fails_at_once(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    task = await mesh.submit(type="x")
    claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    failed = await mesh.ok(
        "POST",
        f"/v1/tasks/{task['id']}/fail",
        who=a,
        json={"claim_token": claimed["claim_token"], "error": {"reason": "bad input"}, "retryable": False},
    )
    assert (failed["state"], failed["error"]) == ("failed", {"reason": "bad input"})


async def test_reject_routes_to_another_agent_and_never_back(mesh):
    a = await mesh.agent("a", ["x"], concurrency=3)
    b = await mesh.agent("b", ["x"], concurrency=3)
    task = await mesh.submit(type="x")
    mesh.dispatch()
    first = (await mesh.task(task["id"]))["assigned_to"]
    rejecter = a if first == "a" else b
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/reject", who=rejecter, json={"reason": "busy"})
    mesh.dispatch()
    routed = await mesh.task(task["id"])
    assert routed["state"] == "assigned" and routed["assigned_to"] != first and routed["attempts"] == 0
    other = b if rejecter is a else a
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/reject", who=other, json={"reason": "no"})
    mesh.dispatch()
    assert (await mesh.task(task["id"]))["state"] == "queued"  # nobody left: it waits
    assert (await mesh.kinds(task["id"])).count("rejected") == 2


async def test_cancel_by_submitter_or_admin_only(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    b = await mesh.agent("b", ["x"], notify_url=None)
    task = await mesh.submit(who=a, type="x")
    denied = await mesh.call("POST", f"/v1/tasks/{task['id']}/cancel", who=b)
    assert denied.status_code == 403
    canceled = await mesh.ok("POST", f"/v1/tasks/{task['id']}/cancel", who=a)
    assert canceled["state"] == "canceled"
    again = await mesh.call("POST", f"/v1/tasks/{task['id']}/cancel", who="admin")
    assert again.status_code == 409


async def test_fanout_to_every_capable_agent_and_collect(mesh):
    agents = {name: await mesh.agent(name, ["review"]) for name in ("ocasia", "rex", "phil")}
    await mesh.agent("molly", ["research"])
    parent = await mesh.submit(type="review", route="all", payload={"repo": "cf-cli"})
    mesh.dispatch()
    waiting = await mesh.task(parent["id"])
    assert waiting["state"] == "waiting" and len(waiting["children"]) == 3
    for child_id in waiting["children"]:
        child = await mesh.task(child_id)
        assert child["parent_id"] == parent["id"] and child["state"] == "assigned"
        who = agents[child["assigned_to"]]
        claimed = await mesh.ok("POST", f"/v1/tasks/{child_id}/claim", who=who)
        if child["assigned_to"] == "phil":
            await mesh.ok(
                "POST",
                f"/v1/tasks/{child_id}/fail",
                who=who,
                json={"claim_token": claimed["claim_token"], "error": "no", "retryable": False},
            )
        else:
            await mesh.ok(
                "POST",
                f"/v1/tasks/{child_id}/complete",
                who=who,
                json={"claim_token": claimed["claim_token"], "result": {"by": child["assigned_to"]}},
            )
    done = await mesh.task(parent["id"])
    assert done["state"] == "completed"
    outcome = {c["agent"]: c for c in done["result"]["children"]}
    assert set(outcome) == {"ocasia", "rex", "phil"}
    assert outcome["rex"]["result"] == {"by": "rex"} and outcome["phil"]["state"] == "failed"
    listed = await mesh.ok("GET", f"/v1/tasks?parent={parent['id']}", who="admin")
    assert len(listed["tasks"]) == 3


async def test_fanout_parent_fails_when_every_child_fails_and_cancel_cascades(mesh):
    agents = {name: await mesh.agent(name, ["r"]) for name in ("a", "b")}
    parent = await mesh.submit(type="r", route="all")
    mesh.dispatch()
    kids = (await mesh.task(parent["id"]))["children"]
    for kid in kids:
        who = agents[(await mesh.task(kid))["assigned_to"]]
        claimed = await mesh.ok("POST", f"/v1/tasks/{kid}/claim", who=who)
        await mesh.ok(
            "POST",
            f"/v1/tasks/{kid}/fail",
            who=who,
            json={"claim_token": claimed["claim_token"], "error": "x", "retryable": False},
        )
    assert (await mesh.task(parent["id"]))["state"] == "failed"
    other = await mesh.submit(type="r", route="all")
    mesh.dispatch()
    await mesh.ok("POST", f"/v1/tasks/{other['id']}/cancel", who="admin")
    for kid in (await mesh.task(other["id"]))["children"]:
        assert (await mesh.task(kid))["state"] == "canceled"


async def test_idempotency_key_replays_or_refuses(mesh):
    headers = mesh.admin | {"Idempotency-Key": "abc"}
    first = await mesh.client.post("/v1/tasks", json={"type": "x", "payload": 1}, headers=headers)
    again = await mesh.client.post("/v1/tasks", json={"type": "x", "payload": 1}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert (await first.get_json())["id"] == (await again.get_json())["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await mesh.client.post("/v1/tasks", json={"type": "x", "payload": 2}, headers=headers)
    assert other.status_code == 422
    assert (await other.get_json())["error"]["code"] == "idempotency_key_reused"
    listed = await mesh.ok("GET", "/v1/tasks", who="admin")
    assert len(listed["tasks"]) == 1


async def test_list_filters_and_cursor(mesh):
    ids = [(await mesh.submit(type="a" if i % 2 else "b"))["id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        page = await mesh.ok("GET", "/v1/tasks?limit=3" + (f"&cursor={cursor}" if cursor else ""), who="admin")
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    only_a = await mesh.ok("GET", "/v1/tasks?type=a&state=queued", who="admin")
    assert [t["id"] for t in only_a["tasks"]] == [i for n, i in enumerate(ids) if n % 2][::-1]
    bad = await mesh.call("GET", "/v1/tasks?cursor=garbage", who="admin")
    assert bad.status_code == 400


async def test_lease_expiry_retries_and_another_agent_finishes(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    b = await mesh.agent("b", ["x"], notify_url=None)
    task = await mesh.submit(type="x", claim_ttl=0.05)
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    await asyncio.sleep(0.1)
    assert mesh.sweep().expired_leases == [task["id"]]
    assert (await mesh.task(task["id"]))["state"] == "retrying"
    await asyncio.sleep(0.1)
    mesh.dispatch()
    claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=b)
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=b, json={"claim_token": claimed["claim_token"]})
    final = await mesh.task(task["id"])
    assert (final["state"], final["assigned_to"], final["attempts"]) == ("completed", "b", 2)
    kinds = await mesh.kinds(task["id"])
    assert kinds == ["submitted", "claimed", "lease_expired", "retrying", "requeued", "claimed", "completed"]


async def test_unclaimed_assignment_is_routed_again(mesh):
    await mesh.agent("a", ["x"])
    task = await mesh.submit(type="x", claim_ttl=0.05)
    mesh.dispatch()
    first = (await mesh.task(task["id"]))["assigned_to"]
    await mesh.agent("b", ["x"])
    await asyncio.sleep(0.1)
    assert mesh.sweep().rerouted == [task["id"]]
    mesh.dispatch()
    again = await mesh.task(task["id"])
    assert again["state"] == "assigned" and again["assigned_to"] != first


async def test_offline_agents_get_no_work_until_they_return(mesh):
    a = await mesh.agent("a", ["x"], ttl=0.1)
    await asyncio.sleep(0.15)
    assert mesh.sweep().offline == ["a"]
    shown = await mesh.ok("GET", "/v1/agents/a", who="admin")
    assert shown["status"] == "offline"
    task = await mesh.submit(type="x")
    mesh.dispatch()
    assert (await mesh.task(task["id"]))["state"] == "queued"
    await mesh.ok(
        "POST", "/v1/agents/register", who=a, json={"capabilities": ["x"], "notify_url": "http://127.0.0.1:9/"}
    )
    mesh.dispatch()
    assert (await mesh.task(task["id"]))["assigned_to"] == "a"


async def test_watchdog_catches_up_at_start_up(mesh):
    """Work orphaned while everything was down is handled by the first sweep, not one interval later."""
    import threading

    from mcs.watchdog import Watchdog

    a = await mesh.agent("a", ["x"], notify_url=None)
    task = await mesh.submit(type="x", claim_ttl=0.05)
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    await asyncio.sleep(0.1)
    watchdog = Watchdog(mesh.store, interval=3600, retry_base=0.05, retry_max=1)
    runner = threading.Thread(target=watchdog.run)
    runner.start()
    try:
        for _ in range(100):
            if (await mesh.task(task["id"]))["state"] == "retrying":
                break
            await asyncio.sleep(0.02)
        assert (await mesh.task(task["id"]))["state"] == "retrying"
    finally:
        watchdog.stop()
        runner.join(timeout=5)


async def test_expired_idempotency_keys_are_purged(mesh):
    from dataclasses import replace

    mesh.client.app.config["MCS_SETTINGS"] = replace(mesh.settings, idempotency_ttl=0.05)
    headers = mesh.admin | {"Idempotency-Key": "k"}
    first = await (await mesh.client.post("/v1/tasks", json={"type": "x"}, headers=headers)).get_json()
    await asyncio.sleep(0.1)
    assert mesh.sweep().purged_keys == 1
    again = await (await mesh.client.post("/v1/tasks", json={"type": "x"}, headers=headers)).get_json()
    assert again["id"] != first["id"]


async def test_rejecting_a_task_routed_to_you_by_name_fails_it_and_settles_the_fanout(mesh):
    a = await mesh.agent("a", ["r"], notify_url=None)
    b = await mesh.agent("b", ["r"], notify_url=None)
    named = await mesh.submit(type="r", route="b")
    await mesh.ok("POST", f"/v1/tasks/{named['id']}/reject", who=b, json={"reason": "not mine"})
    failed = await mesh.task(named["id"])
    assert failed["state"] == "failed" and "rejected by b" in failed["error"]
    parent = await mesh.submit(type="r", route="all")
    mesh.dispatch()
    kids = {(await mesh.task(k))["route"]: k for k in (await mesh.task(parent["id"]))["children"]}
    claimed = await mesh.ok("POST", f"/v1/tasks/{kids['a']}/claim", who=a)
    await mesh.ok("POST", f"/v1/tasks/{kids['a']}/complete", who=a, json={"claim_token": claimed["claim_token"]})
    await mesh.ok("POST", f"/v1/tasks/{kids['b']}/reject", who=b, json={"reason": "busy"})
    done = await mesh.task(parent["id"])
    assert done["state"] == "completed"
    assert {c["agent"]: c["state"] for c in done["result"]["children"]} == {"a": "completed", "b": "failed"}


async def test_deleting_an_agent_ends_what_only_it_could_do(mesh):
    await mesh.agent("a", ["r"], notify_url=None)
    await mesh.agent("b", ["r"], notify_url=None)
    named = await mesh.submit(type="r", route="b")
    parent = await mesh.submit(type="r", route="all")
    anyone = await mesh.submit(type="r")
    mesh.dispatch()
    await mesh.call("DELETE", "/v1/agents/b", who="admin")
    assert (await mesh.task(named["id"]))["state"] == "failed"
    assert (await mesh.task(anyone["id"]))["state"] == "queued"
    kids = {(await mesh.task(k))["route"]: k for k in (await mesh.task(parent["id"]))["children"]}
    assert (await mesh.task(kids["b"]))["state"] == "failed"
    assert (await mesh.task(parent["id"]))["state"] == "waiting"  # a's child is still to do


async def test_a_fanout_whose_children_were_all_canceled_is_canceled_without_an_alert(mesh):
    await mesh.agent("a", ["r"], notify_url=None)
    await mesh.agent("b", ["r"], notify_url=None)
    parent = await mesh.submit(type="r", route="all")
    mesh.dispatch()
    for kid in (await mesh.task(parent["id"]))["children"]:
        await mesh.ok("POST", f"/v1/tasks/{kid}/cancel", who="admin")
    assert (await mesh.task(parent["id"]))["state"] == "canceled"
    assert mesh.db.sql("SELECT count(*) FROM outbox WHERE kind = 'alert'").fetchone()[0] == 0


async def test_a_backlog_for_a_busy_agent_does_not_hide_work_for_an_idle_one(mesh):
    await mesh.agent("slow", ["slow"])  # concurrency 1
    poller = await mesh.agent("poller", ["fast"], notify_url=None)
    await mesh.agent("fast", ["fast"])
    for _ in range(260):  # more than a dispatcher page
        await mesh.submit(type="slow")
    fast = await mesh.submit(type="fast")
    mesh.dispatch()
    assert (await mesh.task(fast["id"]))["assigned_to"] == "fast"
    for _ in range(520):  # more than claim-next once looked through
        await mesh.submit(type="slow", priority="urgent")
    other = await mesh.submit(type="fast", route="poller")
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=poller, json={})
    assert claimed["id"] == other["id"]
