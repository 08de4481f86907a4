"""A small A2A agent built with the a2a-sdk, for the tests of `mcs agent a2a`: run it as a process.

    python -m tests.a2a_server --port PORT [--token TOKEN] [--log FILE]

Skills: `echo` (answers "echo: <text>", and a data part with what came as data), `shout` (the text in
capitals). A message whose text contains "fail" fails the task with "remote refuses: ..."; "slow" works
for 30 s (a task to cancel). With --token, every JSON-RPC call needs `Authorization: Bearer TOKEN` (401
otherwise). --log appends each received message (JSON) to FILE, one per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Message, Part, Role
from google.protobuf.json_format import MessageToDict
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.responses import JSONResponse


class Echo(AgentExecutor):
    def __init__(self, log: Path | None) -> None:
        self.log = log

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        assert message is not None
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(json.dumps(MessageToDict(message)) + "\n")
        task = context.current_task or new_task_from_user_message(message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        text = context.get_user_input()
        meta = MessageToDict(message.metadata) if message.HasField("metadata") else {}
        data = [MessageToDict(p.data) for p in message.parts if p.HasField("data")]
        if "fail" in text:
            await updater.failed(_say(task.id, task.context_id, f"remote refuses: {text}"))
            return
        if "slow" in text:
            await asyncio.sleep(30)
        answer = text.upper() if meta.get("skill") == "shout" else f"echo: {text}"
        parts = [Part(text=answer)]
        if data:
            from google.protobuf import struct_pb2
            from google.protobuf.json_format import ParseDict

            parts.append(Part(data=ParseDict({"got": data}, struct_pb2.Value())))
        await updater.add_artifact(parts, name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def _say(task_id: str, context_id: str, text: str) -> Message:
    return Message(
        message_id=f"{task_id}-say",
        task_id=task_id,
        context_id=context_id,
        role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
    )


def app(port: int, token: str | None, log: Path | None) -> Any:
    card = AgentCard(
        name="echo agent",
        description="Echoes what it is told (a test agent).",
        version="1.0",
        supported_interfaces=[
            AgentInterface(url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(id="echo", name="Echo", description="Says it back.", tags=["test"]),
            AgentSkill(id="shout", name="Shout", description="Says it back, loudly.", tags=["test"]),
        ],
    )
    handler = DefaultRequestHandler(agent_executor=Echo(log), task_store=InMemoryTaskStore(), agent_card=card)
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(handler, "/")
    inner = Starlette(routes=routes)

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if token and scope["type"] == "http" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await inner(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    asyncio.run(serve(app(args.port, args.token, args.log), config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
