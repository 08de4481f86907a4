"""A newcomer's first hour (issue 11): an agent that MCS cannot call back is told so, in the agent's log,
the task's events and /healthz; agents say when they are online and what became of each task; a wrong
webhook secret names the setting to check; `mcs agent llm` warns when its model server is down."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcs.agent import Agent
from mcs.agent.llm import check_model_server
from tests.fake_openai import FakeOpenAI

from .conftest import Mesh, uid, wait_until
from .test_agent_sdk import DEADLINE, AgentThread

pytestmark = pytest.mark.acceptance


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


def start_sdk_agent(mesh: Mesh, capabilities: list[str], **kw: Any) -> AgentThread:
    name = f"sdk-{uid()}"
    creds = mesh.admin.create_agent(name, capabilities)
    kw.setdefault("webhook_secret", creds["webhook_secret"])
    agent = Agent(lambda task: {"ok": True}, capabilities=capabilities, url=mesh.url, name=name,
                  secret=creds["secret"], env={}, **kw)  # fmt: skip
    return AgentThread(agent)


def test_mcs_in_a_container_warns_an_agent_with_a_loopback_notify_url_and_the_events_say_why(
    mesh_factory, caplog, monkeypatch
):
    mesh = mesh_factory(MCS_CONTAINER="true", MCS_WEBHOOK_ATTEMPTS="2", MCS_WEBHOOK_RETRY_BASE="0.05")
    assert httpx.get(f"{mesh.url}/healthz").json()["container"] is True
    caplog.set_level(logging.WARNING, logger="mcs.agent")
    # As from a compose stack: MCS in a container, in another network namespace than the agent.
    monkeypatch.setattr("mcs.agent.runner.network_namespace", lambda: "some-other-namespace")
    runner = start_sdk_agent(mesh, [f"seen-{uid()}"])
    try:
        warned = [r.getMessage() for r in caplog.records if getattr(r, "action", "") == "notify_unreachable"]
        assert len(warned) == 1, caplog.text
        assert "MCS runs in a container" in warned[0] and "--pull" in warned[0] and "--notify-url" in warned[0]
    finally:
        runner.stop()

    # An agent whose loopback notify URL nobody answers: the task's events say who is unreachable where.
    kind, name, port = f"lost-{uid()}", f"lost-{uid()}", closed_port()
    creds = mesh.admin.create_agent(name, [kind])
    url = f"http://127.0.0.1:{port}/hook"
    httpx.post(f"{mesh.url}/v1/agents/register", json={"capabilities": [kind], "notify_url": url},
               headers={"X-Agent-ID": name, "X-Agent-Secret": creds["secret"]}).raise_for_status()  # fmt: skip
    task = mesh.admin.submit(kind, {})

    def failed_event() -> dict[str, Any] | None:
        return next((e for e in mesh.admin.events(task["id"]) if e["kind"] == "webhook_failed"), None)

    event = wait_until(failed_event, timeout=DEADLINE, what="the webhook to be given up")
    message = event["detail"]["message"]
    assert message.startswith(f"agent {name} unreachable at {url} after 2 attempts: "), message
    assert "--pull" in message and "loopback" in message
    assert event["detail"]["url"] == url


@pytest.mark.parametrize("container", ["false", "true"])  # true: MCS in the agent's own container (a devbox)
def test_mcs_sharing_the_agents_loopback_does_not_warn_about_a_loopback_notify_url(mesh_factory, caplog, container):
    mesh = mesh_factory(MCS_CONTAINER=container)
    assert httpx.get(f"{mesh.url}/healthz").json()["container"] is (container == "true")
    caplog.set_level(logging.WARNING, logger="mcs.agent")
    runner = start_sdk_agent(mesh, [f"fine-{uid()}"])
    runner.stop()
    assert not [r for r in caplog.records if getattr(r, "action", "") == "notify_unreachable"], caplog.text


SCRIPT = """
    import sys
    from mcs.agent import Agent, PermanentError

    def handle(task):
        if task.payload.get("fail"):
            raise PermanentError("asked to fail")
        return {"summary": task.payload["text"][:5]}

    if __name__ == "__main__":
        Agent(handle, capabilities=[sys.argv[1]]).run()
"""


def test_a_plain_sdk_script_says_it_is_online_and_one_line_per_task(mesh, tmp_path: Path):
    kind, name = f"summarise-{uid()}", f"summariser-{uid()}"
    creds = mesh.admin.create_agent(name, [kind])
    (tmp_path / "summarise.py").write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_URL": mesh.url, "MCS_AGENT_ID": name, "MCS_AGENT_SECRET": creds["secret"],
            "MCS_WEBHOOK_SECRET": creds["webhook_secret"], "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "summarise.py", kind], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: mesh.admin.get_agent(name)["status"] == "online", timeout=DEADLINE, what="online")
        ok = mesh.admin.wait_for(mesh.admin.submit(kind, {"text": "hello mesh"})["id"], timeout=DEADLINE)
        bad = mesh.admin.wait_for(mesh.admin.submit(kind, {"fail": True})["id"], timeout=DEADLINE)
        assert (ok["state"], bad["state"]) == ("completed", "failed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE)
    out = log_path.read_text()
    assert f"agent {name} online: webhooks at http://127.0.0.1:" in out and f"capabilities {kind}" in out, out
    assert f"agent {name}: completed {ok['id']} ({kind}) in " in out, out
    assert f"agent {name}: {bad['id']} failed for good: PermanentError: asked to fail (after " in out, out


def test_a_wrong_webhook_secret_names_the_setting_to_check(mesh, caplog):
    caplog.set_level(logging.WARNING, logger="mcs.agent")
    kind = f"forged-{uid()}"
    runner = start_sdk_agent(mesh, [kind], webhook_secret="whsec_" + "A" * 32)
    try:
        mesh.admin.submit(kind, {})
        app = runner.agent.receiver.app  # type: ignore[union-attr]
        wait_until(lambda: app.rejected >= 1, timeout=DEADLINE, what="a webhook to be refused")
    finally:
        runner.stop()
    rejected = [r.getMessage() for r in caplog.records if getattr(r, "action", "") == "reject_webhook"]
    assert rejected and "check MCS_WEBHOOK_SECRET" in rejected[0], caplog.text


def test_the_llm_agent_checks_its_model_server_at_start():
    model = FakeOpenAI()
    try:
        model.models = ["llama3.2:latest", "qwen2.5-coder:7b"]
        assert check_model_server(model.url, "llama3.2") is None
        assert check_model_server(model.url, "qwen2.5-coder:7b") is None
        missing = check_model_server(model.url, "mistral")
        assert missing and "does not list model 'mistral'" in missing and "llama3.2:latest" in missing
    finally:
        model.close()
    down = check_model_server(f"http://127.0.0.1:{closed_port()}/v1", "llama3.2")
    assert down and "does not answer" in down and "--base-url" in down


def test_mcs_agent_llm_warns_at_start_when_its_model_server_is_down(mesh, tmp_path: Path):
    name, kind = f"llm-{uid()}", f"ask-{uid()}"
    creds = mesh.admin.create_agent(name, [kind])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_URL": mesh.url, "MCS_AGENT_ID": name, "MCS_AGENT_SECRET": creds["secret"],
            "MCS_WEBHOOK_SECRET": creds["webhook_secret"], "PYTHONUNBUFFERED": "1"}  # fmt: skip
    base = f"http://127.0.0.1:{closed_port()}/v1"
    log_path = tmp_path / "llm.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mcs", "agent", "llm", "--base-url", base, "--model", "m",
                                 "--capability", kind], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: mesh.admin.get_agent(name)["status"] == "online", timeout=DEADLINE, what="online")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE)
    assert f"warning: the model server at {base} does not answer" in log_path.read_text()
