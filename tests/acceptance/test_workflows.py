"""Workflows on the real `mcs up`, run by SDK agents: results flow from step to step as `inputs`, a cancel
reaches the handler running a step, and `mcs workflow submit --wait` follows a YAML file to its end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from mcs.agent import Task

from .conftest import uid, wait_until
from .test_agent_sdk import DEADLINE, sdk_agent  # noqa: F401 - the fixture

pytestmark = pytest.mark.acceptance


def mcs_cli(mesh: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_URL": mesh.url, "MCS_ADMIN_TOKEN": mesh.admin_token}
    return subprocess.run([sys.executable, "-m", "mcs", *args], env=env, capture_output=True, text=True, timeout=90)


def test_a_three_step_workflow_runs_on_sdk_agents_with_inputs_flowing(mesh, sdk_agent):  # noqa: F811
    kind = uid()

    def gather(task: Task) -> Any:
        return {"facts": [f"{task.payload['topic']} fact {i}" for i in range(2)], "asked": task.inputs["workflow"]}

    async def check(task: Task) -> Any:
        await asyncio.sleep(0)
        return {"checked": len(task.inputs["gather"]["facts"])}

    def write(task: Task) -> Any:
        return {"report": f"{task.inputs['gather']['facts']} checked={task.inputs['check']['checked']}"}

    sdk_agent(gather, capabilities=[f"gather-{kind}"])
    sdk_agent(check, capabilities=[f"check-{kind}"])
    sdk_agent(write, capabilities=[f"write-{kind}"])
    wf = mesh.admin.submit_workflow(
        "report",
        [
            {"id": "gather", "type": f"gather-{kind}", "payload": {"topic": "owls"}},
            {"id": "check", "type": f"check-{kind}", "depends_on": ["gather"]},
            {"id": "write", "type": f"write-{kind}", "depends_on": ["gather", "check"]},
        ],
        inputs={"question": "owls?"},
    )
    done = mesh.admin.wait_for_workflow(wf["id"], timeout=DEADLINE)
    assert done["state"] == "completed", done
    steps = done["steps"]
    assert steps["gather"]["result"]["asked"] == {"question": "owls?"}
    assert steps["write"]["result"] == {"report": "['owls fact 0', 'owls fact 1'] checked=2"}
    assert steps["write"]["inputs"]["check"] == {"checked": 2}
    assert [e["kind"] for e in mesh.admin.workflow_events(wf["id"])] == ["submitted", "completed"]


def test_canceling_a_workflow_cancels_the_handler_running_its_step(mesh, sdk_agent):  # noqa: F811
    kind = f"slow-{uid()}"
    started, canceled = threading.Event(), threading.Event()

    async def slow(task: Task) -> Any:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            canceled.set()
            raise
        return "never"

    runner = sdk_agent(slow, capabilities=[kind])
    wf = mesh.admin.submit_workflow(
        "doomed", [{"id": "long", "type": kind}, {"id": "after", "type": kind, "depends_on": ["long"]}]
    )
    assert started.wait(DEADLINE), "the step never started"
    stopped = mesh.admin.cancel_workflow(wf["id"])
    assert stopped["state"] == "canceled"
    assert {s["state"] for s in stopped["steps"].values()} == {"canceled"}
    assert canceled.wait(DEADLINE), "the handler was not canceled"
    wait_until(lambda: runner.agent.canceled == 1, timeout=DEADLINE, what="the agent to count the cancel")
    step = mesh.admin.get_task(stopped["steps"]["long"]["id"])
    assert step["state"] == "canceled" and step["result"] is None  # nothing reported after the cancel


def test_a_sync_handler_of_a_canceled_step_is_abandoned_and_its_result_ignored(mesh, sdk_agent):  # noqa: F811
    kind = f"stuck-{uid()}"
    started, release = threading.Event(), threading.Event()

    def stuck(task: Task) -> Any:
        started.set()
        release.wait(DEADLINE)
        return "too late"

    runner = sdk_agent(stuck, capabilities=[kind])
    wf = mesh.admin.submit_workflow("stuck", [{"id": "only", "type": kind}])
    assert started.wait(DEADLINE), "the step never started"
    out = mcs_cli(mesh, "workflow", "cancel", wf["id"])
    assert out.returncode == 0 and out.stdout.split() == [wf["id"], "canceled"], out.stderr
    wait_until(lambda: runner.agent.canceled == 1, timeout=DEADLINE, what="the agent to abandon the handler")
    release.set()
    wait_until(lambda: not runner.agent._running, timeout=DEADLINE, what="the handler's slot to free up")
    step = mesh.admin.get_task(wf["steps"]["only"]["id"])
    assert step["state"] == "canceled" and step["result"] is None
    assert "completed" not in [e["kind"] for e in mesh.admin.events(step["id"])]


def test_mcs_workflow_submit_wait_from_a_yaml_file(mesh, sdk_agent, tmp_path):  # noqa: F811
    kind = f"yaml-{uid()}"
    sdk_agent(lambda task: {"got": task.inputs}, capabilities=[kind])
    spec = tmp_path / "flow.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            name: from-yaml
            inputs: {{env: staging}}
            steps:
              - id: build
                type: {kind}
              - id: ship
                type: {kind}
                depends_on: [build]
            """
        )
    )
    done = mcs_cli(mesh, "workflow", "submit", str(spec), "--input", "version=3", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "from-yaml" in lines[0] and "completed" in lines[0]
    assert any(line.strip().startswith("build") and "completed" in line for line in lines)
    assert any(line.strip().startswith("ship") and "after build" in line for line in lines)
    workflow_id = lines[0].split()[0]
    shown = mesh.admin.get_workflow(workflow_id)
    assert shown["steps"]["build"]["result"] == {"got": {"workflow": {"env": "staging", "version": 3}}}
    assert shown["steps"]["ship"]["result"]["got"]["build"] == shown["steps"]["build"]["result"]
    listed = mcs_cli(mesh, "workflow", "list", "--json")
    assert workflow_id in [w["id"] for w in json.loads(listed.stdout)["workflows"]]
    bad = tmp_path / "cycle.json"
    bad.write_text('{"name": "c", "steps": [{"id": "a", "type": "x", "depends_on": ["a"]}]}')
    refused = mcs_cli(mesh, "workflow", "submit", str(bad))
    assert refused.returncode == 1 and "cycle" in refused.stderr and "Traceback" not in refused.stderr
