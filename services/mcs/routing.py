"""Pure routing decisions: a task and the agents that could take it -> who gets it. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ROUTE_ANY = "any"
ROUTE_ALL = "all"


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """An online agent as the dispatcher sees it at one moment."""

    name: str
    capabilities: frozenset[str]
    pushable: bool  # has a notify_url, so the dispatcher can hand it work
    load: int  # tasks it holds now (assigned or claimed)
    last_assigned_at: float  # 0 when never
    capacity: int = 1  # tasks it takes at once (its registered concurrency)
    claim_on_push: bool = False  # the dispatcher claims for it at assignment (the webhook carries the claim)

    @property
    def has_room(self) -> bool:
        return self.load < self.capacity


def capable(agent_capabilities: Iterable[str], required: Iterable[str]) -> bool:
    """An agent can take a task when it has every capability the task requires (a subset match)."""
    return set(required) <= set(agent_capabilities)


def allowed(route: str, agent: str) -> bool:
    """Whether a task with this route may go to this agent at all."""
    return route in (ROUTE_ANY, ROUTE_ALL) or route == agent


def pick_agent(
    *,
    route: str,
    required: Iterable[str],
    candidates: Iterable[Candidate],
    avoid: Mapping[str, bool] | None = None,
    respect_capacity: bool = True,
) -> str | None:
    """The agent a `route=any` or named task goes to now, or None (it stays queued).

    Only agents with a notify_url are picked: the dispatcher's job is to push. Agents that poll take work
    with `claim next`. Least-loaded first, then the one that waited longest since its last assignment,
    then by name so the choice is deterministic. `avoid` maps agent -> hard: hard means it rejected this
    task (never again); soft means it let a claim lapse (only if nobody else can). An agent holding as many
    tasks as its capacity gets no more until one ends; `respect_capacity=False` asks whether anyone could
    take the task at all (when nobody could, the dispatcher parks it).
    """
    avoid = avoid or {}
    need = set(required)
    eligible = [
        c
        for c in candidates
        if c.pushable
        and allowed(route, c.name)
        and need <= c.capabilities
        and not avoid.get(c.name, False)
        and (c.has_room or not respect_capacity)
    ]
    if not eligible:
        return None
    preferred = [c for c in eligible if c.name not in avoid] or eligible
    best = min(preferred, key=lambda c: (c.load, c.last_assigned_at, c.name))
    return best.name


def fanout_targets(*, required: Iterable[str], candidates: Iterable[Candidate]) -> list[str]:
    """Every capable online agent, pushable or not, in name order: one child task each."""
    need = set(required)
    return sorted(c.name for c in candidates if need <= c.capabilities)
