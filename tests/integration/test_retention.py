"""Retention (MCS_RETENTION_DAYS): the watchdog's pruner on a real SQLite file, the clock passed as `now=`.

Tasks are made through the api as usual; "old" is whatever finished before `cutoff`, a time taken between
making the old tasks and the new ones, and the pruner runs at `cutoff + RETENTION`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mcs.engines.sqlite.maintenance import RETENTION_SQL
from mcs.maintenance.retention import Pruner
from mcs.state import outbox as outbox_store
from mcs.state import retention as retention_store

RETENTION = 1000.0  # seconds


async def finish(mesh: Any, who: dict[str, str], task_id: str, how: str = "complete") -> None:
    """Claim a task by id as `who` and end it: complete, fail for good, or (admin) cancel."""
    if how == "cancel":
        await mesh.ok("POST", f"/v1/tasks/{task_id}/cancel", who="admin")
        return
    claimed = await mesh.ok("POST", f"/v1/tasks/{task_id}/claim", who=who)
    body: dict[str, Any] = {"claim_token": claimed["claim_token"]}
    body |= {"result": {"ok": 1}} if how == "complete" else {"error": "no", "retryable": False}
    await mesh.ok("POST", f"/v1/tasks/{task_id}/{how}", who=who, json=body)


def deliver_everything(mesh: Any) -> None:
    """What the notifier does once it has delivered every pending row (alerts, webhooks)."""
    rows = mesh.db.sql("SELECT * FROM outbox WHERE state = 'pending'").fetchall()
    outcomes = [
        {"id": r["id"], "state": "delivered", "attempts": 1, "kind": r["kind"], "task_id": None, "agent": r["agent"]}
        for r in rows
    ]
    # leased first, as a notifier does (a far `now`: rows not due yet count too)
    mesh.store.write(outbox_store.take, owner="test", now=1e15, lease=60, limit=len(rows), per_key=len(rows))
    mesh.store.write(outbox_store.record_outcomes, owner="test", outcomes=outcomes, now=time.time())


def count(mesh: Any, sql: str, *args: Any) -> int:
    return int(mesh.db.sql(sql, args).fetchone()[0])


def existing(mesh: Any, ids: list[str]) -> set[str]:
    marks = ", ".join("?" * len(ids))  # plain placeholders: the same SQL on both engines
    return {r[0] for r in mesh.db.sql(f"SELECT id FROM tasks WHERE id IN ({marks})", tuple(ids))}


def pruned_total(kind: str) -> float:
    return REGISTRY.get_sample_value("mcs_pruned_total", {"kind": kind}) or 0.0


def pruner(mesh: Any, retention: float = RETENTION, **kw: Any) -> Pruner:
    return Pruner(mesh.store, retention=retention, pause=lambda seconds: None, **kw)


async def test_finished_tasks_and_their_events_go_unfinished_and_new_ones_stay(mesh):
    a = await mesh.agent("a", ["x", "r"], notify_url=None)
    b = await mesh.agent("b", ["r"], notify_url=None)
    old = {how: (await mesh.submit(type="x"))["id"] for how in ("complete", "fail", "cancel")}
    for how, task_id in old.items():
        await finish(mesh, a, task_id, how)
    old_queued = (await mesh.submit(type="x"))["id"]  # nobody claims it: unfinished, however old
    old_claimed = (await mesh.submit(type="x"))["id"]
    await mesh.ok("POST", f"/v1/tasks/{old_claimed}/claim", who=a)
    # A finished fanout: the parent and both children go. A waiting one: a child finished long ago, but its
    # parent is still waiting for the other child, so all three stay.
    done_fan = await mesh.submit(type="r", route="all")
    open_fan = await mesh.submit(type="r", route="all")
    mesh.dispatch()
    done_kids = (await mesh.task(done_fan["id"]))["children"]
    open_kids = (await mesh.task(open_fan["id"]))["children"]
    assert len(done_kids) == len(open_kids) == 2
    for kid in done_kids:
        await finish(mesh, a if (await mesh.task(kid))["route"] == "a" else b, kid)
    routes = {kid: (await mesh.task(kid))["route"] for kid in open_kids}
    first_open = next(kid for kid, route in routes.items() if route == "a")
    await finish(mesh, a, first_open)
    assert (await mesh.task(done_fan["id"]))["state"] == "completed"
    assert (await mesh.task(open_fan["id"]))["state"] == "waiting"
    deliver_everything(mesh)  # the failure alerts went out
    cutoff = time.time()
    new = (await mesh.submit(type="x"))["id"]
    await finish(mesh, a, new)
    deliver_everything(mesh)
    events_before = count(mesh, "SELECT count(*) FROM task_events")

    gone = [*old.values(), done_fan["id"], *done_kids]
    kept = [old_queued, old_claimed, open_fan["id"], *open_kids, new]
    result = pruner(mesh).run_once(now=cutoff + RETENTION)

    assert existing(mesh, gone + kept) == set(kept)
    assert result.tasks == len(gone) == 6
    assert count(mesh, f"SELECT count(*) FROM task_events WHERE task_id IN ({', '.join('?' * len(gone))})", *gone) == 0
    assert result.task_events == events_before - count(mesh, "SELECT count(*) FROM task_events") > 0
    # The event stream's log follows its audit rows out: none left pointing at a deleted row, none missing.
    for stream, table in (("task", "task_events"), ("agent", "agent_events"), ("workflow", "workflow_events")):
        assert count(mesh, "SELECT count(*) FROM event_log WHERE stream = ?", stream) == count(
            mesh, f"SELECT count(*) FROM {table}"
        )
    for task_id in kept:  # what stays is whole: the task, its events, its children
        assert await mesh.kinds(task_id)
    assert (await mesh.task(open_fan["id"]))["children"] == open_kids
    # No dangling reference anywhere: foreign keys hold, no event, avoid row or outbox row of a gone task.
    if mesh.db.kind == "sqlite":  # PostgreSQL checks foreign keys on every statement
        assert mesh.db.sql("PRAGMA foreign_key_check").fetchall() == []
    for table in ("task_events", "task_avoid", "outbox"):
        assert (
            count(
                mesh,
                f"SELECT count(*) FROM {table} WHERE task_id IS NOT NULL AND task_id NOT IN (SELECT id FROM tasks)",
            )
            == 0
        )
    # The waiting fanout still settles once its last child ends, and is then pruned as a whole.
    await finish(mesh, b, next(k for k in open_kids if k != first_open))
    assert (await mesh.task(open_fan["id"]))["state"] == "completed"
    later = time.time() + RETENTION + 1
    deliver_everything(mesh)
    pruner(mesh).run_once(now=later)
    assert existing(mesh, [open_fan["id"], *open_kids, new, old_queued, old_claimed]) == {old_queued, old_claimed}


async def test_a_task_with_an_undelivered_outbox_row_stays_until_it_is_delivered(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    failed = (await mesh.submit(type="x"))["id"]
    await finish(mesh, a, failed, "fail")  # raises an alert: a pending outbox row naming the task
    now = time.time() + RETENTION + 1
    assert pruner(mesh).run_once(now=now).tasks == 0
    assert existing(mesh, [failed]) == {failed}
    deliver_everything(mesh)
    assert pruner(mesh).run_once(now=now).tasks == 1
    assert existing(mesh, [failed]) == set()


async def test_zero_keeps_every_task_and_event(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    ids = [(await mesh.submit(type="x"))["id"] for _ in range(3)]
    for task_id in ids:
        await finish(mesh, a, task_id)
    events = count(mesh, "SELECT count(*) FROM task_events")
    agent_events = count(mesh, "SELECT count(*) FROM agent_events")
    result = pruner(mesh, retention=0).run_once(now=time.time() + 10 * 365 * 86400)
    assert (result.tasks, result.task_events, result.agent_events) == (0, 0, 0)
    assert existing(mesh, ids) == set(ids)
    assert count(mesh, "SELECT count(*) FROM task_events") == events
    assert count(mesh, "SELECT count(*) FROM agent_events") == agent_events


async def test_idempotency_keys_outbox_rows_and_agent_events_are_pruned_when_old_enough(mesh):
    await mesh.agent("a", ["x"])  # a push agent: dispatching writes webhook rows
    for i in range(3):
        headers = mesh.admin | {"Idempotency-Key": f"k{i}"}
        assert (await mesh.client.post("/v1/tasks", json={"type": "x"}, headers=headers)).status_code == 201
    mesh.dispatch()
    assert count(mesh, "SELECT count(*) FROM outbox WHERE state = 'pending'") == 1  # concurrency 1
    deliver_everything(mesh)
    mesh.dispatch()  # nothing more goes out: the agent still holds its task
    agent_events = count(mesh, "SELECT count(*) FROM agent_events")
    keys_ttl = mesh.settings.idempotency_ttl
    before = {kind: pruned_total(kind) for kind in ("idempotency_keys", "outbox", "agent_events")}

    soon = pruner(mesh).run_once(now=time.time() + 10)  # nothing is old yet
    assert (soon.idempotency_keys, soon.outbox, soon.agent_events) == (0, 0, 0)
    # A retention longer than the outbox's own day: delivered rows go after a day, keys when they expire.
    later = pruner(mesh, retention=7 * 86400).run_once(now=time.time() + max(keys_ttl, 86400) + 1)
    assert (later.idempotency_keys, later.outbox, later.agent_events, later.tasks) == (3, 1, 0, 0)
    assert count(mesh, "SELECT count(*) FROM idempotency_keys") == 0
    assert count(mesh, "SELECT count(*) FROM outbox") == 0
    assert count(mesh, "SELECT count(*) FROM tasks") == 3  # unfinished: kept
    # Agent audit events go with the retention.
    oldest = pruner(mesh, retention=7 * 86400).run_once(now=time.time() + 7 * 86400 + 1)
    assert oldest.agent_events == agent_events > 0
    after = {kind: pruned_total(kind) for kind in before}
    assert after == {
        "idempotency_keys": before["idempotency_keys"] + 3,
        "outbox": before["outbox"] + 1,
        "agent_events": before["agent_events"] + agent_events,
    }


async def test_work_is_cut_in_batches_and_bounded_per_run(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None)
    ids = [(await mesh.submit(type="x"))["id"] for _ in range(7)]
    for task_id in ids:
        await finish(mesh, a, task_id)
    now = time.time() + RETENTION + 1
    small = pruner(mesh, task_batch=2, max_batches=2, interval=3600)
    first = small.maybe_run(now=now)
    assert first is not None and (first.tasks, first.more) == (4, True)
    second = small.maybe_run(now=now)  # work was left: due again at once, not an interval later
    assert second is not None and (second.tasks, second.more) == (3, False)
    assert small.maybe_run(now=now + 1) is None  # now it waits for its interval
    assert small.maybe_run(now=now + 3600) is not None
    assert existing(mesh, ids) == set()


async def test_the_watchdog_prunes_with_its_retention(mesh):
    from mcs.watchdog import Watchdog

    a = await mesh.agent("a", ["x"], notify_url=None)
    task_id = (await mesh.submit(type="x"))["id"]
    await finish(mesh, a, task_id)
    watchdog = Watchdog(mesh.store, interval=1, retry_base=1, retry_max=1, retention=RETENTION)
    assert watchdog.run_once(now=time.time()).pruned.tasks == 0
    assert watchdog.run_once(now=time.time() + RETENTION + 1000).pruned.tasks == 1
    assert existing(mesh, [task_id]) == set()


async def test_a_finished_workflow_goes_with_its_events_once_all_its_steps_are_pruned(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None, concurrency=5)
    steps = [{"id": "one", "type": "x"}, {"id": "two", "type": "x", "depends_on": ["one"]}]
    done = await mesh.ok("POST", "/v1/workflows", who="admin", json={"name": "old", "steps": steps}, status=201)
    for step in ("one", "two"):
        await finish(mesh, a, done["steps"][step]["id"])
    canceled = await mesh.ok("POST", "/v1/workflows", who="admin", json={"name": "gone", "steps": steps}, status=201)
    await mesh.ok("POST", f"/v1/workflows/{canceled['id']}/cancel", who="admin")
    running = await mesh.ok("POST", "/v1/workflows", who="admin", json={"name": "busy", "steps": steps}, status=201)
    await finish(mesh, a, running["steps"]["one"]["id"])  # "two" still to do: the workflow is running
    # A finished workflow one of whose steps an unfinished task still needs: the step stays, so it does.
    needed = await mesh.ok(
        "POST", "/v1/workflows", who="admin", json={"name": "needed", "steps": steps[:1]}, status=201
    )
    await finish(mesh, a, needed["steps"]["one"]["id"])
    waiting = await mesh.submit(type="y", depends_on=[needed["steps"]["one"]["id"]])  # nobody does y
    mesh.dispatch()
    deliver_everything(mesh)
    cutoff = time.time()
    before = pruned_total("workflows")
    assert pruner(mesh).run_once(now=cutoff).workflows == 0  # nothing is old yet
    pruned = pruner(mesh).run_once(now=cutoff + RETENTION + 1)
    assert (pruned.workflows, pruned.workflow_events) == (2, 4)  # submitted + completed, submitted + canceled
    assert pruned_total("workflows") == before + 2
    for gone in (done, canceled):
        r = await mesh.call("GET", f"/v1/workflows/{gone['id']}", who="admin")
        assert r.status_code == 404
    assert (
        count(mesh, "SELECT count(*) FROM workflow_events WHERE workflow_id IN (?, ?)", done["id"], canceled["id"]) == 0
    )
    assert (await mesh.ok("GET", f"/v1/workflows/{running['id']}", who="admin"))["state"] == "running"
    kept = await mesh.ok("GET", f"/v1/workflows/{needed['id']}", who="admin")
    assert kept["state"] == "completed" and kept["steps"]["one"]["state"] == "completed"
    await mesh.ok("POST", f"/v1/tasks/{waiting['id']}/cancel", who="admin")  # now nothing needs it
    deliver_everything(mesh)
    later = pruner(mesh).run_once(now=time.time() + RETENTION + 1)
    assert later.workflows == 1
    assert (await mesh.call("GET", f"/v1/workflows/{needed['id']}", who="admin")).status_code == 404


async def test_a_finished_step_of_a_running_workflow_stays_until_the_workflow_ends(mesh):
    a = await mesh.agent("a", ["x"], notify_url=None, concurrency=5)
    steps = [{"id": "early", "type": "x"}, {"id": "gate", "type": "approval"}]  # independent: nothing needs early
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json={"name": "slow", "steps": steps}, status=201)
    early = wf["steps"]["early"]["id"]
    await finish(mesh, a, early)
    deliver_everything(mesh)
    assert pruner(mesh).run_once(now=time.time() + RETENTION + 1).tasks == 0
    shown = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert shown["steps"]["early"]["state"] == "completed"
    mesh.dispatch()  # the gate starts waiting for a person
    await mesh.ok("POST", f"/v1/tasks/{wf['steps']['gate']['id']}/approve", who="admin", json={})
    deliver_everything(mesh)
    pruned = pruner(mesh).run_once(now=time.time() + RETENTION + 1)
    assert (pruned.tasks, pruned.workflows) == (2, 1)
    assert existing(mesh, [early]) == set()


@pytest.mark.sqlite_only  # EXPLAIN QUERY PLAN
def test_every_prune_statement_uses_an_index(tmp_path):
    """A batch must cost the same with a million rows as with ten: no statement scans a whole table."""
    from mcs.engines.sqlite.engine import Store

    store = Store(tmp_path / "mcs.db")
    store.migrate()
    plans = store.read(retention_store.query_plans)
    store.close()
    assert set(plans) == set(RETENTION_SQL)
    for name, steps in plans.items():
        scans = [s for s in steps if s.startswith("SCAN") and "json_each" not in s]
        assert not scans, (name, steps)
    assert any("tasks_finished" in s for s in plans["finished_roots"])
    assert any("task_events_task" in s for s in plans["delete_task_events"])
    assert any("workflows_finished" in s for s in plans["finished_workflows"])
    assert any("tasks_workflow" in s for s in plans["workflows_with_steps"])
