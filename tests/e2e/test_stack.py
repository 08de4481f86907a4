"""compose.yaml end to end: the four MCS containers over one volume, Prometheus, and an agent container on
the compose network. The tests run in file order against one stack (see conftest.py)."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from mcs.client import Client

from .conftest import (
    AGENT_PORT,
    MCS_SERVICES,
    PYTHON_IMAGE,
    AgentContainer,
    Stack,
    docker,
    prometheus_targets,
    start_agent,
    wait_until,
)

AGENT = "e2e-echo"


@pytest.fixture(scope="module")
def echo_agent(stack: Stack) -> Iterator[AgentContainer]:
    """An agent container on the compose network; the notifier reaches it by its container name."""
    host = f"{stack.project}-{AGENT}"
    with stack.admin() as admin:
        agent = start_agent(
            stack,
            admin,
            name=AGENT,
            image=PYTHON_IMAGE,
            mcs_url="http://api:8080",
            listen=f"0.0.0.0:{AGENT_PORT}",
            notify_url=f"http://{host}:{AGENT_PORT}/hook",
            container_name=host,
        )
        wait_until(
            lambda: agent.events("registered") and admin.get_agent(AGENT)["status"] == "online",
            timeout=60,
            what="the agent container to register",
        )
    yield agent
    agent.stop()


def completions(agent: AgentContainer) -> Counter[str]:
    return Counter(e["task"] for e in agent.events("completed"))


def test_prometheus_scrapes_all_four_processes(stack: Stack) -> None:
    targets = wait_until(
        lambda: (t := prometheus_targets(stack)) and all(t.get(p) == "up" for p in MCS_SERVICES) and t,
        timeout=90,
        what="Prometheus to report api, dispatcher, watchdog and notifier up",
        interval=1,
    )
    assert {p: targets[p] for p in MCS_SERVICES} == dict.fromkeys(MCS_SERVICES, "up")


def test_images_run_as_the_documented_user_with_data_in_a_volume(stack: Stack) -> None:
    for service in MCS_SERVICES:
        info = stack.inspect(service)
        assert info["Config"]["User"] == "10001:10001", service
        assert info["State"]["Health"]["Status"] == "healthy", service
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == f"{stack.project}_data", service
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", service
    published = stack.inspect("api")["HostConfig"]["PortBindings"]["8080/tcp"]
    assert [b["HostIp"] for b in published] == ["127.0.0.1"]  # never on every interface by default


def test_submit_signed_webhook_claim_complete_across_containers(
    stack: Stack, admin: Client, echo_agent: AgentContainer
) -> None:
    task = admin.submit(AGENT, {"hello": "containers"})
    done = admin.wait_for(task["id"], timeout=60)
    assert done["state"] == "completed", done
    assert done["assigned_to"] == AGENT
    result = done["result"]
    assert result["agent"] == AGENT and result["payload"] == {"hello": "containers"}
    # The notifier container signed it; the agent verified it; verify it here too, with another library.
    hook = result["webhook"]
    event = Webhook(echo_agent.webhook_secret).verify(hook["body"], hook["headers"])
    assert event["type"] == "task.assigned" and event["data"]["task"]["id"] == task["id"]
    kinds = [e["kind"] for e in admin.events(task["id"])]
    assert kinds.count("completed") == 1, kinds
    assert not echo_agent.events("bad_signature")


def test_dispatcher_killed_mid_stream_restarts_and_every_task_completes_once(
    stack: Stack, admin: Client, echo_agent: AgentContainer
) -> None:
    before = stack.inspect("dispatcher")
    old_pid, old_restarts = before["State"]["Pid"], before["RestartCount"]
    total, kill_after = 40, 12
    ids: list[str] = []
    enough = threading.Event()
    errors: list[BaseException] = []

    def submit_stream() -> None:
        try:
            with stack.admin() as client:
                for n in range(total):
                    ids.append(client.submit(AGENT, {"n": n})["id"])
                    if len(ids) == kill_after:
                        enough.set()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
            enough.set()

    submitter = threading.Thread(target=submit_stream)
    submitter.start()
    assert enough.wait(60), "the submitter stalled"
    # A crash, not a stop: SIGKILL the container's main process from the host. `docker kill` would count as
    # a deliberate stop, which the restart policy never undoes.
    os.kill(old_pid, signal.SIGKILL)
    submitter.join(120)
    assert not errors, errors
    assert len(ids) == total

    def restarted() -> dict[str, Any] | None:
        info = stack.inspect("dispatcher")
        state = info["State"]
        fresh = state["Running"] and state["Pid"] not in (0, old_pid)
        return info if fresh and info["RestartCount"] > old_restarts else None

    after = wait_until(restarted, timeout=60, what="the restart policy to bring the dispatcher back")
    assert after["RestartCount"] == old_restarts + 1

    def all_terminal() -> list[dict[str, Any]] | None:
        tasks = [admin.get_task(i) for i in ids]
        return tasks if all(t["state"] in ("completed", "failed", "canceled") for t in tasks) else None

    tasks = wait_until(all_terminal, timeout=120, what="every task of the stream to finish", interval=1)
    assert [t["state"] for t in tasks] == ["completed"] * total
    assert [t["result"]["payload"] for t in tasks] == [{"n": n} for n in range(total)]
    done = completions(echo_agent)
    assert {i: done[i] for i in ids} == dict.fromkeys(ids, 1)  # each completed exactly once, none twice
    for task_id in ids[:3] + ids[-3:]:
        kinds = [e["kind"] for e in admin.events(task_id)]
        assert kinds.count("completed") == 1 and kinds.count("claimed") == 1, kinds


def test_down_and_up_keeps_agents_tasks_and_memory(stack: Stack, admin: Client, echo_agent: AgentContainer) -> None:
    first = admin.submit(AGENT, {"keep": "me"})
    assert admin.wait_for(first["id"], timeout=60)["state"] == "completed"
    admin.mem_put("mesh", "e2e/persist", {"survives": ["down", "up"]}, tags=["e2e"])
    agents_before = {a["name"] for a in admin.list_agents()}
    echo_agent.stop()  # it sits on the compose network, which `down` removes

    stack.compose("down", "--timeout", "10")
    assert not stack.compose("ps", "-q").stdout.strip()
    assert docker("volume", "inspect", f"{stack.project}_data").returncode == 0  # kept
    stack.up()

    with stack.admin() as again:  # the api's published port changed
        assert {a["name"] for a in again.list_agents()} == agents_before
        kept = again.get_task(first["id"])
        assert kept["state"] == "completed" and kept["result"]["payload"] == {"keep": "me"}
        item = again.mem_get("mesh", "e2e/persist")
        assert item["value"] == {"survives": ["down", "up"]} and item["tags"] == ["e2e"]
        assert len(again.events(first["id"])) >= 4
