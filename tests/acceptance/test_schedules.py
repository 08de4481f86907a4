"""Schedules on the real `mcs up`: `mcs schedule add` with a YAML task file, the watchdog firing ticks as
they fall (not only every sweep interval), an agent doing the work, and no tick fired twice when the
watchdog is killed and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mcs.engines.sqlite.engine import Store

from .conftest import uid, wait_until

pytestmark = pytest.mark.acceptance


def mcs_cli(mesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_URL": mesh.url, "MCS_ADMIN_TOKEN": mesh.admin_token}
    return subprocess.run([sys.executable, "-m", "mcs", *args], env=env, capture_output=True, text=True, timeout=60)


def runs(mesh, name: str) -> list[tuple[float, str, str | None]]:
    store = Store(mesh.db, synchronous="NORMAL")
    try:
        rows = store.conn.execute(
            "SELECT tick_at, outcome, task_id FROM schedule_runs WHERE schedule = ? ORDER BY tick_at", (name,)
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]
    finally:
        store.close()


def test_a_schedule_fires_every_tick_once_through_a_watchdog_crash(mesh_factory, agent_factory, tmp_path: Path):
    # A long sweep interval: the ticks (every 2 s) must come from the watchdog waking for them.
    mesh = mesh_factory(MCS_WATCHDOG_INTERVAL="30")
    kind, name = f"tick-{uid()}", f"every-2s-{uid()}"
    agent_factory(mesh, capabilities=[kind])
    task_file = tmp_path / "task.yaml"
    task_file.write_text(f"type: {kind}\npayload:\n  what: nightly review\npriority: low\n")
    added = mcs_cli(mesh, "schedule", "add", name, "--cron", "* * * * * */2", "--task-file", str(task_file), "--json")
    assert added.returncode == 0, added.stderr
    shown = json.loads(added.stdout)["task"]
    assert shown == {"type": kind, "payload": {"what": "nightly review"}, "priority": "low", "route": "any"}

    wait_until(lambda: len(runs(mesh, name)) >= 2, timeout=20, what="two ticks")
    old = mesh.kill_child("watchdog", signal.SIGKILL)
    mesh.wait_restarted("watchdog", old)
    before = len(runs(mesh, name))
    wait_until(lambda: len(runs(mesh, name)) >= before + 2, timeout=30, what="ticks after the restart")
    mcs_cli(mesh, "schedule", "pause", name)
    done = runs(mesh, name)
    ticks = [t for t, _, _ in done]
    assert len(ticks) == len(set(ticks)) and all(b - a >= 2 for a, b in zip(ticks, ticks[1:], strict=False))
    fired = [task_id for _, outcome, task_id in done if outcome == "fired"]
    assert fired and len(fired) == len(set(fired))
    submitted = mesh.admin.list_tasks(type=kind, limit=500)["tasks"]
    assert sorted(t["id"] for t in submitted) == sorted(fired)  # one task per fired tick, no more
    for task_id in fired:
        assert mesh.admin.wait_for(task_id, timeout=30)["state"] == "completed"
        kinds = [e["kind"] for e in mesh.admin.events(task_id)]
        assert kinds[:2] == ["submitted", "scheduled"], kinds

    shown = mcs_cli(mesh, "schedule", "show", name)
    assert shown.returncode == 0 and "paused" in shown.stdout and "fired" in shown.stdout, shown.stdout
    assert mcs_cli(mesh, "schedule", "delete", name).returncode == 0
    missing = mcs_cli(mesh, "schedule", "show", name)
    assert missing.returncode == 1 and f"no schedule named '{name}'" in missing.stderr


def test_the_cli_names_the_line_of_a_bad_task_file(mesh_factory, tmp_path: Path):
    mesh = mesh_factory()
    bad = tmp_path / "task.yaml"
    bad.write_text("type: x\npayload: [unclosed\n")
    out = mcs_cli(mesh, "schedule", "add", "bad", "--cron", "0 3 * * *", "--task-file", str(bad))
    assert out.returncode == 2 and "is not valid YAML at line 3" in out.stderr, out.stderr
    cron = mcs_cli(mesh, "schedule", "add", "bad", "--cron", "0 25 * * *", "--task-file", str(tmp_path / "t.json"))
    assert cron.returncode == 2 and "cannot read" in cron.stderr
    (tmp_path / "t.json").write_text('{"type": "x"}')
    cron = mcs_cli(mesh, "schedule", "add", "bad", "--cron", "0 25 * * *", "--task-file", str(tmp_path / "t.json"))
    assert cron.returncode == 1 and "is not a valid expression" in cron.stderr and "Traceback" not in cron.stderr
