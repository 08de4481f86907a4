"""Rows for the outbox, committed in the transaction that causes them: webhooks to agents and alerts to
people. The notifier delivers them (`mcs.state.outbox` is its side)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from mcs.engines.base import Tx
from mcs.models import NewOutbox, iso


def enqueue(tx: Tx, *, kind: str, agent: str | None, task_id: str | None, body: dict[str, Any], now: float) -> None:
    """One row to deliver: `kind` is "webhook" (to `agent`) or "alert"; a stable message id for retries."""
    message_id = "msg_" + uuid.uuid4().hex
    tx.outbox_insert(
        NewOutbox(kind=kind, message_id=message_id, agent=agent, task_id=task_id, body=json.dumps(body), now=now)
    )


def alert(tx: Tx, *, event: str, data: dict[str, Any], task_id: str | None, now: float) -> None:
    """One alert: `event` names what happened; `data` holds ids, names and a summary, never payloads."""
    body = {"type": event, "timestamp": iso(now), "data": data}
    enqueue(tx, kind="alert", agent=None, task_id=task_id, body=body, now=now)
