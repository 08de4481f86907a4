"""Killing processes: `mcs up` restarts what dies, nothing acknowledged is lost, every task ends exactly once,
and SIGTERM stops all four processes."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import httpx
import pytest

from mcs.client import Client

from .conftest import PROCESSES, alive, event_kinds, uid, wait_until

pytestmark = pytest.mark.acceptance

SUBMISSIONS = 200
SUBMIT_EVERY = 0.025  # seconds: 200 submissions over about five seconds
ALL_DONE_WITHIN = 60.0  # seconds from the first submission


def test_every_task_completes_exactly_once_while_processes_are_killed(mesh_factory, agent_factory):
    mesh = mesh_factory()
    kind = f"crash-{uid()}"
    # Slow answers keep webhooks in flight, so killing the notifier interrupts some deliveries.
    agents = [agent_factory(mesh, capabilities=[kind], workers=4, answer_delay=0.2) for _ in range(3)]
    submitted: list[str] = []
    submit_errors: list[str] = []

    def submit_stream() -> None:
        with Client(mesh.url, admin_token=mesh.admin_token, timeout=15) as client:
            next_at = time.monotonic()
            for i in range(SUBMISSIONS):
                try:
                    submitted.append(client.submit(kind, {"i": i})["id"])
                except Exception as exc:  # recorded: a submission the api refused is a failure
                    submit_errors.append(f"#{i}: {type(exc).__name__}: {exc}")
                next_at += SUBMIT_EVERY
                time.sleep(max(0.0, next_at - time.monotonic()))

    started = time.monotonic()
    submitter = threading.Thread(target=submit_stream, name="submitter")
    submitter.start()
    restarted = {}
    try:
        for name, after in (("dispatcher", 40), ("notifier", 100), ("watchdog", 160)):
            wait_until(lambda n=after: len(submitted) >= n, timeout=20, what=f"{after} submissions")
            old = mesh.kill_child(name)
            restarted[name] = (old, mesh.wait_restarted(name, old, timeout=10))
    finally:
        submitter.join(timeout=30)
    assert not submitter.is_alive()
    assert len(submitted) == SUBMISSIONS and not submit_errors, submit_errors
    assert len(set(submitted)) == SUBMISSIONS

    def all_completed() -> bool:
        tasks = mesh.admin.list_tasks(type=kind, limit=500)["tasks"]
        return sum(t["state"] == "completed" for t in tasks) == SUBMISSIONS

    remaining = ALL_DONE_WITHIN - (time.monotonic() - started)
    try:
        wait_until(all_completed, timeout=remaining, what=f"all {SUBMISSIONS} tasks to complete", interval=0.2)
    except AssertionError:
        states = Counter(t["state"] for t in mesh.admin.list_tasks(type=kind, limit=500)["tasks"])
        raise AssertionError(f"not all tasks completed within {ALL_DONE_WITHIN} s: {dict(states)}") from None

    tasks = {t["id"]: t for t in mesh.admin.list_tasks(type=kind, limit=500)["tasks"]}
    assert set(tasks) == set(submitted)
    by_name = {a.name for a in agents}
    for task_id, task in tasks.items():
        assert task["state"] == "completed"
        assert task["result"]["task_id"] == task_id and task["result"]["agent"] == task["assigned_to"] in by_name
    # Across all agents, each task was completed (a result stored) exactly once, even if delivered twice.
    stored = Counter(task_id for a in agents for task_id, results in a.completed.items() for _ in results)
    assert set(stored) == set(submitted) and set(stored.values()) == {1}, stored.most_common(3)
    for task_id in submitted:
        assert event_kinds(mesh.admin.events(task_id)).count("completed") == 1, task_id

    duplicates = sum(len(a.conflicts) for a in agents)
    print(f"{duplicates} refused claims (duplicate or late webhooks); restarted: {restarted}")
    for name, (old, new) in restarted.items():
        assert new != old, name
    assert sorted(mesh.children()) == sorted(PROCESSES)
    wait_until(mesh.healthy, timeout=15, what="all four processes healthy again")


def test_mcs_up_restarts_a_killed_child_and_sigterm_stops_all_four(mesh_factory):
    mesh = mesh_factory()
    task = mesh.admin.submit(f"nobody-{uid()}", {"keep": "me"})
    first = mesh.children()
    assert sorted(first) == sorted(PROCESSES)

    killed_at = time.monotonic()
    old = mesh.kill_child("api")
    new = mesh.wait_restarted("api", old, timeout=5)
    assert time.monotonic() - killed_at < 5
    assert new != old
    wait_until(mesh.healthy, timeout=20, what="the restarted api to answer")
    assert mesh.admin.get_task(task["id"])["payload"] == {"keep": "me"}  # acknowledged before the kill
    # The others were left alone.
    assert {n: p for n, p in mesh.children().items() if n != "api"} == {n: p for n, p in first.items() if n != "api"}
    assert '"restart_process" child="api"' in mesh.log()

    last = mesh.children()
    assert mesh.stop() == 0  # asserts exit 0 within 15 s and that none of the four outlived it
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{mesh.url}/healthz", timeout=2)
    assert not [pid for pid in last.values() if alive(pid)]


def test_no_child_outlives_mcs_up_killed_with_sigkill(mesh_factory):
    """`mcs up` cannot clean up after SIGKILL; its children must notice and stop by themselves."""
    mesh = mesh_factory()
    children = mesh.children()
    assert sorted(children) == sorted(PROCESSES)
    mesh.proc.kill()
    assert mesh.proc.wait(timeout=5) == -signal.SIGKILL
    mesh.stopped, mesh.exit_code = True, -signal.SIGKILL  # nothing left for the fixture to stop
    mesh.admin.close()
    try:
        wait_until(
            lambda: not [pid for pid in children.values() if alive(pid)],
            timeout=15,
            what=f"the orphaned children {children} to exit",
        )
    finally:
        mesh.kill_all([pid for pid in children.values() if alive(pid)])
