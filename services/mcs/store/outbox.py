"""The outbox: rows the dispatcher and task transitions commit, which the notifier delivers."""

from __future__ import annotations

import json
from typing import Any

from mcs.models import OutboxItem
from mcs.state.transitions import add_event
from mcs.store.connection import Connection


def due(conn: Connection, *, now: float, limit: int, per_key: int) -> list[OutboxItem]:
    """Pending rows that are due, oldest first but at most `per_key` per agent (alerts count as one key), so
    a backlog for one slow endpoint never hides everyone else's. Each comes with its agent's current
    notify_url and key (one query, no second trip).

    The cost follows the agents with pending rows, not the rows: the recursive part steps from one agent
    to the next on the outbox_pending_agent index (a seek each), and each agent's oldest `per_key` due
    rows are read from the same index, so 50,000 pending rows for one dead agent cost what 8 do."""
    rows = conn.execute(
        "WITH RECURSIVE keys(agent) AS ("
        " SELECT (SELECT min(agent) FROM outbox INDEXED BY outbox_pending_agent WHERE state = 'pending')"
        " UNION ALL SELECT (SELECT min(agent) FROM outbox INDEXED BY outbox_pending_agent"
        " WHERE state = 'pending' AND agent > keys.agent)"
        " FROM keys WHERE keys.agent IS NOT NULL),"
        " picked(id) AS ("
        " SELECT o.id FROM keys JOIN outbox o ON o.id IN (SELECT id FROM outbox INDEXED BY outbox_pending_agent"
        " WHERE state = 'pending'"
        " AND agent = keys.agent AND next_attempt_at <= ? ORDER BY id LIMIT ?)"
        " UNION ALL SELECT id FROM (SELECT id FROM outbox INDEXED BY outbox_pending_agent"
        " WHERE state = 'pending' AND agent IS NULL"
        " AND next_attempt_at <= ? ORDER BY id LIMIT ?))"
        " SELECT o.*, a.notify_url, a.webhook_secret, a.name IS NOT NULL AS agent_exists"
        " FROM picked p JOIN outbox o ON o.id = p.id LEFT JOIN agents a ON a.name = o.agent"
        " ORDER BY o.id LIMIT ?",
        (now, per_key, now, per_key, limit),
    ).fetchall()
    return [OutboxItem.from_row(r) for r in rows]


def next_due(conn: Connection, *, after: float) -> float | None:
    """When the next pending row falls due, counting only rows not due yet (due ones are under way)."""
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending' AND next_attempt_at > ?", (after,)
    ).fetchone()
    return row[0] if row else None


def record_outcomes(conn: Connection, *, outcomes: list[dict[str, Any]], now: float) -> None:
    """Write a batch of delivery outcomes: delivered, retry (attempt failed, more to come) or dead."""
    for o in outcomes:
        if o["state"] == "delivered":
            conn.execute(
                "UPDATE outbox SET state = 'delivered', attempts = max(attempts, ?), last_error = ?, updated_at = ?"
                " WHERE id = ?",
                (o["attempts"], o.get("error"), now, o["id"]),
            )
            if o.get("task_id") and o["kind"] == "webhook":
                add_event(
                    conn, o["task_id"], "notified", "notifier", now, {"agent": o["agent"], "attempts": o["attempts"]}
                )
        elif o["state"] == "superseded":  # a retried webhook whose claim is gone: not sent (see the notifier)
            conn.execute(
                "UPDATE outbox SET state = 'superseded', attempts = max(attempts, ?), last_error = ?, updated_at = ?"
                " WHERE id = ?",
                (o["attempts"], o["error"], now, o["id"]),
            )
        elif o["state"] == "retry":
            conn.execute(
                "UPDATE outbox SET attempts = max(attempts, ?), last_error = ?, next_attempt_at = ?, updated_at = ?"
                " WHERE id = ?",
                (o["attempts"], o["error"], o["next_attempt_at"], now, o["id"]),
            )
        else:
            conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = max(attempts, ?), last_error = ?, updated_at = ?"
                " WHERE id = ?",
                (o["attempts"], o["error"], now, o["id"]),
            )
            if o.get("task_id"):
                kind = {"webhook": "webhook_failed", "a2a_push": "push_failed"}.get(o["kind"], "alert_failed")
                # A webhook's event carries what anyone signed in may read (the notifier's event_error): not
                # what answered at the URL, which would make notify URLs a port scanner.
                error = o.get("event_error", o["error"])
                detail = {"agent": o.get("agent"), "attempts": o["attempts"], "error": error}
                if o["kind"] == "webhook":  # what the user must fix, in words: who, where, what happened
                    detail["url"] = o.get("url")
                    detail["message"] = unreachable_message(o.get("agent"), o.get("url"), error, o["attempts"])
                add_event(conn, o["task_id"], kind, "notifier", now, detail)


def unreachable_message(agent: str | None, url: str | None, error: str, attempts: int) -> str:
    """ "agent X unreachable at URL: ...", with the usual fix when URL is a loopback address."""
    text = f"agent {agent} unreachable at {url or '(no notify URL)'} after {attempts} attempts: {error}"
    host = (url or "").split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        text += (
            " (a loopback address: when MCS runs in a container or on another host it cannot reach the agent"
            " there; run the agent with --pull, or register a --notify-url MCS can reach)"
        )
    return text


def beat(conn: Connection, *, process: str, pid: int, started_at: float, now: float) -> None:
    conn.execute(
        "INSERT INTO heartbeats (process, pid, started_at, beat_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(process, instance) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,"
        " beat_at = excluded.beat_at",
        (process, pid, started_at, now),
    )


STOPPED_PID = 0  # a heartbeat row's pid once its process stopped cleanly


def mark_stopped(conn: Connection, *, process: str, pid: int) -> None:
    """A process stopping cleanly says so in its row (pid 0), keeping its last beat: the age still grows
    for `mcs check` and the alert on it, and `mcs restore` knows nothing runs there any more."""
    conn.execute("UPDATE heartbeats SET pid = ? WHERE process = ? AND pid = ?", (STOPPED_PID, process, pid))


def heartbeats(conn: Connection) -> dict[str, float]:
    return {r[0]: r[1] for r in conn.execute("SELECT process, beat_at FROM heartbeats")}


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
