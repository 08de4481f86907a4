"""The outbox, the notifier's side: rows the dispatcher and task transitions commit, which notifiers
lease, deliver and settle. Rows for it are written by `mcs.state.outbox_rows`.

Several notifiers may run on one database (docs/design/engines.md 4.2): each takes due rows by leasing
them to itself (`take`) for MCS_OUTBOX_LEASE seconds, renews the lease of the rows it is still sending
(`renew`), and records outcomes only for rows it still holds (`record_outcomes`). A notifier that dies
holding rows leaves them to the others once the lease lapses: they go out again with the same webhook-id
(at-least-once). The heartbeat rows every process writes live here too, one per replica.
"""

from __future__ import annotations

from typing import Any

from mcs.engines.base import Tx
from mcs.models import STOPPED_PID, OutboxItem, OutboxOutcome, ProcessBeat
from mcs.state.transitions import add_event

__all__ = [
    "STOPPED_PID",
    "beat",
    "due",
    "heartbeats",
    "mark_stopped",
    "next_due",
    "record_outcomes",
    "release",
    "renew",
    "take",
    "unreachable_message",
]


def due(tx: Tx, *, now: float, limit: int, per_key: int) -> list[OutboxItem]:
    """Pending rows that are due and that no notifier holds, oldest first but at most `per_key` per agent
    (alerts count as one key), so a backlog for one slow endpoint never hides everyone else's. Each comes
    with its agent's current notify_url and key. A read: `take` leases them."""
    return tx.outbox_due(now=now, limit=limit, per_key=per_key)


def take(tx: Tx, *, owner: str, now: float, lease: float, limit: int, per_key: int) -> list[OutboxItem]:
    """The rows `due` returns, leased to `owner` until now + `lease`: no other notifier sends them while
    the lease lasts (rows another transaction is leasing at this moment are skipped, not waited for)."""
    return tx.outbox_take(owner, now=now, lease_until=now + lease, limit=limit, per_key=per_key)


def renew(tx: Tx, *, owner: str, ids: list[int], now: float, lease: float) -> int:
    """Extend `owner`'s leases on the rows it is still sending; how many it still holds."""
    return tx.outbox_renew(owner, ids, now + lease) if ids else 0


def release(tx: Tx, *, owner: str, ids: list[int]) -> int:
    """Give back rows `owner` took but will not send now (its in-flight caps were full)."""
    return tx.outbox_release(owner, ids) if ids else 0


def next_due(tx: Tx, *, after: float) -> float | None:
    """When the next pending row falls due, counting only rows not due yet (due ones are under way)."""
    return tx.outbox_next_due(after)


def record_outcomes(tx: Tx, *, owner: str, outcomes: list[dict[str, Any]], now: float) -> list[int]:
    """Write a batch of delivery outcomes (delivered, superseded, retry: attempt failed, more to come, or
    dead) of rows `owner` still holds, with the task events they make; the ids of those written. An outcome
    for a row whose lease went to another notifier is dropped: that one's outcome counts."""
    rows = [
        OutboxOutcome(
            id=o["id"],
            state=o["state"],
            attempts=o["attempts"],
            error=o.get("error"),
            next_attempt_at=o.get("next_attempt_at"),
            final=bool(o.get("final")),
        )
        for o in outcomes
    ]
    written = tx.outbox_record(owner, rows, now)
    for o, row in zip(outcomes, rows, strict=True):
        if row not in written:
            continue
        if o["state"] == "delivered":
            if o.get("task_id") and o["kind"] == "webhook":
                add_event(
                    tx, o["task_id"], "notified", "notifier", now, {"agent": o["agent"], "attempts": o["attempts"]}
                )
        elif o["state"] == "dead" and o.get("task_id"):
            kind = {"webhook": "webhook_failed", "a2a_push": "push_failed"}.get(o["kind"], "alert_failed")
            # A webhook's event carries what anyone signed in may read (the notifier's event_error): not
            # what answered at the URL, which would make notify URLs a port scanner.
            error = o.get("event_error", o["error"])
            detail = {"agent": o.get("agent"), "attempts": o["attempts"], "error": error}
            if o["kind"] == "webhook":  # what the user must fix, in words: who, where, what happened
                detail["url"] = o.get("url")
                detail["message"] = unreachable_message(o.get("agent"), o.get("url"), error, o["attempts"])
            add_event(tx, o["task_id"], kind, "notifier", now, detail)
    return sorted({r.id for r in written})


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


def beat(
    tx: Tx,
    *,
    process: str,
    instance: str = "",
    pid: int,
    started_at: float,
    now: float,
    forget: list[str] | None = None,
) -> None:
    """Write this replica's heartbeat row; `forget` names rows of earlier replicas of this process that
    are gone (a restart on the same host), so `mcs status` does not show them as stale."""
    tx.beat(process, instance, pid, started_at, now)
    if forget:
        tx.heartbeats_forget(process, [i for i in forget if i != instance])


def mark_stopped(tx: Tx, *, process: str, instance: str = "", pid: int) -> None:
    """A process stopping cleanly says so in its row (pid 0), keeping its last beat: the age still grows
    for `mcs check` and the alert on it, and `mcs restore` knows nothing runs there any more."""
    tx.mark_stopped(process, instance, pid)


def heartbeats(tx: Tx) -> list[ProcessBeat]:
    """Every replica's heartbeat row, by process then instance."""
    return tx.heartbeats()
