"""SQL of the agents area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from mcs.engines.base import Duplicate
from mcs.engines.sql.base import SqlTx
from mcs.models import Agent, NewAgent, RoutableAgent

ROUTABLE_COLUMNS = "name, capabilities, granted, notify_url, last_assigned_at, concurrency, expires_at, claim_on_push"


class AgentSql(SqlTx):
    """Implements mcs.engines.areas.agents.AgentTx; dialect-specific methods are overridden per engine."""

    # "Every row after the first N" in a subquery: SQLite needs a LIMIT before OFFSET, PostgreSQL takes none.
    ALL_AFTER: ClassVar[str]

    def agent_get(self, name: str) -> Agent | None:
        row = self.row("SELECT * FROM agents WHERE name = ?", (name,))
        return Agent.from_row(row) if row else None

    def agent_for_update(self, name: str) -> Agent | None:
        row = self.row("SELECT * FROM agents WHERE name = ?" + self.FOR_UPDATE, (name,))
        return Agent.from_row(row) if row else None

    def agent_with_secret(self, name: str) -> tuple[Agent | None, str | None]:
        row = self.row("SELECT * FROM agents WHERE name = ?", (name,))
        return (Agent.from_row(row), row["secret_hash"]) if row else (None, None)

    def agents_page(self, *, after: str, limit: int) -> list[Agent]:
        rows = self.rows("SELECT * FROM agents WHERE name > ? ORDER BY name LIMIT ?", (after, limit))
        return [Agent.from_row(r) for r in rows]

    def agent_insert(self, row: NewAgent) -> Agent:
        created = self.row(
            "INSERT INTO agents (name, secret_hash, webhook_secret, capabilities, granted, status, created_at,"
            " notify_host, claim_on_push) VALUES (?, ?, ?, ?, ?, 'offline', ?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING RETURNING *",
            (
                row.name,
                row.secret_hash,
                row.webhook_secret,
                json.dumps(list(row.capabilities)),
                None if row.granted is None else json.dumps(list(row.granted)),
                row.created_at,
                row.notify_host,
                int(row.claim_on_push),
            ),
        )
        if created is None:  # the key decides, also between two creators at once (site 11)
            raise Duplicate(f"agent {row.name!r} already exists")
        return Agent.from_row(created)

    def agent_set_notify_host(self, name: str, notify_host: str | None, *, drop_notify_url: bool) -> bool:
        return (
            self.run(
                "UPDATE agents SET notify_host = ?, notify_url = CASE WHEN ? = 1 THEN NULL ELSE notify_url END"
                " WHERE name = ?",
                (notify_host, int(drop_notify_url), name),
            )
            > 0
        )

    def agent_set_claim_on_push(self, name: str, claim_on_push: bool) -> bool:
        return self.run("UPDATE agents SET claim_on_push = ? WHERE name = ?", (int(claim_on_push), name)) > 0

    def agent_set_secrets(self, name: str, *, secret_hash: str, webhook_secret: str) -> bool:
        return (
            self.run(
                "UPDATE agents SET secret_hash = ?, webhook_secret = ? WHERE name = ?",
                (secret_hash, webhook_secret, name),
            )
            > 0
        )

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
        row = self.row(
            "UPDATE agents SET capabilities = ?, notify_url = ?, status = 'online', ttl = ?, expires_at = ?,"
            " last_seen = ?, concurrency = ?, claim_on_push = ? WHERE name = ? RETURNING *",
            (json.dumps(list(capabilities)), notify_url, ttl, now + ttl, now, concurrency, int(claim_on_push), name),
        )
        return Agent.from_row(row) if row else None

    def agent_delete(self, name: str) -> bool:
        return self.run("DELETE FROM agents WHERE name = ?", (name,)) > 0

    def agent_tasks_requeue(self, name: str, now: float) -> list[tuple[str, str]]:
        held = self.rows(
            "SELECT id, state FROM tasks WHERE assigned_to = ? AND state IN ('assigned', 'claimed')"
            " ORDER BY seq" + self.FOR_UPDATE,
            (name,),
        )
        if held:
            self.run(
                "UPDATE tasks SET state = 'queued', assigned_to = NULL, assigned_at = NULL, parked = 0,"
                " updated_at = ?, claim_token = NULL, lease_expires_at = NULL,"
                " attempts = CASE WHEN state = 'claimed' AND attempts > 0 THEN attempts - 1 ELSE attempts END"
                " WHERE assigned_to = ? AND state IN ('assigned', 'claimed')",
                (now, name),
            )
        return [(r["id"], r["state"]) for r in held]

    def agent_event_add(self, agent: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
        self.run(
            "INSERT INTO agent_events (agent, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
            (agent, now, kind, actor, None if detail is None else json.dumps(detail)),
        )

    def agents_expire(self, now: float) -> list[tuple[str, float | None]]:
        rows = self.rows(
            "UPDATE agents SET status = 'offline' WHERE status = 'online' AND expires_at <= ?"
            " RETURNING name, last_seen",
            (now,),
        )
        return [(r["name"], r["last_seen"]) for r in rows]

    def agents_routable(self, now: float, names: list[str] | None = None) -> list[RoutableAgent]:
        if names is None:
            rows = self.rows(
                f"SELECT {ROUTABLE_COLUMNS} FROM agents WHERE status = 'online' AND expires_at > ?", (now,)
            )
        elif not names:
            return []
        else:
            marks = ",".join("?" * len(names))
            rows = self.rows(
                f"SELECT {ROUTABLE_COLUMNS} FROM agents WHERE name IN ({marks}) AND status = 'online'"
                " AND expires_at > ?",
                (*names, now),
            )
        return [RoutableAgent.from_row(r) for r in rows]

    def agent_changes(self, after: int | None) -> tuple[set[str], int]:
        latest = int(self.value("SELECT coalesce(max(id), 0) FROM agent_events"))
        if after is None or latest <= after:
            return set(), latest
        return {r[0] for r in self.rows("SELECT DISTINCT agent FROM agent_events WHERE id > ?", (after,))}, latest

    def webhook_target(self, name: str) -> tuple[str | None, str] | None:
        row = self.row("SELECT notify_url, webhook_secret FROM agents WHERE name = ?", (name,))
        return (row[0], row[1]) if row else None

    def sessions_prune(self, now: float, *, keep: int) -> None:
        self.run("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
        self.run(
            "DELETE FROM console_sessions WHERE id_hash IN"
            f" (SELECT id_hash FROM console_sessions ORDER BY created_at DESC {self.ALL_AFTER})",
            (keep,),
        )

    def session_insert(self, id_hash: str, *, csrf: str, created_at: float, expires_at: float) -> None:
        self.run(
            "INSERT INTO console_sessions (id_hash, csrf, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (id_hash, csrf, created_at, expires_at),
        )

    def session_csrf(self, id_hash: str, now: float) -> str | None:
        found = self.value("SELECT csrf FROM console_sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, now))
        return None if found is None else str(found)

    def session_drop(self, id_hash: str) -> None:
        self.run("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,))
