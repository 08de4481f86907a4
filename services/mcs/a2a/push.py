"""A2A push notifications, as the notifier sends them for an `a2a_push` outbox row.

The row (written by the trigger of migration 0018 when the task changed state) names the config and the
state change. The body is what an A2A server's push sender posts, a StreamResponse: a status update while
the task runs, the whole Task (status, result artifact) once it ended or needs input. A change inside one
A2A state (queued -> assigned: both `submitted`) sends nothing.

Headers: `X-A2A-Notification-Token` (the config's token) and `Authorization` (its authentication), as A2A
receivers expect, and the Standard Webhooks signature of MCS's own webhooks (`webhook-id`, stable across
retries, `webhook-timestamp`, `webhook-signature`), signed with the `webhook_secret` of the agent that set the
config. A config the admin set is not signed (the admin token is the admin's only key and never leaves
MCS): its receiver checks the config's `token`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from a2a.types import StreamResponse, TaskStatusUpdateEvent
from google.protobuf.json_format import MessageToDict

from mcs import webhooks
from mcs.a2a import convert
from mcs.models import PushConfig
from mcs.models import Task as McsTask


@dataclass(frozen=True)
class Change:
    """What an `a2a_push` outbox row says happened."""

    config_id: str
    old: str
    new: str

    @classmethod
    def from_body(cls, body: str) -> Change:
        data = json.loads(body)
        return cls(config_id=str(data["config_id"]), old=str(data["from"]), new=str(data["state"]))


def worth_sending(change: Change, task_type: str) -> bool:
    """Whether the change moved the task to another A2A state."""
    return convert.a2a_state(change.old, task_type) != convert.a2a_state(change.new, task_type)


def render(change: Change, task: McsTask, origin: convert.Origin | None) -> str:
    """The notification's JSON body for the change, the task read as it is now (for its result)."""
    state = convert.a2a_state(change.new, task.type)
    context_id = origin.context_id if origin is not None else task.id
    response = StreamResponse()
    if state in convert.INTERRUPTED and task.state.value == change.new:
        response.task.CopyFrom(convert.to_task(task, origin))
    else:  # a running state, or the task moved on since: say what this change was
        status = convert.status_of(task, context_id)
        status.state = state  # type: ignore[assignment]
        response.status_update.CopyFrom(TaskStatusUpdateEvent(task_id=task.id, context_id=context_id, status=status))
    return json.dumps(MessageToDict(response), separators=(",", ":"))


def headers(config: PushConfig, *, secret: str | None, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    out = (
        webhooks.headers(secret=secret, message_id=message_id, timestamp=timestamp, body=body)
        if secret is not None
        else {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    )
    if config.token:
        out["x-a2a-notification-token"] = config.token
    if config.auth_scheme and config.auth_credentials:
        out["authorization"] = f"{config.auth_scheme} {config.auth_credentials}"
    return out


def describe(config: PushConfig) -> dict[str, Any]:
    return {"task_id": config.task_id, "config_id": config.id, "owner": config.owner}
