"""GET /v1/status on a real SQLite file: heartbeats, queue depth, work nobody online can take (and who
could), and agents whose latest webhook failed, with the notifier's error."""

from __future__ import annotations

import time

from mcs.state import outbox as outbox_store
from mcs.state import status as status_store


def record(mesh, outcomes, now):
    """What a notifier does: lease the rows, then record what became of them."""
    mesh.store.write(outbox_store.take, owner="test", now=now, lease=60, limit=500, per_key=500)
    mesh.store.write(outbox_store.record_outcomes, owner="test", outcomes=outcomes, now=now)


async def test_status_says_what_waits_and_why(mesh):
    hooked = await mesh.agent("hooked", ["echo"], notify_url="http://127.0.0.1:9/hook")
    sleeper = {"name": "sleeper", "capabilities": ["translate"]}
    await mesh.ok("POST", "/v1/agents", who="admin", json=sleeper, status=201)
    echo = await mesh.submit(type="echo")
    await mesh.submit(type="translate", priority="urgent")
    await mesh.submit(type="translate", priority="low")
    await mesh.submit(type="paint", route="sleeper", capabilities=["translate"])
    mesh.dispatch()
    now = time.time()
    row = mesh.store.read(lambda c: c.execute("SELECT id FROM outbox WHERE agent = 'hooked'").fetchone())
    error = "ConnectError: [Errno 111] Connection refused"
    outcome = {"id": row[0], "kind": "webhook", "agent": "hooked", "task_id": echo["id"], "state": "retry",
               "attempts": 2, "error": error, "next_attempt_at": now + 60}  # fmt: skip
    record(mesh, [outcome], now)
    mesh.store.write(outbox_store.beat, process="dispatcher", pid=11, started_at=now - 5, now=now - 1)
    mesh.store.write(outbox_store.beat, process="watchdog", pid=12, started_at=now - 500, now=now - 400)

    status = await mesh.ok("GET", "/v1/status", who="admin")

    beats = {p["name"]: p for p in status["processes"]}
    assert beats["dispatcher"]["healthy"] and beats["dispatcher"]["pid"] == 11
    assert not beats["watchdog"]["healthy"] and beats["watchdog"]["age_seconds"] >= 400
    assert status["queue"]["queued"] == {"urgent": 1, "normal": 1, "low": 1}
    assert status["queue"]["assigned"]["normal"] == 1
    unserved = {(tuple(u["capabilities"]), u["route"]): u for u in status["unserved"]}
    assert unserved[(("translate",), "any")]["queued"] == 2
    assert unserved[(("translate",), "any")]["offline_agents"] == ["sleeper"]
    assert unserved[(("translate",), "sleeper")]["offline_agents"] == ["sleeper"]
    assert (("echo",), "any") not in unserved  # hooked is online and has it
    assert [a["name"] for a in status["agents"]["online"]] == ["hooked"]
    assert [a["name"] for a in status["agents"]["offline"]] == ["sleeper"]
    [unreachable] = status["unreachable"]
    assert unreachable["agent"] == "hooked" and unreachable["notify_url"] == "http://127.0.0.1:9/hook"
    assert unreachable["error"].startswith("ConnectError") and not unreachable["gave_up"]
    assert unreachable["task_id"] == echo["id"]

    refused = await mesh.call("GET", "/v1/status", who=hooked)
    assert refused.status_code == 403 and (await refused.get_json())["error"]["code"] == "admin_only"
    anonymous = await mesh.call("GET", "/v1/status")
    assert anonymous.status_code == 401


async def test_a_later_delivery_clears_unreachable_and_old_failures_age_out(mesh):
    await mesh.agent("flaky", ["echo"], notify_url="http://127.0.0.1:9/hook")
    await mesh.submit(type="echo")
    mesh.dispatch()
    now = time.time()
    row = mesh.store.read(lambda c: c.execute("SELECT id, task_id FROM outbox WHERE agent = 'flaky'").fetchone())
    failed = {"id": row[0], "kind": "webhook", "agent": "flaky", "task_id": row[1], "state": "dead", "attempts": 6,
              "error": "ReadTimeout", "next_attempt_at": now}  # fmt: skip
    record(mesh, [failed], now)
    seen = mesh.store.read(status_store.read, now=now)
    assert [(u.agent, u.gave_up) for u in seen.unreachable] == [("flaky", True)]
    later = mesh.store.read(status_store.read, now=now + status_store.UNREACHABLE_WINDOW + 1)
    assert later.unreachable == []


async def test_a_retry_skipped_because_its_claim_is_gone_is_not_unreachable(mesh):
    """A webhook retry the notifier did not send (the agent completed the pushed task already) ends
    `superseded`: the agent answered, so it is not listed as unreachable."""
    await mesh.agent("quick", ["echo"], notify_url="http://127.0.0.1:9/hook")
    await mesh.submit(type="echo")
    mesh.dispatch()
    now = time.time()
    row = mesh.store.read(lambda c: c.execute("SELECT id, task_id FROM outbox WHERE agent = 'quick'").fetchone())
    gone = {"id": row[0], "kind": "webhook", "agent": "quick", "task_id": row[1], "state": "superseded",
            "attempts": 2, "error": "no longer held"}  # fmt: skip
    record(mesh, [gone], now)
    assert mesh.store.read(lambda c: c.execute("SELECT state FROM outbox WHERE id = ?", (row[0],)).fetchone()[0]) == (
        "superseded"
    )
    assert mesh.store.read(status_store.read, now=now).unreachable == []


async def test_openapi_documents_the_status(mesh):
    doc = await mesh.ok("GET", "/openapi.json")
    get = doc["paths"]["/v1/status"]["get"]
    assert get["operationId"] == "get_status"
    shape = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"processes", "queue", "unserved", "agents", "unreachable"} <= set(shape["properties"])
    assert {"ProcessView", "UnservedView", "UnreachableView"} <= set(doc["components"]["schemas"])
