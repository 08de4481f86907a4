"""/v1/agents: admin creates (granting capabilities), rotates and deletes; agents register (and heartbeat);
anyone signed in lists, a page at a time."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import validate_querystring, validate_request

from mcs import egress, metrics
from mcs.api.auth import authed, credentials
from mcs.api.openapi import AgentDeleted, AgentList, AgentSecrets, AgentView, Registered, documented
from mcs.api.responses import respond
from mcs.api.schemas import AgentQuery, CreateAgent, Register, UpdateAgent
from mcs.errors import NotFound, ServiceUnavailable, Unprocessable
from mcs.models import ADMIN
from mcs.state import agents as agents_store

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
        notify_host=data.notify_host,
        claim_on_push=data.claim_on_push,
        actor=ADMIN.actor,
        now=time.time(),
    )
    return respond(created.to_api(), 201)


@bp.patch("/<name>")
@documented(ok={200: AgentView}, errors=(404,), auth="admin", body=True, writes=True)
@validate_request(UpdateAgent)
async def update(name: str, data: UpdateAgent) -> Response:
    now = time.time()
    agent = await _db().write(
        authed(agents_store.update, need="admin"),
        credentials(),
        name=name,
        changes=data.changes(),
        actor=ADMIN.actor,
        now=now,
    )
    return respond(agent.to_admin_api(now))


async def _check_notify_url(creds: Any, url: str) -> None:
    """The egress policy on a notify URL, for a caller whose credentials hold (checked first, so nobody
    without them can use the answers to learn what names resolve to). 422 says which setting allows it."""
    agent = await _db().read(authed(agents_store.get, need="agent", pass_as=None), creds, name=creds.name)
    refusal = agents_store.pin_refusal(agent.notify_host if agent else None, url, name=creds.name)
    if refusal is not None:
        raise Unprocessable(refusal, code="notify_host_pinned")
    policy: egress.Policy = current_app.config["MCS_NOTIFY_POLICY"]
    try:
        await policy.check_url(url)
    except egress.EgressRefused as exc:
        metrics.egress_refusals.labels("notify_url").inc()
        raise Unprocessable(str(exc), code="egress_refused") from None
    except egress.Unresolvable as exc:
        if exc.permanent:
            raise Unprocessable(f"notify_url host: {exc}", code="egress_refused") from None
        raise ServiceUnavailable(f"notify_url host: {exc}; try again", retry_after=5.0) from None


@bp.post("/register")
@documented(ok={200: Registered}, auth="agent", body=True, writes=True)
@validate_request(Register)
async def register(data: Register) -> Response:
    creds = credentials()
    ttl = data.ttl if data.ttl is not None else current_app.config["MCS_SETTINGS"].agent_ttl
    if data.notify_url is not None:
        await _check_notify_url(creds, data.notify_url)
    now = time.time()
    agent = await _db().write(
        authed(_register, need="agent", pass_as="agent"),
        creds,
        capabilities=data.capabilities,
        notify_url=data.notify_url,
        ttl=ttl,
        concurrency=data.concurrency,
        claim_on_push=data.claim_on_push,
        now=now,
    )
    return respond(agent.to_api(now) | {"ttl": ttl})


def _register(conn: Any, *, agent: Any, **kwargs: Any) -> Any:
    return agents_store.register(conn, name=agent.name, before=agent, **kwargs)


@bp.post("/<name>/rotate")
@documented(ok={200: AgentSecrets}, errors=(404,), auth="admin", writes=True)
async def rotate(name: str) -> Response:
    rotated = await _db().write(
        authed(agents_store.rotate, need="admin"), credentials(), name=name, actor=ADMIN.actor, now=time.time()
    )
    return respond(rotated.to_api())


@bp.delete("/<name>")
@documented(ok={200: AgentDeleted}, errors=(404,), auth="admin", writes=True)
async def delete(name: str) -> Response:
    deleted = await _db().write(
        authed(agents_store.delete, need="admin"), credentials(), name=name, actor=ADMIN.actor, now=time.time()
    )
    return respond(deleted.to_api())


@bp.get("")
@documented(ok={200: AgentList}, errors=(400, 422))
@validate_querystring(AgentQuery)
async def list_agents(query_args: AgentQuery) -> Response:
    now = time.time()
    agents, next_cursor = await _db().read(
        authed(agents_store.list_page, need="any"), credentials(), limit=query_args.limit, cursor=query_args.cursor
    )
    return respond({"agents": [a.to_api(now) for a in agents], "next_cursor": next_cursor})


@bp.get("/<name>")
@documented(ok={200: AgentView}, errors=(404,))
async def show(name: str) -> Response:
    creds = credentials()
    agent = await _db().read(authed(agents_store.get, need="any"), creds, name=name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    now = time.time()
    return respond(agent.to_admin_api(now) if creds.is_admin else agent.to_api(now))
