"""The watchdog's sweeps over the queue: leases that ran out, assignments nobody claimed, claims whose
webhook never arrived. Each takes its rows with SKIP LOCKED on PostgreSQL, so several watchdogs split the
work and a row a transition is deciding on is left to it (docs/design/engines.md 4.2); on SQLite the
write transaction already holds the database."""

from __future__ import annotations

from mcs.engines.base import Tx
from mcs.models import TaskState
from mcs.state.tasks import fail_attempt as _fail
from mcs.state.transitions import add_event, back_to_queue
from mcs.state.transitions import set_state as _set


def expire_leases(tx: Tx, *, now: float, base: float, cap: float, limit: int = 500) -> list[str]:
    """Claimed tasks whose lease ran out: the attempt counts as failed (retry with backoff, or failed)."""
    tasks = tx.expired_leases(now, limit)
    for task in tasks:
        add_event(tx, task.id, "lease_expired", "watchdog", now, {"agent": task.assigned_to})
        _fail(tx, task, error="lease expired", retryable=True, actor="watchdog", now=now, base=base, cap=cap)
    return [t.id for t in tasks]


def reroute_unclaimed(tx: Tx, *, now: float, limit: int = 500) -> list[str]:
    """Assigned tasks nobody claimed within their claim TTL go back to the queue, preferring another agent;
    so do tasks whose webhook the notifier gave up delivering (no need to wait out the TTL)."""
    tasks = tx.unclaimed(now, limit)
    for task in tasks:
        if task.assigned_to is not None:
            tx.avoid_add(task.id, task.assigned_to, hard=False)
        _set(tx, task, now, state=TaskState.QUEUED, assigned_to=None, assigned_at=None, parked=0)
        add_event(tx, task.id, "unclaimed", "watchdog", now, {"agent": task.assigned_to})
    return [t.id for t in tasks] + _reroute_undelivered_claims(tx, now=now, limit=limit - len(tasks))


def _reroute_undelivered_claims(tx: Tx, *, now: float, limit: int) -> list[str]:
    """A claim the agent was never told of goes back to the queue at once, as an undelivered assignment
    does: its token is revoked (a late completion with it gets 409), the attempt it counted is given back,
    and another agent is preferred."""
    if limit <= 0:
        return []
    tasks = tx.undelivered_claims(limit)
    for task in tasks:
        back_to_queue(tx, task, now, avoid=task.assigned_to, hard=False, attempts=task.attempts - 1)
        add_event(tx, task.id, "unclaimed", "watchdog", now, {"agent": task.assigned_to, "push": True})
    return [t.id for t in tasks]
