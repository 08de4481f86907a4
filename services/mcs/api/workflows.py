"""/v1/workflows: submit a DAG of steps in one go, read it, list, cancel (admin or agent, like tasks)."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import validate_querystring, validate_request

from mcs.api.auth import authed, credentials
from mcs.api.openapi import WorkflowEvents, documented
from mcs.api.responses import respond
from mcs.api.schemas import SubmitWorkflow, WorkflowPage, WorkflowQuery, WorkflowView
from mcs.errors import Unauthorized, Unprocessable
from mcs.state import workflows as workflows_state

bp = Blueprint("workflows", __name__, url_prefix="/v1/workflows")


def _db() -> Any:
    return current_app.config["MCS_DB"]


@bp.post("")
@documented(ok={201: WorkflowView}, body=True, writes=True)
@validate_request(SubmitWorkflow)
async def submit(data: SubmitWorkflow) -> Response:
    settings = current_app.config["MCS_SETTINGS"]
    for step in data.steps:
        if step.aggregate is not None and step.route != "all":
            raise Unprocessable(
                f"step {step.id!r}: aggregate applies to fanout steps (route=all) only", code="invalid_aggregate"
            )
    creds = credentials()
    rate = current_app.config["MCS_SUBMIT_RATE"]
    if not creds.is_admin:
        rate.take(creds.name, time.monotonic())  # one submission, as for a task; the steps count in the quota
    try:
        workflow = await _db().write(
            authed(workflows_state.submit, need="any", pass_as="caller"),
            creds,
            name=data.name,
            steps=[s.model_dump() for s in data.steps],
            inputs=data.inputs,
            max_retries=settings.max_retries,
            claim_ttl=settings.claim_ttl,
            now=time.time(),
            max_queued=settings.quota_queued_tasks,
        )
    except Unauthorized:
        rate.give_back(creds.name)
        raise
    return respond(workflow.to_api(), 201)


@bp.get("")
@documented(ok={200: WorkflowPage}, errors=(400, 422))
@validate_querystring(WorkflowQuery)
async def list_workflows(query_args: WorkflowQuery) -> Response:
    views, cursor = await _db().read(
        authed(workflows_state.list_workflows, need="any"),
        credentials(),
        state=query_args.state,
        limit=query_args.limit,
        cursor=query_args.cursor,
    )
    return respond({"workflows": [v.to_api() for v in views], "next_cursor": cursor})


@bp.get("/<workflow_id>")
@documented(ok={200: WorkflowView}, errors=(404,))
async def show(workflow_id: str) -> Response:
    view = await _db().read(authed(workflows_state.show, need="any"), credentials(), workflow_id=workflow_id)
    return respond(view.to_api())


@bp.get("/<workflow_id>/events")
@documented(ok={200: WorkflowEvents}, errors=(404,))
async def events(workflow_id: str) -> Response:
    rows = await _db().read(authed(workflows_state.events, need="any"), credentials(), workflow_id=workflow_id)
    return respond({"events": [e.to_api() for e in rows]})


@bp.post("/<workflow_id>/cancel")
@documented(ok={200: WorkflowView}, errors=(403, 404, 409), writes=True)
async def cancel(workflow_id: str) -> Response:
    view = await _db().write(
        authed(workflows_state.cancel, need="any", pass_as="caller"),
        credentials(),
        workflow_id=workflow_id,
        now=time.time(),
    )
    return respond(view.to_api())
