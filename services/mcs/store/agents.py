"""Agents: creation, secrets, registration (which is also the heartbeat), and what the dispatcher sees."""

from __future__ import annotations

import json
from typing import Any

from mcs import auth, egress
from mcs.errors import Conflict, NotFound, Unprocessable
from mcs.models import Agent, AgentStatus, iso
from mcs.routing import Candidate
from mcs.store import outbox_rows
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


def list_all(conn: Connection) -> list[Agent]:
    return [Agent.from_row(r) for r in conn.execute("SELECT * FROM agents ORDER BY name")]


def create(
    conn: Connection,
    *,
    name: str,
    capabilities: list[str],
    actor: str,
    now: float,
    notify_host: str | None = None,
) -> dict[str, Any]:
    """A new agent; its two secrets are returned here once and never again. `notify_host` pins the host
    its notify_url must name (normalized by the caller)."""
    if conn.execute("SELECT 1 FROM agents WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"agent {name!r} already exists", code="agent_exists")
    secret, webhook_secret = auth.new_agent_secret(), auth.new_webhook_secret()
    conn.execute(
        "INSERT INTO agents (name, secret_hash, webhook_secret, capabilities, status, created_at, notify_host)"
        " VALUES (?, ?, ?, ?, 'offline', ?, ?)",
        (name, auth.hash_secret(secret), webhook_secret, json.dumps(sorted(set(capabilities))), now, notify_host),
    )
    add_event(conn, name, "created", actor, now, {"notify_host": notify_host} if notify_host else None)
    created: dict[str, Any] = {"name": name, "secret": secret, "webhook_secret": webhook_secret}
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


def delete(conn: Connection, *, name: str, actor: str, now: float) -> None:
    """Remove an agent. Work assigned to it but not claimed goes back to the queue at once; a lease it
    holds runs out and the watchdog retries the task, since the agent can no longer complete it. Tasks
    routed to it by name (fanout children too) fail: nobody else may take them."""
    if conn.execute("DELETE FROM agents WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"no agent named {name!r}")
    rows = conn.execute(
        "UPDATE tasks SET state = 'queued', assigned_to = NULL, assigned_at = NULL, parked = 0, updated_at = ?"
        " WHERE assigned_to = ? AND state = 'assigned' RETURNING id",
        (now, name),
    ).fetchall()
    for (task_id,) in rows:
        conn.execute(
            "INSERT INTO task_events (task_id, at, kind, actor, detail) VALUES (?, ?, 'requeued', ?, ?)",
            (task_id, now, actor, json.dumps({"reason": f"agent {name} was deleted"})),
        )
    from mcs.store import tasks as tasks_store  # tasks imports this module

    tasks_store.fail_routed_to(conn, agent=name, error=f"agent {name} was deleted", actor=actor, now=now)
    add_event(conn, name, "deleted", actor, now)


def register(
    conn: Connection,
    *,
    name: str,
    capabilities: list[str],
    notify_url: str | None,
    ttl: float,
    concurrency: int = 1,
    now: float,
) -> Agent:
    """Registration and heartbeat in one: the agent is online until now + ttl."""
    before = get(conn, name)
    if before is None:
        raise NotFound(f"no agent named {name!r}")
    refusal = pin_refusal(before.notify_host, notify_url, name=name)
    if refusal is not None:
        raise Unprocessable(refusal, code="notify_host_pinned")
    caps = json.dumps(sorted(set(capabilities)))
    conn.execute(
        "UPDATE agents SET capabilities = ?, notify_url = ?, status = 'online', ttl = ?, expires_at = ?,"
        " last_seen = ?, concurrency = ? WHERE name = ?",
        (caps, notify_url, ttl, now + ttl, now, concurrency, name),
    )
    if before.effective_status(now) is AgentStatus.OFFLINE:
        add_event(conn, name, "online", name, now, {"capabilities": sorted(set(capabilities))})
    agent = get(conn, name)
    assert agent is not None
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


def candidates(conn: Connection, *, now: float) -> list[Candidate]:
    """Online agents with their current load, for routing."""
    loads = dict(
        conn.execute(
            "SELECT assigned_to, count(*) FROM tasks WHERE state IN ('assigned', 'claimed')"
            " AND assigned_to IS NOT NULL GROUP BY assigned_to"
        ).fetchall()
    )
    rows = conn.execute(
        "SELECT name, capabilities, notify_url, last_assigned_at, concurrency FROM agents"
        " WHERE status = 'online' AND expires_at > ? ORDER BY name",
        (now,),
    ).fetchall()
    return [
        Candidate(
            name=r["name"],
            capabilities=frozenset(json.loads(r["capabilities"])),
            pushable=bool(r["notify_url"]),
            load=loads.get(r["name"], 0),
            last_assigned_at=r["last_assigned_at"] or 0.0,
            capacity=r["concurrency"],
        )
        for r in rows
    ]


def webhook_target(conn: Connection, name: str) -> tuple[str | None, str] | None:
    """(notify_url, webhook_secret) for delivering to an agent, or None when it was deleted."""
    row = conn.execute("SELECT notify_url, webhook_secret FROM agents WHERE name = ?", (name,)).fetchone()
    return (row[0], row[1]) if row else None
