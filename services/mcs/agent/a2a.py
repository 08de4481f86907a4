"""An agent that forwards its tasks to a remote A2A agent (`mcs agent a2a --url URL`): any A2A agent joins
the mesh.

At start the remote agent's card is fetched with the SDK's card resolver; each of its skills becomes a
capability (the skill id as it is, or with `--prefix`, e.g. `a2a:` gives `a2a:<skill id>`; characters a
capability may not hold become `-`). Each task goes to the remote agent as one A2A message through the
SDK's client: the payload as a text part when it is a string, else as a data part; the skill its type
names in the message's `metadata.skill`. The remote task is followed (streamed when the card says it
streams, then polled with GetTask until it ends); its working updates become progress reports.

Result: `{"answer": <the text parts of its artifacts, or of its final message>, "data": [<data parts>]
(when any), "a2a": {"task_id", "context_id", "state"}}`. A remote failure, rejection, cancel or request for
input fails the task for good with the remote agent's words; an unreachable agent, a timeout or an HTTP
429/5xx fails it retryably. When MCS cancels the task, the remote task is canceled too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError, A2AClientTimeoutError
from a2a.types import (
    AgentCard,
    Artifact,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)
from a2a.utils.errors import A2AError

from mcs import metrics
from mcs.a2a import convert
from mcs.agent.runner import PermanentError, RetryableError, Task

log = logging.getLogger("mcs.agent.a2a")

DEFAULT_TIMEOUT = 600.0  # seconds one remote task may take before the MCS task fails (retryably)
POLL_INTERVAL = 1.0  # seconds between GetTask calls once the remote agent's stream ended early
CANCEL_TIMEOUT = 5.0  # seconds to tell the remote agent a task was canceled
TOKEN_ENV = "MCS_A2A_TOKEN"  # a bearer token for the remote agent, read by `mcs agent a2a`
ENDED = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
        TaskState.TASK_STATE_INPUT_REQUIRED,
        TaskState.TASK_STATE_AUTH_REQUIRED,
    }
)
_NOT_IN_CAPABILITY = re.compile(r"[^A-Za-z0-9_.:/-]")


def capability_for(skill_id: str, prefix: str = "") -> str:
    """The capability a skill is served as: `prefix` + the skill id, cut to what a capability may hold."""
    name = _NOT_IN_CAPABILITY.sub("-", prefix + skill_id).strip("-")[:100]
    return name or "a2a"


async def fetch_card(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> AgentCard:
    """The remote agent's card (from URL/.well-known/agent-card.json), by the SDK's resolver."""
    async with httpx.AsyncClient(headers=dict(headers or {}), timeout=timeout) as http:
        card: AgentCard = await A2ACardResolver(http, url).get_agent_card()
    return card


def _texts(parts: Iterable[Part]) -> list[str]:
    return [p.text for p in parts if p.HasField("text")]


def _status_text(message: Message) -> str:
    return " ".join(_texts(message.parts)).strip()


class Remote:
    """What is known of the remote task as it goes."""

    def __init__(self) -> None:
        self.task_id = ""
        self.context_id = ""
        self.state: int = TaskState.TASK_STATE_UNSPECIFIED
        self.said = ""  # the text of its latest status message
        self.artifacts: dict[str, Artifact] = {}
        self.answer: Message | None = None  # a direct Message answer (no task)

    def take_task(self, task: Any) -> None:
        self.task_id, self.context_id = task.id, task.context_id
        self.state = task.status.state
        if task.status.HasField("message"):
            self.said = _status_text(task.status.message)
        for artifact in task.artifacts:
            self.artifacts[artifact.artifact_id] = artifact

    def take_artifact(self, update: Any) -> None:
        artifact = update.artifact
        known = self.artifacts.get(artifact.artifact_id)
        if update.append and known is not None:
            known.parts.extend(artifact.parts)
        else:
            self.artifacts[artifact.artifact_id] = artifact

    def result(self) -> dict[str, Any]:
        parts = list(self.answer.parts) if self.answer is not None else []
        for artifact in self.artifacts.values():
            parts.extend(artifact.parts)
        out: dict[str, Any] = {"answer": "\n".join(_texts(parts))}
        data = [convert.data_of(p) for p in parts if p.HasField("data")]
        if data:
            out["data"] = data
        files = [p.url for p in parts if p.HasField("url")]
        if files:
            out["files"] = files
        state = convert.state_name(self.state) if self.task_id else "message"
        out["a2a"] = {"task_id": self.task_id or None, "context_id": self.context_id or None, "state": state}
        return out


class A2AForwarder:
    """The handler: `Agent(A2AForwarder(url=..., card=card), capabilities=forwarder.capabilities)`."""

    def __init__(
        self,
        *,
        card: AgentCard,
        token: str | None = None,
        prefix: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.card = card
        self.timeout = timeout
        self.skills = {capability_for(s.id, prefix): s.id for s in card.skills}
        self._token = token
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._client: Client | None = None

    def __repr__(self) -> str:  # never the token
        return f"A2AForwarder(agent={self.card.name!r}, skills={sorted(self.skills.values())!r})"

    @property
    def capabilities(self) -> list[str]:
        return list(self.skills)

    def _remote(self) -> Client:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            self._http = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(60.0, connect=10.0), transport=self._transport
            )
            config = ClientConfig(httpx_client=self._http, streaming=True)
            self._client = ClientFactory(config).create(self.card)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def message(self, task: Task) -> Message:
        """The task as one A2A message: the payload as its part, the skill and the MCS task in metadata."""
        payload = task.payload if task.payload is not None else ""
        message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[convert.part_for(payload)])
        skill = self.skills.get(task.type) or next(
            (self.skills[c] for c in task.capabilities if c in self.skills), None
        )
        meta: dict[str, Any] = {"mcs_task_id": task.id}
        if skill is not None:
            meta["skill"] = skill
        message.metadata.update(meta)
        return message

    async def __call__(self, task: Task) -> dict[str, Any]:
        remote = Remote()
        try:
            async with asyncio.timeout(self.timeout):
                await self._forward(task, remote)
        except TimeoutError:
            metrics.a2a_forwarded.labels("timeout").inc()
            await self._cancel_remote(remote)
            raise RetryableError(f"the remote A2A agent gave no answer within {self.timeout:g} s") from None
        except asyncio.CancelledError:  # MCS canceled the task (or the agent stops): so does the remote one
            await self._cancel_remote(remote)
            raise
        except A2AClientTimeoutError:
            metrics.a2a_forwarded.labels("unreachable").inc()
            raise RetryableError("the remote A2A agent timed out") from None
        except A2AClientError as exc:
            metrics.a2a_forwarded.labels("unreachable").inc()
            text = str(exc)
            status = re.search(r"HTTP Error (\d{3})", text)
            if status and int(status.group(1)) < 500 and int(status.group(1)) not in (408, 429):
                raise PermanentError(f"the remote A2A agent refused the request: {text}") from None
            raise RetryableError(f"cannot reach the remote A2A agent: {text}") from None
        except A2AError as exc:
            metrics.a2a_forwarded.labels("error").inc()
            raise PermanentError(f"the remote A2A agent answered an error: {exc}") from None
        return self._settle(remote)

    async def _forward(self, task: Task, remote: Remote) -> None:
        client = self._remote()
        async for event in client.send_message(SendMessageRequest(message=self.message(task))):
            if event.HasField("message"):
                remote.answer = event.message
                remote.state = TaskState.TASK_STATE_COMPLETED
                return
            if event.HasField("task"):
                remote.take_task(event.task)
            elif event.HasField("status_update"):
                status = event.status_update.status
                remote.task_id = remote.task_id or event.status_update.task_id
                remote.state = status.state
                if status.HasField("message"):
                    remote.said = _status_text(status.message)
                    if status.state == TaskState.TASK_STATE_WORKING and remote.said:
                        task.progress(remote.said[:500])
            elif event.HasField("artifact_update"):
                remote.take_artifact(event.artifact_update)
            if remote.state in ENDED:
                break
        while remote.state not in ENDED:  # the stream ended early (or the agent does not stream): poll
            if not remote.task_id:
                raise PermanentError("the remote A2A agent answered with neither a task nor a message")
            await asyncio.sleep(POLL_INTERVAL)
            remote.take_task(await client.get_task(GetTaskRequest(id=remote.task_id)))

    def _settle(self, remote: Remote) -> dict[str, Any]:
        state = remote.state
        if state == TaskState.TASK_STATE_COMPLETED:
            metrics.a2a_forwarded.labels("completed").inc()
            return remote.result()
        metrics.a2a_forwarded.labels("failed").inc()
        words = f": {remote.said}" if remote.said else ""
        if state in (TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED):
            raise PermanentError(
                f"the remote A2A agent asks for {convert.state_name(state).split('-')[0]}{words} "
                f"(mcs agent a2a cannot answer it; task {remote.task_id} stays open there)"
            )
        raise PermanentError(f"the remote A2A agent's task {remote.task_id} is {convert.state_name(state)}{words}")

    async def _cancel_remote(self, remote: Remote) -> None:
        if not remote.task_id or remote.state in ENDED or self._client is None:
            return
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await asyncio.shield(self._client.cancel_task(CancelTaskRequest(id=remote.task_id)))
        except (TimeoutError, A2AError, asyncio.CancelledError) as exc:
            log.warning(
                "could not cancel the remote task %s: %s",
                remote.task_id,
                exc,
                extra={"action": "a2a_cancel_failed", "remote_task_id": remote.task_id},
            )
