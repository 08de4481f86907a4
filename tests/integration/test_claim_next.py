"""Claim next picks by capability in SQL (every required capability among the agent's usable ones): the
same choices as the subset rule routing uses, found without decoding every queued row in Python."""

from __future__ import annotations


async def claim(mesh, who):
    response = await mesh.call("POST", "/v1/tasks/claim", who=who, json={})
    return (await response.get_json())["id"] if response.status_code == 200 else None


async def test_claim_next_takes_only_tasks_whose_every_capability_the_agent_has(mesh):
    one = await mesh.agent("one", ["a"], notify_url=None)
    both = await mesh.agent("both", ["a", "b", "c"], notify_url=None)
    needs_two = await mesh.submit(type="t", capabilities=["a", "b"])
    assert await claim(mesh, one) is None  # has a, lacks b: skipped, not a miss
    needs_one = await mesh.submit(type="t", capabilities=["a"])
    assert await claim(mesh, one) == needs_one["id"]  # behind the one it cannot do
    assert await claim(mesh, both) == needs_two["id"]
    anyone = await mesh.submit(type="t", capabilities=[])  # requires nothing: any agent may take it
    assert await claim(mesh, one) == anyone["id"]


async def test_a_capability_outside_the_grant_does_not_count(mesh):
    created = await mesh.ok(
        "POST", "/v1/agents", who="admin", json={"name": "narrow", "capabilities": ["a"]}, status=201
    )
    who = {"X-Agent-ID": "narrow", "X-Agent-Secret": created["secret"]}
    await mesh.ok("POST", "/v1/agents/register", who=who, json={"capabilities": ["a"]})
    # The grant is narrowed after registration: nothing changes its registered capabilities, yet "a" no
    # longer counts, so a task for "a" is not its to take.
    mesh.db.sql("UPDATE agents SET granted = '[\"z\"]' WHERE name = 'narrow'")
    await mesh.submit(type="a")
    assert await claim(mesh, who) is None
