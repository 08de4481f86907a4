"""/v1/schedules (admin): cron schedules that submit a task at each tick; the watchdog fires them."""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError
from quart import Blueprint, Response, current_app
from quart_schema import validate_request

from mcs.api.auth import authed, credentials
from mcs.api.openapi import NO_CONTENT, ScheduleList, ScheduleView, documented
from mcs.api.responses import respond
from mcs.api.schemas import CreateSchedule, SubmitWorkflow
from mcs.errors import Unprocessable
from mcs.schedules import Cron
from mcs.state import schedules as schedules_state
from mcs.state import workflows as workflows_state

bp = Blueprint("schedules", __name__, url_prefix="/v1/schedules")


def _db() -> Any:
    return current_app.config["MCS_DB"]


def _workflow_body(raw: dict[str, Any]) -> dict[str, Any]:
    """A workflow body checked now as POST /v1/workflows would (schema and DAG), so each tick can submit it."""
    try:
        workflow = SubmitWorkflow.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Unprocessable(f"workflow: {where}: {first['msg']}", code="invalid_schedule") from exc
    body = workflow.model_dump()
    workflows_state.order_steps(body["steps"])
    return body


@bp.post("")
@documented(ok={201: ScheduleView}, errors=(409,), auth="admin", body=True, writes=True)
@validate_request(CreateSchedule)
async def create(data: CreateSchedule) -> Response:
    creds = credentials()
    cron = Cron.parse(data.cron, data.timezone)
    if (data.task is None) == (data.workflow is None):
        raise Unprocessable("give exactly one of task or workflow: what each tick submits", code="invalid_schedule")
    if data.workflow is not None:
        kind, body = "workflow", _workflow_body(data.workflow)
    else:
        assert data.task is not None
        if data.task.aggregate is not None and data.task.route != "all":
            raise Unprocessable("aggregate applies to fanout tasks (route=all) only", code="invalid_aggregate")
        if data.task.depends_on or data.task.run_at is not None or data.task.delay is not None:
            raise Unprocessable(
                "a scheduled task cannot have depends_on, run_at or delay; schedule a workflow", code="invalid_schedule"
            )
        # (run_if means nothing without dependencies; the stored body keeps what the task file said)
        kind, body = (
            "task",
            data.task.model_dump(exclude_none=True, exclude={"depends_on", "run_if", "run_at", "delay"}),
        )
    schedule = await _db().write(
        authed(schedules_state.create, need="admin", pass_as="caller"),
        creds,
        name=data.name,
        cron=cron,
        kind=kind,
        body=body,
        overlap=data.overlap,
        catch_up=data.catch_up,
        now=time.time(),
    )
    return respond(schedule.to_api(), 201)


@bp.get("")
@documented(ok={200: ScheduleList}, auth="admin")
async def list_schedules() -> Response:
    schedules = await _db().read(authed(schedules_state.list_all, need="admin"), credentials())
    return respond({"schedules": [s.to_api() for s in schedules]})


@bp.get("/<name>")
@documented(ok={200: ScheduleView}, errors=(404,), auth="admin")
async def show(name: str) -> Response:
    schedule, runs = await _db().read(authed(schedules_state.get, need="admin"), credentials(), name=name)
    return respond(schedule.to_api() | {"runs": [r.to_api() for r in runs]})


@bp.delete("/<name>")
@documented(ok={204: NO_CONTENT}, errors=(404,), auth="admin", writes=True)
async def delete(name: str) -> Response:
    await _db().write(authed(schedules_state.delete, need="admin"), credentials(), name=name)
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
        authed(schedules_state.set_paused, need="admin"), credentials(), name=name, paused=paused, now=time.time()
    )
    return dict(schedule.to_api())
