"""/v1/schedules (admin): cron schedules that submit a task at each tick; the watchdog fires them."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import validate_request

from mcs.api.auth import authed, credentials
from mcs.api.openapi import NO_CONTENT, ScheduleList, ScheduleView, documented
from mcs.api.responses import respond
from mcs.api.schemas import CreateSchedule
from mcs.errors import Unprocessable
from mcs.schedules import Cron
from mcs.store import schedules as schedules_store

bp = Blueprint("schedules", __name__, url_prefix="/v1/schedules")


def _db() -> Any:
    return current_app.config["MCS_DB"]


@bp.post("")
@documented(ok={201: ScheduleView}, errors=(409,), auth="admin", body=True, writes=True)
@validate_request(CreateSchedule)
async def create(data: CreateSchedule) -> Response:
    creds = credentials()
    cron = Cron.parse(data.cron, data.timezone)
    if (data.task is None) == (data.workflow is None):
        raise Unprocessable("give exactly one of task or workflow: what each tick submits", code="invalid_schedule")
    if data.workflow is not None:
        raise Unprocessable(
            "scheduled workflows are not available on this server yet; schedule a task", code="invalid_schedule"
        )
    assert data.task is not None
    if data.task.aggregate is not None and data.task.route != "all":
        raise Unprocessable("aggregate applies to fanout tasks (route=all) only", code="invalid_aggregate")
    schedule = await _db().write(
        authed(schedules_store.create, need="admin", pass_as="caller"),
        creds,
        name=data.name,
        cron=cron,
        kind="task",
        body=data.task.model_dump(exclude_none=True),
        overlap=data.overlap,
        catch_up=data.catch_up,
        now=time.time(),
    )
    return respond(schedule.to_api(), 201)


@bp.get("")
@documented(ok={200: ScheduleList}, auth="admin")
async def list_schedules() -> Response:
    schedules = await _db().read(authed(schedules_store.list_all, need="admin"), credentials())
    return respond({"schedules": [s.to_api() for s in schedules]})


@bp.get("/<name>")
@documented(ok={200: ScheduleView}, errors=(404,), auth="admin")
async def show(name: str) -> Response:
    schedule, runs = await _db().read(authed(schedules_store.get, need="admin"), credentials(), name=name)
    return respond(schedule.to_api() | {"runs": [r.to_api() for r in runs]})


@bp.delete("/<name>")
@documented(ok={204: NO_CONTENT}, errors=(404,), auth="admin", writes=True)
async def delete(name: str) -> Response:
    await _db().write(authed(schedules_store.delete, need="admin"), credentials(), name=name)
    return Response("", status=204)


@bp.post("/<name>/pause")
@documented(ok={200: ScheduleView}, errors=(404,), auth="admin", writes=True)
async def pause(name: str) -> Response:
    return respond(await _set_paused(name, paused=True))


@bp.post("/<name>/resume")
@documented(ok={200: ScheduleView}, errors=(404,), auth="admin", writes=True)
async def resume(name: str) -> Response:
    return respond(await _set_paused(name, paused=False))


async def _set_paused(name: str, *, paused: bool) -> dict[str, Any]:
    schedule = await _db().write(
        authed(schedules_store.set_paused, need="admin"), credentials(), name=name, paused=paused, now=time.time()
    )
    return dict(schedule.to_api())
