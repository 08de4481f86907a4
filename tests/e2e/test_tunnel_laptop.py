"""Webhooks to a laptop behind NAT, through a rendezvous host both sides can SSH to (README, "Tunnel for
off-mesh agents"). Nothing can connect to the laptop and the rendezvous host runs no agent: the sidecar
(home server -> rendezvous) holds `-R 127.0.0.1:8080:api:8080` and `-L 0.0.0.0:8765:127.0.0.1:8765`, the
laptop (laptop -> rendezvous, the real `tunnel/laptop/mcs-tunnel.sh` under autossh) holds
`-L 127.0.0.1:8080:127.0.0.1:8080` and `-R 127.0.0.1:8765:127.0.0.1:8765`; everything meets on the
rendezvous host's loopback. A webhook goes notifier -> tunnel:8765 -> rendezvous -> the laptop's agent,
its calls go laptop -> rendezvous -> api. After the rendezvous host's sshd restarts (both connections cut)
autossh restores both and the next webhook arrives; after the sidecar's ssh dies without cleaning up its
control socket, the next ssh takes the socket over and the health check works again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from standardwebhooks.webhooks import Webhook

from mcs.client import Client

from .conftest import (
    AGENT_PORT,
    E2E,
    PYTHON_IMAGE,
    REPO,
    UP_TIMEOUT,
    AgentContainer,
    Stack,
    build_image,
    docker,
    start_agent,
    wait_until,
)

AGENT = "e2e-laptop"


def _registered_since(admin: Client, since: float) -> bool:
    """The agent registered after `since`: its only way to the api is laptop -> rendezvous -> sidecar."""
    agent = admin.get_agent(AGENT)
    last_seen = agent.get("last_seen")
    return bool(agent["status"] == "online" and last_seen and datetime.fromisoformat(last_seen).timestamp() > since)


def _processes(container: str) -> list[tuple[int, int, str]]:
    """(pid, parent pid, name) of every process in `container`, from /proc (slim images have no ps)."""
    script = 'for p in /proc/[0-9]*/status; do sed -n "s/^Name:\t//p; s/^Pid:\t//p; s/^PPid:\t//p" "$p"; done; true'
    words = docker("exec", container, "sh", "-c", script).stdout.split()
    return [(int(words[i + 1]), int(words[i + 2]), words[i]) for i in range(0, len(words) - 2, 3)]


def _tunnel(container: str) -> tuple[int, list[int]]:
    """The autossh process in `container` and the ssh it runs (not the short-lived `ssh -O check`s)."""
    procs = _processes(container)
    (autossh,) = [pid for pid, _, name in procs if name == "autossh"]
    return autossh, [pid for pid, parent, name in procs if name == "ssh" and parent == autossh]


@dataclass
class Rendezvous:
    stack: Stack
    host: str  # the rendezvous container's name (and host name)
    laptop: AgentContainer

    @property
    def laptop_name(self) -> str:
        return f"{self.stack.project}-{AGENT}"


def _up_sidecar_to(stack: Stack, host: str, known_hosts: str) -> None:
    """Recreate the sidecar with the rendezvous forwards (the session's settings with the TUNNEL_* changed)."""
    overrides = {
        "TUNNEL_TARGET": f"mesh@{host}:22",
        "TUNNEL_FORWARDS": f"-R 127.0.0.1:8080:api:8080 -L 0.0.0.0:{AGENT_PORT}:127.0.0.1:{AGENT_PORT}",
        "TUNNEL_KNOWN_HOSTS_FILE": known_hosts,
    }
    kept = [line for line in stack.env_file.read_text().splitlines() if line.split("=", 1)[0] not in overrides]
    env_file = stack.tmp / "rendezvous.env"
    env_file.write_text("".join(f"{line}\n" for line in kept) + "".join(f"{k}={v}\n" for k, v in overrides.items()))
    compose = ["compose", "--env-file", str(env_file), "-f", str(REPO / "compose.yaml"), "--profile", "tunnel"]
    docker(*compose, "up", "-d", "--wait", "--no-deps", "tunnel", timeout=UP_TIMEOUT)


@pytest.fixture(scope="module")
def rendezvous(pytestconfig: pytest.Config, stack: Stack) -> Iterator[Rendezvous]:
    from testcontainers.core.container import DockerContainer

    laptop_image = build_image(
        pytestconfig,
        name="mcs-e2e-laptop",
        context=E2E / "laptop",
        inputs=[E2E / "laptop"],
        args={"PYTHON_IMAGE": PYTHON_IMAGE},
    )
    keys = stack.tmp / "keys"
    host = f"{stack.project}-rendezvous"
    host_key = (keys / "host.pub").read_text().split()
    (keys / "known_hosts_rendezvous").write_text(f"{host} {host_key[0]} {host_key[1]}\n")
    (keys / "known_hosts_rendezvous").chmod(0o644)

    # The rendezvous host: sshd only (no /agent mounted, so its start.sh starts no agent).
    sshd = (
        DockerContainer(stack.images.sshd)
        .with_name(host)
        .with_kwargs(network=stack.network)
        .with_volume_mapping(str(keys), "/keys", "ro")
    )
    sshd.start()
    stack.containers.append(sshd)  # the session removes it, after a failure too
    _up_sidecar_to(stack, host, str(keys / "known_hosts_rendezvous"))

    with stack.admin() as admin:
        laptop = start_agent(
            stack,
            admin,
            name=AGENT,
            image=laptop_image,
            mcs_url="http://127.0.0.1:8080",  # the laptop's -L
            listen=f"127.0.0.1:{AGENT_PORT}",  # the laptop's loopback: only its -R reaches it
            notify_url=f"http://tunnel:{AGENT_PORT}/hook",  # the sidecar's -L
            command=None,  # start.sh: the laptop script in the background, then the agent
            mounts={str(keys): "/keys", str(REPO / "tunnel" / "laptop"): "/tunnel"},
            env={"MCS_TUNNEL_HOST": f"mesh@{host}", "MCS_TUNNEL_WEBHOOK_PORT": str(AGENT_PORT)},
        )
    yield Rendezvous(stack, host, laptop)
    laptop.stop()


def _webhook_round_trip(admin: Client, laptop: AgentContainer, payload: dict[str, str]) -> None:
    """Submit a task for the laptop's agent: its signed webhook arrives there and the agent completes it."""
    task = admin.submit(AGENT, payload)
    done = admin.wait_for(task["id"], timeout=90)
    assert done["state"] == "completed" and done["result"]["payload"] == payload
    hook = done["result"]["webhook"]  # the webhook exactly as the agent received it
    assert Webhook(laptop.webhook_secret).verify(hook["body"], hook["headers"])["data"]["task"]["id"] == task["id"]
    assert task["id"] in [e["task"] for e in laptop.events("webhook")]


def test_webhooks_reach_a_laptop_behind_nat_through_a_rendezvous_host_and_survive_a_cut(
    stack: Stack, admin: Client, rendezvous: Rendezvous
) -> None:
    started = time.time() - 60  # the agent may have registered while the fixture was still starting
    wait_until(lambda: _registered_since(admin, started), timeout=90, what="the laptop's agent to register")
    _webhook_round_trip(admin, rendezvous.laptop, {"via": "rendezvous"})

    laptop = rendezvous.laptop_name
    autossh, ssh_before = _tunnel(laptop)
    assert len(ssh_before) == 1
    cut = time.time()
    docker("restart", "--time", "1", rendezvous.host)  # both SSH connections to it drop
    wait_until(lambda: _registered_since(admin, cut + 1), timeout=120, what="autossh to restore both tunnels")
    _webhook_round_trip(admin, rendezvous.laptop, {"after": "cut"})
    # The same autossh on the laptop started a new ssh (the laptop script was not restarted).
    autossh_after, ssh_after = _tunnel(laptop)
    assert autossh_after == autossh and len(ssh_after) == 1 and ssh_after != ssh_before


def test_the_health_check_survives_an_ssh_that_left_its_control_socket_behind(
    stack: Stack, admin: Client, rendezvous: Rendezvous
) -> None:
    sidecar = stack.container("tunnel")
    wait_until(lambda: len(_tunnel(sidecar)[1]) == 1, timeout=60, what="the sidecar's ssh")
    autossh, (ssh,) = _tunnel(sidecar)
    # SIGUSR2: ssh has no handler for it, so it dies at once without removing its control socket (as in a
    # crash); autossh restarts ssh for any signal but INT, TERM and KILL.
    docker("exec", sidecar, "sh", "-c", f"kill -USR2 {ssh}")

    def restored() -> bool:
        now, pids = _tunnel(sidecar)
        assert now == autossh, "autossh itself exited"
        if pids in ([], [ssh]):
            return False
        return docker("exec", sidecar, "mcs-tunnel", "check", check=False).returncode == 0

    wait_until(restored, timeout=90, what="the new ssh to answer on the control socket (`mcs-tunnel check`)")
    _webhook_round_trip(admin, rendezvous.laptop, {"after": "stale socket"})
