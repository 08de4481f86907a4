"""Alert rows in the outbox, committed in the transaction that causes them; the notifier sends them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from mcs.models import iso
from mcs.store.connection import Connection


def enqueue(conn: Connection, *, event: str, data: dict[str, Any], task_id: str | None, now: float) -> None:
    """One alert: `event` names what happened; `data` holds ids, names and a summary, never payloads."""
    body = {"type": event, "timestamp": iso(now), "data": data}
    conn.execute(
        "INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)"
        " VALUES ('alert', ?, NULL, ?, ?, ?, ?, ?)",
        ("msg_" + uuid.uuid4().hex, task_id, json.dumps(body), now, now, now),
    )
