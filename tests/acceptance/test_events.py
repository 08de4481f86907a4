"""GET /v1/events on the real `mcs up`: the live stream of audit rows, its filters and who sees what,
resuming with Last-Event-ID across an api kill -9, a slow client dropped while a fast one keeps up,
progress from SDK handlers (sync and async), and `mcs watch --json`."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from mcs.agent import Agent, Task
from mcs.client import Client

from .conftest import Mesh, uid, wait_until
from .test_agent_sdk import AgentThread

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0


class Watcher:
    """A client following GET /v1/events on a thread (reconnecting with Last-Event-ID), collecting events."""

    def __init__(self, mesh: Mesh, *, headers: dict[str, str] | None = None, **filters: Any) -> None:
        if headers is None:
            self.client = Client(mesh.url, admin_token=mesh.env["MCS_ADMIN_TOKEN"], retries=0)
        else:
            self.client = Client(mesh.url, agent_id=headers["id"], agent_secret=headers["secret"], retries=0)
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.opens = 0
        self.error: BaseException | None = None

        def opened() -> None:
            self.opens += 1
            self.opened.set()

        def run() -> None:
            try:
                for e in self.client.stream_events(on_open=opened, **filters):
                    self.events.append(e)
            except BaseException as exc:  # noqa: BLE001 - surfaced by the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.opened.wait(DEADLINE), "the event stream did not open"

    def wait_for(self, predicate: Any, what: str) -> None:
        wait_until(lambda: predicate(self.events), timeout=DEADLINE, what=f"{what} (stream error: {self.error!r})")

    def kinds(self, task_id: str) -> list[str]:
        return [e["kind"] for e in self.events if e.get("task_id") == task_id]


def test_task_events_stream_live_with_ids_in_order_and_filters_apply(mesh: Mesh) -> None:
    everything = Watcher(mesh)
    kind = f"ev-{uid()}"
    only_kind = Watcher(mesh, type=kind)
    first = mesh.admin.submit(kind, {"n": 1}, capabilities=["nobody-" + uid()])
    other = mesh.admin.submit(f"other-{uid()}", {"n": 2}, capabilities=["nobody-" + uid()])
    only_task = Watcher(mesh, task=first["id"])
    mesh.admin.cancel(first["id"])
    mesh.admin.cancel(other["id"])

    everything.wait_for(
        lambda evs: any(e.get("task_id") == other["id"] and e["kind"] == "canceled" for e in evs), "all"
    )
    assert everything.kinds(first["id"]) == ["submitted", "canceled"]
    ids = [e["id"] for e in everything.events]
    assert ids == sorted(set(ids)), "event ids are unique and increasing"
    submitted = next(e for e in everything.events if e.get("task_id") == first["id"])
    assert submitted["event"] == "task" and submitted["type"] == kind and submitted["actor"] == "admin"

    only_kind.wait_for(lambda evs: len(evs) >= 2, "the type filter's events")
    assert {e["task_id"] for e in only_kind.events} == {first["id"]}
    only_task.wait_for(lambda evs: len(evs) >= 1, "the task filter's events")
    assert [e["kind"] for e in only_task.events] == ["canceled"]  # it opened after the submit: starts now


def test_streams_opened_together_each_get_every_event_once(mesh: Mesh) -> None:
    kind = f"together-{uid()}"
    with ThreadPoolExecutor(10) as pool:
        watchers = list(pool.map(lambda _: Watcher(mesh, type=kind), range(10)))
    task = mesh.admin.submit(kind, capabilities=["nobody-" + uid()])
    mesh.admin.cancel(task["id"])
    for w in watchers:
        w.wait_for(lambda evs: "canceled" in [e["kind"] for e in evs], "the cancel")
    time.sleep(0.5)  # a duplicate would have arrived by now (checked, not timed: any count above 2 fails)
    assert [w.kinds(task["id"]) for w in watchers] == [["submitted", "canceled"]] * 10


def test_an_agent_sees_its_own_tasks_and_agent_changes_but_not_others_tasks(mesh: Mesh) -> None:
    name = f"watcher-{uid()}"
    creds = mesh.admin.create_agent(name, ["x"])
    me = Watcher(mesh, headers={"id": name, "secret": creds["secret"]})
    with Client(mesh.url, agent_id=name, agent_secret=creds["secret"]) as agent:
        mine = agent.submit(f"mine-{uid()}", capabilities=["nobody-" + uid()])
    theirs = mesh.admin.submit(f"theirs-{uid()}", capabilities=["nobody-" + uid()])
    newcomer = f"newcomer-{uid()}"
    mesh.admin.create_agent(newcomer, ["y"])
    me.wait_for(lambda evs: any(e.get("agent") == newcomer for e in evs), "the public agent change")
    mesh.admin.cancel(mine["id"])
    me.wait_for(lambda evs: "canceled" in [e["kind"] for e in evs if e.get("task_id") == mine["id"]], "own task")
    assert not [e for e in me.events if e.get("task_id") == theirs["id"]]

    r = httpx.get(f"{mesh.url}/v1/events", headers={"X-Agent-ID": name, "X-Agent-Secret": "wrong"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"]
    r = httpx.get(f"{mesh.url}/v1/events", headers=_admin(mesh) | {"Last-Event-ID": "x"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_last_event_id"


def _admin(mesh: Mesh) -> dict[str, str]:
    return {"Authorization": f"Bearer {mesh.env['MCS_ADMIN_TOKEN']}"}


def test_progress_from_sync_and_async_handlers_reaches_the_stream(mesh: Mesh) -> None:
    capability = f"prog-{uid()}"
    release = threading.Event()

    def sync_handler(task: Task) -> Any:
        task.progress(message="half way", percent=50)
        release.wait(DEADLINE)
        return {"ok": True}

    async def async_handler(task: Task) -> Any:
        task.progress(message="async step", percent=25.5)
        await asyncio.sleep(0)
        return {"ok": True}

    watcher = Watcher(mesh)
    runners = []
    for handler in (sync_handler, async_handler):
        name = f"sdk-{uid()}"
        creds = mesh.admin.create_agent(name, [capability + handler.__name__])
        agent = Agent(
            handler,
            capabilities=[capability + handler.__name__],
            url=mesh.url,
            name=name,
            secret=creds["secret"],
            webhook_secret=creds["webhook_secret"],
            env={},
            listen=None,
        )
        runners.append(AgentThread(agent))
    try:
        sync_task = mesh.admin.submit("prog", capabilities=[capability + "sync_handler"])
        async_task = mesh.admin.submit("prog", capabilities=[capability + "async_handler"])
        watcher.wait_for(lambda evs: "progress" in [e["kind"] for e in evs if e.get("task_id") == sync_task["id"]], "")
        progress = next(e for e in watcher.events if e.get("task_id") == sync_task["id"] and e["kind"] == "progress")
        assert progress["detail"] == {"message": "half way", "percent": 50}
        assert progress["state"] == "claimed"  # seen while the handler still runs
        release.set()
        for t in (sync_task, async_task):
            watcher.wait_for(
                lambda evs, t=t: "completed" in [e["kind"] for e in evs if e.get("task_id") == t["id"]], ""
            )
        kinds = watcher.kinds(async_task["id"])
        assert kinds.index("progress") < kinds.index("completed")
        detail = next(e for e in watcher.events if e.get("task_id") == async_task["id"] and e["kind"] == "progress")
        assert detail["detail"] == {"message": "async step", "percent": 25.5}
        assert mesh.admin.events(async_task["id"])[-2]["kind"] == "progress"  # in the audit trail too
    finally:
        release.set()
        for runner in runners:
            runner.stop()


def test_progress_is_only_for_the_holder(mesh: Mesh) -> None:
    capability = f"hold-{uid()}"
    holder, other = f"holder-{uid()}", f"other-{uid()}"
    creds = {n: mesh.admin.create_agent(n, [capability]) for n in (holder, other)}
    task = mesh.admin.submit("hold", capabilities=[capability])
    with Client(mesh.url, agent_id=holder, agent_secret=creds[holder]["secret"]) as h:
        claimed = h.claim(task["id"])
        bad = httpx.post(
            f"{mesh.url}/v1/tasks/{task['id']}/progress",
            json={"claim_token": "stale", "percent": 10},
            headers={"X-Agent-ID": holder, "X-Agent-Secret": creds[holder]["secret"]},
            timeout=10,
        )
        assert bad.status_code == 409 and bad.json()["error"]["code"] == "stale_claim_token"
        not_mine = httpx.post(
            f"{mesh.url}/v1/tasks/{task['id']}/progress",
            json={"claim_token": claimed["claim_token"], "percent": 10},
            headers={"X-Agent-ID": other, "X-Agent-Secret": creds[other]["secret"]},
            timeout=10,
        )
        assert not_mine.status_code == 403
        too_much = httpx.post(
            f"{mesh.url}/v1/tasks/{task['id']}/progress",
            json={"claim_token": claimed["claim_token"], "percent": 101},
            headers={"X-Agent-ID": holder, "X-Agent-Secret": creds[holder]["secret"]},
            timeout=10,
        )
        assert too_much.status_code == 422
        assert h.progress(task["id"], claimed["claim_token"], message="ok", percent=10)["percent"] == 10
    assert [e["kind"] for e in mesh.admin.events(task["id"])].count("progress") == 1


def test_resume_with_last_event_id_across_an_api_kill_loses_nothing(mesh: Mesh) -> None:
    kind = f"resume-{uid()}"
    watcher = Watcher(mesh, type=kind)
    before = [mesh.admin.submit(kind, {"i": i}, capabilities=["nobody-" + uid()]) for i in range(5)]
    watcher.wait_for(lambda evs: len(evs) >= 5, "the first events")
    old = mesh.kill_child("api")
    mesh.wait_restarted("api", old)
    wait_until(mesh.healthy, timeout=DEADLINE, what="the api to answer again")
    after = [mesh.admin.submit(kind, {"i": i}, capabilities=["nobody-" + uid()]) for i in range(5)]
    for t in before + after:
        mesh.admin.cancel(t["id"])
    expected = {(t["id"], k) for t in before + after for k in ("submitted", "canceled")}
    watcher.wait_for(lambda evs: {(e["task_id"], e["kind"]) for e in evs} >= expected, "every event once")
    ids = [e["id"] for e in watcher.events]
    assert len(ids) == len(set(ids)) == len(expected), "nothing lost, nothing twice"
    assert ids == sorted(ids)
    assert watcher.opens >= 2, "the watcher reconnected after the kill"

    # And a new client resuming from an id gets exactly what followed it (?last_event_id= too).
    middle = watcher.events[4]["id"]
    with httpx.stream(
        "GET", f"{mesh.url}/v1/events?type={kind}&last_event_id={middle}", headers=_admin(mesh), timeout=10
    ) as r:
        got = []
        for line in r.iter_lines():
            if line.startswith("id: "):
                got.append(int(line[4:]))
            if len(got) == len(ids) - 5:
                break
    assert got == ids[5:]


def test_a_slow_client_is_dropped_while_a_fast_one_keeps_up(mesh_factory: Any) -> None:
    mesh = mesh_factory(MCS_EVENTS_BUFFER="20")
    kind = f"flood-{uid()}"
    fast = Watcher(mesh, type=kind)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, with a small window
    slow.connect(("127.0.0.1", mesh.ports["api"]))
    token = mesh.env["MCS_ADMIN_TOKEN"]
    slow.sendall(f"GET /v1/events?type={kind} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    # 1500 progress events of 2 kB each: more than the socket buffers between the api and the slow client hold.
    capability = f"flood-{uid()}"
    name = f"flooder-{uid()}"
    creds = mesh.admin.create_agent(name, [capability])
    task = mesh.admin.submit(kind, capabilities=[capability])
    total = 1500
    with Client(mesh.url, agent_id=name, agent_secret=creds["secret"]) as agent:
        token = agent.claim(task["id"])["claim_token"]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: agent.progress(task["id"], token, message=f"{i:04} " + "x" * 1990), range(total)))
    fast.wait_for(lambda evs: [e["kind"] for e in evs].count("progress") >= total, "every event at the fast client")
    assert len({e["id"] for e in fast.events}) == len(fast.events)

    slow.settimeout(DEADLINE)
    received = b""
    while True:
        chunk = slow.recv(65536)
        if not chunk or b"dropped" in received[-4096:] + chunk:
            received += chunk
            break
        received += chunk
    slow.close()
    assert b": dropped: this client fell too far behind" in received
    assert received.count(b"\nevent: task\n") < total
    metrics = httpx.get(f"{mesh.url}/metrics", timeout=10).text
    dropped = [line for line in metrics.splitlines() if line.startswith("mcs_event_streams_dropped_total")]
    assert dropped and float(dropped[0].split()[-1]) >= 1


def test_mcs_watch_json_prints_raw_events_one_per_line(mesh: Mesh) -> None:
    kind = f"cli-{uid()}"
    env = {k: v for k, v in mesh.env.items()} | {"MCS_URL": mesh.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcs", "watch", "--type", kind, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # The stream starts when it opens: submit until the watcher has seen one, then the rest.
        lines: list[dict[str, Any]] = []

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(json.loads(line))

        threading.Thread(target=reader, daemon=True).start()
        task = None
        deadline = time.monotonic() + DEADLINE
        while not lines and time.monotonic() < deadline:
            task = mesh.admin.submit(kind, capabilities=["nobody"])
            time.sleep(0.5)
        assert lines and task is not None
        mesh.admin.cancel(task["id"])
        wait_until(lambda: any(e["kind"] == "canceled" for e in lines), timeout=DEADLINE, what="the cancel line")
        assert all(e["event"] == "task" and e["type"] == kind and isinstance(e["id"], int) for e in lines)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
