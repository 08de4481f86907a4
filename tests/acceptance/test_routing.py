"""Who gets which task: capabilities, priority, named routes and fanout, on the real `mcs up`."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .conftest import event_kinds, uid, wait_until

pytestmark = pytest.mark.acceptance


def test_capability_routing_gives_each_agent_only_what_it_can_do(mesh, agent_factory):
    a, b, z = f"alpha-{uid()}", f"beta-{uid()}", f"zeta-{uid()}"
    only_a = agent_factory(mesh, capabilities=[a])
    only_b = agent_factory(mesh, capabilities=[b])
    both = agent_factory(mesh, capabilities=[a, b])
    agents = [only_a, only_b, both]

    # A task nobody can do: submitted first, so the dispatcher has passed it by the time it routes the rest.
    orphan = mesh.admin.submit(z, {"n": "orphan"}, capabilities=[z, a])
    needs = {}
    for i in range(4):
        for caps in ([a], [b], [a, b]):
            task = mesh.admin.submit(caps[0], {"n": i}, capabilities=caps)
            needs[task["id"]] = set(caps)

    for task_id in needs:
        done = mesh.admin.wait_for(task_id, timeout=15)
        assert done["state"] == "completed", done
    for task_id, caps in needs.items():
        task = mesh.admin.get_task(task_id)
        holder = next(x for x in agents if x.name == task["assigned_to"])
        assert caps <= set(holder.capabilities), f"{holder.name} got a task needing {caps}"
        assert task["result"] == {"task_id": task_id, "agent": holder.name, "payload": task["payload"]}
    for agent in agents:
        for task_id in agent.webhook_task_ids():
            assert needs[task_id] <= set(agent.capabilities), f"{agent.name} was offered {task_id}"
    # Only the agent with both capabilities can take the tasks that need both.
    assert {mesh.admin.get_task(t)["assigned_to"] for t, c in needs.items() if c == {a, b}} == {both.name}

    orphan_now = mesh.admin.get_task(orphan["id"])
    assert orphan_now["state"] == "queued" and orphan_now["assigned_to"] is None
    assert event_kinds(mesh.admin.events(orphan["id"])) == ["submitted"]
    assert all(orphan["id"] not in x.webhook_task_ids() for x in agents)

    # The moment a capable agent registers, the waiting task is routed to it.
    capable = agent_factory(mesh, capabilities=[z, a, "extra"], register=False)
    registered_at = time.monotonic()
    capable.register()
    done = mesh.admin.wait_for(orphan["id"], timeout=10)
    assert done["state"] == "completed" and done["assigned_to"] == capable.name
    assert time.monotonic() - registered_at < 5
    assert capable.webhook_task_ids() == [orphan["id"]]


def test_priority_urgent_then_normal_then_low_oldest_first(mesh, agent_factory):
    kind = f"prio-{uid()}"
    submitted = {"urgent": [], "normal": [], "low": []}
    # Interleaved so neither submission order nor id order could pass for priority order.
    for i in range(4):
        for priority in ("low", "normal", "urgent"):
            task = mesh.admin.submit(kind, {"i": i, "p": priority}, priority=priority)
            submitted[priority].append(task["id"])

    poller = agent_factory(mesh, capabilities=[kind], push=False)  # the only agent, online only now
    taken = []
    while (task := poller.client.claim_next()) is not None:
        assert task["state"] == "claimed" and task["assigned_to"] == poller.name
        taken.append(task["id"])
        poller.client.complete(task["id"], task["claim_token"], {"order": len(taken)})
    assert taken == submitted["urgent"] + submitted["normal"] + submitted["low"]
    for position, task_id in enumerate(taken, start=1):
        assert mesh.admin.get_task(task_id)["result"] == {"order": position}


def test_priority_order_holds_for_a_push_agent_working_one_task_at_a_time(mesh, agent_factory):
    """Webhooks arrive in any order (they are delivered concurrently); an agent that answers each one by
    claiming *next* still works urgent first, then normal, then low, oldest first."""
    kind = f"prio-push-{uid()}"
    submitted = {"urgent": [], "normal": [], "low": []}
    for i in range(3):
        for priority in ("normal", "low", "urgent"):
            submitted[priority].append(mesh.admin.submit(kind, {"i": i}, priority=priority)["id"])
    everything = submitted["urgent"] + submitted["normal"] + submitted["low"]

    agent = agent_factory(mesh, capabilities=[kind], mode="next", workers=1)
    for task_id in everything:
        assert mesh.admin.wait_for(task_id, timeout=15)["state"] == "completed"
    assert agent.claimed == everything
    assert sorted(agent.webhook_task_ids()) == sorted(everything)


def test_named_route_goes_only_to_that_agent(mesh, agent_factory):
    kind = f"named-{uid()}"
    others = [agent_factory(mesh, capabilities=[kind]) for _ in range(2)]
    chosen = agent_factory(mesh, capabilities=[kind], register=False)  # exists, not yet online
    poller = agent_factory(mesh, capabilities=[kind], push=False)

    routed = [mesh.admin.submit(kind, {"i": i}, route=chosen.name)["id"] for i in range(3)]
    control = mesh.admin.submit(kind, {"control": True})["id"]
    assert mesh.admin.wait_for(control, timeout=10)["assigned_to"] in {o.name for o in others}

    # The capable agents online got none of them; a capable poller may not take them either.
    for task_id in routed:
        task = mesh.admin.get_task(task_id)
        assert task["state"] == "queued" and task["route"] == chosen.name, task
    assert poller.client.claim_next() is None
    status = poller.client.http.post(f"/v1/tasks/{routed[0]}/claim").status_code
    assert status == 403

    chosen.register()
    for task_id in routed:
        done = mesh.admin.wait_for(task_id, timeout=10)
        assert done["state"] == "completed" and done["assigned_to"] == chosen.name
    assert sorted(chosen.webhook_task_ids()) == sorted(routed)
    for other in others:
        assert not set(other.webhook_task_ids()) & set(routed)


def test_fanout_all_gives_one_child_per_agent_and_collects_results(mesh, agent_factory):
    kind = f"fan-{uid()}"
    agents = [agent_factory(mesh, capabilities=[kind, f"own-{i}"]) for i in range(3)]
    bystander = agent_factory(mesh, capabilities=[f"other-{uid()}"])

    parent = mesh.admin.submit(kind, {"question": "42?"}, route="all")
    done = mesh.admin.wait_for(parent["id"], timeout=15)
    assert done["state"] == "completed", done

    children = done["result"]["children"]
    assert sorted(c["agent"] for c in children) == sorted(a.name for a in agents)
    assert sorted(done["children"]) == sorted(c["task_id"] for c in children)
    for child in children:
        assert child["state"] == "completed"
        assert child["result"] == {"task_id": child["task_id"], "agent": child["agent"], "payload": {"question": "42?"}}
        stored = mesh.admin.get_task(child["task_id"])
        assert stored["parent_id"] == parent["id"] and stored["assigned_to"] == child["agent"]
    for agent in agents:
        mine = [c["task_id"] for c in children if c["agent"] == agent.name]
        assert len(mine) == 1 and list(agent.completed) == mine
    assert bystander.webhook_task_ids() == []
    assert "waiting" in event_kinds(mesh.admin.events(parent["id"]))


def test_forged_webhook_is_refused_by_the_agent(mesh, agent_factory):
    """The zero-failure check every test makes at teardown can fail: a webhook signed with another key
    does not verify."""
    agent = agent_factory(mesh, capabilities=[f"forge-{uid()}"])
    body = json.dumps({"type": "task.assigned", "data": {"task": {"id": "nope"}}})
    headers = {"webhook-id": "msg_forged", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"}
    assert httpx.post(agent.notify_url, content=body, headers=headers).status_code == 401
    wait_until(lambda: agent.verify_failures, timeout=2, what="the failure to be recorded")
    assert agent.webhook_task_ids() == []
    agent.verify_failures.clear()  # forged on purpose; the teardown check is for webhooks MCS sent


def test_webhook_is_retried_with_the_same_id_until_the_agent_accepts_it(mesh, agent_factory):
    kind = f"flaky-{uid()}"
    agent = agent_factory(mesh, capabilities=[kind], refuse_first=2)
    task = mesh.admin.submit(kind, {"x": 1})
    done = mesh.admin.wait_for(task["id"], timeout=15)
    assert done["state"] == "completed" and done["assigned_to"] == agent.name
    deliveries = agent.webhooks
    assert len(deliveries) == 3 and len(agent.refused) == 2
    assert {d.task_id for d in deliveries} == {task["id"]}
    assert len({d.webhook_id for d in deliveries}) == 1  # one message, retried: the same webhook-id


def test_priority_order_holds_for_a_one_at_a_time_agent_that_claims_what_its_webhooks_name(mesh, agent_factory):
    """The behaviour of examples/echo_agent.py: one worker, claiming each task its webhooks name, in the
    order they arrive. With a backlog waiting when it comes online, it must still work urgent first, then
    normal, then low, oldest first. (Today MCS assigns the whole backlog to it at once and delivers up to
    eight webhooks concurrently, so arrival order, and the order of work, is a shuffle.)"""
    kind = f"prio-echo-{uid()}"
    submitted = {"urgent": [], "normal": [], "low": []}
    for i in range(5):
        for priority in ("low", "normal", "urgent"):
            submitted[priority].append(mesh.admin.submit(kind, {"i": i}, priority=priority)["id"])
    everything = submitted["urgent"] + submitted["normal"] + submitted["low"]

    agent = agent_factory(mesh, capabilities=[kind], mode="complete", workers=1)
    for task_id in everything:
        assert mesh.admin.wait_for(task_id, timeout=15)["state"] == "completed"
    taken = [everything.index(t) for t in agent.claimed]
    assert taken == list(range(len(everything))), f"order taken (0-4 urgent, 5-9 normal, 10-14 low): {taken}"
