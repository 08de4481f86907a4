"""`mcs agent a2a` on the real `mcs up`: a small A2A agent built with the a2a-sdk (tests/a2a_server.py, its
own process on loopback) joins the mesh through it, and MCS tasks are answered by it; the A2A face then
reaches that remote agent too (an A2A client -> MCS -> `mcs agent a2a` -> the remote agent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState

from .conftest import Mesh, free_ports, uid, wait_until
from .test_a2a import a2a_client, skill_ids

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0  # seconds
REMOTE_TOKEN = "remote-" + uid()


def _card_served(url: str) -> bool:
    try:
        return httpx.get(f"{url}/.well-known/agent-card.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_remote_a2a_agent_answers_mesh_tasks(mesh: Mesh, tmp_path: Path):
    [port] = free_ports(1)
    remote_url = f"http://127.0.0.1:{port}"
    received = tmp_path / "received.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")} | {"PYTHONUNBUFFERED": "1"}
    remote_log = open(tmp_path / "remote.log", "wb")  # noqa: SIM115 - closed in finally
    remote = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.a2a_server",
            "--port",
            str(port),
            "--token",
            REMOTE_TOKEN,
            "--log",
            str(received),
        ],
        env=env,
        stdout=remote_log,
        stderr=subprocess.STDOUT,
    )
    name = f"a2a-{uid()}"
    prefix = f"{uid()}:"  # capabilities of their own, so other tests' agents never take these tasks
    creds = mesh.admin.create_agent(name)
    agent_env = env | {
        "MCS_URL": mesh.url,
        "MCS_AGENT_ID": name,
        "MCS_AGENT_SECRET": creds["secret"],
        "MCS_WEBHOOK_SECRET": creds["webhook_secret"],
        "MCS_A2A_TOKEN": REMOTE_TOKEN,
    }
    agent_log = tmp_path / "agent.log"
    agent = None
    try:
        wait_until(
            lambda: _card_served(remote_url) or remote.poll() is not None, timeout=DEADLINE, what="the remote card"
        )
        assert remote.poll() is None, (tmp_path / "remote.log").read_text()
        args = ["agent", "a2a", "--a2a-url", remote_url, "--prefix", prefix]
        with open(agent_log, "wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "mcs", *args], env=agent_env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(
            lambda: mesh.admin.get_agent(name)["status"] == "online" or agent.poll() is not None,
            timeout=DEADLINE,
            what="`mcs agent a2a` to register",
        )
        assert agent.poll() is None, agent_log.read_text()
        assert sorted(mesh.admin.get_agent(name)["capabilities"]) == [f"{prefix}echo", f"{prefix}shout"]

        echo = mesh.admin.submit(f"{prefix}echo", "hello there")
        shout = mesh.admin.submit(f"{prefix}shout", "quiet please")
        data = mesh.admin.submit(f"{prefix}echo", {"n": 3, "tags": ["a"]})
        refused = mesh.admin.submit(f"{prefix}echo", "please fail now", max_retries=3)

        done = mesh.admin.wait_for(echo["id"], timeout=DEADLINE)
        assert done["state"] == "completed", done
        assert done["result"]["answer"] == "echo: hello there"
        assert done["result"]["a2a"]["state"] == "completed" and done["result"]["a2a"]["task_id"]
        assert mesh.admin.wait_for(shout["id"], timeout=DEADLINE)["result"]["answer"] == "QUIET PLEASE"
        with_data = mesh.admin.wait_for(data["id"], timeout=DEADLINE)
        assert with_data["result"]["data"] == [{"got": [{"n": 3, "tags": ["a"]}]}], with_data
        failed = mesh.admin.wait_for(refused["id"], timeout=DEADLINE)
        assert failed["state"] == "failed" and failed["attempts"] == 1, failed  # for good: no retries
        assert "remote refuses: please fail now" in failed["error"], failed
        # What the remote agent got: one A2A message per task, the skill and MCS's task id in its metadata.
        messages = [json.loads(line) for line in received.read_text().splitlines()]
        by_task = {m["metadata"]["mcs_task_id"]: m for m in messages}
        assert by_task[shout["id"]]["metadata"]["skill"] == "shout"
        assert by_task[echo["id"]]["parts"] == [{"text": "hello there"}]

        # The whole chain: the a2a-sdk client -> MCS's A2A face -> `mcs agent a2a` -> the remote agent.
        wait_until(lambda: f"{prefix}echo" in skill_ids(mesh.url), timeout=DEADLINE, what="the skill on MCS's card")
        client, http = await a2a_client(mesh.url, mesh.admin_token)
        try:
            message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="round trip")])
            message.metadata.update({"skill": f"{prefix}echo"})
            events = [e async for e in client.send_message(SendMessageRequest(message=message))]
        finally:
            await client.close()
            await http.aclose()
        last = events[-1].status_update.status
        assert last.state == TaskState.TASK_STATE_COMPLETED, events
        answers = [e.artifact_update.artifact.parts[0].text for e in events if e.HasField("artifact_update")]
        assert answers == ["echo: round trip"]

        # Canceling the MCS task cancels the remote one the agent is waiting on.
        slow = mesh.admin.submit(f"{prefix}echo", "slow please")
        wait_until(lambda: slow["id"] in _received_ids(received), timeout=DEADLINE, what="the remote to get it")
        mesh.admin.cancel(slow["id"])
        wait_until(
            lambda: _remote_state(remote_url, slow["id"]) == "TASK_STATE_CANCELED",
            timeout=DEADLINE,
            what="the remote task to be canceled",
        )

        # The agent goes away (SIGTERM): it signs off, and its skills leave MCS's card.
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=DEADLINE) == 0, agent_log.read_text()
        wait_until(lambda: f"{prefix}echo" not in skill_ids(mesh.url), timeout=DEADLINE, what="the skill to go")
    finally:
        for proc in (agent, remote):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        remote_log.close()


def _received_ids(path: Path) -> set[str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {json.loads(line)["metadata"]["mcs_task_id"] for line in lines}


def _remote_state(url: str, mcs_task_id: str) -> str | None:
    """The state of the remote task made for an MCS task, by the remote agent's own ListTasks."""
    call = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {"historyLength": 1}}
    headers = {"Authorization": f"Bearer {REMOTE_TOKEN}", "A2A-Version": "1.0"}
    answer = httpx.post(url, json=call, headers=headers, timeout=10).json()
    for task in answer["result"]["tasks"]:
        if any(m.get("metadata", {}).get("mcs_task_id") == mcs_task_id for m in task.get("history", [])):
            state: str = task["status"]["state"]
            return state
    return None


def test_a_card_that_cannot_be_read_is_a_one_line_error(mesh: Mesh, tmp_path: Path):
    [port] = free_ports(1)  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")} | {
        "MCS_URL": mesh.url,
        "MCS_AGENT_ID": "nobody",
        "MCS_AGENT_SECRET": "x",
        "MCS_WEBHOOK_SECRET": "whsec_eA==",
    }
    run = subprocess.run(
        [sys.executable, "-m", "mcs", "agent", "a2a", "--a2a-url", f"http://127.0.0.1:{port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert run.returncode != 0
    assert "cannot read the A2A agent card" in run.stderr and "Traceback" not in run.stderr, run.stderr
