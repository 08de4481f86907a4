"""A long queue that cannot move does not hold up the work behind it, and the counts that replace counting the
queue stay exact (issue 15, item 6; bench/scale.py measures the same at a million stored tasks)."""

from __future__ import annotations

import time

import pytest

from mcs import dispatcher as dispatcher_module
from mcs.state import dispatch as dispatch_state
from mcs.state import stats as stats_store

pytestmark = pytest.mark.asyncio


def parked(mesh) -> int:
    return mesh.store.read(
        lambda c: c.execute("SELECT count(*) FROM tasks WHERE state = 'queued' AND parked = 1").fetchone()[0]
    )


async def test_a_task_behind_a_backlog_nobody_serves_goes_out_in_the_first_pass_after_an_agent_joins(mesh, monkeypatch):
    monkeypatch.setattr(dispatch_state, "DISPATCH_SCAN_MAX", 40)  # a pass reads at most 40 queued rows
    await mesh.agent("a", ["a"])
    for i in range(100):  # five types nobody serves
        await mesh.submit(type=f"orphan-{i % 5}")
    mesh.dispatch()
    assert parked(mesh) == 100
    await mesh.agent("b", ["b"])  # the agents changed: what could go out now?
    task = await mesh.submit(type="b")
    view = mesh.dispatcher.view
    if hasattr(mesh.store, "sequence_events"):  # PostgreSQL: as the dispatcher does before a pass (design 5.3)
        mesh.store.sequence_events()
    mesh.store.write(
        dispatch_state.dispatch, now=time.time(), view=view, unparked_at=mesh.dispatcher.unparked_at, limit=20
    )
    assert (await mesh.task(task["id"]))["state"] == "assigned"  # one pass, though 100 older rows are queued
    assert parked(mesh) == 100  # nobody serves them still: not read, unparked and parked again


async def test_an_agent_that_can_serve_part_of_a_parked_backlog_gets_that_part(mesh):
    await mesh.agent("a", ["a"], concurrency=10)
    ids = {t: [(await mesh.submit(type=t))["id"] for _ in range(3)] for t in ("x", "y")}
    mesh.dispatch()
    assert parked(mesh) == 6
    await mesh.agent("x-worker", ["x"], concurrency=10)
    mesh.dispatch()
    assert [(await mesh.task(i))["assigned_to"] for i in ids["x"]] == ["x-worker"] * 3
    assert [(await mesh.task(i))["state"] for i in ids["y"]] == ["queued"] * 3
    assert parked(mesh) == 3


async def test_tasks_waiting_for_a_full_agent_do_not_starve_the_work_behind_them(mesh, monkeypatch):
    monkeypatch.setattr(dispatch_state, "DISPATCH_SCAN_MAX", 10)  # a pass reads at most 10 queued rows,
    monkeypatch.setattr(dispatcher_module, "PAGE", 5)  # 5 at a time
    await mesh.agent("a", ["a"])  # concurrency 1: it holds one task, the rest wait for it, not parked
    first = await mesh.submit(type="a")
    mesh.dispatch()
    assert (await mesh.task(first["id"]))["state"] == "assigned"
    for _ in range(30):
        await mesh.submit(type="a")
    await mesh.agent("b", ["b"], concurrency=2)
    task = await mesh.submit(type="b")  # behind 30 rows that wait: more than a pass reads
    passes = []
    dispatch = dispatch_state.dispatch

    def counted(*args, **kwargs):
        passes.append(1)
        if len(passes) > 50:  # before: every pass started at the head again, without end
            raise RuntimeError("the dispatcher keeps reading the same rows")
        return dispatch(*args, **kwargs)

    monkeypatch.setattr(dispatch_state, "dispatch", counted)
    mesh.dispatch()  # passes until the whole queue had one look, then it returns
    assert (await mesh.task(task["id"]))["state"] == "assigned"
    assert len(passes) <= 8  # 31 rows, 5 new ones a pass after the head's page
    late = await mesh.submit(type="b")
    mesh.dispatch()
    assert (await mesh.task(late["id"]))["state"] == "assigned"


async def test_the_kept_task_counts_match_counting_the_tasks(mesh):
    worker = await mesh.agent("w", ["w"], concurrency=5)
    done, failed, canceled = [await mesh.submit(type="w") for _ in range(3)]
    await mesh.submit(type="w", priority="urgent")
    await mesh.submit(type="nobody", capabilities=["rare"])
    await mesh.ok("POST", f"/v1/tasks/{canceled['id']}/cancel", who="admin")
    mesh.dispatch()
    for task, outcome in ((done, "complete"), (failed, "fail")):
        claim = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=worker)
        body = {"claim_token": claim["claim_token"]} | (
            {"error": "no", "retryable": False} if outcome == "fail" else {}
        )
        await mesh.ok("POST", f"/v1/tasks/{task['id']}/{outcome}", who=worker, json=body)
    mesh.store.write(lambda c: c.execute("DELETE FROM tasks WHERE id = ?", (done["id"],)))  # as retention does

    def both(conn):
        kept = {
            (s, p): n
            for s, p, n in conn.execute("SELECT state, priority, sum(n) FROM task_counts GROUP BY state, priority")
            if n
        }
        counted = dict(
            ((s, p), n)
            for s, p, n in conn.execute("SELECT state, priority, count(*) FROM tasks GROUP BY state, priority")
        )
        return kept, counted

    kept, counted = mesh.store.read(both)
    assert kept == counted
    assert counted[("failed", 1)] == 1 and counted[("canceled", 1)] == 1
    snapshot = mesh.store.read(stats_store.snapshot, now=time.time())
    assert snapshot.tasks[("assigned", "urgent")] + snapshot.tasks[("queued", "urgent")] == 1
    assert snapshot.tasks[("queued", "normal")] == 1  # the one nobody serves
    status = await mesh.ok("GET", "/v1/status", who="admin")
    assert [(u["capabilities"], u["queued"]) for u in status["unserved"]] == [(["rare"], 1)]
