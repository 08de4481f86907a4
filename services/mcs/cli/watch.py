"""`mcs watch`: the mesh live, from GET /v1/events. State changes print as lines; on a terminal, the
running tasks' progress (a bar and the latest message each) is redrawn below them. It reconnects with
Last-Event-ID after a dropped connection, so nothing is missed. `--json` prints the raw events."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from mcs.cli.common import client, json_option, url_option
from mcs.cli.root import main

TERMINAL_KINDS = frozenset({"completed", "failed", "canceled"})
BAR_WIDTH = 20
MAX_BARS = 10  # running tasks drawn at once; the rest are counted


def subject(e: dict[str, Any]) -> str:
    if "task_id" in e:
        return f"task {e['task_id'][:8]}" + (f" ({e['type']})" if e.get("type") else "")
    if "workflow_id" in e:
        return f"workflow {e['workflow_id'][:8]}" + (f" ({e['type']})" if e.get("type") else "")
    return f"agent {e.get('agent')}"


def event_line(e: dict[str, Any]) -> str:
    detail = e.get("detail")
    if e["kind"] == "progress" and isinstance(detail, dict):
        pct = detail.get("percent")
        text = (f"{pct:.0f}% " if isinstance(pct, int | float) else "") + str(detail.get("message") or "")
        return f"{e['at']}  {subject(e)}  progress {text}".rstrip()
    extra = f" {json.dumps(detail)}" if detail else ""
    return f"{e['at']}  {subject(e)}  {e['kind']} by {e['actor']}{extra}"


def bar(percent: float | None) -> str:
    if percent is None:
        return "[" + "?" * BAR_WIDTH + "]    "
    filled = round(BAR_WIDTH * max(0.0, min(100.0, percent)) / 100)
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + f"] {percent:3.0f}%"


@dataclass
class LiveView:
    """Lines for state changes; on a terminal, a block of progress bars kept at the bottom."""

    out: TextIO
    tty: bool
    running: dict[str, tuple[str, float | None, str]] = field(default_factory=dict)  # task -> (label, %, msg)
    drawn: int = 0

    def show(self, e: dict[str, Any]) -> None:
        task_id = e.get("task_id")
        if task_id is not None:
            if e["kind"] == "progress":
                d = e.get("detail") or {}
                self.running[task_id] = (subject(e), d.get("percent"), str(d.get("message") or ""))
                if self.tty:
                    self._redraw()
                    return
            elif e["kind"] in ("claimed", "started"):
                self.running.setdefault(task_id, (subject(e), None, ""))
            elif e.get("state") not in ("claimed", "assigned") or e["kind"] in TERMINAL_KINDS:
                self.running.pop(task_id, None)
        self._clear()
        self.out.write(event_line(e) + "\n")
        self._draw()

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.out.write(f"\x1b[{self.drawn}A\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        if not self.tty:
            self.out.flush()
            return
        rows = list(self.running.items())[:MAX_BARS]
        for label, pct, msg in (r[1] for r in rows):
            self.out.write(f"  {bar(pct)} {label}  {msg}"[:200] + "\n")
        if len(self.running) > MAX_BARS:
            self.out.write(f"  ... and {len(self.running) - MAX_BARS} more running\n")
        self.drawn = len(rows) + (1 if len(self.running) > MAX_BARS else 0)
        self.out.flush()

    def _redraw(self) -> None:
        self._clear()
        self._draw()


def follow(
    events: Iterable[dict[str, Any]], as_json: bool, *, until_task_ends: str | None = None
) -> dict[str, Any] | None:
    """Print events until interrupted (or, with `until_task_ends`, that task's last event); the last one."""
    view = LiveView(out=sys.stdout, tty=sys.stdout.isatty() and not as_json)
    last: dict[str, Any] | None = None
    for e in events:
        if as_json:
            click.echo(json.dumps(e))
        else:
            view.show(e)
        last = e
        if until_task_ends is not None and e.get("task_id") == until_task_ends and e["kind"] in TERMINAL_KINDS:
            return e
    return last


@main.command("watch")
@click.option("--task", "task_id", default=None, help="Only this task's events.")
@click.option("--workflow", default=None, help="Only this workflow's events (its steps' included).")
@click.option("--type", "type_", default=None, help="Only tasks of this type.")
@click.option("--agent", default=None, help="Only this agent's events (its own, and its tasks').")
@click.option("--since", "since", type=click.IntRange(0), default=None, help="Start after this event id.")
@url_option
@json_option
def watch(
    task_id: str | None,
    workflow: str | None,
    type_: str | None,
    agent: str | None,
    since: int | None,
    url: str,
    as_json: bool,
) -> None:
    """Watch the mesh live: state changes as lines, running tasks' progress as bars; Ctrl-C stops."""
    with client(url) as c:
        try:
            follow(
                c.stream_events(last_event_id=since, task=task_id, workflow=workflow, type=type_, agent=agent),
                as_json,
            )
        except KeyboardInterrupt:
            sys.exit(130)
