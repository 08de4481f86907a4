"""Schedules on a real SQLite file: the /v1/schedules API, and ticks fired by the watchdog exactly once
(across restarts and with two watchdogs), catch-up after downtime, overlap, pause and resume. The time is
injected: no test waits for a clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from mcs import metrics
from mcs.engines.sqlite.engine import Store
from mcs.state import schedules as schedules_state
from mcs.watchdog import Watchdog
from tests.engine import Db

DEFAULTS = schedules_state.Defaults(max_retries=3, claim_ttl=300.0, grace=60.0)
DAY = 86400.0


async def add(mesh: Any, name: str = "nightly", **body: Any) -> dict[str, Any]:
    body = {"name": name, "cron": "0 3 * * *", "task": {"type": "review", "payload": {"path": "."}}} | body
    return await mesh.ok("POST", "/v1/schedules", who="admin", json=body, status=201)


def next_run(store: Store, name: str) -> float:
    return float(Db(store).sql("SELECT next_run_at FROM schedules WHERE name = ?", (name,)).fetchone()[0])


def fire(store: Store, now: float) -> Any:
    return store.write(schedules_state.fire_next_due, now=now, defaults=DEFAULTS)


async def test_create_show_list_pause_resume_delete(mesh):
    created = await add(mesh, timezone="Europe/Berlin", overlap="allow", catch_up="none")
    assert created["name"] == "nightly" and created["cron"] == "0 3 * * *" and created["paused"] is False
    assert created["timezone"] == "Europe/Berlin" and created["task"]["type"] == "review"
    assert created["next_run_at"].endswith("Z") and (created["overlap"], created["catch_up"]) == ("allow", "none")
    listed = await mesh.ok("GET", "/v1/schedules", who="admin")
    assert [s["name"] for s in listed["schedules"]] == ["nightly"]
    paused = await mesh.ok("POST", "/v1/schedules/nightly/pause", who="admin")
    assert paused["paused"] is True and paused["next_run_at"] is None
    resumed = await mesh.ok("POST", "/v1/schedules/nightly/resume", who="admin")
    assert resumed["paused"] is False and resumed["next_run_at"]
    shown = await mesh.ok("GET", "/v1/schedules/nightly", who="admin")
    assert shown["runs"] == []
    assert (await mesh.call("DELETE", "/v1/schedules/nightly", who="admin")).status_code == 204
    gone = await mesh.call("GET", "/v1/schedules/nightly", who="admin")
    assert gone.status_code == 404 and (await gone.get_json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"cron": "every night"}, 422, "invalid_cron"),
        ({"timezone": "Mars/Olympus"}, 422, "invalid_timezone"),
        ({"task": None}, 422, "invalid_schedule"),
        ({"workflow": {"name": "w", "steps": []}}, 422, "invalid_schedule"),
        ({"task": {"type": "x", "aggregate": "consensus"}}, 422, "invalid_aggregate"),
        ({"task": {"type": "x", "claim_ttl": -1}}, 422, "validation_error"),
        ({"overlap": "sometimes"}, 422, "validation_error"),
        ({"name": "no spaces allowed"}, 422, "validation_error"),
    ],
)
async def test_bad_schedules_are_refused_with_a_reason(mesh, body, status, code):
    full = {"name": "bad", "cron": "0 3 * * *", "task": {"type": "review"}} | body
    response = await mesh.call("POST", "/v1/schedules", who="admin", json=full)
    assert response.status_code == status
    assert (await response.get_json())["error"]["code"] == code


async def test_schedules_are_for_the_admin_only_and_names_are_unique(mesh):
    agent = await mesh.agent("worker", ["review"])
    body = {"name": "n", "cron": "0 3 * * *", "task": {"type": "review"}}
    assert (await mesh.call("POST", "/v1/schedules", who=agent, json=body)).status_code == 403
    assert (await mesh.call("GET", "/v1/schedules", who=agent)).status_code == 403
    await add(mesh, "n")
    dup = await mesh.call("POST", "/v1/schedules", who="admin", json=body)
    assert dup.status_code == 409 and (await dup.get_json())["error"]["code"] == "schedule_exists"


async def test_a_due_tick_submits_once_and_says_so_in_the_events(mesh):
    await add(mesh)
    tick = next_run(mesh.store, "nightly")
    assert fire(mesh.store, tick - 1) is None  # not yet
    run = fire(mesh.store, tick + 0.5)
    assert run.outcome == "fired" and run.tick_at == tick
    assert fire(mesh.store, tick + 0.5) is None  # that tick is done
    task = await mesh.task(run.task_id)
    assert task["type"] == "review" and task["payload"] == {"path": "."} and task["state"] == "queued"
    assert task["submitted_by"] == "schedule:nightly" and task["max_retries"] == 3
    events = (await mesh.ok("GET", f"/v1/tasks/{run.task_id}/events", who="admin"))["events"]
    scheduled = next(e for e in events if e["kind"] == "scheduled")
    assert scheduled["detail"]["schedule"] == "nightly" and scheduled["detail"]["tick"].endswith("03:00:00.000Z")
    assert next_run(mesh.store, "nightly") == tick + DAY
    shown = await mesh.ok("GET", "/v1/schedules/nightly", who="admin")
    assert [(r["outcome"], r["task_id"]) for r in shown["runs"]] == [("fired", run.task_id)]
    assert shown["last_task_id"] == run.task_id


async def test_each_tick_fires_once_across_a_restart_and_with_two_watchdogs(mesh, open_store):
    await add(mesh)
    tick = next_run(mesh.store, "nightly")
    stores = [open_store(synchronous="NORMAL") for _ in range(4)]  # four "processes"
    results: list[Any] = []
    barrier = threading.Barrier(len(stores))

    def racer(store: Store) -> None:
        barrier.wait()
        results.append(fire(store, tick + 1))

    threads = [threading.Thread(target=racer, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r is not None for r in results) == [False, False, False, True]
    restarted = open_store(synchronous="NORMAL")  # a watchdog started again later, same moment
    assert fire(restarted, tick + 2) is None
    count = mesh.db.sql("SELECT count(*) FROM tasks WHERE submitted_by = 'schedule:nightly'").fetchone()[0]
    assert count == 1
    for s in [*stores, restarted]:
        s.close()


async def test_after_downtime_catch_up_one_runs_once_and_none_skips(mesh):
    await add(mesh, "once", catch_up="one")
    await add(mesh, "never", catch_up="none")
    tick = next_run(mesh.store, "once")
    later = tick + 5 * DAY + 3600  # five days and an hour of downtime
    runs = {r.schedule: r for r in (fire(mesh.store, later), fire(mesh.store, later))}
    assert fire(mesh.store, later) is None
    once, never = runs["once"], runs["never"]
    assert once.outcome == "fired" and once.tick_at == tick + 5 * DAY
    assert once.detail["missed"] == 5 and once.detail["catch_up"] is True
    assert never.outcome == "skipped" and never.task_id is None and "catch_up: none" in never.detail["reason"]
    # Both move on to the first tick after now: the missed ones never fire.
    assert next_run(mesh.store, "once") == next_run(mesh.store, "never") == tick + 6 * DAY


async def test_overlap_skip_waits_for_the_previous_run_and_allow_does_not(mesh):
    await add(mesh, "careful", cron="*/5 * * * *", overlap="skip")
    await add(mesh, "eager", cron="*/5 * * * *", overlap="allow")
    tick = next_run(mesh.store, "careful")
    first = {r.schedule: r for r in (fire(mesh.store, tick), fire(mesh.store, tick))}
    second = {r.schedule: r for r in (fire(mesh.store, tick + 300), fire(mesh.store, tick + 300))}
    assert second["careful"].outcome == "skipped" and first["careful"].task_id in second["careful"].detail["reason"]
    assert second["eager"].outcome == "fired"
    await mesh.ok("POST", f"/v1/tasks/{first['careful'].task_id}/cancel", who="admin")
    third = {r.schedule: r for r in (fire(mesh.store, tick + 600), fire(mesh.store, tick + 600))}
    assert third["careful"].outcome == "fired"


async def test_a_paused_schedule_does_not_fire_and_resumes_from_its_next_tick(mesh):
    await add(mesh, cron="*/5 * * * *")
    tick = next_run(mesh.store, "nightly")
    await mesh.ok("POST", "/v1/schedules/nightly/pause", who="admin")
    assert fire(mesh.store, tick + 3600) is None
    await mesh.ok("POST", "/v1/schedules/nightly/resume", who="admin")
    assert next_run(mesh.store, "nightly") > time.time()


async def test_the_watchdog_fires_due_ticks_and_counts_them(mesh, settings):
    await add(mesh, cron="*/5 * * * *")
    tick = next_run(mesh.store, "nightly")
    watchdog = Watchdog(mesh.store, interval=1, retry_base=0.05, retry_max=1.0)
    before = metrics.schedule_ticks.labels("fired")._value.get()
    runs = watchdog.fire_schedules(tick + 1)
    assert [r.outcome for r in runs] == ["fired"]
    assert metrics.schedule_ticks.labels("fired")._value.get() == before + 1
    assert watchdog.fire_schedules(tick + 1) == []


async def test_the_retention_pruner_forgets_old_tick_records_but_not_the_schedule(mesh):
    from mcs.maintenance.retention import Pruner

    await add(mesh, cron="*/5 * * * *", overlap="allow")
    tick = next_run(mesh.store, "nightly")
    for n in range(3):
        fire(mesh.store, tick + n * 300)
    pruner = Pruner(mesh.store, retention=DAY, pause=lambda _: False)
    assert pruner.run_once(now=tick + 600 + DAY - 1).schedule_runs == 2  # the newest is under a day old
    assert len((await mesh.ok("GET", "/v1/schedules/nightly", who="admin"))["runs"]) == 1
    assert pruner.run_once(now=tick + 600 + DAY + 1).schedule_runs == 1
    assert (await mesh.ok("GET", "/v1/schedules/nightly", who="admin"))["runs"] == []
    assert fire(mesh.store, tick + 900).outcome == "fired"  # the schedule itself goes on
