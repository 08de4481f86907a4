"""`mcs workflow`: submit a DAG of steps from a YAML or JSON file, follow it, list, cancel."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, load_document, url_option
from mcs.cli.root import main


@main.group()
def workflow() -> None:
    """Workflows: steps (tasks) that run when the steps they depend on are done."""


def _parse_input(raw: str) -> tuple[str, Any]:
    """`k=v`: v as JSON when it is JSON (a number, true, a list...), else as the string it is."""
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{raw!r} is not KEY=VALUE", param_hint="--input")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def _took(task: dict[str, Any]) -> str:
    if task["state"] in ("completed", "failed", "canceled"):
        took = _seconds(task["created_at"], task["updated_at"])
        return f"{took:.1f}s" if took is not None else ""
    return f"since {task['updated_at']}"


def tree(wf: dict[str, Any]) -> str:
    """The workflow, then each step indented under the steps it depends on, with its state and timing."""
    steps: dict[str, dict[str, Any]] = wf["steps"]
    ids = {t["id"]: name for name, t in steps.items()}
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            ups = [ids[d] for d in steps[name].get("depends_on") or [] if d in ids]
            depth[name] = 1 + max((level(u) for u in ups), default=-1)
        return depth[name]

    took = _seconds(wf["created_at"], wf.get("finished_at"))
    head = f"{wf['id']}  {wf['name']}  {wf['state']}" + (f"  {took:.1f}s" if took is not None else "")
    lines = [head]
    for name in sorted(steps, key=lambda n: (level(n), steps[n]["created_at"], n)):
        t = steps[name]
        ups = [ids[d] for d in t.get("depends_on") or [] if d in ids]
        after = f"  after {', '.join(ups)}" if ups else ""
        who = f"  {t['assigned_to']}" if t.get("assigned_to") else ""
        error = f"  error: {t['error']}" if t.get("error") else ""
        indent = "  " * (level(name) + 1)
        lines.append(f"{indent}{name:<{max(1, 20 - len(indent))}} {t['state']:<9} {_took(t):<10}{who}{after}{error}")
    return "\n".join(lines)


def _list_human(page: dict[str, Any]) -> str:
    rows = page["workflows"]
    if not rows:
        return "no workflows"
    out = [f"{'ID':<36} {'STATE':<9} {'STEPS':>5}  {'NAME':<24} CREATED"]
    for w in rows:
        done = sum(1 for t in w["steps"].values() if t["state"] == "completed")
        out.append(f"{w['id']:<36} {w['state']:<9} {done:>2}/{len(w['steps']):<2}  {w['name']:<24} {w['created_at']}")
    if page.get("next_cursor"):
        out.append(f"more: --cursor {page['next_cursor']}")
    return "\n".join(out)


@workflow.command("submit")
@click.argument("file")
@click.option("--input", "inputs", multiple=True, help="KEY=VALUE added to the workflow's inputs (repeatable).")
@click.option("--wait", is_flag=True, help="Follow the workflow to its end and show it.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@url_option
@json_option
def workflow_submit(
    file: str, inputs: tuple[str, ...], wait: bool, timeout: float | None, url: str, as_json: bool
) -> None:
    """Submit the workflow in FILE (YAML or JSON: name, steps, inputs); prints its id (or, with --wait, how
    it ended). Exits 1 when, waited for, it did not complete."""
    doc = load_document(file)
    if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
        raise click.BadParameter(f"{file} must hold a mapping with name and a list of steps", param_hint="FILE")
    given = dict(_parse_input(i) for i in inputs)
    if given:
        base = doc.get("inputs")
        if base is not None and not isinstance(base, dict):
            raise click.BadParameter(
                "--input needs the file's inputs to be a mapping (or absent)", param_hint="--input"
            )
        doc["inputs"] = (base or {}) | given
    with client(url) as c:
        wf = c.submit_workflow(str(doc.get("name") or ""), doc["steps"], inputs=doc.get("inputs"))
        if not wait:
            emit(wf, as_json, lambda d: d["id"])
            return
        click.echo(f"submitted workflow {wf['id']}; waiting (Ctrl-C stops waiting, not the workflow)", err=True)
        try:
            wf = c.wait_for_workflow(wf["id"], timeout=timeout)
        except TimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            click.echo(f"it goes on: mcs workflow show {wf['id']}, or mcs workflow cancel {wf['id']}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted; workflow {wf['id']} goes on: mcs workflow show {wf['id']}", err=True)
            sys.exit(130)
    emit(wf, as_json, tree)
    if wf["state"] != "completed":
        click.echo(f"workflow {wf['id']} ended {wf['state']}", err=True)
        sys.exit(1)


@workflow.command("show")
@click.argument("workflow_id")
@url_option
@json_option
def workflow_show(workflow_id: str, url: str, as_json: bool) -> None:
    """Show a workflow as a tree of its steps, with states and timings."""
    with client(url) as c:
        emit(c.get_workflow(workflow_id), as_json, tree)


@workflow.command("list")
@click.option("--state", type=click.Choice(["running", "completed", "failed", "canceled"]), default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None, help="Continue after the page that gave this cursor.")
@url_option
@json_option
def workflow_list(state: str | None, limit: int, cursor: str | None, url: str, as_json: bool) -> None:
    """List workflows, newest first."""
    with client(url) as c:
        emit(c.list_workflows(state=state, limit=limit, cursor=cursor), as_json, _list_human)


@workflow.command("cancel")
@click.argument("workflow_id")
@url_option
@json_option
def workflow_cancel(workflow_id: str, url: str, as_json: bool) -> None:
    """Cancel a workflow: every unfinished step is canceled (an agent running one is told to stop)."""
    with client(url) as c:
        emit(c.cancel_workflow(workflow_id), as_json, lambda w: f"{w['id']} {w['state']}")
