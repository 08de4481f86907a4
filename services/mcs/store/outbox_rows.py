"""Rows for the outbox, committed in the transaction that causes them: webhooks to agents and alerts to
people. The notifier delivers them (`mcs.store.outbox` is its side)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from mcs.models import iso
from mcs.store.connection import Connection


def enqueue(
    conn: Connection, *, kind: str, agent: str | None, task_id: str | None, body: dict[str, Any], now: float
) -> None:
    """One row to deliver: `kind` is "webhook" (to `agent`) or "alert"; a stable message id for retries."""
    conn.execute(
        "INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (kind, "msg_" + uuid.uuid4().hex, agent, task_id, json.dumps(body), now, now, now),
    )


def alert(conn: Connection, *, event: str, data: dict[str, Any], task_id: str | None, now: float) -> None:
    """One alert: `event` names what happened; `data` holds ids, names and a summary, never payloads."""
    body = {"type": event, "timestamp": iso(now), "data": data}
    enqueue(conn, kind="alert", agent=None, task_id=task_id, body=body, now=now)
