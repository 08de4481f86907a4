"""Models -> the API's JSON, pure: the api renders what `mcs.state` returns, and the state renders the task
documents it stores (webhook bodies in the outbox, an Idempotency-Key's response) with the same functions,
so a webhook carries exactly what `GET /v1/tasks/{id}` shows."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from mcs.errors import BadRequest
from mcs.models import ProgressNote, TaskEvent, TaskPage, TaskReplay, TaskView


def task(view: TaskView | TaskReplay) -> dict[str, Any]:
    """The task as the API shows it: the row, its children (a fanout parent), `depends_on` and `inputs`;
    `claim_token` only in the claimer's answer. A replayed submit answers what it answered first."""
    if isinstance(view, TaskReplay):
        return dict(view.body)
    body = view.task.to_api(list(view.children)) | {"depends_on": list(view.depends_on), "inputs": dict(view.inputs)}
    if view.claim_token is not None:
        body["claim_token"] = view.claim_token
    return body


def task_or_none(view: TaskView | None) -> dict[str, Any] | None:
    return None if view is None else task(view)


def progress(note: ProgressNote) -> dict[str, Any]:
    return {"task_id": note.task_id, "state": note.state.value} | dict(note.detail)


def events(items: Iterable[TaskEvent]) -> list[dict[str, Any]]:
    return [e.to_api() for e in items]


def task_page(page: TaskPage) -> dict[str, Any]:
    """`{"tasks": [...], "next_cursor": ...}`: the cursor continues after the last task shown."""
    return {
        "tasks": [task(v) for v in page.tasks],
        "next_cursor": encode_cursor(page.next_seq) if page.next_seq is not None else None,
    }


def encode_text_cursor(prefix: str, text: str) -> str:
    """An opaque page cursor: `prefix` names what it points into ("s" tasks, "n" agents, "k" memory keys)."""
    return base64.urlsafe_b64encode(f"{prefix}{text}".encode()).decode().rstrip("=")


def decode_text_cursor(prefix: str, cursor: str) -> str:
    """What `encode_text_cursor(prefix, ...)` encoded; 400 `bad_cursor` for anything else."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this server gave out", code="bad_cursor") from exc
    if not raw.startswith(prefix):
        raise BadRequest("cursor is not one this server gave out", code="bad_cursor")
    return raw[len(prefix) :]


def encode_cursor(seq: int) -> str:
    return encode_text_cursor("s", str(seq))


def decode_cursor(cursor: str) -> int:
    raw = decode_text_cursor("s", cursor)
    try:
        seq = int(raw)
    except ValueError:
        seq = -1
    if not 0 <= seq < 2**63:
        raise BadRequest("cursor is not one this server gave out", code="bad_cursor")
    return seq
