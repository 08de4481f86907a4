"""What the mesh looks like right now, read in one snapshot for the metrics collector (and the queue
counts `mcs status` shows). Engine-free: each number is one `StatsTx` method."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcs.engines.base import Tx
from mcs.models import APPROVAL, UNFINISHED_STATES, Priority
from mcs.state.workflows import STATES as WORKFLOW_STATES

QUEUE_STATES = UNFINISHED_STATES


@dataclass(frozen=True)
class AgentSeen:
    name: str
    online: bool
    last_seen: float | None


@dataclass(frozen=True)
class MeshSnapshot:
    at: float
    tasks: dict[tuple[str, str], int]  # (state, priority label) -> count, every non-terminal pair present
    oldest_queued: dict[str, float]  # priority label -> when its oldest queued task became eligible
    agents: list[AgentSeen]
    memory_keys: dict[str, int]  # namespace -> live keys
    outbox_pending: dict[str, int]  # kind -> rows waiting for delivery
    heartbeats: dict[str, float] = field(default_factory=dict)  # process -> last beat
    recently_failed: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, priority) -> failed
    approvals_waiting: int = 0
    oldest_approval: float | None = None  # when the longest-waiting approval started waiting
    keyed_queued: int = 0  # queued tasks with a concurrency key (held back while their key is at its limit)
    workflows: dict[str, int] = field(default_factory=dict)  # state -> workflows, every state present


_PRIORITY_LABELS = {int(p): p.label for p in Priority}  # stored number -> "urgent" | "normal" | "low"
RECENT_FAILURES_WINDOW = 900.0  # seconds: failures counted by mcs_tasks_failed_recently


def _label(priority: int) -> str:
    return _PRIORITY_LABELS.get(priority, str(priority))


def task_types(tx: Tx, *, limit: int = 500) -> list[str]:
    """Task types the database knows (a skip through the type index), for creating their metric series."""
    return tx.stats_task_types(limit)


def queue_counts(tx: Tx) -> dict[tuple[str, int], int]:
    """(state, priority) -> unfinished tasks, from the counts the triggers of 0017 keep (a few rows read,
    however long the queue)."""
    return tx.stats_queue_counts(QUEUE_STATES)


def claimed_kinds(tx: Tx) -> list[tuple[str, str]]:
    """(type, priority label) of the tasks agents hold now: the ones whose lease the watchdog may expire."""
    return [(t, _label(p)) for t, p in tx.stats_claimed_kinds()]


def snapshot(tx: Tx, *, now: float) -> MeshSnapshot:
    tasks = {(state, label): 0 for state in QUEUE_STATES for label in _PRIORITY_LABELS.values()}
    for (state, priority), count in queue_counts(tx).items():
        tasks[(state, _label(priority))] = count
    # A queued task has waited since it was submitted, or since its retry fell due.
    oldest = {}
    for priority, label in _PRIORITY_LABELS.items():
        since = tx.stats_oldest_queued(priority)
        if since is not None:
            oldest[label] = since
    agents = [
        AgentSeen(name=name, online=status == "online" and (expires_at or 0) > now, last_seen=last_seen)
        for name, status, expires_at, last_seen in tx.stats_agents()
    ]
    failed = {
        (task_type, _label(priority)): count
        for (task_type, priority), count in tx.stats_failed_since(now - RECENT_FAILURES_WINDOW).items()
    }
    approvals, oldest_approval = tx.stats_approvals_waiting(APPROVAL)
    # Finished workflows stay until the retention pruner deletes them with their steps, so this is bounded.
    workflows = dict.fromkeys(WORKFLOW_STATES, 0) | tx.stats_workflows()
    return MeshSnapshot(
        at=now,
        tasks=tasks,
        oldest_queued=oldest,
        agents=agents,
        memory_keys=tx.stats_memory_keys(now),
        outbox_pending=tx.stats_outbox_pending(),
        heartbeats=tx.stats_heartbeats(),
        recently_failed=failed,
        approvals_waiting=approvals,
        oldest_approval=oldest_approval,
        keyed_queued=tx.stats_keyed_queued(),
        workflows=workflows,
    )
