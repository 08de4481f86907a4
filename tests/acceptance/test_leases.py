"""Claims, leases and retries on the real `mcs up`: one holder at a time, fencing tokens, the watchdog
taking back dead agents' work, and the retry ladder ending in `failed`."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from mcs.client import McsApiError

from .conftest import event_kinds, uid, wait_until

pytestmark = pytest.mark.acceptance

RETRY_BASE = 0.25  # seconds; MCS_RETRY_BASE in conftest.DEFAULT_ENV


def at(event: dict) -> float:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def test_twenty_concurrent_claims_exactly_one_wins(mesh, agent_factory):
    kind = f"race-{uid()}"
    # Polling agents (no notify_url): the dispatcher leaves the task queued for them to claim.
    pollers = [agent_factory(mesh, capabilities=[kind], push=False) for _ in range(20)]
    task = mesh.admin.submit(kind, {"prize": 1})
    assert mesh.admin.get_task(task["id"])["state"] == "queued"

    start = threading.Barrier(len(pollers))
    outcomes: dict[str, tuple[int, dict]] = {}

    def claim(poller) -> None:
        start.wait()
        response = poller.client.http.post(f"/v1/tasks/{task['id']}/claim")
        outcomes[poller.name] = (response.status_code, response.json())

    threads = [threading.Thread(target=claim, args=(p,)) for p in pollers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    statuses = sorted(status for status, _ in outcomes.values())
    assert statuses == [200] + [409] * 19, statuses
    (winner,) = [name for name, (status, _) in outcomes.items() if status == 200]
    assert outcomes[winner][1]["claim_token"]
    for status, body in outcomes.values():
        if status == 409:
            assert body["error"]["code"], body
    stored = mesh.admin.get_task(task["id"])
    assert stored["state"] == "claimed" and stored["assigned_to"] == winner and stored["attempts"] == 1
    assert event_kinds(mesh.admin.events(task["id"])).count("claimed") == 1


def test_stale_claim_token_gets_409_and_changes_nothing(mesh, agent_factory):
    kind = f"stale-{uid()}"
    first = agent_factory(mesh, capabilities=[kind], push=False)
    second = agent_factory(mesh, capabilities=[kind], push=False)
    task = mesh.admin.submit(kind, {"x": 1}, claim_ttl=0.5, max_retries=3)

    old = first.client.claim(task["id"])
    # The lease runs out; the watchdog takes the task back and, after the retry delay, it is claimable.
    taken = second.client.claim_next(wait=10)
    assert taken is not None and taken["id"] == task["id"], taken
    assert taken["claim_token"] != old["claim_token"]
    before = mesh.admin.get_task(task["id"])
    assert before["state"] == "claimed" and before["assigned_to"] == second.name and before["attempts"] == 2

    for call in (
        lambda: first.client.complete(task["id"], old["claim_token"], {"by": "stale"}),
        lambda: first.client.fail(task["id"], old["claim_token"], "stale failure"),
        lambda: first.client.extend(task["id"], old["claim_token"], ttl=60),
    ):
        with pytest.raises(McsApiError) as refused:
            call()
        assert refused.value.status == 409, refused.value
    after = mesh.admin.get_task(task["id"])
    assert after == before

    second.client.complete(task["id"], taken["claim_token"], {"by": "second"})
    with pytest.raises(McsApiError) as refused:
        first.client.complete(task["id"], old["claim_token"], {"by": "stale"})
    assert refused.value.status == 409
    final = mesh.admin.get_task(task["id"])
    assert final["state"] == "completed" and final["result"] == {"by": "second"}
    assert event_kinds(mesh.admin.events(task["id"])).count("completed") == 1


def test_lease_expiry_watchdog_retries_and_another_agent_completes(mesh, agent_factory):
    kind = f"lease-{uid()}"
    dying = agent_factory(mesh, capabilities=[kind], mode="hold")  # claims, then never finishes
    task = mesh.admin.submit(kind, {"x": 1}, claim_ttl=0.5, max_retries=3)
    wait_until(lambda: dying.claimed, timeout=10, what="the first agent to claim")
    dying.close()  # it is gone: no completion, no heartbeat, no webhook endpoint

    rescuer = agent_factory(mesh, capabilities=[kind])
    done = mesh.admin.wait_for(task["id"], timeout=15)
    assert done["state"] == "completed" and done["assigned_to"] == rescuer.name, done
    assert done["attempts"] == 2
    assert done["result"] == {"task_id": task["id"], "agent": rescuer.name, "payload": {"x": 1}}

    events = mesh.admin.events(task["id"])
    kinds = event_kinds(events)
    assert kinds.index("lease_expired") < kinds.index("retrying") < kinds.index("requeued")
    claims = [e for e in events if e["kind"] == "claimed"]
    assert [e["actor"] for e in claims] == [dying.name, rescuer.name]
    expired = events[kinds.index("lease_expired")]
    assert expired["detail"]["agent"] == dying.name
    assert at(expired) - at(claims[0]) >= 0.5 - 0.01  # not before the lease ran out
    # The notifier records "notified" when its batch is written, which may land after a fast agent completed.
    changes = [k for k in kinds if k != "notified"]
    assert changes[-1] == "completed" and kinds.count("completed") == 1


def test_failing_agent_backs_off_then_task_fails_after_three_attempts(mesh, agent_factory):
    kind = f"doomed-{uid()}"
    agent = agent_factory(mesh, capabilities=[kind], mode="fail", error={"reason": "always"})
    task = mesh.admin.submit(kind, {"x": 1}, max_retries=2)

    done = mesh.admin.wait_for(task["id"], timeout=15)
    assert done["state"] == "failed", done
    assert done["attempts"] == 3 and done["error"] == {"reason": "always"}
    assert agent.failed == [task["id"]] * 3

    events = mesh.admin.events(task["id"])
    kinds = event_kinds(events)
    steps = [k for k in kinds if k in ("claimed", "retrying", "failed")]
    assert steps == ["claimed", "retrying", "claimed", "retrying", "claimed", "failed"]
    retries = [e for e in events if e["kind"] == "retrying"]
    delays = [e["detail"]["delay"] for e in retries]
    assert delays == pytest.approx([RETRY_BASE * 2 ** (n - 1) for n in (1, 2)])
    # ... and the server really waited that long before handing the task out again.
    claims = [e for e in events if e["kind"] == "claimed"]
    for retry, next_claim, delay in zip(retries, claims[1:], delays, strict=True):
        assert at(next_claim) - at(retry) >= delay - 0.01

    # A permanent failure raises an alert.
    alert = wait_until(
        lambda: [b for b in mesh.alerts.bodies if b.get("data", {}).get("task_id") == task["id"]],
        timeout=10,
        what="the task.failed alert",
    )
    assert len(alert) == 1 and alert[0]["type"] == "task.failed" and alert[0]["data"]["attempts"] == 3
