"""`mcs task`: submit, list, show, follow and cancel tasks."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, load_payload, url_option
from mcs.cli.root import main
from mcs.client import TERMINAL


@main.group()
def task() -> None:
    """Submit and follow tasks."""


def _task_human(t: dict[str, Any]) -> str:
    lines = [
        f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
        for k, v in t.items()
        if k not in ("payload", "result") and v not in (None, [], "")
    ]
    if t.get("result") is not None:
        lines.append("result: " + json.dumps(t["result"], indent=2))
    return "\n".join(lines)


@task.command("submit")
@click.option("--type", "-t", "type_", required=True, help="The task type (also the default capability).")
@click.option("--route", "-r", default=None, help="any (default), all (fan out), or an agent name.")
@click.option("--priority", "-p", type=click.Choice(["urgent", "normal", "low"]), default=None)
@click.option("--capability", "-c", "capabilities", multiple=True, help="A required capability (repeatable).")
@click.option("--payload", default=None, help="The payload as JSON.")
@click.option("--payload-file", default=None, help="A file holding the JSON payload (- for stdin).")
@click.option("--max-retries", type=click.IntRange(0, 100), default=None)
@click.option("--claim-ttl", type=click.FloatRange(min=0, min_open=True), default=None, help="Lease seconds.")
@click.option("--idempotency-key", default=None, help="Submit at most once with this key.")
@click.option("--wait", is_flag=True, help="Follow the task to its end and print its result.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@url_option
@json_option
def task_submit(
    type_: str,
    route: str | None,
    priority: str | None,
    capabilities: tuple[str, ...],
    payload: str | None,
    payload_file: str | None,
    max_retries: int | None,
    claim_ttl: float | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float | None,
    url: str,
    as_json: bool,
) -> None:
    """Submit a task; prints its id (or, with --wait, its result)."""
    body = load_payload(payload, payload_file)
    with client(url) as c:
        t = c.submit(
            type_,
            body,
            priority=priority,
            capabilities=list(capabilities) or None,
            route=route,
            max_retries=max_retries,
            claim_ttl=claim_ttl,
            idempotency_key=idempotency_key,
        )
        if not wait:
            emit(t, as_json, lambda d: d["id"])
            return
        click.echo(f"submitted {t['id']}; waiting", err=True)
        t = c.wait_for(t["id"], timeout=timeout)
    emit(t if as_json else t.get("result"), as_json or True)
    if t["state"] != "completed":
        click.echo(f"task {t['id']} ended {t['state']}: {t.get('error')}", err=True)
        sys.exit(1)


@task.command("list")
@click.option("--state", default=None)
@click.option("--type", "type_", default=None)
@click.option("--agent", default=None)
@click.option("--parent", default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None)
@url_option
@json_option
def task_list(
    state: str | None,
    type_: str | None,
    agent: str | None,
    parent: str | None,
    limit: int,
    cursor: str | None,
    url: str,
    as_json: bool,
) -> None:
    """List tasks, newest first."""
    with client(url) as c:
        page = c.list_tasks(state=state, type=type_, agent=agent, parent=parent, limit=limit, cursor=cursor)

    def human(p: dict[str, Any]) -> str:
        rows = [f"{'ID':<36} {'STATE':<9} {'PRIORITY':<8} {'TYPE':<20} {'AGENT':<16} CREATED"]
        for t in p["tasks"]:
            rows.append(
                f"{t['id']:<36} {t['state']:<9} {t['priority']:<8} {t['type']:<20} "
                f"{t['assigned_to'] or '-':<16} {t['created_at']}"
            )
        if p["next_cursor"]:
            rows.append(f"more: --cursor {p['next_cursor']}")
        return "\n".join(rows)

    emit(page, as_json, human)


@task.command("show")
@click.argument("task_id")
@url_option
@json_option
def task_show(task_id: str, url: str, as_json: bool) -> None:
    """Show one task."""
    with client(url) as c:
        emit(c.get_task(task_id), as_json, _task_human)


def _event_line(e: dict[str, Any]) -> str:
    detail = f" {json.dumps(e['detail'])}" if e.get("detail") else ""
    return f"{e['at']}  {e['kind']:<14} {e['actor']}{detail}"


@task.command("events")
@click.argument("task_id")
@url_option
@json_option
def task_events(task_id: str, url: str, as_json: bool) -> None:
    """Show a task's audit trail."""
    with client(url) as c:
        emit(c.events(task_id), as_json, lambda evs: "\n".join(_event_line(e) for e in evs))


@task.command("cancel")
@click.argument("task_id")
@url_option
@json_option
def task_cancel(task_id: str, url: str, as_json: bool) -> None:
    """Cancel a task (and its children)."""
    with client(url) as c:
        emit(c.cancel(task_id), as_json, lambda t: f"{t['id']} {t['state']}")


@task.command("watch")
@click.argument("task_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@url_option
@json_option
def task_watch(task_id: str, timeout: float | None, url: str, as_json: bool) -> None:
    """Print a task's events as they happen until it ends."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    with client(url) as c:
        while True:
            events = c.events(task_id)
            for e in events[seen:]:
                click.echo(json.dumps(e) if as_json else _event_line(e))
            seen = len(events)
            t = c.get_task(task_id)
            if t["state"] in TERMINAL and len(c.events(task_id)) == seen:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {t['state']}")
            time.sleep(0.3)
    if t["state"] != "completed":
        sys.exit(1)
