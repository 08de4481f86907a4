"""`mcs schedule`: cron schedules that submit a task at each tick (admin)."""

from __future__ import annotations

import json
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, load_document, url_option
from mcs.cli.root import main


@main.group()
def schedule() -> None:
    """Cron schedules (admin): each tick submits a task; the watchdog fires them, once per tick."""


def _schedule_human(s: dict[str, Any]) -> str:
    state = "paused" if s["paused"] else f"next {s['next_run_at']}"
    what = s.get("task") or s.get("workflow") or {}
    lines = [f"{s['name']}  {s['cron']} ({s['timezone']})  {state}  overlap={s['overlap']} catch_up={s['catch_up']}"]
    lines.append(f"  submits: {json.dumps(what)[:200]}")
    for run in s.get("runs") or []:
        why = (run.get("detail") or {}).get("reason")
        lines.append(f"  {run['tick']}  {run['outcome']:<8} {run.get('task_id') or ''}{'  ' + why if why else ''}")
    return "\n".join(lines)


def _list_human(page: dict[str, Any]) -> str:
    rows = page["schedules"]
    if not rows:
        return "no schedules"
    out = [f"{'NAME':<24} {'CRON':<18} {'TIMEZONE':<18} NEXT RUN"]
    for s in rows:
        out.append(
            f"{s['name']:<24} {s['cron']:<18} {s['timezone']:<18} {'paused' if s['paused'] else s['next_run_at']}"
        )
    return "\n".join(out)


@schedule.command("add")
@click.argument("name")
@click.option("--cron", required=True, help="When: five-field cron, e.g. '0 3 * * *' (03:00 every day).")
@click.option("--timezone", "--tz", "timezone", default="UTC", show_default=True, help="An IANA time zone.")
@click.option("--task-file", default=None, help="A JSON or YAML file with the task to submit (a POST /v1/tasks body).")
@click.option("--workflow-file", default=None, help="A JSON or YAML file with the workflow to submit.")
@click.option(
    "--overlap", type=click.Choice(["skip", "allow"]), default="skip", show_default=True,
    help="skip: no new run while the previous one has not ended.",
)  # fmt: skip
@click.option(
    "--catch-up", "catch_up", type=click.Choice(["one", "none"]), default="one", show_default=True,
    help="After downtime: one run for the ticks missed, or none.",
)  # fmt: skip
@url_option
@json_option
def schedule_add(
    name: str,
    cron: str,
    timezone: str,
    task_file: str | None,
    workflow_file: str | None,
    overlap: str,
    catch_up: str,
    url: str,
    as_json: bool,
) -> None:
    """Add schedule NAME: at each tick of --cron it submits the task in --task-file."""
    if (task_file is None) == (workflow_file is None):
        raise click.UsageError("give --task-file or --workflow-file (one of them)")
    task = load_document(task_file) if task_file else None
    workflow = load_document(workflow_file) if workflow_file else None
    with client(url) as c:
        created = c.create_schedule(
            name, cron, task=task, workflow=workflow, timezone=timezone, overlap=overlap, catch_up=catch_up
        )
    emit(created, as_json, _schedule_human)


@schedule.command("list")
@url_option
@json_option
def schedule_list(url: str, as_json: bool) -> None:
    """List the schedules and their next run."""
    with client(url) as c:
        emit(c.list_schedules(), as_json, _list_human)


@schedule.command("show")
@click.argument("name")
@url_option
@json_option
def schedule_show(name: str, url: str, as_json: bool) -> None:
    """Show schedule NAME with its recent runs (fired or skipped, and why)."""
    with client(url) as c:
        emit(c.get_schedule(name), as_json, _schedule_human)


@schedule.command("pause")
@click.argument("name")
@url_option
@json_option
def schedule_pause(name: str, url: str, as_json: bool) -> None:
    """Pause NAME: no ticks fire until it is resumed."""
    with client(url) as c:
        emit(c.pause_schedule(name), as_json, _schedule_human)


@schedule.command("resume")
@click.argument("name")
@url_option
@json_option
def schedule_resume(name: str, url: str, as_json: bool) -> None:
    """Resume NAME from its next tick (ticks that fell while it was paused do not fire)."""
    with client(url) as c:
        emit(c.resume_schedule(name), as_json, _schedule_human)


@schedule.command("delete")
@click.argument("name")
@url_option
@json_option
def schedule_delete(name: str, url: str, as_json: bool) -> None:
    """Delete schedule NAME (tasks it submitted are kept)."""
    with client(url) as c:
        c.delete_schedule(name)
    emit({"deleted": name}, as_json, lambda d: f"deleted schedule {d['deleted']}")
