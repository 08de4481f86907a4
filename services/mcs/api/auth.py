"""Who is calling: agents by X-Agent-ID/X-Agent-Secret, the admin by bearer token."""

from __future__ import annotations

from quart import current_app, request

from mcs import auth
from mcs.errors import Forbidden, Unauthorized
from mcs.models import ADMIN, Agent, Caller
from mcs.store import agents as agents_store
from mcs.store.connection import Connection

BAD_CREDENTIALS = "unknown agent or wrong secret"


def _lookup(conn: Connection, name: str) -> tuple[Agent | None, str | None]:
    agent = agents_store.get(conn, name)
    return agent, agents_store.secret_hash(conn, name) if agent else None


async def authenticate() -> tuple[Caller, Agent | None]:
    """The caller, or 401. Unknown agent and wrong secret answer the same, in the same time."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        if auth.token_matches(header[7:].strip(), current_app.config["MCS_SETTINGS"].admin_token):
            return ADMIN, None
        raise Unauthorized("invalid admin token")
    name = request.headers.get("X-Agent-ID")
    secret = request.headers.get("X-Agent-Secret")
    if not name or not secret:
        raise Unauthorized("send X-Agent-ID and X-Agent-Secret, or Authorization: Bearer <admin token>")
    agent, stored = await current_app.config["MCS_DB"].read(_lookup, name)
    if not auth.secret_matches(secret, stored) or agent is None:
        raise Unauthorized(BAD_CREDENTIALS)
    return Caller(name=agent.name), agent


async def require_admin() -> Caller:
    caller, _ = await authenticate()
    if not caller.is_admin:
        raise Forbidden("this needs the admin token", code="admin_only")
    return caller


async def require_agent() -> Agent:
    caller, agent = await authenticate()
    if agent is None:
        raise Forbidden("this is for agents: send X-Agent-ID and X-Agent-Secret", code="agent_only")
    return agent
