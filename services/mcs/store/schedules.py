"""Schedules: the rows behind `/v1/schedules`, and firing due ticks (the watchdog's job).

A tick fires exactly once: the submission, the `schedule_runs` row keyed by (schedule, tick) and the
schedule's next tick commit in one transaction, so a crash leaves either all of them or none, and a
second watchdog (started by mistake) finds the tick taken. Each call handles one schedule in its own short
transaction; the watchdog calls again while ticks are due.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcs.errors import Conflict, NotFound, Unprocessable
from mcs.models import Caller, Schedule, ScheduleRun, TaskSpec, iso
from mcs.schedules import Cron, iso_local
from mcs.state import tasks as tasks_store
from mcs.store import workflows as workflows_store
from mcs.store.connection import Connection

MISSED_SCAN_MAX = 100_000  # ticks counted when saying how many were missed during a long downtime
RUNS_SHOWN = 20  # recent runs listed with a schedule


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """What a scheduled submission takes from the server's settings when its body leaves it out."""

    max_retries: int
    claim_ttl: float
    grace: float  # seconds a tick may be late and still count as on time (catch_up "none")


def _must_get(conn: Connection, name: str) -> Schedule:
    row = conn.execute("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no schedule named {name!r}")
    return Schedule.from_row(row)


def runs(conn: Connection, name: str, *, limit: int = RUNS_SHOWN) -> list[ScheduleRun]:
    rows = conn.execute(
        "SELECT * FROM schedule_runs WHERE schedule = ? ORDER BY tick_at DESC LIMIT ?", (name, limit)
    ).fetchall()
    return [ScheduleRun.from_row(r) for r in rows]


def get(conn: Connection, name: str) -> tuple[Schedule, list[ScheduleRun]]:
    return _must_get(conn, name), runs(conn, name)


def list_all(conn: Connection) -> list[Schedule]:
    return [Schedule.from_row(r) for r in conn.execute("SELECT * FROM schedules ORDER BY name")]


def create(
    conn: Connection,
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
    if conn.execute("SELECT 1 FROM schedules WHERE name = ?", (name,)).fetchone():
        raise Conflict(
            f"schedule {name!r} already exists (delete it first, or pick another name)", code="schedule_exists"
        )
    conn.execute(
        "INSERT INTO schedules (name, cron, timezone, kind, body, overlap, catch_up, paused, next_run_at,"
        " created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
        (name, cron.expression, cron.timezone, kind, json.dumps(body), overlap, catch_up,
         cron.next_after(now), caller.actor, now, now),
    )  # fmt: skip
    return _must_get(conn, name)


def delete(conn: Connection, *, name: str) -> None:
    _must_get(conn, name)
    conn.execute("DELETE FROM schedule_runs WHERE schedule = ?", (name,))
    conn.execute("DELETE FROM schedules WHERE name = ?", (name,))


def set_paused(conn: Connection, *, name: str, paused: bool, now: float) -> Schedule:
    """Pause, or resume: a resumed schedule's next tick is the first one after now (no burst of the ticks
    that fell while it was paused)."""
    schedule = _must_get(conn, name)
    if schedule.paused == paused:
        return schedule
    next_run = schedule.next_run_at if paused else Cron.parse(schedule.cron, schedule.timezone).next_after(now)
    conn.execute(
        "UPDATE schedules SET paused = ?, next_run_at = ?, updated_at = ? WHERE name = ?",
        (int(paused), next_run, now, name),
    )
    return _must_get(conn, name)


def next_due(conn: Connection) -> float | None:
    """When the next tick of any running schedule falls."""
    row = conn.execute("SELECT min(next_run_at) FROM schedules WHERE paused = 0").fetchone()
    return row[0] if row else None


def fire_next_due(conn: Connection, *, now: float, defaults: Defaults) -> ScheduleRun | None:
    """Handle the most overdue schedule: fire its tick (or skip it, saying why) and move it to its next
    tick after `now`. None when nothing is due."""
    row = conn.execute(
        "SELECT * FROM schedules WHERE paused = 0 AND next_run_at <= ? ORDER BY next_run_at LIMIT 1", (now,)
    ).fetchone()
    if row is None:
        return None
    schedule = Schedule.from_row(row)
    cron = Cron.parse(schedule.cron, schedule.timezone)
    # The tick to handle is the latest one due; the ones before it fell while nothing ran (downtime).
    due = [schedule.next_run_at, *cron.ticks_between(schedule.next_run_at, now, limit=MISSED_SCAN_MAX)]
    tick = due[-1]
    late = now - tick
    detail: dict[str, Any] = {"tick_local": iso_local(tick, schedule.timezone)}
    if len(due) > 1:
        detail["missed"] = len(due) - 1  # earlier ticks that fell while nothing ran: never fired
    outcome, task_id, reason = "fired", None, None
    if schedule.catch_up == "none" and late > defaults.grace:
        outcome, reason = "skipped", f"missed by {late:.0f} s (catch_up: none)"
    elif schedule.overlap == "skip" and _still_running(conn, schedule.last_task_id):
        outcome, reason = "skipped", f"the previous run {schedule.last_task_id} has not ended (overlap: skip)"
    else:
        if late > defaults.grace:
            detail["catch_up"] = True
        task_id = _submit(conn, schedule, tick=tick, detail=detail, defaults=defaults, now=now)
    if reason:
        detail["reason"] = reason
    conn.execute(
        "INSERT INTO schedule_runs (schedule, tick_at, outcome, task_id, at, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (schedule.name, tick, outcome, task_id, now, json.dumps(detail)),
    )
    conn.execute(
        "UPDATE schedules SET next_run_at = ?, last_tick_at = ?, last_task_id = coalesce(?, last_task_id),"
        " updated_at = ? WHERE name = ? AND next_run_at = ?",
        (cron.next_after(now), tick, task_id, now, schedule.name, schedule.next_run_at),
    )
    return ScheduleRun(schedule=schedule.name, tick_at=tick, outcome=outcome, task_id=task_id, at=now, detail=detail)


def _still_running(conn: Connection, task_id: str | None) -> bool:
    """Whether the previous run (a task, or for a workflow schedule a workflow) has not ended."""
    if task_id is None:
        return False
    task = tasks_store.get(conn, task_id)
    if task is not None:
        return not task.state.terminal
    row = conn.execute("SELECT state FROM workflows WHERE id = ?", (task_id,)).fetchone()
    return row is not None and row["state"] == "running"


def _submit(
    conn: Connection, schedule: Schedule, *, tick: float, detail: dict[str, Any], defaults: Defaults, now: float
) -> str:
    """Submit the schedule's task (or workflow); returns its id."""
    if schedule.kind == "workflow":
        return _submit_workflow(conn, schedule, tick=tick, detail=detail, defaults=defaults, now=now)
    if schedule.kind != "task":
        raise Unprocessable(f"schedule {schedule.name!r} submits a {schedule.kind}, which this server cannot run")
    spec = TaskSpec.from_body(schedule.body, max_retries=defaults.max_retries, claim_ttl=defaults.claim_ttl)
    caller = Caller(name=f"schedule:{schedule.name}")
    task, _ = tasks_store.submit(
        conn, caller=caller, spec=spec, idempotency_key=None, body_hash="", idempotency_ttl=0, now=now
    )
    tasks_store.add_event(
        conn, task.id, "scheduled", caller.actor, now, {"schedule": schedule.name, "tick": iso(tick)} | detail
    )
    return task.id


def _submit_workflow(
    conn: Connection, schedule: Schedule, *, tick: float, detail: dict[str, Any], defaults: Defaults, now: float
) -> str:
    body = schedule.body
    workflow = workflows_store.submit(
        conn,
        caller=Caller(name=f"schedule:{schedule.name}"),
        name=body["name"],
        steps=body["steps"],
        inputs=body.get("inputs"),
        max_retries=defaults.max_retries,
        claim_ttl=defaults.claim_ttl,
        now=now,
        actor_detail={"schedule": schedule.name, "tick": iso(tick)} | detail,
    )
    return str(workflow["id"])
