"""Pure mappings between MCS and A2A: states both ways, a message's parts to a task payload, a task (and
its result) to an A2A Task with artifacts. No I/O.

States (MCS -> A2A): queued, assigned, blocked, retrying -> submitted; claimed -> working; waiting ->
input-required for an approval (a person decides it), working for a fanout parent; completed, failed,
canceled as they are. A2A -> MCS (`mcs_states`) is the inverse, for filters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from a2a.types import Artifact, Message, Part, Role, Task, TaskState, TaskStatus
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from mcs.models import APPROVAL
from mcs.models import Origin as Origin  # re-exported: the face and push name it convert.Origin
from mcs.models import Task as McsTask
from mcs.models import TaskState as S

RESULT_ARTIFACT = "result"  # the artifact id (and name) a completed task's result is published as

_BY_STATE: dict[S, int] = {
    S.QUEUED: TaskState.TASK_STATE_SUBMITTED,
    S.ASSIGNED: TaskState.TASK_STATE_SUBMITTED,
    S.BLOCKED: TaskState.TASK_STATE_SUBMITTED,
    S.RETRYING: TaskState.TASK_STATE_SUBMITTED,
    S.CLAIMED: TaskState.TASK_STATE_WORKING,
    S.WAITING: TaskState.TASK_STATE_WORKING,  # a fanout parent; an approval is input-required (a2a_state)
    S.COMPLETED: TaskState.TASK_STATE_COMPLETED,
    S.FAILED: TaskState.TASK_STATE_FAILED,
    S.CANCELED: TaskState.TASK_STATE_CANCELED,
}
TERMINAL = frozenset({TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED})
# Where a client need not wait any longer: the task ended, or it waits for the client (an answer).
INTERRUPTED = TERMINAL | {TaskState.TASK_STATE_INPUT_REQUIRED}


def a2a_state(state: S | str, task_type: str | None = None) -> int:
    """The A2A TaskState of an MCS state (`task_type` tells an approval's waiting from a fanout's)."""
    state = S(state)
    if state is S.WAITING and task_type == APPROVAL:
        return TaskState.TASK_STATE_INPUT_REQUIRED
    return _BY_STATE[state]


def mcs_states(state: int) -> list[str]:
    """The MCS states an A2A TaskState stands for (input-required: waiting; working: claimed, waiting)."""
    if state == TaskState.TASK_STATE_INPUT_REQUIRED:
        return [S.WAITING.value]
    return [s.value for s, a in _BY_STATE.items() if a == state]


def mcs_filter(state: int) -> list[tuple[str, bool | None]]:
    """What an A2A state filter selects among MCS tasks: (MCS state, approval or not, None: either)."""
    return [
        (s, None if s != S.WAITING.value else state == TaskState.TASK_STATE_INPUT_REQUIRED) for s in mcs_states(state)
    ]


def state_name(state: int) -> str:
    """`TASK_STATE_WORKING` -> `working` (as the 0.3 protocol and people write it)."""
    return str(TaskState.Name(state)).removeprefix("TASK_STATE_").lower().replace("_", "-")


# ---------------------------------------------------------------- message -> payload


def _narrow(value: Any) -> Any:
    """JSON from a protobuf Value, with whole floats back to ints (Value keeps every number as a double)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_narrow(v) for v in value]
    if isinstance(value, dict):
        return {k: _narrow(v) for k, v in value.items()}
    return value


def data_of(part: Part) -> Any:
    return _narrow(MessageToDict(part.data)) if part.HasField("data") else None


def payload_of(message: Message) -> Any:
    """A message's parts as an MCS payload: the text when there is only text (what `mcs agent llm` takes as
    its prompt), the value when there is one data part only; else `{"text"?, "data"?: [...], "files"?: [...]}`."""
    texts = [p.text for p in message.parts if p.HasField("text")]
    data = [data_of(p) for p in message.parts if p.HasField("data")]
    files = [
        {"url": p.url, "filename": p.filename or None, "media_type": p.media_type or None}
        for p in message.parts
        if p.HasField("url")
    ]
    raw = [p for p in message.parts if p.HasField("raw")]
    if raw:
        raise ValueError("file parts with inline bytes are not taken: send a URL part or the text")
    if texts and not data and not files:
        return "\n".join(texts)
    if len(data) == 1 and not texts and not files:
        return data[0]
    payload: dict[str, Any] = {}
    if texts:
        payload["text"] = "\n".join(texts)
    if data:
        payload["data"] = data
    if files:
        payload["files"] = files
    return payload or None


def metadata(message: Message, request_metadata: Any = None) -> dict[str, Any]:
    """The request's and the message's metadata together (the message's wins)."""
    out: dict[str, Any] = {}
    for source in (request_metadata, message.metadata if message.HasField("metadata") else None):
        if source is not None and len(source.fields):
            out |= _narrow(MessageToDict(source))
    return out


# ---------------------------------------------------------------- result -> artifacts, task -> A2A Task


def part_for(value: Any) -> Part:
    """A JSON value as one part: a string as text, anything else as data."""
    if isinstance(value, str):
        return Part(text=value)
    return Part(data=ParseDict(_jsonable(value), struct_pb2.Value()))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def answer_text(result: Any) -> str | None:
    """The human answer in a result, when it has one: a string, or its `answer`/`text` string."""
    if isinstance(result, str):
        return result
    if isinstance(result, Mapping):
        for key in ("answer", "text"):
            if isinstance(result.get(key), str):
                return str(result[key])
    return None


def result_artifacts(result: Any) -> list[Artifact]:
    """A completed task's result as one artifact: its answer text (when it has one) and the whole result
    as a data part."""
    parts: list[Part] = []
    text = answer_text(result)
    if text is not None:
        parts.append(Part(text=text))
    if not isinstance(result, str):
        parts.append(part_for(result))
    return [Artifact(artifact_id=RESULT_ARTIFACT, name=RESULT_ARTIFACT, parts=parts)]


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def agent_message(task_id: str, context_id: str, text: str, *, message_id: str) -> Message:
    return Message(
        message_id=message_id, task_id=task_id, context_id=context_id, role=Role.ROLE_AGENT, parts=[Part(text=text)]
    )


def status_of(task: McsTask, context_id: str) -> TaskStatus:
    """The task's A2A status: its state and when it changed; a message saying why for failed, canceled and
    input-required (what to send to decide an approval)."""
    state = a2a_state(task.state, task.type)
    status = TaskStatus(state=state, timestamp=_timestamp(task.updated_at))  # type: ignore[arg-type]
    text = None
    if state == TaskState.TASK_STATE_FAILED:
        text = task.error if isinstance(task.error, str) else json.dumps(task.error)
    elif state == TaskState.TASK_STATE_CANCELED:
        text = "canceled"
    elif state == TaskState.TASK_STATE_INPUT_REQUIRED:
        text = "waiting for a person: reply 'approve' (optionally with a note) or 'deny: <reason>'"
    if text:
        status.message.CopyFrom(agent_message(task.id, context_id, text, message_id=f"{task.id}-{task.state.value}"))
    return status


def to_task(task: McsTask, origin: Origin | None, *, history_length: int | None = None) -> Task:
    """An MCS task as an A2A Task: context (the task id when it came in through REST), status, the result
    as an artifact once completed, the client's message as history, and the MCS fields as metadata."""
    context_id = origin.context_id if origin is not None else task.id
    out = Task(id=task.id, context_id=context_id, status=status_of(task, context_id))
    if task.state is S.COMPLETED:
        out.artifacts.extend(result_artifacts(task.result))
    if origin is not None and origin.message is not None and history_length != 0:
        out.history.append(ParseDict(origin.message, Message(), ignore_unknown_fields=True))
    meta = {"type": task.type, "state": task.state.value, "assigned_to": task.assigned_to, "attempts": task.attempts}
    out.metadata.update(meta)
    return out


def capability_choices(skills: Iterable[str]) -> str:
    return ", ".join(sorted(skills)) or "(none: no agent is online)"
