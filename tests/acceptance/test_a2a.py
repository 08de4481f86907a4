"""The A2A face, spoken by the a2a-sdk's own client against the real `mcs up` (four processes) on loopback:
a message becomes an MCS task that a real (fake) agent completes, streamed as it goes; cancel; a push
config gets a signed notification from the notifier; the agent card's skills follow the online agents;
a bad token is a 401. `mcs agent a2a` is tested in test_a2a_agent.py."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.types import (
    CancelTaskRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from google.protobuf.json_format import MessageToDict
from standardwebhooks.webhooks import Webhook

from .conftest import uid, wait_until

pytestmark = pytest.mark.acceptance


def message(text: str | None = None, *, capability: str | None = None, data: Any = None, task_id: str = "") -> Message:
    parts = []
    if text is not None:
        parts.append(Part(text=text))
    if data is not None:
        from google.protobuf import struct_pb2
        from google.protobuf.json_format import ParseDict

        parts.append(Part(data=ParseDict(data, struct_pb2.Value())))
    out = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=parts, task_id=task_id)
    if capability is not None:
        out.metadata.update({"capability": capability})
    return out


async def a2a_client(url: str, token: str, *, streaming: bool = True) -> tuple[Client, httpx.AsyncClient]:
    """The SDK's client, its card fetched with the SDK's resolver, every call with the bearer token."""
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    card = await A2ACardResolver(http, url).get_agent_card()
    client = ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)
    return client, http


def card(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/.well-known/agent-card.json", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def skill_ids(url: str) -> set[str]:
    return {s["id"] for s in card(url).get("skills", [])}


async def test_a_message_streams_to_the_result_an_agent_produced(mesh, agent_factory):
    capability = f"summarize-{uid()}"

    def summarize(agent: Any, task: dict[str, Any]) -> Any:
        agent.client.progress(task["id"], task["claim_token"], message="halfway", percent=50)
        return {"answer": f"short: {task['payload']}"}

    worker = agent_factory(mesh, capabilities=[capability], result=summarize)
    wait_until(lambda: capability in skill_ids(mesh.url), timeout=10, what="the skill on the agent card")
    client, http = await a2a_client(mesh.url, mesh.admin_token)
    try:
        events = [
            MessageToDict(e)
            async for e in client.send_message(
                SendMessageRequest(message=message("a long text", capability=capability))
            )
        ]
    finally:
        await client.close()
        await http.aclose()
    first = events[0]["task"]
    assert first["status"]["state"] == "TASK_STATE_SUBMITTED"
    task_id = first["id"]
    states = [e["statusUpdate"]["status"]["state"] for e in events if "statusUpdate" in e]
    assert states[-1] == "TASK_STATE_COMPLETED", events
    updates = [e["statusUpdate"]["status"] for e in events if "statusUpdate" in e]
    said = [u.get("message", {}).get("parts", [{}])[0].get("text") for u in updates]
    assert "50% halfway" in said, events  # the agent's progress report, from the event log
    artifacts = [e["artifactUpdate"]["artifact"] for e in events if "artifactUpdate" in e]
    assert artifacts and artifacts[0]["parts"][0]["text"] == "short: a long text"
    assert artifacts[0]["parts"][1]["data"] == {"answer": "short: a long text"}
    # The same task through REST: made by that agent, submitted as the caller (the admin).
    task = mesh.admin.get_task(task_id)
    assert task["state"] == "completed" and task["assigned_to"] == worker.name
    assert task["submitted_by"] == "admin" and task["payload"] == "a long text" and task["type"] == capability

    client, http = await a2a_client(mesh.url, mesh.admin_token, streaming=False)
    try:
        got = await client.get_task(GetTaskRequest(id=task_id))
    finally:
        await client.close()
        await http.aclose()
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert got.artifacts[0].parts[0].text == "short: a long text"
    assert got.history[0].parts[0].text == "a long text"


async def test_send_message_waits_for_the_result_and_data_parts_are_the_payload(mesh, agent_factory):
    capability = f"add-{uid()}"
    agent_factory(
        mesh, capabilities=[capability], result=lambda agent, task: task["payload"]["a"] + task["payload"]["b"]
    )
    client, http = await a2a_client(mesh.url, mesh.admin_token, streaming=False)
    try:
        [event] = [
            e
            async for e in client.send_message(
                SendMessageRequest(message=message(data={"a": 2, "b": 3}, capability=capability))
            )
        ]
    finally:
        await client.close()
        await http.aclose()
    assert event.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert MessageToDict(event.task.artifacts[0])["parts"][0]["data"] == 5
    assert mesh.admin.get_task(event.task.id)["payload"] == {"a": 2, "b": 3}


async def test_cancel_ends_a_task(mesh):
    capability = f"slow-{uid()}"  # nobody serves it: the task waits, submitted
    client, http = await a2a_client(mesh.url, mesh.admin_token)
    try:
        request = SendMessageRequest(message=message("take your time", capability=capability))
        request.configuration.return_immediately = True
        stream = client.send_message(request)
        first = await anext(stream)
        await stream.aclose()
        task_id = first.task.id
        assert first.task.status.state == TaskState.TASK_STATE_SUBMITTED
        # Another client follows it (SubscribeToTask) and sees the cancel made through this one.
        follower, follower_http = await a2a_client(mesh.url, mesh.admin_token)
        seen: list[Any] = []

        async def follow() -> None:
            async for event in follower.subscribe(SubscribeToTaskRequest(id=task_id)):
                seen.append(event)

        following = asyncio.create_task(follow())
        try:
            async with asyncio.timeout(10):  # the subscription's first event (this loop must keep running)
                while not seen:
                    await asyncio.sleep(0.02)
            canceled = await client.cancel_task(CancelTaskRequest(id=task_id))
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
            await asyncio.wait_for(following, 15)
        finally:
            following.cancel()
            await follower.close()
            await follower_http.aclose()
        assert seen[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
        assert seen[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED
        with pytest.raises(Exception, match="already canceled"):
            await client.cancel_task(CancelTaskRequest(id=task_id))
    finally:
        await client.close()
        await http.aclose()
    assert mesh.admin.get_task(task_id)["state"] == "canceled"


class PushReceiver:
    """A plain HTTP server on loopback that keeps each POST's headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/a2a-push"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_push_config_gets_signed_notifications_through_to_the_result(mesh, agent_factory):
    capability = f"push-{uid()}"
    # An agent submits (its webhook_secret signs its push notifications); another one does the work.
    submitter = agent_factory(mesh, capabilities=[f"other-{uid()}"])
    agent_factory(mesh, capabilities=[capability], result=lambda agent, task: {"answer": "pushed"})
    receiver = PushReceiver()
    client, http = await a2a_client(mesh.url, f"{submitter.name}:{submitter.secret}", streaming=False)
    try:
        request = SendMessageRequest(message=message("notify me", capability=capability))
        request.configuration.return_immediately = True
        request.configuration.task_push_notification_config.CopyFrom(
            TaskPushNotificationConfig(id="mine", url=receiver.url, token="tok-123")
        )
        [first] = [e async for e in client.send_message(request)]
        task_id = first.task.id
        config = await client.get_task_push_notification_config(
            GetTaskPushNotificationConfigRequest(task_id=task_id, id="mine")
        )
        assert config.url == receiver.url and config.token == "tok-123"
        wait_until(lambda: len(receiver.received) >= 2, timeout=15, what="two push notifications")
    finally:
        await client.close()
        await http.aclose()
        receiver.close()
    assert mesh.admin.get_task(task_id)["submitted_by"] == submitter.name
    hook = Webhook(submitter.webhook_secret)
    states = {}
    for headers, body in receiver.received:
        hook.verify(body, headers)  # raises unless signed with the submitter's webhook_secret
        assert headers["x-a2a-notification-token"] == "tok-123"
        sent = json.loads(body)
        if "task" in sent:
            states[sent["task"]["status"]["state"]] = sent["task"]
        else:
            assert sent["statusUpdate"]["taskId"] == task_id
            states[sent["statusUpdate"]["status"]["state"]] = sent["statusUpdate"]
    assert set(states) == {"TASK_STATE_WORKING", "TASK_STATE_COMPLETED"}, states
    done = states["TASK_STATE_COMPLETED"]
    assert done["id"] == task_id and done["artifacts"][0]["parts"][0]["text"] == "pushed"


async def test_a_push_config_set_later_by_the_admin_carries_its_token_and_never_the_admin_token(mesh):
    capability = f"later-{uid()}"  # nobody serves it
    receiver = PushReceiver()
    client, http = await a2a_client(mesh.url, mesh.admin_token, streaming=False)
    try:
        request = SendMessageRequest(message=message("hold it", capability=capability))
        request.configuration.return_immediately = True
        [first] = [e async for e in client.send_message(request)]
        task_id = first.task.id
        made = await client.create_task_push_notification_config(
            TaskPushNotificationConfig(task_id=task_id, url=receiver.url, token="receiver-checks-this")
        )
        assert made.id == "default" and made.task_id == task_id
        await client.cancel_task(CancelTaskRequest(id=task_id))
        wait_until(lambda: receiver.received, timeout=15, what="the push notification of the cancel")
    finally:
        await client.close()
        await http.aclose()
        receiver.close()
    [(headers, body)] = receiver.received
    assert headers["x-a2a-notification-token"] == "receiver-checks-this"
    # the admin token is no signing key a receiver could be given: the push is not signed with it (or at all)
    assert "webhook-signature" not in headers and mesh.admin_token not in json.dumps(dict(headers)) + body.decode()
    assert json.loads(body)["task"]["status"]["state"] == "TASK_STATE_CANCELED"
    events = [e["kind"] for e in mesh.admin.events(task_id)]
    assert "push_config_set" in events


def test_a_push_url_the_egress_policy_refuses_is_refused_when_set(mesh):
    task = mesh.admin.submit(f"nobody-{uid()}", {"x": 1})
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "CreateTaskPushNotificationConfig",
        "params": {"taskId": task["id"], "url": "http://169.254.169.254/latest"},
    }
    headers = {"Authorization": f"Bearer {mesh.admin_token}", "A2A-Version": "1.0"}
    answer = httpx.post(f"{mesh.url}/a2a", json=call, headers=headers, timeout=10).json()
    assert answer["error"]["code"] == -32602 and "refused" in answer["error"]["message"], answer


async def test_the_card_lists_the_skills_of_online_agents_only(mesh, agent_factory):
    capability = f"translate-{uid()}"
    worker = agent_factory(mesh, capabilities=[capability])
    wait_until(lambda: capability in skill_ids(mesh.url), timeout=10, what="the skill on the card")
    body = card(mesh.url)
    assert body["capabilities"]["streaming"] is True and body["capabilities"]["pushNotifications"] is True
    assert body["supportedInterfaces"][0]["url"] == f"{mesh.url}/a2a"
    mesh.admin.delete_agent(worker.name)
    wait_until(lambda: capability not in skill_ids(mesh.url), timeout=10, what="the skill to leave the card")


def test_a_bad_token_is_a_401_before_any_json_rpc(mesh):
    call = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer someone:wrong"}):
        response = httpx.post(f"{mesh.url}/a2a", json=call, headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    ok = httpx.post(
        f"{mesh.url}/a2a",
        json=call,
        headers={"Authorization": f"Bearer {mesh.admin_token}", "A2A-Version": "1.0"},
        timeout=10,
    )
    assert ok.status_code == 200 and ok.json()["error"]["code"] == -32001  # TaskNotFound, as JSON-RPC

    admin = {"Authorization": f"Bearer {mesh.admin_token}"}
    too_big = httpx.post(f"{mesh.url}/a2a", content=b"x" * (1024 * 1024 + 1), headers=admin, timeout=10)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    wrong_method = httpx.get(f"{mesh.url}/a2a", headers=admin, timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_the_0_3_names_answer_too_and_a_message_decides_a_waiting_approval(mesh):
    """A 0.3 client (no A2A-Version header, `tasks/get`, `message/send`): an approval waits as
    input-required, and a message to it by taskId approves it."""
    gate = mesh.admin.submit("approval", {"title": "ship it?"})
    headers = {"Authorization": f"Bearer {mesh.admin_token}"}

    def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": uid(), "method": method, "params": params}
        answer: dict[str, Any] = httpx.post(f"{mesh.url}/a2a", json=body, headers=headers, timeout=30).json()
        assert "result" in answer, answer
        return answer["result"]

    waiting = call("tasks/get", {"id": gate["id"]})
    assert waiting["status"]["state"] == "input-required"
    assert "approve" in waiting["status"]["message"]["parts"][0]["text"]
    reply = {
        "messageId": str(uuid.uuid4()),
        "role": "user",
        "kind": "message",
        "taskId": gate["id"],
        "parts": [{"kind": "text", "text": "approve: looks good"}],
    }
    decided = call("message/send", {"message": reply})
    assert decided["status"]["state"] == "completed", decided
    task = mesh.admin.get_task(gate["id"])
    assert task["state"] == "completed" and task["result"] == {"approved": True, "by": "admin", "note": "looks good"}
    # A message to a task that ended is refused, with what to do instead.
    again = httpx.post(
        f"{mesh.url}/a2a",
        json={"jsonrpc": "2.0", "id": 2, "method": "message/send", "params": {"message": reply}},
        headers=headers,
        timeout=30,
    ).json()
    assert "only an input-required task takes a message" in again["error"]["message"], again

    # message/stream answers Server-Sent Events, the first one the new task (0.3 shape: kind "task").
    streamed = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "message/stream",
        "params": {"message": reply | {"taskId": None, "metadata": {"capability": f"idle-{uid()}"}}},
    }
    with httpx.stream("POST", f"{mesh.url}/a2a", json=streamed, headers=headers, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in response.iter_lines() if line.startswith("data:"))
    event = json.loads(first.removeprefix("data:"))["result"]
    assert event["kind"] == "task" and event["status"]["state"] == "submitted", event
    mesh.admin.cancel(event["id"])


async def test_list_tasks_filters_by_context_and_a2a_status(mesh):
    capability = f"idle-{uid()}"  # nobody serves it
    context = f"ctx-{uid()}"
    client, http = await a2a_client(mesh.url, mesh.admin_token, streaming=False)
    try:
        ids = []
        for text in ("one", "two"):
            request = SendMessageRequest(message=message(text, capability=capability))
            request.message.context_id = context
            request.configuration.return_immediately = True
            [event] = [e async for e in client.send_message(request)]
            assert event.task.context_id == context
            ids.append(event.task.id)
        await client.cancel_task(CancelTaskRequest(id=ids[0]))
        submitted = await client.list_tasks(ListTasksRequest(context_id=context, status=TaskState.TASK_STATE_SUBMITTED))
        assert [t.id for t in submitted.tasks] == [ids[1]] and submitted.total_size == 1
        first = await client.list_tasks(ListTasksRequest(context_id=context, page_size=1))
        assert [t.id for t in first.tasks] == [ids[1]] and first.total_size == 2 and first.next_page_token
        rest = await client.list_tasks(
            ListTasksRequest(context_id=context, page_size=1, page_token=first.next_page_token)
        )
        assert [t.id for t in rest.tasks] == [ids[0]] and not rest.next_page_token
        assert rest.tasks[0].status.state == TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()
        await http.aclose()


def test_malformed_json_rpc_gets_a_clear_error_and_stores_nothing(mesh, agent_factory):
    """Bad input to /a2a: a JSON-RPC error that says what is wrong, never an internal error (-32603, a
    traceback in the log) and never a task made of it."""
    only = agent_factory(mesh, capabilities=[f"a2a-bad-{uid()}"], push=False)  # one skill: it needs no naming
    headers = {"Authorization": f"Bearer {only.name}:{only.secret}", "A2A-Version": "1.0"}

    def rpc(body: Any) -> dict[str, Any]:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(f"{mesh.url}/a2a", content=content, headers=headers, timeout=30)
        assert response.status_code in (200, 400), response.text
        answer: dict[str, Any] = response.json()
        return answer

    def mine() -> int:
        return len(mesh.admin.list_tasks(type=only.capabilities[0])["tasks"])

    deep = rpc(b"[" * 5000 + b"]" * 5000)
    assert deep["error"]["code"] == -32600 and "deeper than 64 levels" in deep["error"]["message"], deep
    part = {"data": json.loads("[" * 100 + "]" * 100)}
    deep_part = rpc(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [part]}},
        }  # fmt: skip
    )
    assert deep_part["error"]["code"] == -32600 and "deeper than" in deep_part["error"]["message"], deep_part
    token = rpc({"jsonrpc": "2.0", "id": 2, "method": "ListTasks", "params": {"pageToken": "9" * 30}})
    assert token["error"]["code"] == -32602 and "pageToken" in token["error"]["message"], token
    for empty in ("not a message", {"messageId": "m", "role": "ROLE_USER", "parts": []}):
        refused = rpc({"jsonrpc": "2.0", "id": 3, "method": "SendMessage", "params": {"message": empty}})
        assert refused["error"]["code"] in (-32602, -32600), refused
    assert mine() == 0
