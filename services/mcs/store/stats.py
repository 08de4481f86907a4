"""What the mesh looks like right now, read in one snapshot for the metrics collector."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcs.models import APPROVAL, Priority
from mcs.store.connection import Connection
from mcs.store.tasks import ENDED
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


# Distinct types by skipping through tasks_type: one index step per type, where DISTINCT read the index's
# every row (90 ms at a million tasks, at each process's start).
_TYPES_SQL = (
    "WITH RECURSIVE t(type) AS (SELECT min(type) FROM tasks"
    " UNION ALL SELECT (SELECT min(type) FROM tasks WHERE type > t.type) FROM t WHERE t.type IS NOT NULL)"
    " SELECT type FROM t WHERE type IS NOT NULL LIMIT ?"
)


def task_types(conn: Connection, *, limit: int = 500) -> list[str]:
    """Task types the database knows (a skip through the type index), for creating their metric series."""
    return [r[0] for r in conn.execute(_TYPES_SQL, (limit,))]


def queue_counts(conn: Connection) -> dict[tuple[str, int], int]:
    """(state, priority) -> unfinished tasks, from the counts the triggers of 0017 keep (a few rows read,
    however long the queue)."""
    rows = conn.execute(
        f"SELECT state, priority, sum(n) FROM task_counts WHERE state IN ({','.join('?' * len(QUEUE_STATES))})"
        " GROUP BY state, priority",
        QUEUE_STATES,
    )
    return {(state, priority): int(count) for state, priority, count in rows if count}


def claimed_kinds(conn: Connection) -> list[tuple[str, str]]:
    """(type, priority label) of the tasks agents hold now: the ones whose lease the watchdog may expire."""
    rows = conn.execute("SELECT DISTINCT type, priority FROM tasks WHERE state = 'claimed'")
    return [(t, _PRIORITY_LABELS.get(p, str(p))) for t, p in rows]


def snapshot(conn: Connection, *, now: float) -> MeshSnapshot:
    tasks = {(state, label): 0 for state in QUEUE_STATES for label in _PRIORITY_LABELS.values()}
    for (state, priority), count in queue_counts(conn).items():
        tasks[(state, _PRIORITY_LABELS.get(priority, str(priority)))] = count
    # A queued task has waited since it was submitted, or since its retry fell due: one step down the
    # partial index tasks_queued_since per priority (a GROUP BY would read the whole queue).
    oldest = {}
    for priority, label in _PRIORITY_LABELS.items():
        (since,) = conn.execute(
            "SELECT min(coalesce(not_before, created_at)) FROM tasks WHERE state = 'queued' AND priority = ?",
            (priority,),
        ).fetchone()
        if since is not None:
            oldest[label] = since
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
    # the freshest replica of each process: a process is down when none of its replicas beats
    beats = dict(conn.execute("SELECT process, max(beat_at) FROM heartbeats GROUP BY process").fetchall())
    failed = {
        (task_type, _PRIORITY_LABELS.get(priority, str(priority))): count
        for task_type, priority, count in conn.execute(
            f"SELECT type, priority, count(*) FROM tasks WHERE state = 'failed' AND {ENDED} AND updated_at > ?"
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
        "SELECT count(*) FROM tasks INDEXED BY tasks_queued_keyed"
        " WHERE state = 'queued' AND concurrency_key IS NOT NULL"
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
