"""Agents: creation, secrets, grants, registration (which is also the heartbeat), and what the dispatcher
sees (`RoutingView`)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from typing import Any

from mcs import auth, egress
from mcs.errors import BadRequest, Conflict, NotFound, Unprocessable
from mcs.models import Agent, AgentStatus, iso
from mcs.namespaces import Kind, Namespace
from mcs.routing import ROUTE_ALL, ROUTE_ANY, Candidate
from mcs.state import outbox_rows
from mcs.store.connection import Connection


def add_event(conn: Connection, agent: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
    conn.execute(
        "INSERT INTO agent_events (agent, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
        (agent, now, kind, actor, None if detail is None else json.dumps(detail)),
    )


def get(conn: Connection, name: str) -> Agent | None:
    row = conn.execute("SELECT * FROM agents WHERE name = ?", (name,)).fetchone()
    return Agent.from_row(row) if row else None


def with_secret_hash(conn: Connection, name: str) -> tuple[Agent | None, str | None]:
    """The agent and its stored secret hash, in one query (every authenticated request needs both)."""
    row = conn.execute("SELECT * FROM agents WHERE name = ?", (name,)).fetchone()
    return (Agent.from_row(row), row["secret_hash"]) if row else (None, None)


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(f"n{name}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this server gave out", code="bad_cursor") from exc
    if not raw.startswith("n"):
        raise BadRequest("cursor is not one this server gave out", code="bad_cursor")
    return raw[1:]


def list_page(conn: Connection, *, limit: int, cursor: str | None) -> tuple[list[Agent], str | None]:
    """Agents by name; the cursor continues after the last one shown (stable while agents come and go)."""
    after = _decode_cursor(cursor) if cursor else ""
    rows = conn.execute("SELECT * FROM agents WHERE name > ? ORDER BY name LIMIT ?", (after, limit + 1)).fetchall()
    agents = [Agent.from_row(r) for r in rows[:limit]]
    return agents, (_encode_cursor(agents[-1].name) if len(rows) > limit else None)


def create(
    conn: Connection,
    *,
    name: str,
    capabilities: list[str],
    actor: str,
    now: float,
    notify_host: str | None = None,
    claim_on_push: bool = False,
) -> dict[str, Any]:
    """A new agent; its two secrets are returned here once and never again. The capabilities given are
    its grant: it may register only those (none given: it may register any). `notify_host` pins the host
    its notify_url must name (normalized by the caller). `claim_on_push`: the dispatcher claims its tasks
    for it at assignment (the agent may change that when it registers)."""
    if conn.execute("SELECT 1 FROM agents WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"agent {name!r} already exists", code="agent_exists")
    secret, webhook_secret = auth.new_agent_secret(), auth.new_webhook_secret()
    caps = sorted(set(capabilities))
    granted = json.dumps(caps) if caps else None
    conn.execute(
        "INSERT INTO agents (name, secret_hash, webhook_secret, capabilities, granted, status, created_at,"
        " notify_host, claim_on_push) VALUES (?, ?, ?, ?, ?, 'offline', ?, ?, ?)",
        (name, auth.hash_secret(secret), webhook_secret, json.dumps(caps), granted, now, notify_host, claim_on_push),
    )
    detail: dict[str, Any] = {"granted": caps or None} | ({"notify_host": notify_host} if notify_host else {})
    if claim_on_push:
        detail["claim_on_push"] = True
    add_event(conn, name, "created", actor, now, detail)
    created: dict[str, Any] = {"name": name, "secret": secret, "webhook_secret": webhook_secret}
    created["claim_on_push"] = claim_on_push
    return created | ({"notify_host": notify_host} if notify_host else {})


def set_notify_host(conn: Connection, *, name: str, notify_host: str | None, actor: str, now: float) -> Agent:
    """Pin (or unpin, with None) the host an agent's notify_url must name. A current notify_url on another
    host is dropped at once, so no webhook goes there while the agent has not registered again."""
    agent = get(conn, name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    dropped = bool(agent.notify_url) and pin_refusal(notify_host, agent.notify_url, name=name) is not None
    conn.execute(
        "UPDATE agents SET notify_host = ?, notify_url = CASE WHEN ? THEN NULL ELSE notify_url END WHERE name = ?",
        (notify_host, dropped, name),
    )
    detail: dict[str, Any] = {"notify_host": notify_host}
    if dropped:
        detail["notify_url_dropped"] = agent.notify_url
    add_event(conn, name, "notify_host_set" if notify_host else "notify_host_cleared", actor, now, detail)
    updated = get(conn, name)
    assert updated is not None
    return updated


def set_claim_on_push(conn: Connection, *, name: str, claim_on_push: bool, actor: str, now: float) -> Agent:
    """Whether the dispatcher claims this agent's tasks for it at assignment (the webhook then carries the
    claim). An `agent_events` row says so, which is also how the dispatcher's routing view learns of it."""
    agent = get(conn, name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    if agent.claim_on_push != claim_on_push:
        conn.execute("UPDATE agents SET claim_on_push = ? WHERE name = ?", (claim_on_push, name))
        add_event(conn, name, "changed", actor, now, {"claim_on_push": claim_on_push})
    return replace(agent, claim_on_push=claim_on_push)


def update(
    conn: Connection,
    *,
    name: str,
    changes: dict[str, Any],
    actor: str,
    now: float,
) -> Agent:
    """The admin's changes to an agent: `notify_host` (None unpins), `claim_on_push`; those absent stay."""
    agent = get(conn, name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    if "notify_host" in changes:
        agent = set_notify_host(conn, name=name, notify_host=changes["notify_host"], actor=actor, now=now)
    if "claim_on_push" in changes:
        agent = set_claim_on_push(conn, name=name, claim_on_push=changes["claim_on_push"], actor=actor, now=now)
    return agent


def pin_refusal(notify_host: str | None, notify_url: str | None, *, name: str) -> str | None:
    """Why an agent pinned to `notify_host` may not use `notify_url`, or None when it may."""
    if not notify_host or not notify_url:
        return None
    try:
        host, _ = egress.url_target(notify_url)
    except egress.EgressRefused as exc:
        return str(exc)
    if host == notify_host:
        return None
    return (
        f"agent {name} is pinned to notify host {notify_host}: notify_url host {host} is refused "
        f"(the admin can change the pin: mcs admin agent update {name} --notify-host HOST)"
    )


def rotate(conn: Connection, *, name: str, actor: str, now: float) -> dict[str, str]:
    secret, webhook_secret = auth.new_agent_secret(), auth.new_webhook_secret()
    cur = conn.execute(
        "UPDATE agents SET secret_hash = ?, webhook_secret = ? WHERE name = ?",
        (auth.hash_secret(secret), webhook_secret, name),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no agent named {name!r}")
    add_event(conn, name, "rotated", actor, now)
    return {"name": name, "secret": secret, "webhook_secret": webhook_secret}


def delete(conn: Connection, *, name: str, actor: str, now: float) -> dict[str, Any]:
    """Remove an agent and its memory (`private:NAME` and `agent:NAME`), so an agent created later under
    the same name starts with none of it. Work assigned to it or claimed by it goes back to the queue at
    once (it can no longer complete it): claim tokens revoked, a claim's attempt given back. Tasks routed
    to it by name (fanout children too) fail: nobody else may take them. Returns what was removed."""
    if conn.execute("DELETE FROM agents WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"no agent named {name!r}")
    memory = {Namespace(kind, name).name: 0 for kind in (Kind.PRIVATE, Kind.AGENT)}
    for (ns,) in conn.execute("DELETE FROM memory WHERE ns IN (?, ?) RETURNING ns", tuple(memory)).fetchall():
        memory[ns] += 1
    # Its claims too (push-claimed or pulled): their tokens revoked, so a late completion gets 409, and the
    # attempt given back, since the task did not fail: its agent was removed.
    held = conn.execute(
        "SELECT id, state FROM tasks WHERE assigned_to = ? AND state IN ('assigned', 'claimed')", (name,)
    ).fetchall()
    conn.execute(
        "UPDATE tasks SET state = 'queued', assigned_to = NULL, assigned_at = NULL, parked = 0, updated_at = ?,"
        " claim_token = NULL, lease_expires_at = NULL,"
        " attempts = CASE WHEN state = 'claimed' THEN max(attempts - 1, 0) ELSE attempts END"
        " WHERE assigned_to = ? AND state IN ('assigned', 'claimed')",
        (now, name),
    )
    for task_id, state in held:
        detail = {"reason": f"agent {name} was deleted"} | ({"claimed": True} if state == "claimed" else {})
        conn.execute(
            "INSERT INTO task_events (task_id, at, kind, actor, detail) VALUES (?, ?, 'requeued', ?, ?)",
            (task_id, now, actor, json.dumps(detail)),
        )
    from mcs.store import tasks as tasks_store  # tasks imports this module

    failed = tasks_store.fail_routed_to(conn, agent=name, error=f"agent {name} was deleted", actor=actor, now=now)
    removed = {"memory_keys": memory, "tasks_requeued": len(held), "tasks_failed": len(failed)}
    add_event(conn, name, "deleted", actor, now, removed)
    return {"deleted": name} | removed


def register(
    conn: Connection,
    *,
    name: str,
    capabilities: list[str],
    notify_url: str | None,
    ttl: float,
    concurrency: int = 1,
    now: float,
    before: Agent | None = None,
    claim_on_push: bool | None = None,
) -> Agent:
    """Registration and heartbeat in one: the agent is online until now + ttl. An agent with a grant may
    claim only capabilities in it (422 otherwise). `before`: the agent as read in this transaction, when
    the caller has it (the api, after checking the secret), to save reading it again.

    A heartbeat that changes nothing routing looks at (same capabilities, notify_url and concurrency,
    and already online) writes no event; one that does writes `online` or `changed`, which is how the
    dispatcher learns that it must look at this agent again (see RoutingView). `claim_on_push` None keeps
    what is stored."""
    before = before if before is not None else get(conn, name)
    if before is None:
        raise NotFound(f"no agent named {name!r}")
    refusal = pin_refusal(before.notify_host, notify_url, name=name)
    if refusal is not None:
        raise Unprocessable(refusal, code="notify_host_pinned")
    caps = sorted(set(capabilities))
    if before.granted is not None:
        extra = sorted(set(caps) - set(before.granted))
        if extra:
            raise Unprocessable(
                f"agent {name} was not granted {', '.join(extra)} (granted: {', '.join(before.granted)});"
                f" an admin grants capabilities when creating the agent"
                f" (mcs admin agent create {name} --capability C ...)",
                code="capability_not_granted",
            )
    push = before.claim_on_push if claim_on_push is None else claim_on_push
    row = conn.execute(
        "UPDATE agents SET capabilities = ?, notify_url = ?, status = 'online', ttl = ?, expires_at = ?,"
        " last_seen = ?, concurrency = ?, claim_on_push = ? WHERE name = ? RETURNING *",
        (json.dumps(caps), notify_url, ttl, now + ttl, now, concurrency, push, name),
    ).fetchone()
    agent = Agent.from_row(row)
    if before.effective_status(now) is AgentStatus.OFFLINE:
        add_event(conn, name, "online", name, now, {"capabilities": caps, "claim_on_push": push})
    elif (before.capabilities, before.notify_url, before.concurrency, before.claim_on_push) != (
        agent.capabilities,
        agent.notify_url,
        agent.concurrency,
        agent.claim_on_push,
    ):
        add_event(
            conn,
            name,
            "changed",
            name,
            now,
            {"capabilities": caps, "notify_url": notify_url, "concurrency": concurrency, "claim_on_push": push},
        )
    return agent


def mark_expired_offline(conn: Connection, *, now: float, alert: bool = False) -> list[str]:
    """Online agents past their TTL go offline; with `alert`, each raises an agent.offline alert."""
    rows = conn.execute(
        "UPDATE agents SET status = 'offline' WHERE status = 'online' AND expires_at <= ? RETURNING name, last_seen",
        (now,),
    ).fetchall()
    for name, last_seen in rows:
        add_event(conn, name, "offline", "watchdog", now, {"reason": "no heartbeat within its TTL"})
        if alert:
            outbox_rows.alert(
                conn, event="agent.offline", task_id=None, data={"agent": name, "last_seen": iso(last_seen)}, now=now
            )
    return [r[0] for r in rows]


_CANDIDATE_COLUMNS = "name, capabilities, granted, notify_url, last_assigned_at, concurrency, expires_at, claim_on_push"
PARTIAL_READ_MAX = 500  # agents re-read by name in one pass at most; more than that, read them all


def _candidate(row: Any) -> Candidate:
    caps = frozenset(json.loads(row["capabilities"]))
    if row["granted"] is not None:  # a grant narrowed since it registered: only what is still granted
        caps &= frozenset(json.loads(row["granted"]))
    return Candidate(
        name=row["name"],
        capabilities=caps,
        pushable=bool(row["notify_url"]),
        load=0,
        last_assigned_at=row["last_assigned_at"] or 0.0,
        capacity=row["concurrency"],
        claim_on_push=bool(row["claim_on_push"]),
    )


def loads(conn: Connection) -> dict[str, int]:
    """Tasks each agent holds now (assigned or claimed)."""
    return dict(
        conn.execute(
            "SELECT assigned_to, count(*) FROM tasks WHERE state IN ('assigned', 'claimed')"
            " AND assigned_to IS NOT NULL GROUP BY assigned_to"
        ).fetchall()
    )


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

    def refresh(self, conn: Connection, *, now: float) -> bool:
        """Bring the view up to date within the caller's transaction; True when it read anything."""
        latest = conn.execute("SELECT coalesce(max(id), 0) FROM agent_events").fetchone()[0]
        if self.last_event is None or latest < self.last_event:  # first look, or the log was pruned
            self._read_all(conn, now)
            self.last_event = latest
            return True
        names: set[str] = set()
        if latest != self.last_event:
            names.update(
                r[0] for r in conn.execute("SELECT DISTINCT agent FROM agent_events WHERE id > ?", (self.last_event,))
            )
            self.last_event = latest
        if now >= self.soonest_expiry:
            names.update(n for n, at in self.expires.items() if at <= now)
        if not names:
            return False
        if len(names) > PARTIAL_READ_MAX:
            self._read_all(conn, now)
        else:
            self._read_some(conn, sorted(names), now)
        return True

    def _read_all(self, conn: Connection, now: float) -> None:
        rows = conn.execute(
            f"SELECT {_CANDIDATE_COLUMNS} FROM agents WHERE status = 'online' AND expires_at > ?", (now,)
        ).fetchall()
        self.agents = {r["name"]: _candidate(r) for r in rows}
        self.expires = {r["name"]: r["expires_at"] for r in rows}
        self.soonest_expiry = min(self.expires.values(), default=float("inf"))
        self._changed()
        self.full_reads += 1

    def _read_some(self, conn: Connection, names: list[str], now: float) -> None:
        marks = ",".join("?" * len(names))
        rows = {
            r["name"]: r
            for r in conn.execute(
                f"SELECT {_CANDIDATE_COLUMNS} FROM agents WHERE name IN ({marks})"
                " AND status = 'online' AND expires_at > ?",
                (*names, now),
            )
        }
        changed = False
        for name in names:
            old = self.agents.get(name)
            row = rows.get(name)
            if row is None:
                if old is not None:
                    del self.agents[name], self.expires[name]
                    changed = True
                continue
            new = _candidate(row)
            if old is None or (old.capabilities, old.pushable) != (new.capabilities, new.pushable):
                changed = True
            self.agents[name] = new
            self.expires[name] = row["expires_at"]
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

    def for_pass(self, conn: Connection) -> PassAgents:
        """The agents with the load they hold now, for one pass."""
        return PassAgents(self, loads(conn))

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


def webhook_target(conn: Connection, name: str) -> tuple[str | None, str] | None:
    """(notify_url, webhook_secret) for delivering to an agent, or None when it was deleted."""
    row = conn.execute("SELECT notify_url, webhook_secret FROM agents WHERE name = ?", (name,)).fetchone()
    return (row[0], row[1]) if row else None
