"""/v1/agents: admin creates (granting capabilities), rotates and deletes; agents register (and heartbeat);
anyone signed in lists, a page at a time."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import validate_querystring, validate_request

from mcs import egress, metrics
from mcs.api.auth import authed, credentials, require_admin
from mcs.api.responses import respond
from mcs.api.schemas import AgentQuery, CreateAgent, Register, UpdateAgent
from mcs.errors import NotFound, ServiceUnavailable, Unprocessable
from mcs.store import agents as agents_store

bp = Blueprint("agents", __name__, url_prefix="/v1/agents")


def _db() -> Any:
    return current_app.config["MCS_DB"]


@bp.post("")
@validate_request(CreateAgent)
async def create(data: CreateAgent) -> Response:
    caller = require_admin()
    created = await _db().write(
        agents_store.create,
        name=data.name,
        capabilities=data.capabilities,
        notify_host=data.notify_host,
        actor=caller.actor,
        now=time.time(),
    )
    return respond(created, 201)


@bp.patch("/<name>")
@validate_request(UpdateAgent)
async def update(name: str, data: UpdateAgent) -> Response:
    caller = require_admin()
    now = time.time()
    agent = await _db().write(
        agents_store.set_notify_host, name=name, notify_host=data.notify_host, actor=caller.actor, now=now
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
        now=now,
    )
    return respond(agent.to_api(now) | {"ttl": ttl})


def _register(conn: Any, *, agent: Any, **kwargs: Any) -> Any:
    return agents_store.register(conn, name=agent.name, before=agent, **kwargs)


@bp.post("/<name>/rotate")
async def rotate(name: str) -> Response:
    caller = require_admin()
    return respond(await _db().write(agents_store.rotate, name=name, actor=caller.actor, now=time.time()))


@bp.delete("/<name>")
async def delete(name: str) -> Response:
    caller = require_admin()
    return respond(await _db().write(agents_store.delete, name=name, actor=caller.actor, now=time.time()))


@bp.get("")
@validate_querystring(AgentQuery)
async def list_agents(query_args: AgentQuery) -> Response:
    now = time.time()
    agents, next_cursor = await _db().read(
        authed(agents_store.list_page, need="any"), credentials(), limit=query_args.limit, cursor=query_args.cursor
    )
    return respond({"agents": [a.to_api(now) for a in agents], "next_cursor": next_cursor})


@bp.get("/<name>")
async def show(name: str) -> Response:
    creds = credentials()
    agent = await _db().read(authed(agents_store.get, need="any"), creds, name=name)
    if agent is None:
        raise NotFound(f"no agent named {name!r}")
    now = time.time()
    return respond(agent.to_admin_api(now) if creds.is_admin else agent.to_api(now))
