"""Agents: creation, secrets, grants, registration (which is also the heartbeat), deletion, and going
offline. Engine-free: every read and write goes through the transaction's `Tx` methods."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mcs import auth, egress, render
from mcs.engines.base import Duplicate, Tx
from mcs.errors import Conflict, NotFound, Unprocessable
from mcs.models import Agent, AgentRemoved, AgentSecrets, AgentStatus, NewAgent, iso
from mcs.namespaces import Kind, Namespace
from mcs.state import outbox_rows, transitions
from mcs.state.routing_view import PARTIAL_READ_MAX as PARTIAL_READ_MAX
from mcs.state.routing_view import PassAgents as PassAgents
from mcs.state.routing_view import RoutingView as RoutingView
from mcs.state.routing_view import loads as loads


def add_event(tx: Tx, agent: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
    tx.agent_event_add(agent, kind, actor, now, detail)


def get(tx: Tx, name: str) -> Agent | None:
    return tx.agent_get(name)


def with_secret_hash(tx: Tx, name: str) -> tuple[Agent | None, str | None]:
    """The agent and its stored secret hash, in one query (every authenticated request needs both)."""
    return tx.agent_with_secret(name)


def _encode_cursor(text: str) -> str:
    return render.encode_text_cursor("n", text)


def _decode_cursor(cursor: str) -> str:
    return render.decode_text_cursor("n", cursor)


def list_page(tx: Tx, *, limit: int, cursor: str | None) -> tuple[list[Agent], str | None]:
    """Agents by name; the cursor continues after the last one shown (stable while agents come and go)."""
    after = _decode_cursor(cursor) if cursor else ""
    found = tx.agents_page(after=after, limit=limit + 1)
    agents = found[:limit]
    return agents, (_encode_cursor(agents[-1].name) if len(found) > limit else None)


def create(
    tx: Tx,
    *,
    name: str,
    capabilities: list[str],
    actor: str,
    now: float,
    notify_host: str | None = None,
    claim_on_push: bool = False,
) -> AgentSecrets:
    """A new agent; its two secrets are returned here once and never again. The capabilities given are
    its grant: it may register only those (none given: it may register any). `notify_host` pins the host
    its notify_url must name (normalized by the caller). `claim_on_push`: the dispatcher claims its tasks
    for it at assignment (the agent may change that when it registers)."""
    secret, webhook_secret = auth.new_agent_secret(), auth.new_webhook_secret()
    caps = tuple(sorted(set(capabilities)))
    try:
        tx.agent_insert(
            NewAgent(
                name=name,
                secret_hash=auth.hash_secret(secret),
                webhook_secret=webhook_secret,
                capabilities=caps,
                granted=caps or None,
                created_at=now,
                notify_host=notify_host,
                claim_on_push=claim_on_push,
            )
        )
    except Duplicate:  # the name's key decides, also between two creators at once (site 11)
        raise Conflict(f"agent {name!r} already exists", code="agent_exists") from None
    detail: dict[str, Any] = {"granted": list(caps) or None} | ({"notify_host": notify_host} if notify_host else {})
    if claim_on_push:
        detail["claim_on_push"] = True
    add_event(tx, name, "created", actor, now, detail)
    return AgentSecrets(
        name=name,
        secret=secret,
        webhook_secret=webhook_secret,
        claim_on_push=claim_on_push,
        notify_host=notify_host,
    )


def _locked(tx: Tx, name: str) -> Agent:
    agent = tx.agent_for_update(name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    return agent


def set_notify_host(tx: Tx, *, name: str, notify_host: str | None, actor: str, now: float) -> Agent:
    """Pin (or unpin, with None) the host an agent's notify_url must name. A current notify_url on another
    host is dropped at once, so no webhook goes there while the agent has not registered again."""
    agent = _locked(tx, name)
    dropped = bool(agent.notify_url) and pin_refusal(notify_host, agent.notify_url, name=name) is not None
    tx.agent_set_notify_host(name, notify_host, drop_notify_url=dropped)
    detail: dict[str, Any] = {"notify_host": notify_host}
    if dropped:
        detail["notify_url_dropped"] = agent.notify_url
    add_event(tx, name, "notify_host_set" if notify_host else "notify_host_cleared", actor, now, detail)
    updated = tx.agent_get(name)
    assert updated is not None
    return updated


def set_claim_on_push(tx: Tx, *, name: str, claim_on_push: bool, actor: str, now: float) -> Agent:
    """Whether the dispatcher claims this agent's tasks for it at assignment (the webhook then carries the
    claim). An `agent_events` row says so, which is also how the dispatcher's routing view learns of it."""
    agent = _locked(tx, name)
    if agent.claim_on_push != claim_on_push:
        tx.agent_set_claim_on_push(name, claim_on_push)
        add_event(tx, name, "changed", actor, now, {"claim_on_push": claim_on_push})
    return replace(agent, claim_on_push=claim_on_push)


def update(
    tx: Tx,
    *,
    name: str,
    changes: dict[str, Any],
    actor: str,
    now: float,
) -> Agent:
    """The admin's changes to an agent: `notify_host` (None unpins), `claim_on_push`; those absent stay."""
    agent = _locked(tx, name)
    if "notify_host" in changes:
        agent = set_notify_host(tx, name=name, notify_host=changes["notify_host"], actor=actor, now=now)
    if "claim_on_push" in changes:
        agent = set_claim_on_push(tx, name=name, claim_on_push=changes["claim_on_push"], actor=actor, now=now)
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


def rotate(tx: Tx, *, name: str, actor: str, now: float) -> AgentSecrets:
    """New secrets for an agent, shown once; the old ones stop working at commit."""
    secret, webhook_secret = auth.new_agent_secret(), auth.new_webhook_secret()
    if not tx.agent_set_secrets(name, secret_hash=auth.hash_secret(secret), webhook_secret=webhook_secret):
        raise NotFound(f"no agent named {name!r}")
    add_event(tx, name, "rotated", actor, now)
    return AgentSecrets(name=name, secret=secret, webhook_secret=webhook_secret)


def delete(tx: Tx, *, name: str, actor: str, now: float) -> AgentRemoved:
    """Remove an agent and its memory (`private:NAME` and `agent:NAME`), so an agent created later under
    the same name starts with none of it. Work assigned to it or claimed by it goes back to the queue at
    once (it can no longer complete it): claim tokens revoked, a claim's attempt given back. Tasks routed
    to it by name (fanout children too) fail: nobody else may take them. Returns what was removed."""
    if not tx.agent_delete(name):
        raise NotFound(f"no agent named {name!r}")
    memory = tx.memory_drop_namespaces([Namespace(kind, name).name for kind in (Kind.PRIVATE, Kind.AGENT)])
    # Its claims too (push-claimed or pulled): their tokens revoked, so a late completion gets 409, and the
    # attempt given back, since the task did not fail: its agent was removed.
    held = tx.agent_tasks_requeue(name, now)
    for task_id, state in held:
        detail = {"reason": f"agent {name} was deleted"} | ({"claimed": True} if state == "claimed" else {})
        transitions.add_event(tx, task_id, "requeued", actor, now, detail)
    failed = transitions.fail_routed_to(tx, agent=name, error=f"agent {name} was deleted", actor=actor, now=now)
    removed = AgentRemoved(name=name, memory_keys=memory, tasks_requeued=len(held), tasks_failed=len(failed))
    add_event(tx, name, "deleted", actor, now, removed.detail())
    return removed


def register(
    tx: Tx,
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
    before = before if before is not None else tx.agent_get(name)
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
    agent = tx.agent_register(
        name,
        capabilities=tuple(caps),
        notify_url=notify_url,
        ttl=ttl,
        concurrency=concurrency,
        claim_on_push=push,
        now=now,
    )
    if agent is None:  # deleted since `before` was read
        raise NotFound(f"no agent named {name!r}")
    if before.effective_status(now) is AgentStatus.OFFLINE:
        add_event(tx, name, "online", name, now, {"capabilities": caps, "claim_on_push": push})
    elif (before.capabilities, before.notify_url, before.concurrency, before.claim_on_push) != (
        agent.capabilities,
        agent.notify_url,
        agent.concurrency,
        agent.claim_on_push,
    ):
        add_event(
            tx,
            name,
            "changed",
            name,
            now,
            {"capabilities": caps, "notify_url": notify_url, "concurrency": concurrency, "claim_on_push": push},
        )
    return agent


def mark_expired_offline(tx: Tx, *, now: float, alert: bool = False) -> list[str]:
    """Online agents past their TTL go offline; with `alert`, each raises an agent.offline alert."""
    expired = tx.agents_expire(now)
    for name, last_seen in expired:
        add_event(tx, name, "offline", "watchdog", now, {"reason": "no heartbeat within its TTL"})
        if alert:
            outbox_rows.alert(
                tx, event="agent.offline", task_id=None, data={"agent": name, "last_seen": iso(last_seen)}, now=now
            )
    return [name for name, _ in expired]


def webhook_target(tx: Tx, name: str) -> tuple[str | None, str] | None:
    """(notify_url, webhook_secret) for delivering to an agent, or None when it was deleted."""
    return tx.webhook_target(name)
