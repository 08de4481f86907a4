"""/v1/agents: admin creates, rotates and deletes; agents register (and heartbeat); anyone signed in lists."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import validate_request

from mcs.api.auth import authed, credentials
from mcs.api.openapi import NO_CONTENT, AgentList, AgentSecrets, AgentView, Registered, documented
from mcs.api.responses import respond
from mcs.api.schemas import CreateAgent, Register
from mcs.errors import NotFound
from mcs.models import ADMIN
from mcs.store import agents as agents_store

bp = Blueprint("agents", __name__, url_prefix="/v1/agents")


def _db() -> Any:
    return current_app.config["MCS_DB"]


@bp.post("")
@documented(ok={201: AgentSecrets}, errors=(409,), auth="admin", body=True, writes=True)
@validate_request(CreateAgent)
async def create(data: CreateAgent) -> Response:
    created = await _db().write(
        authed(agents_store.create, need="admin"),
        credentials(),
        name=data.name,
        capabilities=data.capabilities,
        actor=ADMIN.actor,
        now=time.time(),
    )
    return respond(created, 201)


@bp.post("/register")
@documented(ok={200: Registered}, auth="agent", body=True, writes=True)
@validate_request(Register)
async def register(data: Register) -> Response:
    creds = credentials()
    ttl = data.ttl if data.ttl is not None else current_app.config["MCS_SETTINGS"].agent_ttl
    now = time.time()
    agent = await _db().write(
        authed(_register, need="agent", pass_as="agent"),
        creds,
        capabilities=data.capabilities,
        notify_url=data.notify_url,
        ttl=ttl,
        concurrency=data.concurrency,
        now=now,
    )
    return respond(agent.to_api(now) | {"ttl": ttl})


def _register(conn: Any, *, agent: Any, **kwargs: Any) -> Any:
    return agents_store.register(conn, name=agent.name, **kwargs)


@bp.post("/<name>/rotate")
@documented(ok={200: AgentSecrets}, errors=(404,), auth="admin", writes=True)
async def rotate(name: str) -> Response:
    rotated = await _db().write(
        authed(agents_store.rotate, need="admin"), credentials(), name=name, actor=ADMIN.actor, now=time.time()
    )
    return respond(rotated)


@bp.delete("/<name>")
@documented(ok={204: NO_CONTENT}, errors=(404,), auth="admin", writes=True)
async def delete(name: str) -> Response:
    await _db().write(
        authed(agents_store.delete, need="admin"), credentials(), name=name, actor=ADMIN.actor, now=time.time()
    )
    return Response("", status=204)


@bp.get("")
@documented(ok={200: AgentList}, errors=(400, 422))  # a bad cursor or limit, once the list is paginated
async def list_agents() -> Response:
    now = time.time()
    agents = await _db().read(authed(agents_store.list_all, need="any"), credentials())
    return respond({"agents": [a.to_api(now) for a in agents]})


@bp.get("/<name>")
@documented(ok={200: AgentView}, errors=(404,))
async def show(name: str) -> Response:
    agent = await _db().read(authed(agents_store.get, need="any"), credentials(), name=name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    return respond(agent.to_api(time.time()))
