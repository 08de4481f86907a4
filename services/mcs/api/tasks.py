"""/v1/tasks: submit (one, or a batch), read, claim, extend, complete, fail, reject, cancel."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from quart import Blueprint, Response, current_app, request
from quart_schema import validate_querystring, validate_request

from mcs import metrics, render
from mcs.api.auth import Credentials, authed, credentials
from mcs.api.openapi import (
    NO_CONTENT,
    BatchResult,
    ClaimedTask,
    CompleteAnswer,
    TaskEvents,
    TaskPage,
    TaskProgress,
    documented,
)
from mcs.api.responses import respond
from mcs.api.schemas import (
    Approve,
    ClaimNext,
    Complete,
    Deny,
    Extend,
    Fail,
    Progress,
    Reject,
    SubmitBatch,
    SubmitTask,
    TaskQuery,
    TaskView,
)
from mcs.errors import ApiError, BadRequest, QuotaExceeded, Unauthorized, Unprocessable
from mcs.models import ProgressNote, TaskSpec
from mcs.models import TaskView as TaskModel
from mcs.state import tasks as tasks_store

bp = Blueprint("tasks", __name__, url_prefix="/v1/tasks")


def _db() -> Any:
    return current_app.config["MCS_DB"]


def _settings() -> Any:
    return current_app.config["MCS_SETTINGS"]


def _not_before(data: SubmitTask) -> float | None:
    """When the task may run at the earliest: `run_at`, or `delay` seconds from now (not both)."""
    if data.run_at is not None and data.delay is not None:
        raise Unprocessable("give run_at or delay, not both", code="invalid_run_at")
    return data.not_before(time.time())


def _spec(data: SubmitTask, settings: Any) -> TaskSpec:
    """The task a submit body asks for, with the server's defaults; 422 for combinations that make no sense."""
    if data.aggregate is not None and data.route != "all":
        raise Unprocessable("aggregate applies to fanout tasks (route=all) only", code="invalid_aggregate")
    spec = replace(
        TaskSpec.from_body(data.model_dump(), max_retries=settings.max_retries, claim_ttl=settings.claim_ttl),
        depends_on=tuple(dict.fromkeys(data.depends_on)),
        run_if=data.run_if,
        not_before=_not_before(data),
    )
    if data.max_concurrency is not None and data.concurrency_key is None:
        raise Unprocessable("max_concurrency needs a concurrency_key", code="invalid_concurrency")
    return spec


def _body_hash(body: dict[str, Any]) -> str:
    """What an idempotency key is bound to: the submit body (a batch item's, without its key)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@bp.post("")
@documented(ok={201: TaskView}, body=True, writes=True)
@validate_request(SubmitTask)
async def submit(data: SubmitTask) -> Response:
    creds = credentials()
    settings = _settings()
    spec = _spec(data, settings)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 200):
        raise BadRequest("Idempotency-Key must be 1 to 200 characters", code="bad_idempotency_key")
    body_hash = _body_hash(data.model_dump())
    rate = current_app.config["MCS_SUBMIT_RATE"]
    if not creds.is_admin:
        rate.take(creds.name, time.monotonic())  # the name is checked in the write; see give_back below
    try:
        task, replayed = await _db().write(
            authed(tasks_store.submit, need="any", pass_as="caller"),
            creds,
            spec=spec,
            idempotency_key=key,
            body_hash=body_hash,
            idempotency_ttl=settings.idempotency_ttl,
            now=time.time(),
            max_queued=settings.quota_queued_tasks,
        )
    except Unauthorized:
        rate.give_back(creds.name)
        raise
    return respond(render.task(task), 201, {"Idempotent-Replayed": "true" if replayed else "false"})


@bp.post("/batch")
@documented(ok={200: BatchResult}, body=True, writes=True)
@validate_request(SubmitBatch)
async def submit_batch(data: SubmitBatch) -> Response:
    """Up to SUBMIT_BATCH_MAX tasks, each a POST /v1/tasks body (its Idempotency-Key as `idempotency_key`),
    stored in one transaction. The body is checked as a whole first: an item that breaks the schema refuses
    the request (422 naming it, `tasks.3.type`) and stores nothing. Past that each item stands alone: one
    refused (unknown dependency or route, a reused key, the submit rate, the queued-tasks quota) gets its
    own status and error in `results`, and the others are stored. Each task spends one submit token."""
    creds = credentials()
    settings = _settings()
    rate = current_app.config["MCS_SUBMIT_RATE"]
    items: list[tasks_store.BatchItem] = []
    spent = 0
    for entry in data.tasks:
        try:
            spec = _spec(entry, settings)
            if not creds.is_admin:
                rate.take(creds.name, time.monotonic())
                spent += 1
        except ApiError as exc:
            items.append(tasks_store.BatchItem(None, refused=exc))
            continue
        body = entry.model_dump(exclude={"idempotency_key"})
        items.append(tasks_store.BatchItem(spec, entry.idempotency_key, _body_hash(body)))
    try:
        outcomes: list[tasks_store.BatchOutcome] = await _db().write(
            authed(tasks_store.submit_batch, need="any", pass_as="caller"),
            creds,
            items=items,
            idempotency_ttl=settings.idempotency_ttl,
            now=time.time(),
            max_queued=settings.quota_queued_tasks,
        )
    except Unauthorized:
        for _ in range(spent):
            rate.give_back(creds.name)
        raise
    results: list[dict[str, Any]] = []
    for index, outcome in enumerate(outcomes):
        if outcome.error is not None:
            if isinstance(outcome.error, QuotaExceeded):
                metrics.quota_refusals.labels(outcome.error.quota).inc()
            metrics.batch_items.labels("refused").inc()
            error = {"code": outcome.error.code, "message": outcome.error.message}
            results.append({"index": index, "status": outcome.error.status, "error": error})
        else:
            metrics.batch_items.labels("replayed" if outcome.replayed else "created").inc()
            results.append(
                {
                    "index": index,
                    "status": 200 if outcome.replayed else 201,
                    "task": render.task(outcome.task) if outcome.task is not None else None,
                }
            )
    return respond({"results": results})


@bp.get("")
@documented(ok={200: TaskPage}, errors=(400, 422))
@validate_querystring(TaskQuery)
async def list_tasks(query_args: TaskQuery) -> Response:
    page = await _db().read(
        authed(tasks_store.list_tasks, need="any"),
        credentials(),
        state=query_args.state,
        type=query_args.type,
        agent=query_args.agent,
        parent=query_args.parent,
        workflow=query_args.workflow,
        id_prefix=query_args.id_prefix,
        q=query_args.q,
        updated_after=since(query_args.updated_after, time.time()) if query_args.updated_after else None,
        limit=query_args.limit,
        cursor=query_args.cursor,
    )
    return respond(render.task_page(page))


@bp.get("/<task_id>")
@documented(ok={200: TaskView}, errors=(404,))
async def show(task_id: str) -> Response:
    view = await _db().read(authed(tasks_store.show, need="any"), credentials(), task_id=task_id)
    return respond(render.task(view))


@bp.get("/<task_id>/events")
@documented(ok={200: TaskEvents}, errors=(404,))
async def events(task_id: str) -> Response:
    found = await _db().read(authed(tasks_store.events, need="any"), credentials(), task_id=task_id)
    return respond({"events": render.events(found)})


@bp.post("/claim")
@documented(ok={200: ClaimedTask, 204: NO_CONTENT}, auth="agent", body=True, writes=True)
@validate_request(ClaimNext)
async def claim_next(data: ClaimNext) -> Response:
    """The next task for this agent, claimed; with `wait`, hold the request until one comes (long poll).
    The wait is at most a third of MCS_API_READ_TIMEOUT (Settings.api_keep_alive), so the connection,
    silent meanwhile, is not dropped under it."""
    deadline = time.monotonic() + min(data.wait, _settings().api_keep_alive)
    task = await _claim_waiting(credentials(), deadline)
    return respond(task) if task is not None else Response("", status=204)


async def _claim_waiting(
    creds: Credentials, deadline: float, *, version: int | None = None, after: str | None = None
) -> dict[str, Any] | None:
    """Claim this agent's next task, waiting until `deadline` for one to come (None: none came). Woken by
    a commit (any commit, by anyone): a read first, and the write lock only when it shows a task this agent
    could take; most commits (heartbeats, other agents' work) concern it not. `version`: the commit version
    a look was already made at (complete-and-next's own transaction), so the first step is to wait; `after`:
    the task that complete-and-next completed (recorded with the claim, for a repeat of that request)."""
    watcher = current_app.config["MCS_CHANGES"]
    claim = authed(tasks_store.claim_next, need="agent", pass_as="agent")
    woken = False
    while True:
        if version is None or woken:
            version = watcher.version
            if woken and not await _db().read(authed(tasks_store.has_claimable, need="agent", pass_as="agent"), creds):
                metrics.claim_wakeups.labels("idle").inc()
            else:
                taken: TaskModel | None = await _db().write(claim, creds, now=time.time(), after=after)
                task = render.task_or_none(taken)
                if woken:
                    metrics.claim_wakeups.labels("raced" if task is None else "claimed").inc()
                if task is not None:
                    return task
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        metrics.claims_waiting.inc()
        try:
            woken = await watcher.wait_for_change(version, timeout=remaining)
        finally:
            metrics.claims_waiting.dec()
        if not woken:
            return None  # nothing committed since the last look: nothing new to take


@bp.post("/<task_id>/claim")
@documented(ok={200: ClaimedTask}, errors=(404, 409), auth="agent", writes=True)
async def claim(task_id: str) -> Response:
    creds = credentials()
    result: TaskModel = await _db().write(
        authed(tasks_store.claim, need="agent", pass_as="agent"), creds, task_id=task_id, now=time.time()
    )
    return respond(render.task(result))


@bp.post("/<task_id>/extend")
@documented(ok={200: ClaimedTask}, errors=(404, 409), auth="agent", body=True, writes=True)
@validate_request(Extend)
async def extend(task_id: str, data: Extend) -> Response:
    creds = credentials()
    result: TaskModel = await _db().write(
        authed(tasks_store.extend, need="agent", pass_as="agent"),
        creds,
        task_id=task_id,
        token=data.claim_token,
        ttl=data.ttl,
        now=time.time(),
    )
    return respond(render.task(result))


@bp.post("/<task_id>/progress")
@documented(ok={200: TaskProgress}, errors=(404, 409), auth="agent", body=True, writes=True)
@validate_request(Progress)
async def progress(task_id: str, data: Progress) -> Response:
    """The holder's progress on a claimed task (`message`, `percent` 0-100): a `progress` event on the task,
    seen live on GET /v1/events. 409 when the claim token is stale, 403 when another agent holds it."""
    creds = credentials()
    note: ProgressNote = await _db().write(
        authed(tasks_store.progress, need="agent", pass_as="agent"),
        creds,
        task_id=task_id,
        token=data.claim_token,
        message=data.message,
        percent=data.percent,
        now=time.time(),
    )
    metrics.task_progress.inc()
    return respond(render.progress(note))


@bp.post("/<task_id>/complete")
@documented(ok={200: CompleteAnswer}, errors=(404, 409), auth="agent", body=True, writes=True)
@validate_request(Complete)
async def complete(task_id: str, data: Complete) -> Response:
    """Complete a claimed task (the same token again: a no-op). With `next: true`, also claim this agent's
    next task in the same transaction and answer `{task, next}` (next: the claimed task, or null when none
    came within `wait` seconds): a pulling agent's one round trip per task."""
    creds = credentials()
    if not data.next:
        result: TaskModel = await _db().write(
            authed(tasks_store.complete, need="agent", pass_as="agent"),
            creds,
            task_id=task_id,
            token=data.claim_token,
            result=data.result,
            now=time.time(),
        )
        return respond(render.task(result))
    deadline = time.monotonic() + min(data.wait, _settings().api_keep_alive)
    watcher = current_app.config["MCS_CHANGES"]
    version = watcher.version
    done, claimed, repeat = await _db().write(
        authed(tasks_store.complete_and_next, need="agent", pass_as="agent"),
        creds,
        task_id=task_id,
        token=data.claim_token,
        result=data.result,
        now=time.time(),
    )
    following = render.task_or_none(claimed)
    if following is None and not repeat and deadline > time.monotonic():
        following = await _claim_waiting(creds, deadline, version=version, after=task_id)
    if following is not None:
        metrics.claims_with_completion.inc()
    return respond({"task": render.task(done), "next": following})


@bp.post("/<task_id>/fail")
@documented(ok={200: TaskView}, errors=(404, 409), auth="agent", body=True, writes=True)
@validate_request(Fail)
async def fail(task_id: str, data: Fail) -> Response:
    creds = credentials()
    settings = _settings()
    result: TaskModel = await _db().write(
        authed(tasks_store.fail, need="agent", pass_as="agent"),
        creds,
        task_id=task_id,
        token=data.claim_token,
        error=data.error,
        retryable=data.retryable,
        now=time.time(),
        base=settings.retry_base,
        cap=settings.retry_max,
    )
    return respond(render.task(result))


@bp.post("/<task_id>/reject")
@documented(ok={200: TaskView}, errors=(404, 409), auth="agent", body=True, writes=True)
@validate_request(Reject)
async def reject(task_id: str, data: Reject) -> Response:
    creds = credentials()
    result: TaskModel = await _db().write(
        authed(tasks_store.reject, need="agent", pass_as="agent"),
        creds,
        task_id=task_id,
        token=data.claim_token,
        reason=data.reason,
        now=time.time(),
    )
    return respond(render.task(result))


@bp.post("/<task_id>/cancel")
@documented(ok={200: TaskView}, errors=(403, 404, 409), writes=True)
async def cancel(task_id: str) -> Response:
    result: TaskModel = await _db().write(
        authed(tasks_store.cancel, need="any", pass_as="caller"), credentials(), task_id=task_id, now=time.time()
    )
    return respond(render.task(result))


@bp.post("/<task_id>/approve")
@documented(ok={200: TaskView}, errors=(403, 404, 409), body=True, writes=True)
@validate_request(Approve)
async def approve(task_id: str, data: Approve) -> Response:
    result: TaskModel = await _db().write(
        authed(tasks_store.approve, need="any", pass_as="caller"),
        credentials(),
        task_id=task_id,
        note=data.note,
        now=time.time(),
    )
    return respond(render.task(result))


@bp.post("/<task_id>/deny")
@documented(ok={200: TaskView}, errors=(403, 404, 409), body=True, writes=True)
@validate_request(Deny)
async def deny(task_id: str, data: Deny) -> Response:
    result: TaskModel = await _db().write(
        authed(tasks_store.deny, need="any", pass_as="caller"),
        credentials(),
        task_id=task_id,
        reason=data.reason,
        now=time.time(),
    )
    return respond(render.task(result))


@bp.post("/<task_id>/retry")
@documented(ok={200: TaskView}, errors=(403, 404, 409), writes=True)
async def retry(task_id: str) -> Response:
    result: TaskModel = await _db().write(
        authed(tasks_store.retry, need="any", pass_as="caller"), credentials(), task_id=task_id, now=time.time()
    )
    return respond(render.task(result))


_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since(value: str, now: float) -> float:
    """`updated_after` as a time: RFC 3339, or an age such as 90s, 30m, 1h, 2d (that long before now)."""
    text = value.strip()
    if text[:-1].isdigit() and text[-1:] in _AGO:
        return now - int(text[:-1]) * _AGO[text[-1]]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(
            "updated_after must be an RFC 3339 time or an age like 90s, 30m, 1h, 2d", code="bad_updated_after"
        ) from exc
    if parsed.tzinfo is None:
        raise BadRequest("updated_after needs a time zone (e.g. Z)", code="bad_updated_after")
    return parsed.timestamp()
