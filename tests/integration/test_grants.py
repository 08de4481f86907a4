"""Granted capabilities bound what an agent is routed and may claim, even when its grant was narrowed after
it registered (no endpoint narrows a grant yet; the row is changed as such an endpoint would, with the
agent event every change to an agent writes)."""

from __future__ import annotations

import json
import time


def narrow_grant(mesh, name, granted):
    def change(tx):  # one transaction, either engine
        tx.run("UPDATE agents SET granted = ? WHERE name = ?", (json.dumps(granted), name))
        tx.run(
            "INSERT INTO agent_events (agent, at, kind, actor, detail) VALUES (?, ?, 'granted', 'admin', NULL)",
            (name, time.time()),
        )

    mesh.store.write(change)


async def test_work_outside_a_narrowed_grant_is_neither_routed_nor_claimable(mesh):
    await mesh.agent("pusher", ["x", "y"])
    poller = await mesh.agent("poller", ["x", "y"], notify_url=None)
    narrow_grant(mesh, "pusher", ["x"])
    narrow_grant(mesh, "poller", ["x"])

    only_y = await mesh.submit(type="y")
    mesh.dispatch()
    assert (await mesh.task(only_y["id"]))["state"] == "queued"  # pusher registered y, but may not take it
    refused = await mesh.call("POST", f"/v1/tasks/{only_y['id']}/claim", who=poller)
    assert refused.status_code == 403 and (await refused.get_json())["error"]["code"] == "missing_capability"
    nothing = await mesh.call("POST", "/v1/tasks/claim", who=poller, json={})
    assert nothing.status_code == 204

    x = await mesh.submit(type="x")
    mesh.dispatch()
    assert (await mesh.task(x["id"]))["assigned_to"] == "pusher"
    shown = await mesh.ok("GET", "/v1/agents/pusher", who="admin")
    assert shown["granted"] == ["x"] and shown["capabilities"] == ["x", "y"]
