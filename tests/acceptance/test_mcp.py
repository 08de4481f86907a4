"""The MCP face on the real `mcs up`, driven by the `mcp` SDK's own client: `mcs mcp` over stdio, the same
tools over streamable HTTP at /mcp on the api, and `mcs agent mcp` wrapping a small stdio MCP server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from .conftest import FakeAgent, Mesh, uid, wait_until

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0  # seconds
WORD_COUNT_SERVER = Path(__file__).parent.parent / "mcp_word_count.py"
TOOLS = {
    "submit_task",
    "submit_workflow",
    "get_task",
    "wait_task",
    "list_tasks",
    "cancel_task",
    "list_agents",
    "memory_get",
    "memory_put",
    "memory_list",
    "memory_delete",
    "claim_next",
    "complete_task",
    "fail_task",
}


@asynccontextmanager
async def stdio_session(env: dict[str, str]) -> AsyncIterator[ClientSession]:
    """`mcs mcp` as a child process, as Claude Code starts it, with a client session on its stdio."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcs", "mcp"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(mesh: Mesh, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """A client session with /mcp on the api, sending `headers` (the caller's credentials) on each request."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
        streamable_http_client(f"{mesh.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, progress: list[str] | None = None, **arguments: Any) -> Any:
    """The tool's structured result (the test fails on a tool error)."""

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        assert progress is not None
        progress.append(message or "")

    result = await session.call_tool(tool, arguments, progress_callback=on_progress if progress is not None else None)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def tool_error(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The text of the tool error the call must answer with."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    (content,) = result.content
    assert content.type == "text"
    return content.text


def event_streams(mesh: Mesh) -> float:
    """Open event subscriptions in the api (GET /v1/events streams and waits on the hub)."""
    text = httpx.get(f"{mesh.url}/metrics", timeout=5).text
    found = re.search(r"^mcs_event_streams (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def wait_with_progress(
    mesh: Mesh, session: ClientSession, worker: FakeAgent, task_id: str
) -> tuple[dict[str, Any], list[str]]:
    """wait_task while an agent claims the task, reports progress and completes it: the wait's answer and
    the progress messages it sent on the way."""
    progress: list[str] = []
    answer: dict[str, Any] = {}
    before = event_streams(mesh)

    async def wait() -> None:
        answer.update(await call(session, "wait_task", progress, task_id=task_id, timeout=DEADLINE))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        # The wait follows the task's events once its subscription is open; then the agent works.
        await anyio.to_thread.run_sync(
            lambda: wait_until(lambda: event_streams(mesh) > before, timeout=DEADLINE, what="wait_task to subscribe")
        )

        def work() -> None:
            claimed = worker.client.claim_next()
            assert claimed is not None and claimed["id"] == task_id
            worker.client.progress(task_id, claimed["claim_token"], message="halfway", percent=50)
            worker.client.complete(task_id, claimed["claim_token"], {"verdict": "fine"})

        await anyio.to_thread.run_sync(work)
    return answer, progress


def test_mcs_mcp_over_stdio_submits_waits_and_uses_memory(mesh: Mesh, agent_factory, tmp_path: Path):
    kind = f"mcp-echo-{uid()}"
    helper = agent_factory(mesh, capabilities=[kind])  # completes each task with its payload
    slow_kind = f"mcp-slow-{uid()}"
    slow = agent_factory(mesh, capabilities=[slow_kind], push=False)  # the test drives it
    env = {"MCS_URL": mesh.url, "MCS_ADMIN_TOKEN": mesh.admin_token, "HOME": str(tmp_path)}

    async def scenario() -> None:
        async with stdio_session(env) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == TOOLS
            submit_schema = tools["submit_task"].input_schema
            assert submit_schema["required"] == ["type"]
            assert submit_schema["properties"]["aggregate"]["anyOf"][0]["enum"] == ["collect", "consensus"]
            assert tools["wait_task"].input_schema["properties"]["timeout"]["maximum"] == 3600

            # A whole flow: submit, a real agent completes it, wait_task returns the result.
            task = await call(session, "submit_task", type=kind, payload={"n": 1})
            done = await call(session, "wait_task", task_id=task["id"], timeout=DEADLINE)
            assert done["done"] is True and done["task"]["state"] == "completed", done
            assert done["task"]["result"] == {"task_id": task["id"], "agent": helper.name, "payload": {"n": 1}}

            # While it waits, wait_task says what happens to the task (from the event stream).
            slow_task = await call(session, "submit_task", type=slow_kind, payload="take your time")
            answer, progress = await wait_with_progress(mesh, session, slow, slow_task["id"])
            assert answer["done"] is True and answer["task"]["result"] == {"verdict": "fine"}, answer
            assert f"claimed by {slow.name}" in progress, progress
            assert "progress 50%: halfway" in progress, progress

            # A timeout answers with the state as it is.
            idle = await call(session, "submit_task", type=f"nobody-{uid()}")
            waited = await call(session, "wait_task", task_id=idle["id"], timeout=0.5)
            assert waited == {"done": False, "task": waited["task"]} and waited["task"]["state"] == "queued"

            # Shared memory.
            key = f"notes/{uid()}"
            put = await call(session, "memory_put", namespace="mesh", key=key, value={"hello": "mesh"}, tags=["t"])
            assert put["version"] == 1
            got = await call(session, "memory_get", namespace="mesh", key=key)
            assert got["value"] == {"hello": "mesh"} and got["tags"] == ["t"]
            listed = await call(session, "memory_list", namespace="mesh", prefix="notes/")
            assert key in [item["key"] for item in listed["items"]]
            await call(session, "memory_delete", namespace="mesh", key=key)

            # MCS errors are tool errors with their code, and the server lives on.
            gone = await tool_error(session, "memory_get", namespace="mesh", key=key)
            assert gone == f"no_such_key: no key {key!r} in mesh", gone
            assert (await tool_error(session, "get_task", task_id="no-such-task")).startswith("not_found: ")
            stale = await tool_error(session, "memory_put", namespace="mesh", key=key, value=1, if_match=7)
            assert stale.startswith("version_mismatch: "), stale
            assert (await tool_error(session, "memory_get", namespace="nowhere", key="k")).startswith("bad_namespace: ")
            assert (await tool_error(session, "claim_next")).startswith("agent_only: ")
            assert (await call(session, "get_task", task_id=task["id"]))["state"] == "completed"

    anyio.run(scenario)


def test_mcs_mcp_with_agent_credentials_claims_and_completes(mesh: Mesh, agent_factory, tmp_path: Path):
    kind = f"mcp-work-{uid()}"
    worker = agent_factory(mesh, capabilities=[kind], push=False)
    task = mesh.admin.submit(kind, {"text": "count me"})
    env = {"MCS_URL": mesh.url, "MCS_AGENT_ID": worker.name, "MCS_AGENT_SECRET": worker.secret}
    env |= {"HOME": str(tmp_path)}

    async def scenario() -> None:
        async with stdio_session(env) as session:
            claimed = (await call(session, "claim_next", wait=5))["task"]
            assert claimed["id"] == task["id"] and claimed["claim_token"]
            done = await call(
                session, "complete_task", task_id=claimed["id"], claim_token=claimed["claim_token"], result=2
            )
            assert done["state"] == "completed"
            assert (await call(session, "claim_next"))["task"] is None

    anyio.run(scenario)
    finished = mesh.admin.get_task(task["id"])
    assert finished["state"] == "completed" and finished["result"] == 2 and finished["assigned_to"] == worker.name


def test_mcp_over_http_on_the_api_acts_as_the_caller(mesh: Mesh, agent_factory):
    kind = f"mcp-http-{uid()}"
    helper = agent_factory(mesh, capabilities=[kind])
    slow_kind = f"mcp-http-slow-{uid()}"
    slow = agent_factory(mesh, capabilities=[slow_kind], push=False)
    admin = {"Authorization": f"Bearer {mesh.admin_token}"}

    # Without valid credentials /mcp is a 401 with the api's JSON error, before any MCP processing.
    hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"X-Agent-ID": slow.name, "X-Agent-Secret": "wrong-secret"},
    ):
        refused = httpx.post(f"{mesh.url}/mcp", json=hello, headers=headers, timeout=10)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthorized"

    async def as_admin() -> None:
        async with http_session(mesh, admin) as session:
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS
            task = await call(session, "submit_task", type=kind, payload="over http")
            done = await call(session, "wait_task", task_id=task["id"], timeout=DEADLINE)
            assert done["done"] and done["task"]["result"]["agent"] == helper.name, done
            assert done["task"]["submitted_by"] == "admin"

            slow_task = await call(session, "submit_task", type=slow_kind)
            answer, progress = await wait_with_progress(mesh, session, slow, slow_task["id"])
            assert answer["done"] is True and answer["task"]["result"] == {"verdict": "fine"}, answer
            assert f"claimed by {slow.name}" in progress and "progress 50%: halfway" in progress

            key = f"http-{uid()}"
            await call(session, "memory_put", namespace="mesh", key=key, value=[1, 2])
            assert (await call(session, "memory_get", namespace="mesh", key=key))["value"] == [1, 2]
            assert (await tool_error(session, "cancel_task", task_id="nope")).startswith("not_found: ")

    async def as_agent() -> None:
        mine = {"X-Agent-ID": slow.name, "X-Agent-Secret": slow.secret}
        async with http_session(mesh, mine) as session:
            # The tools act as this agent: it writes its own private memory, not another agent's namespace.
            await call(session, "memory_put", namespace=f"private:{slow.name}", key="k", value="mine")
            denied = await tool_error(session, "memory_put", namespace=f"agent:{helper.name}", key="k", value=1)
            assert denied.startswith("namespace_forbidden: "), denied
            task = await call(session, "submit_task", type=slow_kind, payload="for me")
            assert task["submitted_by"] == slow.name
            claimed = (await call(session, "claim_next", wait=5))["task"]
            assert claimed["id"] == task["id"]
            await call(session, "fail_task", task_id=task["id"], claim_token=claimed["claim_token"], error="nope",
                       retryable=False)  # fmt: skip

    anyio.run(as_admin)
    anyio.run(as_agent)
    stored = mesh.admin.mem_get(f"private:{slow.name}", "k")
    assert stored["value"] == "mine" and stored["updated_by"] == slow.name
    # The rest of the api is as it was: its routes, its OpenAPI document (which does not list /mcp).
    assert httpx.get(f"{mesh.url}/healthz", timeout=5).json()["status"] == "ok"
    spec = httpx.get(f"{mesh.url}/openapi.json", timeout=5).json()
    assert "/v1/tasks" in spec["paths"] and "/mcp" not in spec["paths"]
    assert httpx.get(f"{mesh.url}/mcp/other", headers=admin, timeout=5).status_code == 404
    metrics = httpx.get(f"{mesh.url}/metrics", timeout=5).text
    assert 'mcs_mcp_tool_calls_total{outcome="ok",tool="wait_task"}' in metrics
    assert 'mcs_http_requests_total{method="POST",route="/mcp",status="401"} 3.0' in metrics


def start_mcp_agent(mesh: Mesh, log_path: Path) -> tuple[str, dict[str, Any], subprocess.Popen[bytes]]:
    """`mcs agent mcp` wrapping tests/mcp_word_count.py, once it is online: (name, credentials, process)."""
    name = f"mcp-agent-{uid()}"
    creds = mesh.admin.create_agent(name, [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")} | {
        "MCS_URL": mesh.url,
        "MCS_AGENT_ID": name,
        "MCS_AGENT_SECRET": creds["secret"],
        "MCS_WEBHOOK_SECRET": creds["webhook_secret"],
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "mcs", "agent", "mcp", "--", sys.executable, str(WORD_COUNT_SERVER)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until(
        lambda: mesh.admin.get_agent(name)["status"] == "online" or proc.poll() is not None,
        timeout=DEADLINE,
        what="the MCP agent to register",
    )
    assert proc.poll() is None, log_path.read_text()
    return name, creds, proc


def test_agent_mcp_serves_a_stdio_mcp_servers_tools(mesh: Mesh, tmp_path: Path):
    log_path = tmp_path / "mcp-agent.log"
    name, creds, proc = start_mcp_agent(mesh, log_path)
    try:
        tools = ["word_count", "shout", "refuse", "env_has", "crash"]
        assert sorted(mesh.admin.get_agent(name)["capabilities"]) == sorted(f"mcp:{t}" for t in tools)

        def run(payload: Any, kind: str = "mcp:word_count") -> dict[str, Any]:
            task = mesh.admin.submit(kind, payload, max_retries=2)
            done: dict[str, Any] = mesh.admin.wait_for(task["id"], timeout=DEADLINE)
            assert done["assigned_to"] == name, done
            return done

        counted = run({"tool": "word_count", "arguments": {"text": "the quick brown fox"}})
        assert counted["state"] == "completed" and counted["result"] == {"words": 4, "characters": 19}, counted
        shouted = run({"arguments": {"text": "hi there"}}, kind="mcp:shout")  # the type names the tool
        assert shouted["state"] == "completed" and shouted["result"] == "HI THERE", shouted
        refused = run({"tool": "refuse", "arguments": {"reason": "not today"}}, kind="mcp:refuse")
        assert refused["state"] == "failed" and refused["attempts"] == 1, refused  # for good: no retry
        assert "tool refuse failed" in refused["error"] and "refused: not today" in refused["error"]
        unknown = run({"tool": "no_such_tool"})
        assert unknown["state"] == "failed" and "unknown tool 'no_such_tool'" in unknown["error"], unknown
        bad_arguments = run({"tool": "word_count", "arguments": {"words": 3}})
        assert bad_arguments["state"] == "failed" and "text" in bad_arguments["error"], bad_arguments
        # The wrapped server never sees the agent's MCS credentials.
        leaked = run({"tool": "env_has", "arguments": {"name": "MCS_AGENT_SECRET"}}, kind="mcp:env_has")
        assert leaked["state"] == "completed" and leaked["result"] == {"result": False}, leaked
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, log_path.read_text()
    # It told MCS it is going (a last registration with a 1 s TTL): offline without waiting out 300 s.
    wait_until(lambda: mesh.admin.get_agent(name)["status"] == "offline", timeout=DEADLINE, what="offline")
    assert creds["secret"] not in log_path.read_text()


def test_an_mcp_client_fans_a_review_out_and_reads_the_consensus(mesh: Mesh, agent_factory):
    """The README's worked example: list_agents, submit_task with route all + consensus, wait_task."""
    kind = f"mcs-review-{uid()}"

    def reviewer(extra: str) -> Callable[[FakeAgent, dict[str, Any]], Any]:
        def review(agent: FakeAgent, task: dict[str, Any]) -> Any:
            assert task["payload"]["files"][0]["path"] == "orders.py"
            found = [{"file": "orders.py", "line": 1, "severity": "observation", "title": "Unused import: os"}]
            found.append({"file": "orders.py", "line": 9, "severity": "critical", "title": extra})
            return {"findings": found}

        return review

    one = agent_factory(mesh, capabilities=[kind], result=reviewer("Use of eval"))
    two = agent_factory(mesh, capabilities=[kind], result=reviewer("Hard-coded password"))
    payload = {"root": "shop", "files": [{"path": "orders.py", "content": "import os\n"}]}

    async def scenario() -> dict[str, Any]:
        async with http_session(mesh, {"Authorization": f"Bearer {mesh.admin_token}"}) as session:
            agents = (await call(session, "list_agents"))["agents"]
            assert {a["name"] for a in agents if kind in a["capabilities"]} == {one.name, two.name}
            task = await call(session, "submit_task", type=kind, route="all", aggregate="consensus", payload=payload)
            done: dict[str, Any] = await call(session, "wait_task", task_id=task["id"], timeout=DEADLINE)
            return done

    done = anyio.run(scenario)
    assert done["done"] and done["task"]["state"] == "completed", done
    result = done["task"]["result"]
    assert result["aggregate"] == "consensus"
    agreed = [f for f in result["findings"] if f["consensus"] >= 2]
    assert [(f["title"], sorted(f["agents"])) for f in agreed] == [("Unused import: os", sorted([one.name, two.name]))]
    assert result["summary"]["findings"] == 3


def test_long_waits_outlast_the_apis_read_timeout(mesh_factory, agent_factory, tmp_path: Path):
    """The api ends each event stream and each HTTP response before its read timeout (here 3 s): a stdio
    wait_task follows the task across reconnections, and a long wait over /mcp answers instead of being cut."""
    short = mesh_factory(MCS_API_READ_TIMEOUT="3")  # event streams and /mcp waits end after 2 s
    kind = f"mcp-long-{uid()}"
    worker = agent_factory(short, capabilities=[kind], push=False)
    env = {"MCS_URL": short.url, "MCS_ADMIN_TOKEN": short.admin_token, "HOME": str(tmp_path)}

    async def over_stdio() -> tuple[dict[str, Any], list[str]]:
        async with stdio_session(env) as session:
            task = await call(session, "submit_task", type=kind)
            progress: list[str] = []
            answer: dict[str, Any] = {}

            async def wait() -> None:
                answer.update(await call(session, "wait_task", progress, task_id=task["id"], timeout=DEADLINE))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                # The first heartbeat comes after 5 s: the first event stream has ended by then.
                await anyio.to_thread.run_sync(
                    lambda: wait_until(lambda: progress, timeout=DEADLINE, what="a heartbeat from wait_task")
                )
                assert progress == ["still queued"], progress

                def work() -> None:
                    claimed = worker.client.claim_next()
                    assert claimed is not None and claimed["id"] == task["id"]
                    worker.client.complete(task["id"], claimed["claim_token"], "late")

                await anyio.to_thread.run_sync(work)
            return answer, progress

    answer, progress = anyio.run(over_stdio)
    assert answer["done"] and answer["task"]["result"] == "late", answer
    assert f"claimed by {worker.name}" in progress and f"completed by {worker.name}" in progress, progress

    async def over_http() -> dict[str, Any]:
        async with http_session(short, {"Authorization": f"Bearer {short.admin_token}"}) as session:
            idle = await call(session, "submit_task", type=f"nobody-{uid()}")
            waited: dict[str, Any] = await call(session, "wait_task", task_id=idle["id"], timeout=DEADLINE)
            return waited

    waited = anyio.run(over_http)
    assert waited["done"] is False and waited["task"]["state"] == "queued", waited


def test_agent_mcp_stops_when_its_mcp_server_dies(mesh: Mesh, tmp_path: Path):
    log_path = tmp_path / "mcp-agent.log"
    name, _, proc = start_mcp_agent(mesh, log_path)
    try:
        task = mesh.admin.submit("mcp:crash", {}, max_retries=3)
        code = proc.wait(timeout=DEADLINE)  # it exits by itself: no more work for a server that is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert code == 1 and "the MCP server word-count stopped; the agent went offline" in log, log
    assert "Traceback" not in log, log
    wait_until(lambda: mesh.admin.get_agent(name)["status"] == "offline", timeout=DEADLINE, what="offline")
    retried = mesh.admin.get_task(task["id"])  # failed retryably: it waits for another agent
    assert retried["state"] in ("retrying", "queued") and retried["attempts"] == 1, retried
    assert "is gone" in retried["error"], retried


def test_mcp_takes_the_credential_forms_a2a_takes(mesh: Mesh, agent_factory):
    """MCP clients can often send only a bearer token: /mcp takes `Bearer NAME:SECRET` for an agent, as
    /a2a does (and any case of "bearer"); a wrong secret in that form is a 401 like any other."""
    agent = agent_factory(mesh, capabilities=[f"mcp-bearer-{uid()}"], push=False)
    other = agent_factory(mesh, capabilities=[f"mcp-bearer-{uid()}"], push=False)
    other.client.mem_put(f"private:{other.name}", "b", "theirs")

    async def scenario() -> None:
        async with http_session(mesh, {"Authorization": f"Bearer {agent.name}:{agent.secret}"}) as session:
            await call(session, "memory_put", namespace=f"private:{agent.name}", key="b", value="by bearer")
            task = await call(session, "submit_task", type=f"mcp-bearer-{uid()}")
            assert task["submitted_by"] == agent.name
            denied = await tool_error(session, "memory_get", namespace=f"private:{other.name}", key="b")
            assert denied.startswith("no_such_key: "), denied  # another agent's private key: as if absent
        async with http_session(mesh, {"Authorization": f"bearer {mesh.admin_token}"}) as session:
            got = await call(session, "memory_get", namespace=f"private:{agent.name}", key="b")
            assert got["value"] == "by bearer"

    anyio.run(scenario)
    hello = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for token in (f"{agent.name}:wrong", f"nobody:{agent.secret}", "not-the-token"):
        refused = httpx.post(f"{mesh.url}/mcp", json=hello, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthorized"
        assert agent.secret not in refused.text and mesh.admin_token not in refused.text
    # Too big a body: the api's JSON 413, as /a2a and every route answer it (the SDK's own is plain text).
    admin = {"Authorization": f"Bearer {mesh.admin_token}", "Content-Type": "application/json"}
    big = httpx.post(f"{mesh.url}/mcp", content=b'{"a":"' + b"x" * 2_000_000 + b'"}', headers=admin, timeout=10)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large", big.text


def test_a_memory_key_with_dot_segments_never_reaches_another_endpoint(mesh: Mesh, agent_factory):
    """Keys may hold `/`, so a key like `../../agents/NAME` must stay a key: a memory_delete told that by a
    model must not become DELETE /v1/agents/NAME with the caller's (here the admin's) rights."""
    victim = agent_factory(mesh, capabilities=[f"mcp-dots-{uid()}"], push=False)
    key = f"../../agents/{victim.name}"

    async def scenario() -> None:
        async with http_session(mesh, {"Authorization": f"Bearer {mesh.admin_token}"}) as session:
            await call(session, "memory_put", namespace="mesh", key=key, value="just a key")
            assert (await call(session, "memory_get", namespace="mesh", key=key))["value"] == "just a key"
            await call(session, "memory_delete", namespace="mesh", key=key)
            assert (await tool_error(session, "memory_delete", namespace="mesh", key=key)).startswith("no_such_key: ")
            # A namespace of dots is no namespace: a 400, not DELETE /v1/agents/NAME.
            refused = await tool_error(session, "memory_delete", namespace="..", key=f"agents/{victim.name}")
            assert refused.startswith("bad_namespace: "), refused

    anyio.run(scenario)
    assert mesh.admin.get_agent(victim.name)["name"] == victim.name  # still there
