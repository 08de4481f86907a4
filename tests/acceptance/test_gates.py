"""Concurrency keys and approval gates on the real `mcs up`: several agents taking keyed work submitted
by concurrent submitters, never past a key's limit; an approval decided through the CLI with its alert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from mcs.client import Client

from .conftest import uid, wait_until

pytestmark = pytest.mark.acceptance


def mcs_cli(mesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_URL": mesh.url, "MCS_ADMIN_TOKEN": mesh.admin_token}
    return subprocess.run([sys.executable, "-m", "mcs", *args], env=env, capture_output=True, text=True, timeout=60)


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of [start, end) spans that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end sorts before a start
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def slow_result(agent, task):
    time.sleep(0.15)  # long enough that unlimited tasks would overlap
    return {"agent": agent.name}


def test_keyed_tasks_from_concurrent_submitters_never_run_past_their_limit(mesh, agent_factory):
    kind = f"deploy-{uid()}"
    agents = [agent_factory(mesh, capabilities=[kind], workers=2, result=slow_result) for _ in range(4)]
    for a in agents:
        a.client.register([kind], notify_url=a.notify_url, concurrency=2)
    limits = {f"prod-{uid()}": 1, f"stage-{uid()}": 2}
    submitted: dict[str, list[str]] = {key: [] for key in [*limits, "none"]}
    lock = threading.Lock()
    errors: list[str] = []

    def submitter() -> None:
        try:
            with Client(mesh.url, admin_token=mesh.admin_token, timeout=15) as c:
                for i in range(4):
                    for key, limit in limits.items():
                        t = c.submit(kind, {"i": i}, concurrency_key=key, max_concurrency=limit)
                        with lock:
                            submitted[key].append(t["id"])
                    t = c.submit(kind, {"i": i})
                    with lock:
                        submitted["none"].append(t["id"])
        except Exception as exc:  # reported below: a thread must not swallow it
            errors.append(repr(exc))

    threads = [threading.Thread(target=submitter) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    every = [i for ids in submitted.values() for i in ids]
    assert len(every) == 36

    def all_done() -> bool:
        return all(mesh.admin.get_task(i)["state"] == "completed" for i in every)

    wait_until(all_done, timeout=90, what="every keyed task to complete", interval=0.5)
    peaks = {}
    for key, ids in submitted.items():
        spans = []
        for task_id in ids:
            events = mesh.admin.events(task_id)
            claimed = [at(e["at"]) for e in events if e["kind"] == "claimed"]
            completed = [at(e["at"]) for e in events if e["kind"] == "completed"]
            assert len(claimed) == 1 and len(completed) == 1, events  # none lost, none run twice
            spans.append((claimed[0], completed[0]))
        peaks[key] = most_at_once(spans)
    for key, limit in limits.items():
        assert peaks[key] <= limit, (key, peaks)
    assert peaks["none"] > 1  # the same agents do run unkeyed tasks side by side: the limit is the key's


def test_an_approval_decided_through_the_cli_after_its_alert(mesh):
    title = f"ship {uid()}"
    out = mcs_cli(mesh, "task", "submit", "-t", "approval", "--payload", json.dumps({"title": title}), "--json")
    assert out.returncode == 0, out.stderr
    gate = json.loads(out.stdout)
    assert gate["state"] == "waiting"
    alert = wait_until(
        lambda: [b for b in mesh.alerts.bodies if b.get("data", {}).get("task_id") == gate["id"]],
        timeout=30,
        what="the approval.waiting alert",
    )[0]
    assert alert["type"] == "approval.waiting" and alert["data"]["title"] == title
    assert f"mcs task approve {gate['id']}" in alert["text"]
    approved = mcs_cli(mesh, "task", "approve", gate["id"], "--note", "go")
    assert approved.returncode == 0 and approved.stdout.strip() == f"{gate['id']} completed", approved.stderr
    shown = json.loads(mcs_cli(mesh, "task", "show", gate["id"], "--json").stdout)
    assert shown["result"] == {"approved": True, "by": "admin", "note": "go"}
    again = mcs_cli(mesh, "task", "deny", gate["id"], "--reason", "late")
    assert again.returncode == 1 and "not waiting" in again.stderr and "Traceback" not in again.stderr
