"""/v1/agents: admin creates, rotates and deletes; agents register (and heartbeat); anyone signed in lists."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, current_app
from quart_schema import validate_request

from mcs.api.auth import authenticate, require_admin, require_agent
from mcs.api.schemas import CreateAgent, Register
from mcs.errors import NotFound
from mcs.store import agents as agents_store

bp = Blueprint("agents", __name__, url_prefix="/v1/agents")


def _db() -> Any:
    return current_app.config["MCS_DB"]


@bp.post("")
@validate_request(CreateAgent)
async def create(data: CreateAgent) -> tuple[dict[str, Any], int]:
    caller = await require_admin()
    created = await _db().write(
        agents_store.create, name=data.name, capabilities=data.capabilities, actor=caller.actor, now=time.time()
    )
    return created, 201


@bp.post("/register")
@validate_request(Register)
async def register(data: Register) -> dict[str, Any]:
    agent = await require_agent()
    ttl = data.ttl if data.ttl is not None else current_app.config["MCS_SETTINGS"].agent_ttl
    now = time.time()
    agent = await _db().write(
        agents_store.register,
        name=agent.name,
        capabilities=data.capabilities,
        notify_url=data.notify_url,
        ttl=ttl,
        now=now,
    )
    return agent.to_api(now) | {"ttl": ttl}


@bp.post("/<name>/rotate")
async def rotate(name: str) -> dict[str, Any]:
    caller = await require_admin()
    result: dict[str, Any] = await _db().write(agents_store.rotate, name=name, actor=caller.actor, now=time.time())
    return result


@bp.delete("/<name>")
async def delete(name: str) -> tuple[str, int]:
    caller = await require_admin()
    await _db().write(agents_store.delete, name=name, actor=caller.actor, now=time.time())
    return "", 204


@bp.get("")
async def list_agents() -> dict[str, Any]:
    await authenticate()
    now = time.time()
    agents = await _db().read(agents_store.list_all)
    return {"agents": [a.to_api(now) for a in agents]}


@bp.get("/<name>")
async def show(name: str) -> dict[str, Any]:
    await authenticate()
    agent = await _db().read(agents_store.get, name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    result: dict[str, Any] = agent.to_api(time.time())
    return result
