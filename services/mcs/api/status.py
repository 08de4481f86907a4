"""/v1/status: the mesh at a glance for `mcs status` (admin only)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, Response, current_app

from mcs.api.auth import authed, credentials
from mcs.api.openapi import documented
from mcs.api.responses import respond
from mcs.state import status as status_store

bp = Blueprint("status", __name__, url_prefix="/v1/status")


# ---------------------------------------------------------------- documented response (not validated)


class ProcessView(BaseModel):
    """One replica's heartbeat: `instance` is MCS_INSTANCE or host:pid ('' for a row from before replicas)."""

    name: str
    instance: str
    pid: int
    started_at: str
    beat_at: str
    age_seconds: float
    healthy: bool


class UnservedView(BaseModel):
    """Queued tasks that no online agent can take; `offline_agents` would take them if they came online."""

    capabilities: list[str]
    route: str
    queued: int
    offline_agents: list[str]


class UnreachableView(BaseModel):
    """An agent whose latest webhook failed: `error` is the notifier's last error for it."""

    agent: str
    notify_url: str | None
    error: str | None
    attempts: int
    gave_up: bool
    at: str
    task_id: str | None


class AgentsByStatus(BaseModel):
    online: list[dict[str, Any]]
    offline: list[dict[str, Any]]


class StatusView(BaseModel):
    """The mesh's status: process heartbeats, queue depth by state and priority, unserved work, agents."""

    at: str
    processes: list[ProcessView]
    queue: dict[str, dict[str, int]]
    unserved: list[UnservedView]
    agents: AgentsByStatus
    unreachable: list[UnreachableView]


@bp.get("")
@documented(ok={200: StatusView}, auth="admin")
async def status() -> Response:
    # authed(need="admin"): an agent's wrong secret is a 401 here as everywhere, a right one a 403
    mesh = await current_app.config["MCS_DB"].read(
        authed(status_store.read, need="admin"), credentials(), now=time.time()
    )
    return respond(mesh.to_api())
