"""The `tunnel` profile end to end: an sshd container stands for a host off the mesh, with an agent behind
it that listens on that host's loopback only. The sidecar's `-L` carries the notifier's webhook to the
agent, its `-R` carries the agent's calls back to the api; after the SSH connection is cut (the sshd
container restarts), autossh restores it inside the same sidecar and the next webhook arrives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from mcs.client import Client

from .conftest import AGENT_PORT, AgentContainer, Stack, docker, start_agent, wait_until

AGENT = "e2e-offmesh"


def _registered_since(admin: Client, since: float) -> bool:
    """The agent registered (through the -R forward: it has no other way to the api) after `since`."""
    agent = admin.get_agent(AGENT)
    last_seen = agent.get("last_seen")
    return bool(agent["status"] == "online" and last_seen and datetime.fromisoformat(last_seen).timestamp() > since)


@pytest.fixture(scope="module")
def offmesh(stack: Stack) -> Iterator[AgentContainer]:
    """The sshd container with the agent behind it, then the tunnel sidecar connecting to it."""
    keys = stack.tmp / "keys"
    with stack.admin() as admin:
        host = start_agent(
            stack,
            admin,
            name=AGENT,
            image=stack.images.sshd,
            mcs_url="http://127.0.0.1:8080",  # the -R forward on this host's loopback
            listen=f"127.0.0.1:{AGENT_PORT}",  # reachable only from this host (and so through -L)
            notify_url=f"http://tunnel:{AGENT_PORT}/hook",  # the sidecar's -L listener
            command=None,  # the image's start.sh runs sshd and the agent
            container_name=f"{stack.project}-sshd",
            mounts={str(keys): "/keys"},  # its host key (pinned in the sidecar's known_hosts), our client key
        )
    yield host
    host.stop()


def test_webhook_and_callbacks_go_through_the_sidecar_and_survive_a_cut(
    stack: Stack, admin: Client, offmesh: AgentContainer
) -> None:
    stack.up(["tunnel"], profiles=["tunnel"])
    started = time.time() - 1
    wait_until(lambda: _registered_since(admin, started), timeout=60, what="the agent to register through -R")

    first = admin.submit(AGENT, {"via": "tunnel"})
    done = admin.wait_for(first["id"], timeout=60)
    assert done["state"] == "completed" and done["result"]["payload"] == {"via": "tunnel"}
    hook = done["result"]["webhook"]
    assert Webhook(offmesh.webhook_secret).verify(hook["body"], hook["headers"])["data"]["task"]["id"] == first["id"]

    sidecar_before = stack.inspect("tunnel")
    cut = time.time()
    docker("restart", "--time", "1", f"{stack.project}-sshd")  # every SSH connection to it drops
    # The agent restarted with its host and registers again only once the tunnel is back.
    wait_until(lambda: _registered_since(admin, cut), timeout=90, what="autossh to restore the tunnel")

    second = admin.submit(AGENT, {"after": "cut"})
    done = admin.wait_for(second["id"], timeout=90)
    assert done["state"] == "completed" and done["result"]["payload"] == {"after": "cut"}
    hook = done["result"]["webhook"]
    assert Webhook(offmesh.webhook_secret).verify(hook["body"], hook["headers"])["data"]["task"]["id"] == second["id"]

    sidecar_after: dict[str, Any] = stack.inspect("tunnel")
    # autossh did it inside the same container: no container restart, the same main process.
    assert sidecar_after["RestartCount"] == sidecar_before["RestartCount"]
    assert sidecar_after["State"]["Pid"] == sidecar_before["State"]["Pid"]
    assert "closed by remote host" in stack.logs("tunnel")  # ssh saw the cut
    # The check the sidecar's HEALTHCHECK runs (README: how to check a tunnel is alive).
    assert docker("exec", stack.container("tunnel"), "mcs-tunnel", "check", check=False).returncode == 0
