"""What the dispatcher sees of the agents: `RoutingView` (the online agents, kept between passes and
re-read only where they changed) and `PassAgents` (their loads during one pass). Engine-free."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mcs.engines.base import Tx
from mcs.models import RoutableAgent
from mcs.routing import ROUTE_ALL, ROUTE_ANY, Candidate

PARTIAL_READ_MAX = 500  # agents re-read by name in one pass at most; more than that, read them all


def _candidate(agent: RoutableAgent) -> Candidate:
    caps = frozenset(agent.capabilities)
    if agent.granted is not None:  # a grant narrowed since it registered: only what is still granted
        caps &= frozenset(agent.granted)
    return Candidate(
        name=agent.name,
        capabilities=caps,
        pushable=bool(agent.notify_url),
        load=0,
        last_assigned_at=agent.last_assigned_at or 0.0,
        capacity=agent.concurrency,
        claim_on_push=agent.claim_on_push,
    )


def loads(tx: Tx) -> dict[str, int]:
    """Tasks each agent holds now (assigned or claimed)."""
    return tx.loads()


@dataclass
class RoutingView:
    """The online agents as the dispatcher routes to them, kept between passes.

    Reading every online agent on every pass made a pass O(agents): with 10,000 agents heartbeating, that
    was most of a core. Instead the view re-reads only what may have changed: the agents named in
    `agent_events` since its last look (creation, deletion, coming online, going offline, a heartbeat that
    changed capabilities, notify_url or concurrency: `register` writes an event for each), and the agents
    whose TTL, as last read, has run out (a heartbeat that changed nothing moved it, or they are gone).
    An unchanged heartbeat therefore costs the dispatcher nothing. `routable` counts changes to who could
    take what (membership, capabilities, notify_url): then parked tasks are looked at again.
    """

    agents: dict[str, Candidate] = field(default_factory=dict)  # load 0: a pass adds loads (PassAgents)
    expires: dict[str, float] = field(default_factory=dict)
    last_event: int | None = None  # the agent_events id seen last; None: never read
    soonest_expiry: float = float("inf")
    routable: int = 0
    full_reads: int = 0
    partial_reads: int = 0
    _by_capability: dict[str, set[str]] | None = None  # capability -> agents with it; None: to rebuild
    _pushable: set[str] | None = None

    def refresh(self, tx: Tx, *, now: float) -> bool:
        """Bring the view up to date within the caller's transaction; True when it read anything."""
        names, latest = tx.agent_changes(self.last_event)
        if self.last_event is None or latest < self.last_event:  # first look, or the log was pruned
            self._read_all(tx, now)
            self.last_event = latest
            return True
        self.last_event = latest
        if now >= self.soonest_expiry:
            names.update(n for n, at in self.expires.items() if at <= now)
        if not names:
            return False
        if len(names) > PARTIAL_READ_MAX:
            self._read_all(tx, now)
        else:
            self._read_some(tx, sorted(names), now)
        return True

    def _read_all(self, tx: Tx, now: float) -> None:
        found = tx.agents_routable(now)
        self.agents = {a.name: _candidate(a) for a in found}
        self.expires = {a.name: a.expires_at for a in found}
        self.soonest_expiry = min(self.expires.values(), default=float("inf"))
        self._changed()
        self.full_reads += 1

    def _read_some(self, tx: Tx, names: list[str], now: float) -> None:
        found = {a.name: a for a in tx.agents_routable(now, names)}
        changed = False
        for name in names:
            old = self.agents.get(name)
            row = found.get(name)
            if row is None:
                if old is not None:
                    del self.agents[name], self.expires[name]
                    changed = True
                continue
            new = _candidate(row)
            if old is None or (old.capabilities, old.pushable) != (new.capabilities, new.pushable):
                changed = True
            self.agents[name] = new
            self.expires[name] = row.expires_at
        self.soonest_expiry = min(self.expires.values(), default=float("inf"))
        if changed:
            self._changed()
        self.partial_reads += 1

    def _changed(self) -> None:
        self.routable += 1
        self._by_capability = self._pushable = None

    def _index(self) -> tuple[dict[str, set[str]], set[str]]:
        if self._by_capability is None or self._pushable is None:
            by_capability: dict[str, set[str]] = {}
            for name, c in self.agents.items():
                for cap in c.capabilities:
                    by_capability.setdefault(cap, set()).add(name)
            self._by_capability = by_capability
            self._pushable = {n for n, c in self.agents.items() if c.pushable}
        return self._by_capability, self._pushable

    def capable(self, required: tuple[str, ...]) -> list[str]:
        """Names of the agents that may have every capability in `required` (a superset of them: the
        agents holding the rarest one); every agent when nothing is required."""
        if not required:
            return list(self.agents)
        by_capability, _ = self._index()
        rarest: set[str] | None = None
        for cap in required:
            names = by_capability.get(cap, set())
            if rarest is None or len(names) < len(rarest):
                rarest = names
        return list(rarest or ())

    def for_pass(self, tx: Tx) -> PassAgents:
        """The agents with the load they hold now, for one pass."""
        return PassAgents(self, loads(tx))

    def assigned(self, name: str, now: float) -> None:
        """The dispatcher assigned a task to `name` (it wrote last_assigned_at itself)."""
        if name in self.agents:
            self.agents[name] = replace(self.agents[name], last_assigned_at=now)


class PassAgents:
    """The view's agents during one pass: their loads, and how many push agents still have room, kept up
    to date as the pass assigns work (so a pass costs O(tasks + busy agents), not O(agents) per task)."""

    def __init__(self, view: RoutingView, held: dict[str, int]) -> None:
        self.view = view
        self.load = held
        _, pushable = view._index()
        full = sum(1 for n, k in held.items() if n in pushable and k >= view.agents[n].capacity)
        self.free = len(pushable) - full  # push agents with room

    @property
    def room(self) -> bool:
        return self.free > 0

    def candidates(self, route: str, required: tuple[str, ...]) -> list[Candidate]:
        """The agents that could take a task with this route and these capabilities, with their loads."""
        if route not in (ROUTE_ANY, ROUTE_ALL):
            names = [route] if route in self.view.agents else []
        else:
            names = self.view.capable(required)
        out = []
        for name in names:
            c = self.view.agents[name]
            held = self.load.get(name, 0)
            out.append(replace(c, load=held) if held else c)
        return out

    def took(self, name: str, now: float) -> None:
        """`name` was assigned a task now."""
        c = self.view.agents[name]
        before = self.load.get(name, 0)
        self.load[name] = before + 1
        if c.pushable and before < c.capacity <= before + 1:
            self.free -= 1
        self.view.assigned(name, now)
