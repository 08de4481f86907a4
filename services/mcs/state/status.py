"""What an operator asks when something waits: which processes beat, what is queued, which capabilities have
queued work and nobody online to serve it, and which agents the notifier cannot reach (`GET /v1/status`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcs import routing
from mcs.engines.base import Tx
from mcs.models import Agent, ProcessBeat, Unreachable, iso
from mcs.state.stats import _PRIORITY_LABELS, QUEUE_STATES, queue_counts

__all__ = ["UNREACHABLE_WINDOW", "MeshStatus", "ProcessBeat", "Unreachable", "Unserved", "read"]

UNREACHABLE_WINDOW = 3600.0  # seconds: a webhook that failed longer ago than this is old news


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
class MeshStatus:
    at: float
    processes: list[ProcessBeat]  # one per replica (process, instance)
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


def read(tx: Tx, *, now: float) -> MeshStatus:
    """The mesh's status in one read transaction."""
    processes = tx.heartbeats()
    queue = {state: {label: 0 for label in _PRIORITY_LABELS.values()} for state in QUEUE_STATES}
    for (state, priority), count in queue_counts(tx).items():
        queue.setdefault(state, {})[_PRIORITY_LABELS.get(priority, str(priority))] = count
    agents = tx.status_agents()
    online = [a for a in agents if a.effective_status(now).value == "online"]
    unserved = []
    for caps, route, count in tx.status_unserved():  # from the counts 0017's triggers keep, not the queue
        if any(_serves(a, caps, route) for a in online):
            continue
        would = tuple(a.name for a in agents if a not in online and _serves(a, caps, route))
        unserved.append(Unserved(capabilities=caps, route=route, queued=count, offline_agents=would))
    unreachable = tx.status_unreachable(now - UNREACHABLE_WINDOW)
    return MeshStatus(
        at=now, processes=processes, queue=queue, unserved=unserved, agents=agents, unreachable=unreachable
    )
