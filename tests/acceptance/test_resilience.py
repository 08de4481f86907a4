"""Killing processes: `mcs up` restarts what dies, nothing acknowledged is lost, every task ends exactly once,
and SIGTERM stops all four processes."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from .conftest import PROCESSES, alive, uid, wait_until
from .streams import TaskStream, assert_completed_exactly_once, wait_all_terminal

pytestmark = pytest.mark.acceptance

SUBMISSIONS = 200
SUBMIT_EVERY = 0.025  # seconds: 200 submissions over about five seconds
ALL_DONE_WITHIN = 55.0  # seconds from the end of the stream


def test_every_task_completes_exactly_once_while_processes_are_killed(mesh_factory, agent_factory):
    mesh = mesh_factory()
    kind = f"crash-{uid()}"
    # Slow answers keep webhooks in flight, so killing the notifier interrupts some deliveries.
    agents = [agent_factory(mesh, capabilities=[kind], workers=4, answer_delay=0.2) for _ in range(3)]
    stream = TaskStream(mesh, kind, total=SUBMISSIONS, every=SUBMIT_EVERY, threads=1).start()
    restarted = {}
    try:
        for name, after in (("dispatcher", 40), ("notifier", 100), ("watchdog", 160)):
            stream.wait_acked(after, timeout=20)
            old = mesh.kill_child(name)
            restarted[name] = (old, mesh.wait_restarted(name, old, timeout=10))
    finally:
        stream.join(timeout=30)
    submitted = stream.check_acknowledged()
    assert not stream.retried(), f"the api was never killed, yet submits were retried: {stream.retried()}"

    tasks = wait_all_terminal(mesh, kind, submitted, timeout=ALL_DONE_WITHIN)
    # Each task was completed (a result stored) exactly once, even if delivered twice, by the agent the
    # task names, and its audit trail holds one `completed` event.
    assert_completed_exactly_once(mesh, agents, tasks)
    by_name = {a.name for a in agents}
    for task_id, task in tasks.items():
        assert task["result"]["task_id"] == task_id and task["result"]["agent"] == task["assigned_to"] in by_name

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
