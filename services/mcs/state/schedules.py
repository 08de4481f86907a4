"""Schedules: the rows behind `/v1/schedules`, and firing due ticks (the watchdog's job).

A tick fires exactly once: the `schedule_runs` row keyed by (schedule, tick), the submission and the
schedule's next tick commit in one transaction, so a crash leaves either all of them or none. Several
watchdogs may run (replicas): each takes a due schedule's row with SKIP LOCKED, so two never hold the same
one, and the run row is written before anything is submitted, so a tick another watchdog already recorded
counts as handled and submits nothing (docs/design/engines.md 4.1, site 10). Each call handles one tick
in its own short transaction; the watchdog calls again while ticks are due.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcs.engines.base import Duplicate, RaceLost, Tx
from mcs.errors import Conflict, NotFound, Unprocessable
from mcs.models import Caller, Schedule, ScheduleRun, TaskSpec, iso
from mcs.schedules import Cron, iso_local
from mcs.state import tasks as tasks_store
from mcs.state import workflows as workflows_state

MISSED_SCAN_MAX = 100_000  # ticks counted when saying how many were missed during a long downtime
RUNS_SHOWN = 20  # recent runs listed with a schedule


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """What a scheduled submission takes from the server's settings when its body leaves it out."""

    max_retries: int
    claim_ttl: float
    grace: float  # seconds a tick may be late and still count as on time (catch_up "none")


def _must_get(tx: Tx, name: str) -> Schedule:
    schedule = tx.schedule_get(name)
    if schedule is None:
        raise NotFound(f"no schedule named {name!r}")
    return schedule


def runs(tx: Tx, name: str, *, limit: int = RUNS_SHOWN) -> list[ScheduleRun]:
    return tx.schedule_runs(name, limit)


def get(tx: Tx, name: str) -> tuple[Schedule, list[ScheduleRun]]:
    return _must_get(tx, name), runs(tx, name)


def list_all(tx: Tx) -> list[Schedule]:
    return tx.schedules_all()


def create(
    tx: Tx,
    *,
    name: str,
    cron: Cron,
    kind: str,
    body: Mapping[str, Any],
    overlap: str,
    catch_up: str,
    caller: Caller,
    now: float,
) -> Schedule:
    """A new schedule, its first tick the first one after now; 409 when the name is taken."""
    schedule = Schedule(
        name=name,
        cron=cron.expression,
        timezone=cron.timezone,
        kind=kind,
        body=dict(body),
        overlap=overlap,
        catch_up=catch_up,
        paused=False,
        next_run_at=cron.next_after(now),
        last_tick_at=None,
        last_task_id=None,
        created_by=caller.actor,
        created_at=now,
        updated_at=now,
    )
    try:  # no "exists?" read first: two creates of one name both pass it (4.1, site 11)
        tx.schedule_insert(schedule)
    except Duplicate:
        raise Conflict(
            f"schedule {name!r} already exists (delete it first, or pick another name)", code="schedule_exists"
        ) from None
    return _must_get(tx, name)


def delete(tx: Tx, *, name: str) -> None:
    if not tx.schedule_delete(name):
        raise NotFound(f"no schedule named {name!r}")


def set_paused(tx: Tx, *, name: str, paused: bool, now: float) -> Schedule:
    """Pause, or resume: a resumed schedule's next tick is the first one after now (no burst of the ticks
    that fell while it was paused)."""
    schedule = _must_get(tx, name)
    if schedule.paused == paused:
        return schedule
    next_run = schedule.next_run_at if paused else Cron.parse(schedule.cron, schedule.timezone).next_after(now)
    tx.schedule_set_paused(name, paused=paused, next_run_at=next_run, now=now)
    return _must_get(tx, name)


def next_due(tx: Tx) -> float | None:
    """When the next tick of any running schedule falls."""
    return tx.schedule_next_due()


def fire_next_due(tx: Tx, *, now: float, defaults: Defaults) -> ScheduleRun | None:
    """Handle the most overdue schedule: fire its tick (or skip it, saying why) and move it to its next
    tick after `now`. None when nothing is due. A tick already recorded (another watchdog handled it)
    only moves its schedule on, and the next due one is handled instead."""
    while (schedule := tx.schedule_take_due(now)) is not None:
        run = _handle(tx, schedule, now=now, defaults=defaults)
        if run is not None:
            return run
    return None


def _handle(tx: Tx, schedule: Schedule, *, now: float, defaults: Defaults) -> ScheduleRun | None:
    cron = Cron.parse(schedule.cron, schedule.timezone)
    # The tick to handle is the latest one due; the ones before it fell while nothing ran (downtime).
    due = [schedule.next_run_at, *cron.ticks_between(schedule.next_run_at, now, limit=MISSED_SCAN_MAX)]
    tick = due[-1]
    late = now - tick
    detail: dict[str, Any] = {"tick_local": iso_local(tick, schedule.timezone)}
    if len(due) > 1:
        detail["missed"] = len(due) - 1  # earlier ticks that fell while nothing ran: never fired
    outcome, reason = "fired", None
    if schedule.catch_up == "none" and late > defaults.grace:
        outcome, reason = "skipped", f"missed by {late:.0f} s (catch_up: none)"
    elif schedule.overlap == "skip" and _still_running(tx, schedule.last_task_id):
        outcome, reason = "skipped", f"the previous run {schedule.last_task_id} has not ended (overlap: skip)"
    elif late > defaults.grace:
        detail["catch_up"] = True
    submitted_detail = dict(detail)  # what the submission's audit event says (no reason: it fired)
    if reason:
        detail["reason"] = reason
    # The run row first: its primary key is the backstop that keeps a tick from firing twice.
    first = tx.schedule_run_insert(
        ScheduleRun(schedule=schedule.name, tick_at=tick, outcome=outcome, task_id=None, at=now, detail=detail)
    )
    task_id = None
    if first and outcome == "fired":
        task_id = _submit(tx, schedule, tick=tick, detail=submitted_detail, defaults=defaults, now=now)
        tx.schedule_run_set_task(schedule.name, tick, task_id)
    advanced = tx.schedule_advance(
        schedule.name,
        expect_next=schedule.next_run_at,
        next_run_at=cron.next_after(now),
        tick_at=tick,
        task_id=task_id,
        now=now,
    )
    if not advanced:  # the row changed after it was taken: cannot happen under its lock, but never loop on it
        raise RaceLost(f"schedule {schedule.name!r} moved while its tick was handled")
    if not first:
        return None
    return ScheduleRun(schedule=schedule.name, tick_at=tick, outcome=outcome, task_id=task_id, at=now, detail=detail)


def _still_running(tx: Tx, task_id: str | None) -> bool:
    """Whether the previous run (a task, or for a workflow schedule a workflow) has not ended."""
    if task_id is None:
        return False
    task = tasks_store.get(tx, task_id)
    if task is not None:
        return not task.state.terminal
    workflow = tx.workflow_get(task_id)
    return workflow is not None and workflow.state == "running"


def _submit(tx: Tx, schedule: Schedule, *, tick: float, detail: dict[str, Any], defaults: Defaults, now: float) -> str:
    """Submit the schedule's task (or workflow); returns its id."""
    if schedule.kind == "workflow":
        return _submit_workflow(tx, schedule, tick=tick, detail=detail, defaults=defaults, now=now)
    if schedule.kind != "task":
        raise Unprocessable(f"schedule {schedule.name!r} submits a {schedule.kind}, which this server cannot run")
    spec = TaskSpec.from_body(schedule.body, max_retries=defaults.max_retries, claim_ttl=defaults.claim_ttl)
    caller = Caller(name=f"schedule:{schedule.name}")
    task, _ = tasks_store.submit(
        tx, caller=caller, spec=spec, idempotency_key=None, body_hash="", idempotency_ttl=0, now=now
    )
    tasks_store.add_event(
        tx, task.id, "scheduled", caller.actor, now, {"schedule": schedule.name, "tick": iso(tick)} | detail
    )
    return task.id


def _submit_workflow(
    tx: Tx, schedule: Schedule, *, tick: float, detail: dict[str, Any], defaults: Defaults, now: float
) -> str:
    body = schedule.body
    view = workflows_state.submit(
        tx,
        caller=Caller(name=f"schedule:{schedule.name}"),
        name=body["name"],
        steps=body["steps"],
        inputs=body.get("inputs"),
        max_retries=defaults.max_retries,
        claim_ttl=defaults.claim_ttl,
        now=now,
        actor_detail={"schedule": schedule.name, "tick": iso(tick)} | detail,
    )
    return view.workflow.id
