"""What an operator asks when something waits: which processes beat, what is queued, which capabilities have
queued work and nobody online to serve it, and which agents the notifier cannot reach (`GET /v1/status`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcs import routing
from mcs.models import HEARTBEAT_MAX_AGE, Agent, iso
from mcs.state.stats import _PRIORITY_LABELS, QUEUE_STATES, queue_counts
from mcs.store.connection import Connection

UNREACHABLE_WINDOW = 3600.0  # seconds: a webhook that failed longer ago than this is old news


@dataclass(frozen=True)
class ProcessBeat:
    name: str
    pid: int
    started_at: float
    beat_at: float

    def to_api(self, now: float) -> dict[str, Any]:
        age = max(0.0, now - self.beat_at)
        return {
            "name": self.name,
            "pid": self.pid,
            "started_at": iso(self.started_at),
            "beat_at": iso(self.beat_at),
            "age_seconds": round(age, 3),
            "healthy": age <= HEARTBEAT_MAX_AGE,
        }


@dataclass(frozen=True)
class Unserved:
    """Queued work that no online agent can take: the capabilities it needs (or the agent it is routed to)."""

    capabilities: tuple[str, ...]
    route: str
    queued: int
    offline_agents: tuple[str, ...]  # agents that would take it if they were online

    def to_api(self) -> dict[str, Any]:
        return {
            "capabilities": list(self.capabilities),
            "route": self.route,
            "queued": self.queued,
            "offline_agents": list(self.offline_agents),
        }


@dataclass(frozen=True)
class Unreachable:
    """An agent whose most recent webhook failed (still retrying, or given up)."""

    agent: str
    notify_url: str | None
    error: str | None
    attempts: int
    gave_up: bool
    at: float
    task_id: str | None

    def to_api(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "notify_url": self.notify_url,
            "error": self.error,
            "attempts": self.attempts,
            "gave_up": self.gave_up,
            "at": iso(self.at),
            "task_id": self.task_id,
        }


@dataclass(frozen=True)
class MeshStatus:
    at: float
    processes: list[ProcessBeat]
    queue: dict[str, dict[str, int]]  # state -> priority label -> tasks (every non-terminal state)
    unserved: list[Unserved]
    agents: list[Agent]
    unreachable: list[Unreachable]

    def to_api(self) -> dict[str, Any]:
        now = self.at
        agents = [a.to_admin_api(now) for a in self.agents]  # the status is for the admin
        return {
            "at": iso(now),
            "processes": [p.to_api(now) for p in self.processes],
            "queue": self.queue,
            "unserved": [u.to_api() for u in self.unserved],
            "agents": {
                "online": [a for a in agents if a["status"] == "online"],
                "offline": [a for a in agents if a["status"] != "online"],
            },
            "unreachable": [u.to_api() for u in self.unreachable],
        }


def _serves(agent: Agent, capabilities: tuple[str, ...], route: str) -> bool:
    return routing.allowed(route, agent.name) and routing.capable(agent.usable_capabilities, capabilities)


def read(conn: Connection, *, now: float) -> MeshStatus:
    """The mesh's status in one read transaction."""
    processes = [
        ProcessBeat(name=r[0], pid=r[1], started_at=r[2], beat_at=r[3])
        for r in conn.execute("SELECT process, pid, started_at, beat_at FROM heartbeats ORDER BY process")
    ]
    queue = {state: {label: 0 for label in _PRIORITY_LABELS.values()} for state in QUEUE_STATES}
    for (state, priority), count in queue_counts(conn).items():
        queue.setdefault(state, {})[_PRIORITY_LABELS.get(priority, str(priority))] = count
    agents = [Agent.from_row(r) for r in conn.execute("SELECT * FROM agents ORDER BY name")]
    online = [a for a in agents if a.effective_status(now).value == "online"]
    unserved = []
    for caps_json, route, count in conn.execute(  # from the counts 0017's triggers keep, not the queue itself
        "SELECT capabilities, route, sum(n) FROM task_counts WHERE state = 'queued' GROUP BY capabilities, route"
        " HAVING sum(n) > 0 ORDER BY sum(n) DESC"
    ):
        caps = tuple(json.loads(caps_json))
        if any(_serves(a, caps, route) for a in online):
            continue
        would = tuple(a.name for a in agents if a not in online and _serves(a, caps, route))
        unserved.append(Unserved(capabilities=caps, route=route, queued=count, offline_agents=would))
    unreachable = [
        Unreachable(
            agent=r["agent"],
            notify_url=r["notify_url"],
            error=r["last_error"],
            attempts=r["attempts"],
            gave_up=r["state"] == "dead",
            at=r["updated_at"],
            task_id=r["task_id"],
        )
        for r in conn.execute(
            # each agent's latest webhook, one step down outbox_agent per agent (not a pass over every row)
            "SELECT o.agent, a.notify_url, o.last_error, o.attempts, o.state, o.updated_at, o.task_id FROM agents a"
            " JOIN outbox o ON o.id = (SELECT max(id) FROM outbox WHERE agent = a.name AND kind = 'webhook')"
            " WHERE o.state NOT IN ('delivered', 'superseded') AND o.attempts > 0 AND o.last_error IS NOT NULL"
            " AND o.updated_at > ?"
            " ORDER BY o.agent",
            (now - UNREACHABLE_WINDOW,),
        )
    ]
    return MeshStatus(
        at=now, processes=processes, queue=queue, unserved=unserved, agents=agents, unreachable=unreachable
    )
