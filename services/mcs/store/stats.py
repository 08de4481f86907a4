"""What the mesh looks like right now, read in one snapshot for the metrics collector."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcs.models import APPROVAL, Priority
from mcs.store.connection import Connection
from mcs.store.workflows import STATES as WORKFLOW_STATES

QUEUE_STATES = ("queued", "assigned", "claimed", "retrying", "waiting", "blocked")


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


def task_types(conn: Connection, *, limit: int = 500) -> list[str]:
    """Task types the database knows (an index-only scan), for creating their metric series at start."""
    return [r[0] for r in conn.execute("SELECT DISTINCT type FROM tasks ORDER BY type LIMIT ?", (limit,))]


def claimed_kinds(conn: Connection) -> list[tuple[str, str]]:
    """(type, priority label) of the tasks agents hold now: the ones whose lease the watchdog may expire."""
    rows = conn.execute("SELECT DISTINCT type, priority FROM tasks WHERE state = 'claimed'")
    return [(t, _PRIORITY_LABELS.get(p, str(p))) for t, p in rows]


def snapshot(conn: Connection, *, now: float) -> MeshSnapshot:
    tasks = {(state, label): 0 for state in QUEUE_STATES for label in _PRIORITY_LABELS.values()}
    rows = conn.execute(
        f"SELECT state, priority, count(*) FROM tasks WHERE state IN ({','.join('?' * len(QUEUE_STATES))})"
        " GROUP BY state, priority",
        QUEUE_STATES,
    )
    for state, priority, count in rows:
        tasks[(state, _PRIORITY_LABELS.get(priority, str(priority)))] = count
    # A queued task has waited since it was submitted, or since its retry fell due.
    oldest = {
        _PRIORITY_LABELS.get(priority, str(priority)): since
        for priority, since in conn.execute(
            "SELECT priority, min(coalesce(not_before, created_at)) FROM tasks WHERE state = 'queued' GROUP BY priority"
        )
    }
    agents = [
        AgentSeen(name=name, online=status == "online" and (expires_at or 0) > now, last_seen=last_seen)
        for name, status, expires_at, last_seen in conn.execute(
            "SELECT name, status, expires_at, last_seen FROM agents ORDER BY name"
        )
    ]
    memory = dict(
        conn.execute(
            "SELECT ns, count(*) FROM memory WHERE expires_at IS NULL OR expires_at > ? GROUP BY ns", (now,)
        ).fetchall()
    )
    outbox = dict(conn.execute("SELECT kind, count(*) FROM outbox WHERE state = 'pending' GROUP BY kind").fetchall())
    beats = dict(conn.execute("SELECT process, beat_at FROM heartbeats").fetchall())
    failed = {
        (task_type, _PRIORITY_LABELS.get(priority, str(priority))): count
        for task_type, priority, count in conn.execute(
            "SELECT type, priority, count(*) FROM tasks WHERE state = 'failed' AND updated_at > ?"
            " GROUP BY type, priority",
            (now - RECENT_FAILURES_WINDOW,),
        )
    }
    # Approval gates waiting for a person (on tasks_type: only approval rows are read); an approval's
    # updated_at is when it started waiting, as nothing else changes it until someone decides it.
    approvals, oldest_approval = conn.execute(
        "SELECT count(*), min(updated_at) FROM tasks WHERE type = ? AND state = 'waiting'", (APPROVAL,)
    ).fetchone()
    (keyed_queued,) = conn.execute(
        "SELECT count(*) FROM tasks WHERE state = 'queued' AND concurrency_key IS NOT NULL"
    ).fetchone()
    # Finished workflows stay until the retention pruner deletes them with their steps, so this is bounded.
    workflows = dict.fromkeys(WORKFLOW_STATES, 0)
    workflows.update(conn.execute("SELECT state, count(*) FROM workflows GROUP BY state").fetchall())
    return MeshSnapshot(
        at=now,
        tasks=tasks,
        oldest_queued=oldest,
        agents=agents,
        memory_keys=memory,
        outbox_pending=outbox,
        heartbeats=beats,
        recently_failed=failed,
        approvals_waiting=approvals,
        oldest_approval=oldest_approval,
        keyed_queued=keyed_queued,
        workflows=workflows,
    )
