"""AgentTx: the agents area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Any, Protocol

from mcs.models import Agent, NewAgent, RoutableAgent


class AgentTx(Protocol):
    """Agent rows, their audit events, and the reads the dispatcher's routing view makes; with them, the
    other credentials a request may carry: the admin's web console sessions."""

    def agent_get(self, name: str) -> Agent | None:
        """The agent, or None."""
        ...

    def agent_for_update(self, name: str) -> Agent | None:
        """The agent, its row locked until commit, or None: for a write that decides on the agent's own
        fields (notify host, claim-on-push, status). Not its load: that is QueueTx.agent_lock."""
        ...

    def agent_with_secret(self, name: str) -> tuple[Agent | None, str | None]:
        """The agent and its stored secret hash, in one query; (None, None) when there is none."""
        ...

    def agents_page(self, *, after: str, limit: int) -> list[Agent]:
        """Up to `limit` agents with names after `after`, by name."""
        ...

    def agent_insert(self, row: NewAgent) -> Agent:
        """A new agent row (offline); raises mcs.engines.base.Duplicate when the name is taken."""
        ...

    def agent_set_notify_host(self, name: str, notify_host: str | None, *, drop_notify_url: bool) -> bool:
        """Pin (None: unpin) its notify host, clearing notify_url with `drop_notify_url`; False: no agent."""
        ...

    def agent_set_claim_on_push(self, name: str, claim_on_push: bool) -> bool:
        """Whether the dispatcher claims its tasks for it; False: no agent."""
        ...

    def agent_set_secrets(self, name: str, *, secret_hash: str, webhook_secret: str) -> bool:
        """Replace its secret hash and webhook secret; False: no agent."""
        ...

    def agent_register(
        self,
        name: str,
        *,
        capabilities: tuple[str, ...],
        notify_url: str | None,
        ttl: float,
        concurrency: int,
        claim_on_push: bool,
        now: float,
    ) -> Agent | None:
        """Mark it online until now + ttl with what it registered; the agent after, or None."""
        ...

    def agent_delete(self, name: str) -> bool:
        """Remove the agent row; False when there was none."""
        ...

    def agent_tasks_requeue(self, name: str, now: float) -> list[tuple[str, str]]:
        """Put the tasks it holds (assigned or claimed) back in the queue, claim tokens revoked and a
        claim's attempt given back; (task id, state it was in) for each."""
        ...

    def agent_event_add(self, agent: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
        """One agent_events row (detail stored as JSON)."""
        ...

    def agents_expire(self, now: float) -> list[tuple[str, float | None]]:
        """Online agents past their TTL set offline: (name, last_seen) for each."""
        ...

    def agents_routable(self, now: float, names: list[str] | None = None) -> list[RoutableAgent]:
        """The agents online at `now` (only those in `names`, when given)."""
        ...

    def agent_changes(self, after: int | None) -> tuple[set[str], int]:
        """Agents named in agent_events after id `after` (none when None) and the last id there (0: none)."""
        ...

    def webhook_target(self, name: str) -> tuple[str | None, str] | None:
        """(notify_url, webhook_secret) of an agent, or None when there is no such agent."""
        ...

    # Web console sessions (the admin's logins), by the SHA-256 of their id.

    def sessions_prune(self, now: float, *, keep: int) -> None:
        """Remove expired sessions, and all but the `keep` newest of the rest."""
        ...

    def session_insert(self, id_hash: str, *, csrf: str, created_at: float, expires_at: float) -> None:
        """Store a new session."""
        ...

    def session_csrf(self, id_hash: str, now: float) -> str | None:
        """The live session's CSRF token, or None when there is no such session or it expired."""
        ...

    def session_drop(self, id_hash: str) -> None:
        """Remove a session (logout)."""
        ...
