"""Dependencies between tasks and workflows (DAGs of steps), on a real SQLite file."""

from __future__ import annotations

import json
import time

import pytest

from mcs.config import Settings
from tests.integration.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path, request, database_url):
    """As conftest's, with the overrides a test names (parametrize "settings" indirectly)."""
    return Settings.from_env(
        {},
        db=tmp_path / "mcs.db",
        admin_token=ADMIN_TOKEN,
        retry_base=0.05,
        retry_max=1.0,
        synchronous="NORMAL",
        database_url=database_url,
        **getattr(request, "param", {}),
    )


async def finish(mesh, task_id, who, result=None, *, fail=False):
    """Claim a task as `who` and complete it with `result` (or fail it for good); returns the claim body."""
    claimed = await mesh.ok("POST", f"/v1/tasks/{task_id}/claim", who=who)
    if fail:
        body = {"claim_token": claimed["claim_token"], "error": "broke", "retryable": False}
        await mesh.ok("POST", f"/v1/tasks/{task_id}/fail", who=who, json=body)
    else:
        body = {"claim_token": claimed["claim_token"], "result": result}
        await mesh.ok("POST", f"/v1/tasks/{task_id}/complete", who=who, json=body)
    return claimed


async def test_a_dependent_is_blocked_until_every_dependency_completed_then_gets_their_results(mesh):
    agent = await mesh.agent("a", ["x"], notify_url=None, concurrency=5)
    first = await mesh.submit(type="x", payload=1)
    second = await mesh.submit(type="x", payload=2)
    third = await mesh.submit(type="x", depends_on=[first["id"], second["id"]])
    assert third["state"] == "blocked" and third["depends_on"] == [first["id"], second["id"]]
    listed = await mesh.ok("GET", "/v1/tasks?state=blocked", who="admin")
    assert [t["id"] for t in listed["tasks"]] == [third["id"]]
    await finish(mesh, first["id"], agent, {"n": 1})
    assert (await mesh.task(third["id"]))["state"] == "blocked"
    # not claimable while blocked
    refused = await mesh.call("POST", f"/v1/tasks/{third['id']}/claim", who=agent)
    assert refused.status_code == 409
    await finish(mesh, second["id"], agent, {"n": 2})
    queued = await mesh.task(third["id"])
    assert queued["state"] == "queued"
    assert queued["inputs"] == {first["id"]: {"n": 1}, second["id"]: {"n": 2}}
    assert await mesh.kinds(third["id"]) == ["submitted", "unblocked"]
    claimed = await mesh.ok("POST", f"/v1/tasks/{third['id']}/claim", who=agent)
    assert claimed["inputs"] == {first["id"]: {"n": 1}, second["id"]: {"n": 2}}


async def test_the_webhook_body_carries_the_inputs(mesh):
    agent = await mesh.agent("a", ["x"])
    first = await mesh.submit(type="x")
    mesh.dispatch()
    second = await mesh.submit(type="x", depends_on=[first["id"]])
    await finish(mesh, first["id"], agent, "found it")
    mesh.dispatch()
    rows = mesh.db.sql("SELECT body FROM outbox WHERE task_id = ?", (second["id"],)).fetchall()
    bodies = [json.loads(r["body"]) for r in rows]
    assert [b["type"] for b in bodies] == ["task.assigned"]
    assert bodies[0]["data"]["task"]["inputs"] == {first["id"]: "found it"}


async def test_a_failed_dependency_cancels_its_dependents_down_the_chain(mesh):
    agent = await mesh.agent("a", ["x"], notify_url=None)
    first = await mesh.submit(type="x")
    second = await mesh.submit(type="x", depends_on=[first["id"]])
    third = await mesh.submit(type="x", depends_on=[second["id"]])
    cleanup = await mesh.submit(type="x", depends_on=[second["id"]], run_if="always")
    await finish(mesh, first["id"], agent, fail=True)
    got = await mesh.task(second["id"])
    assert (got["state"], got["error"]) == ("canceled", f"upstream {first['id']} failed")
    got = await mesh.task(third["id"])
    assert (got["state"], got["error"]) == ("canceled", f"upstream {second['id']} failed")
    events = (await mesh.ok("GET", f"/v1/tasks/{third['id']}/events", who="admin"))["events"]
    assert events[-1]["kind"] == "canceled" and events[-1]["detail"]["upstream"] == second["id"]
    # run_if always: runs once its dependencies ended, whatever their outcome
    got = await mesh.task(cleanup["id"])
    assert got["state"] == "queued" and got["inputs"] == {second["id"]: None}


async def test_a_canceled_dependency_cancels_the_dependent_and_a_submit_after_the_failure_too(mesh):
    first = await mesh.submit(type="x")
    second = await mesh.submit(type="x", depends_on=[first["id"]])
    await mesh.ok("POST", f"/v1/tasks/{first['id']}/cancel", who="admin")
    assert (await mesh.task(second["id"]))["state"] == "canceled"
    late = await mesh.submit(type="x", depends_on=[first["id"]])
    assert (late["state"], late["error"]) == ("canceled", f"upstream {first['id']} failed")
    done = await mesh.submit(type="x", depends_on=[first["id"]], run_if="always")
    assert done["state"] == "queued"


async def test_unknown_dependency_and_run_at_with_delay_are_422(mesh):
    for body, code in (
        ({"type": "x", "depends_on": ["no-such-task"]}, "unknown_dependency"),
        ({"type": "x", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "invalid_run_at"),
        ({"type": "x", "run_if": "sometimes"}, "validation_error"),
    ):
        response = await mesh.call("POST", "/v1/tasks", who="admin", json=body)
        assert response.status_code == 422
        assert (await response.get_json())["error"]["code"] == code
    assert (await mesh.ok("GET", "/v1/tasks", who="admin"))["tasks"] == []


async def test_run_at_and_delay_hold_a_task_blocked_until_then(mesh):
    await mesh.agent("a", ["x"], concurrency=5)
    later = await mesh.submit(type="x", delay=60)
    soon = await mesh.submit(type="x", run_at="2000-01-01T00:00:00Z")  # in the past: queued at once
    assert later["state"] == "blocked" and later["not_before"] is not None
    assert soon["state"] == "queued"
    now = time.time()
    result = mesh.dispatcher.run_once(now=now)
    assert (await mesh.task(later["id"]))["state"] == "blocked"
    assert result.next_due == pytest.approx(now + 60, abs=5)
    mesh.dispatcher.run_once(now=now + 61)
    got = await mesh.task(later["id"])
    assert (got["state"], got["assigned_to"]) == ("assigned", "a")
    assert await mesh.kinds(later["id"]) == ["submitted", "unblocked", "assigned"]


async def test_a_dependency_on_a_fanout_parent_hands_over_the_aggregate(mesh):
    agents = {name: await mesh.agent(name, ["r"], notify_url=None) for name in ("a", "b")}
    parent = await mesh.submit(type="r", route="all")
    synth = await mesh.submit(type="r", depends_on=[parent["id"]])
    mesh.dispatch()
    for kid in (await mesh.task(parent["id"]))["children"]:
        name = (await mesh.task(kid))["route"]
        await finish(mesh, kid, agents[name], {"finding": f"from {name}"})
    got = await mesh.task(synth["id"])
    assert got["state"] == "queued"
    children = got["inputs"][parent["id"]]["children"]
    assert sorted(c["result"]["finding"] for c in children) == ["from a", "from b"]


async def test_retention_keeps_a_finished_task_an_unfinished_one_depends_on(mesh):
    from mcs.state import retention

    agent = await mesh.agent("a", ["x"], notify_url=None)
    upstream = await mesh.submit(type="x")
    other = await mesh.submit(type="x")
    dependent = await mesh.submit(type="x", depends_on=[upstream["id"], other["id"]])
    await finish(mesh, upstream["id"], agent, "kept")
    batch = mesh.store.write(retention.prune_tasks, before=time.time() + 10, after=None, limit=100)
    assert batch.tasks == 0
    assert (await mesh.task(upstream["id"]))["result"] == "kept"
    await finish(mesh, other["id"], agent, "also")  # the dependent is queued now, still unfinished
    assert mesh.store.write(retention.prune_tasks, before=time.time() + 10, after=None, limit=100).tasks == 0
    await finish(mesh, dependent["id"], agent, "done")
    assert mesh.store.write(retention.prune_tasks, before=time.time() + 10, after=None, limit=100).tasks == 3
    assert mesh.db.sql("SELECT count(*) FROM task_deps").fetchone()[0] == 0


PIPELINE = {
    "name": "research",
    "inputs": {"question": "why?"},
    "steps": [
        {"id": "gather", "type": "r"},
        {"id": "check", "type": "r", "payload": {"strict": True}},
        {"id": "write", "type": "r", "depends_on": ["gather", "check"]},
    ],
}


def workflows_counted(event):
    from mcs import metrics

    return metrics.workflows_total.labels(event)._value.get()


async def test_the_agents_a_fanout_step_reaches_get_its_inputs(mesh):
    agents = {name: await mesh.agent(name, ["t"], notify_url=None) for name in ("a", "b")}
    body = {
        "name": "build-and-test",
        "inputs": {"env": "staging"},
        "steps": [
            {"id": "build", "type": "t"},
            {"id": "test", "type": "t", "route": "all", "depends_on": ["build"]},
            {"id": "ask", "type": "t", "route": "all"},
        ],
    }
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json=body, status=201)
    mesh.dispatch()
    build = wf["steps"]["build"]["id"]
    await finish(mesh, build, agents["a"], {"wheel": "w.whl"})
    mesh.dispatch()
    for step, expected in (("test", {"build": {"wheel": "w.whl"}}), ("ask", {"workflow": {"env": "staging"}})):
        kids = (await mesh.task(wf["steps"][step]["id"]))["children"]
        assert len(kids) == 2
        for kid in kids:
            claimed = await finish(mesh, kid, agents[(await mesh.task(kid))["route"]], "ok")
            assert claimed["inputs"] == expected  # before: {} (a child has no dependencies of its own)


async def test_a_failed_step_cancels_a_diamond_below_it_and_its_failure_is_recorded(mesh):
    agent = await mesh.agent("a", ["t"], notify_url=None)
    steps = [
        {"id": "test", "type": "t"},
        {"id": "approve", "type": "t", "depends_on": ["test"]},
        {"id": "deploy", "type": "t", "depends_on": ["test", "approve"]},  # on test twice: directly and through approve
    ]
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json={"name": "d", "steps": steps}, status=201)
    await finish(mesh, wf["steps"]["test"]["id"], agent, fail=True)  # before: 409 task_changed, nothing recorded
    done = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert done["state"] == "failed"
    assert {k: v["state"] for k, v in done["steps"].items()} == {
        "test": "failed", "approve": "canceled", "deploy": "canceled",
    }  # fmt: skip


async def test_a_workflow_runs_its_steps_in_order_and_hands_results_by_step_id(mesh):
    agent = await mesh.agent("a", ["r"], notify_url=None, concurrency=5)
    submitted, completed = workflows_counted("submitted"), workflows_counted("completed")
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json=PIPELINE, status=201)
    assert (wf["name"], wf["state"]) == ("research", "running")
    steps = wf["steps"]
    assert {k: v["state"] for k, v in steps.items()} == {"gather": "queued", "check": "queued", "write": "blocked"}
    assert steps["gather"]["inputs"] == {"workflow": {"question": "why?"}}
    assert steps["write"]["workflow_id"] == wf["id"] and steps["write"]["step_id"] == "write"
    listed = await mesh.ok("GET", f"/v1/tasks?workflow={wf['id']}", who="admin")
    assert len(listed["tasks"]) == 3
    await finish(mesh, steps["gather"]["id"], agent, "facts")
    await finish(mesh, steps["check"]["id"], agent, {"ok": True})
    claimed = await finish(mesh, steps["write"]["id"], agent, "essay")
    assert claimed["inputs"] == {"gather": "facts", "check": {"ok": True}}
    done = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert done["state"] == "completed" and done["finished_at"] is not None
    assert {k: v["state"] for k, v in done["steps"].items()} == dict.fromkeys(("gather", "check", "write"), "completed")
    events = await mesh.ok("GET", f"/v1/workflows/{wf['id']}/events", who="admin")
    assert [e["kind"] for e in events["events"]] == ["submitted", "completed"]
    assert (workflows_counted("submitted"), workflows_counted("completed")) == (submitted + 1, completed + 1)
    page = await mesh.ok("GET", "/v1/workflows?limit=1", who="admin")
    assert [w["id"] for w in page["workflows"]] == [wf["id"]] and page["next_cursor"] is None


async def test_a_failed_step_fails_the_workflow_and_cancels_what_depends_on_it(mesh):
    agent = await mesh.agent("a", ["r"], notify_url=None, concurrency=5)
    body = PIPELINE | {
        "steps": [*PIPELINE["steps"], {"id": "tidy", "type": "r", "depends_on": ["write"], "run_if": "always"}]
    }
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json=body, status=201)
    await finish(mesh, wf["steps"]["gather"]["id"], agent, fail=True)
    now = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert now["steps"]["write"]["state"] == "canceled"
    assert now["steps"]["tidy"]["state"] == "queued"  # runs always, so the workflow is still running
    assert now["state"] == "running"
    await finish(mesh, wf["steps"]["check"]["id"], agent, "ok")
    await finish(mesh, wf["steps"]["tidy"]["id"], agent, "tidied")
    done = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert done["state"] == "failed"
    events = await mesh.ok("GET", f"/v1/workflows/{wf['id']}/events", who="admin")
    assert events["events"][-1]["kind"] == "failed"
    assert sorted(events["events"][-1]["detail"]["steps"]) == ["gather", "write"]


async def test_canceling_a_workflow_cancels_its_steps_and_tells_the_agent_holding_one(mesh):
    agent = await mesh.agent("a", ["r"], concurrency=5)
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json=PIPELINE, status=201)
    mesh.dispatch()
    gather = wf["steps"]["gather"]["id"]
    await mesh.ok("POST", f"/v1/tasks/{gather}/claim", who=agent)
    canceled = await mesh.ok("POST", f"/v1/workflows/{wf['id']}/cancel", who="admin")
    assert canceled["state"] == "canceled"
    assert {v["state"] for v in canceled["steps"].values()} == {"canceled"}
    rows = mesh.db.sql("SELECT agent, body FROM outbox WHERE task_id = ? ORDER BY id", (gather,)).fetchall()
    assert [json.loads(r["body"])["type"] for r in rows] == ["task.assigned", "task.canceled"]
    assert rows[-1]["agent"] == "a"
    again = await mesh.call("POST", f"/v1/workflows/{wf['id']}/cancel", who="admin")
    assert again.status_code == 409
    events = await mesh.ok("GET", f"/v1/workflows/{wf['id']}/events", who="admin")
    assert [e["kind"] for e in events["events"]] == ["submitted", "canceled"]


@pytest.mark.parametrize(
    ("steps", "code", "named"),
    [
        ([{"id": "a", "type": "r"}, {"id": "a", "type": "r"}], "duplicate_step", "'a'"),
        ([{"id": "a", "type": "r", "depends_on": ["ghost"]}], "unknown_step", "'ghost'"),
        (
            [{"id": "a", "type": "r", "depends_on": ["b"]}, {"id": "b", "type": "r", "depends_on": ["a"]}],
            "dependency_cycle",
            "a",
        ),
        ([{"id": "a", "type": "r", "depends_on": ["a"]}], "dependency_cycle", "a -> a"),
    ],
)
async def test_a_bad_dag_is_422_naming_the_step_and_stores_nothing(mesh, steps, code, named):
    response = await mesh.call("POST", "/v1/workflows", who="admin", json={"name": "bad", "steps": steps})
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == code and named in error["message"]
    assert (await mesh.ok("GET", "/v1/workflows", who="admin"))["workflows"] == []
    assert (await mesh.ok("GET", "/v1/tasks", who="admin"))["tasks"] == []


LIMITED = dict(quota_queued_tasks=4, rate_submits=0.001, rate_submits_burst=2)


@pytest.mark.parametrize("settings", [LIMITED], indirect=True)
async def test_an_agent_may_submit_a_workflow_and_its_steps_count_against_its_quota(mesh):
    agent = await mesh.agent("a", ["r"], notify_url=None)
    wf = await mesh.ok("POST", "/v1/workflows", who=agent, json=PIPELINE, status=201)
    assert {s["submitted_by"] for s in wf["steps"].values()} == {"a"}
    response = await mesh.call("POST", "/v1/workflows", who=agent, json=PIPELINE)
    assert response.status_code == 429 and (await response.get_json())["error"]["code"] == "too_many_queued_tasks"
    assert len((await mesh.ok("GET", "/v1/workflows", who="admin"))["workflows"]) == 1
    other = await mesh.call("POST", f"/v1/workflows/{wf['id']}/cancel", who=await mesh.agent("b", ["r"]))
    assert other.status_code == 403
    limited = await mesh.call("POST", "/v1/workflows", who=agent, json=PIPELINE)  # the third submission
    assert limited.status_code == 429 and (await limited.get_json())["error"]["code"] == "rate_limited"


async def test_a_schedule_with_a_workflow_submits_the_workflow_at_each_tick(mesh):
    from mcs.state import schedules as schedules_state

    defaults = schedules_state.Defaults(max_retries=3, claim_ttl=300.0, grace=60.0)
    body = {"name": "nightly", "cron": "0 3 * * *", "workflow": PIPELINE}
    created = await mesh.ok("POST", "/v1/schedules", who="admin", json=body, status=201)
    assert created["workflow"]["name"] == "research"
    tick = float(mesh.db.sql("SELECT next_run_at FROM schedules").fetchone()[0])
    run = mesh.store.write(schedules_state.fire_next_due, now=tick + 1, defaults=defaults)
    assert run.outcome == "fired"
    wf = await mesh.ok("GET", f"/v1/workflows/{run.task_id}", who="admin")
    assert (
        wf["state"] == "running"
        and wf["submitted_by"] == "schedule:nightly"
        and set(wf["steps"])
        == {
            "gather",
            "check",
            "write",
        }
    )
    events = await mesh.ok("GET", f"/v1/workflows/{wf['id']}/events", who="admin")
    assert events["events"][0]["detail"]["schedule"] == "nightly"
    # overlap "skip": the next tick does not start a second run while this one has not ended
    skipped = mesh.store.write(schedules_state.fire_next_due, now=tick + 86400 + 1, defaults=defaults)
    assert skipped.outcome == "skipped" and wf["id"] in skipped.detail["reason"]


@pytest.mark.parametrize(
    "body",
    [
        {"workflow": {"name": "w", "steps": [{"id": "a", "type": "r", "depends_on": ["a"]}]}},
        {"workflow": {"name": "w", "steps": [{"id": "a"}]}},
        {"task": {"type": "r", "depends_on": ["some-task"]}},
        {"task": {"type": "r", "delay": 5}},
    ],
)
async def test_a_schedule_whose_submission_could_never_work_is_refused(mesh, body):
    full = {"name": "bad", "cron": "0 3 * * *"} | body
    response = await mesh.call("POST", "/v1/schedules", who="admin", json=full)
    assert response.status_code == 422, await response.get_json()
    assert (await response.get_json())["error"]["code"] in ("invalid_schedule", "dependency_cycle")


def put_back(conn, task_id, now):
    """What a retry (item 7, POST /v1/tasks/{id}/retry) does to the row: a failed task queued again."""
    from mcs.models import TaskState
    from mcs.state import transitions

    task = transitions.must_get(conn, task_id)
    transitions.set_state(
        conn, task, now, state=TaskState.QUEUED, attempts=0, error=None, assigned_to=None, claim_token=None
    )


async def test_a_failed_step_run_again_reopens_what_it_canceled_and_the_workflow(mesh):
    agent = await mesh.agent("a", ["r"], notify_url=None, concurrency=5)
    chain = {"name": "chain", "steps": [
        {"id": "one", "type": "r"},
        {"id": "two", "type": "r", "depends_on": ["one"]},
        {"id": "three", "type": "r", "depends_on": ["two"]},
    ]}  # fmt: skip
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json=chain, status=201)
    ids = {k: v["id"] for k, v in wf["steps"].items()}
    await finish(mesh, ids["one"], agent, fail=True)
    failed = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert failed["state"] == "failed" and failed["steps"]["three"]["state"] == "canceled"
    mesh.store.write(put_back, ids["one"], time.time())
    again = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert again["state"] == "running" and again["finished_at"] is None
    assert {k: v["state"] for k, v in again["steps"].items()} == {"one": "queued", "two": "blocked", "three": "blocked"}
    assert again["steps"]["three"]["error"] is None
    assert (await mesh.kinds(ids["three"]))[-1] == "reopened"
    for step in ("one", "two", "three"):
        await finish(mesh, ids[step], agent, step)
    done = await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin")
    assert done["state"] == "completed" and done["steps"]["three"]["inputs"] == {"two": "two"}
    events = await mesh.ok("GET", f"/v1/workflows/{wf['id']}/events", who="admin")
    assert [e["kind"] for e in events["events"]] == ["submitted", "failed", "reopened", "completed"]


async def test_the_state_metrics_count_workflows_by_state_and_blocked_steps(mesh):
    from mcs.state_metrics import MeshStateCollector

    def gauges():
        got = {}
        for family in MeshStateCollector(mesh.store, cache_seconds=0).collect():
            if family.name in ("mcs_workflows", "mcs_queue_depth"):
                for s in family.samples:
                    key = (family.name, s.labels["state"])
                    got[key] = got.get(key, 0) + s.value
        return got

    empty = gauges()
    assert {s: empty[("mcs_workflows", s)] for s in ("running", "completed", "failed", "canceled")} == dict.fromkeys(
        ("running", "completed", "failed", "canceled"), 0
    )
    agent = await mesh.agent("a", ["r"], notify_url=None, concurrency=5)
    done = await mesh.ok("POST", "/v1/workflows", who="admin", json=PIPELINE, status=201)
    for step in ("gather", "check", "write"):
        await finish(mesh, done["steps"][step]["id"], agent, "ok")
    await mesh.ok("POST", "/v1/workflows", who="admin", json=PIPELINE, status=201)
    canceled = await mesh.ok("POST", "/v1/workflows", who="admin", json=PIPELINE, status=201)
    await mesh.ok("POST", f"/v1/workflows/{canceled['id']}/cancel", who="admin")
    got = gauges()
    workflows = {s: got[("mcs_workflows", s)] for s in ("running", "completed", "failed", "canceled")}
    assert workflows == {"running": 1, "completed": 1, "failed": 0, "canceled": 1}
    assert got[("mcs_queue_depth", "blocked")] == 1  # the running workflow's "write" step


async def test_an_approval_step_waits_for_a_person_from_the_moment_it_may_run(mesh):
    # No dispatcher pass in between: a root gate waits at once, a later gate as soon as its dependency ends.
    steps = [
        {"id": "gate", "type": "approval"},
        {"id": "work", "type": "wx", "depends_on": ["gate"]},
        {"id": "second", "type": "approval", "depends_on": ["work"]},
    ]
    wf = await mesh.ok("POST", "/v1/workflows", who="admin", json={"name": "gated", "steps": steps}, status=201)
    gate, second = wf["steps"]["gate"]["id"], wf["steps"]["second"]["id"]
    assert (await mesh.task(gate))["state"] == "waiting"
    await mesh.ok("POST", f"/v1/tasks/{gate}/approve", who="admin", json={"note": "go"})
    agent = await mesh.agent("wworker", ["wx"], notify_url=None)
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=agent, json={})
    assert claimed["id"] == wf["steps"]["work"]["id"]
    await mesh.ok(
        "POST", f"/v1/tasks/{claimed['id']}/complete", who=agent, json={"claim_token": claimed["claim_token"]}
    )
    assert (await mesh.task(second))["state"] == "waiting"
    await mesh.ok("POST", f"/v1/tasks/{second}/approve", who="admin", json={})
    assert (await mesh.ok("GET", f"/v1/workflows/{wf['id']}", who="admin"))["state"] == "completed"
