"""Agent accounts over real HTTP against `mcs up`: what deleting an agent removes, capabilities the admin
grants, the paged agent list, the dispatcher's cost of heartbeats, and the status ports under an idle
client."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys

import httpx
import pytest

from mcs.client import Client, McsApiError

from .conftest import FakeAgent, Mesh, uid, wait_until

pytestmark = pytest.mark.acceptance


def error(call) -> tuple[int, str, str]:
    with pytest.raises(McsApiError) as info:
        call()
    return info.value.status, info.value.code, info.value.message


def agent_client(mesh: Mesh, name: str, capabilities: list[str] | None = None) -> Client:
    secret = mesh.admin.create_agent(name, capabilities)["secret"]
    return Client(mesh.url, agent_id=name, agent_secret=secret, timeout=15)


def mcs_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "MCS_URL": mesh.url, "MCS_ADMIN_TOKEN": mesh.admin_token}
    return subprocess.run([sys.executable, "-m", "mcs", *args], env=env, capture_output=True, text=True, timeout=60)


def agent_events(mesh: Mesh, name: str) -> list[tuple[str, dict | None]]:
    conn = sqlite3.connect(f"file:{mesh.db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT kind, detail FROM agent_events WHERE agent = ? ORDER BY id", (name,)).fetchall()
    finally:
        conn.close()
    return [(kind, json.loads(detail) if detail else None) for kind, detail in rows]


# ---------------------------------------------------------------- deleting an agent


def test_a_deleted_agents_memory_does_not_pass_to_the_next_agent_given_its_name(mesh):
    name = f"dora-{uid()}"
    dora = agent_client(mesh, name)
    dora.mem_put(f"private:{name}", "diary", {"secret": "the old dora's"})
    dora.mem_put(f"agent:{name}", "status", "busy")
    dora.mem_put(f"agent:{name}", "notes", [1, 2])
    dora.mem_put("mesh", f"shared-{name}", "stays")  # the mesh namespace is everyone's: not the agent's to lose
    dora.close()

    removed = mesh.admin.delete_agent(name)
    assert removed["deleted"] == name
    assert removed["memory_keys"] == {f"private:{name}": 1, f"agent:{name}": 2}
    deleted = [detail for kind, detail in agent_events(mesh, name) if kind == "deleted"]
    assert deleted and deleted[0]["memory_keys"] == {f"private:{name}": 1, f"agent:{name}": 2}

    new_dora = agent_client(mesh, name)
    with new_dora:
        assert error(lambda: new_dora.mem_get(f"private:{name}", "diary"))[:2] == (404, "no_such_key")
        assert new_dora.mem_list(f"agent:{name}")["items"] == []
        assert new_dora.mem_get("mesh", f"shared-{name}")["value"] == "stays"
    assert error(lambda: mesh.admin.mem_get(f"private:{name}", "diary"))[0] == 404


def test_admin_agent_delete_on_the_command_line_says_what_it_removed(mesh):
    name = f"cli-{uid()}"
    with agent_client(mesh, name) as a:
        a.mem_put(f"private:{name}", "k1", 1)
        a.mem_put(f"private:{name}", "k2", 2)
    done = mcs_cli(mesh, "admin", "agent", "delete", name)
    assert done.returncode == 0, done.stderr
    assert f"deleted {name}: 2 keys from private:{name}, 0 keys from agent:{name}" in done.stdout
    again = mcs_cli(mesh, "admin", "agent", "delete", name, "--json")
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "Traceback" not in again.stderr


# ---------------------------------------------------------------- granted capabilities


def test_an_agent_registers_only_capabilities_it_was_granted_and_takes_no_other_work(mesh):
    alpha, beta = f"alpha-{uid()}", f"beta-{uid()}"
    name = f"granted-{uid()}"
    with agent_client(mesh, name, [alpha]) as agent:
        status, code, message = error(lambda: agent.register([alpha, beta], notify_url=None))
        assert (status, code) == (422, "capability_not_granted")
        assert beta in message and "mcs admin agent create" in message
        shown = mesh.admin.get_agent(name)
        assert shown["granted"] == [alpha] and shown["status"] == "offline"

        assert agent.register([alpha])["status"] == "online"
        work = mesh.admin.submit("job", {"n": 1}, capabilities=[beta])
        assert error(lambda: agent.claim(work["id"]))[:2] == (403, "missing_capability")
        assert agent.claim_next() is None
        assert mesh.admin.get_task(work["id"])["state"] == "queued"
        mesh.admin.cancel(work["id"])


def test_an_agent_created_without_capabilities_stays_unrestricted(mesh):
    name = f"open-{uid()}"
    anything = [f"x-{uid()}", f"y-{uid()}"]
    with agent_client(mesh, name) as agent:
        assert agent.register(anything)["status"] == "online"
        shown = mesh.admin.get_agent(name)
        assert shown["granted"] is None and shown["capabilities"] == sorted(anything)
        work = mesh.admin.submit("job", {"n": 2}, capabilities=anything)
        assert agent.claim(work["id"])["state"] == "claimed"


# ---------------------------------------------------------------- listing agents


def test_the_agent_list_comes_in_pages_and_the_client_and_cli_follow_them(mesh):
    for i in range(5):
        mesh.admin.create_agent(f"page-{i}-{uid()}")
    everyone = mesh.admin.list_agents()
    names = [a["name"] for a in everyone]
    assert len(names) >= 5 and names == sorted(names) and len(set(names)) == len(names)

    seen, cursor, pages = [], None, 0
    while True:
        page = mesh.admin.agents_page(limit=2, cursor=cursor)
        assert len(page["agents"]) <= 2
        seen += [a["name"] for a in page["agents"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names and pages == (len(names) + 1) // 2
    assert [a["name"] for a in mesh.admin.list_agents(page_size=3)] == names

    listed = mcs_cli(mesh, "agent", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["name"] for a in json.loads(listed.stdout)] == names

    bad = httpx.get(f"{mesh.url}/v1/agents", params={"cursor": "not-a-cursor"}, headers=_admin(mesh))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_cursor"
    too_many = httpx.get(f"{mesh.url}/v1/agents", params={"limit": 5000}, headers=_admin(mesh))
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "validation_error"


def _admin(mesh: Mesh) -> dict[str, str]:
    return {"Authorization": f"Bearer {mesh.admin_token}"}


# ---------------------------------------------------------------- the dispatcher and heartbeats


def _agent_reads(mesh: Mesh) -> float:
    text = httpx.get(f"http://127.0.0.1:{mesh.ports['dispatcher']}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mcs_dispatcher_agent_reads_total{")
    )


def test_heartbeats_that_change_nothing_cost_the_dispatcher_no_reads_and_a_change_is_routed(mesh):
    have, need = f"have-{uid()}", f"need-{uid()}"
    agent = FakeAgent(mesh, f"hb-{uid()}", [])  # created with no grant: it may offer anything
    agent.capabilities = [have]
    try:
        agent.register(ttl=600)
        # A task nobody can take yet keeps the queue non-empty, so every wake-up looks at the agents.
        waiting = mesh.admin.submit("job", {"n": 3}, capabilities=[need])
        wait_until(lambda: _agent_reads(mesh) > 0, timeout=10, what="the dispatcher to read the agents")
        before = _agent_reads(mesh)
        for _ in range(40):
            agent.register(ttl=600)  # the same capabilities, notify_url and concurrency: a heartbeat
        # The agent now also offers `need` (its grant is open): the dispatcher must notice and route.
        agent.capabilities = [have, need]
        agent.register(ttl=600)
        done = mesh.admin.wait_for(waiting["id"], timeout=15)
        assert done["state"] == "completed" and done["assigned_to"] == agent.name
        assert _agent_reads(mesh) - before <= 3  # the change, not one read per heartbeat
        assert [kind for kind, _ in agent_events(mesh, agent.name)].count("changed") == 1
        assert agent.errors == []
    finally:
        agent.close()


# ---------------------------------------------------------------- status ports


@pytest.mark.parametrize("process", ["dispatcher", "watchdog", "notifier"])
def test_status_port_answers_healthz_while_other_clients_sit_idle(mesh, process):
    port = mesh.ports[process]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        idle[1].sendall(b"GET /metr")  # a request that never finishes
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
        assert answer.status_code == 200 and answer.json()["process"] == process
    finally:
        for s in idle:
            s.close()
