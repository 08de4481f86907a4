"""/v1/schedules (admin): cron schedules that submit a task at each tick; the watchdog fires them."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import document_response, validate_request

from mcs.api.auth import require_admin
from mcs.api.responses import respond
from mcs.api.schemas import CreateSchedule, ScheduleView
from mcs.errors import Unprocessable
from mcs.schedules import Cron
from mcs.store import schedules as schedules_store

bp = Blueprint("schedules", __name__, url_prefix="/v1/schedules")


def _db() -> Any:
    return current_app.config["MCS_DB"]


@bp.post("")
@document_response(ScheduleView, 201)
@validate_request(CreateSchedule)
async def create(data: CreateSchedule) -> Response:
    caller = require_admin()
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
        schedules_store.create,
        name=data.name,
        cron=cron,
        kind="task",
        body=data.task.model_dump(exclude_none=True),
        overlap=data.overlap,
        catch_up=data.catch_up,
        actor=caller.actor,
        now=time.time(),
    )
    return respond(schedule.to_api(), 201)


@bp.get("")
async def list_schedules() -> Response:
    require_admin()
    return respond({"schedules": [s.to_api() for s in await _db().read(schedules_store.list_all)]})


@bp.get("/<name>")
@document_response(ScheduleView, 200)
async def show(name: str) -> Response:
    require_admin()
    schedule, runs = await _db().read(schedules_store.get, name)
    return respond(schedule.to_api() | {"runs": [r.to_api() for r in runs]})


@bp.delete("/<name>")
async def delete(name: str) -> Response:
    require_admin()
    await _db().write(schedules_store.delete, name=name)
    return Response("", status=204)


@bp.post("/<name>/pause")
async def pause(name: str) -> Response:
    require_admin()
    return respond((await _db().write(schedules_store.set_paused, name=name, paused=True, now=time.time())).to_api())


@bp.post("/<name>/resume")
async def resume(name: str) -> Response:
    require_admin()
    return respond((await _db().write(schedules_store.set_paused, name=name, paused=False, now=time.time())).to_api())
