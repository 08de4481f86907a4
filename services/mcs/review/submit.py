"""`mcs review PATH`: pack, check that someone can review, fan out with consensus, follow the children,
write the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcs.client import TERMINAL, Client, McsApiError, serves
from mcs.review.pack import TASK_TYPE, Packed
from mcs.review.report import render_html, render_json

POLL_INTERVAL = 0.3  # seconds between looks at the children


class ReviewError(Exception):
    """The review could not be done; the message says why and what to do."""


@dataclass
class Outcome:
    task: dict[str, Any]
    html_path: Path
    json_path: Path


def capable_agents(client: Client, capability: str) -> list[str]:
    """Names of the online agents that have `capability`."""
    return sorted(a["name"] for a in client.list_agents() if a.get("status") == "online" and serves(a, [capability]))


def submit(client: Client, packed: Packed, *, capability: str, priority: str | None) -> dict[str, Any]:
    """The review fanout, submitted. ReviewError when nobody can take it or the server refuses its size."""
    reviewers = capable_agents(client, capability)
    if not reviewers:
        raise ReviewError(
            f"no online agent has the capability {capability!r}; start the analyzer agents with "
            "`mcs review agents` (or any agent with that capability) and try again"
        )
    try:
        task: dict[str, Any] = client.submit(
            TASK_TYPE,
            packed.payload(),
            capabilities=[capability],
            route="all",
            aggregate="consensus",
            priority=priority,
        )
    except McsApiError as exc:
        if exc.status == 413:
            raise ReviewError(
                f"the server refused the code ({packed.size() / 1024:.0f} KiB packed) as too large: its "
                "MCS_MAX_BODY_BYTES is lower than --max-bytes; review a subdirectory"
            ) from exc
        raise
    return task


def follow(
    client: Client, task_id: str, *, timeout: float, progress: Callable[[str], None]
) -> dict[str, Any]:  # fmt: skip
    """Wait for the fanout to end, reporting each change of its children on `progress`. On timeout the
    task is canceled and ReviewError raised."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        parent: dict[str, Any] = client.get_task(task_id)
        kids = client.list_tasks(parent=task_id, limit=500).get("tasks", [])
        done = sorted(k["route"] for k in kids if k["state"] in TERMINAL)
        waiting = sorted(k["route"] for k in kids if k["state"] not in TERMINAL)
        if kids:
            line = f"{len(done)}/{len(kids)} reviewers done"
            line += f" ({', '.join(done)})" if done else ""
            line += f"; waiting for {', '.join(waiting)}" if waiting else ""
        else:
            line = f"task {task_id} is {parent['state']}: waiting for the dispatcher to fan it out"
        if line != last:
            progress(line)
            last = line
        if parent["state"] in TERMINAL:
            return parent
        if time.monotonic() > deadline:
            try:
                client.cancel(task_id)
            except McsApiError:
                pass
            raise ReviewError(f"the review was not done after {timeout:.0f} s; task {task_id} was canceled")
        time.sleep(POLL_INTERVAL)


def write_report(task: dict[str, Any], packed: Packed, out: Path) -> Outcome:
    result = task.get("result") or {}
    if result.get("aggregate") != "consensus":
        raise ReviewError(f"task {task['id']} has no consensus result (state {task['state']})")
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"MCS review: {packed.root}"
    html_path, json_path = out / "review.html", out / "review.json"
    sources = {f["path"]: f["content"] for f in packed.files}
    html = render_html(result, title=title, task_id=task["id"], generated_at=now, sources=sources)
    html_path.write_text(html, encoding="utf-8")
    meta = {"title": title, "task_id": task["id"], "state": task["state"], "generated_at": now,
            "files": [f["path"] for f in packed.files]}  # fmt: skip
    json_path.write_text(render_json(result, **meta), encoding="utf-8")
    return Outcome(task=task, html_path=html_path, json_path=json_path)


def summary_text(result: dict[str, Any], *, top: int = 10) -> str:
    """The per-agent table and the findings that 2 or more independent reviewers raised, most severe first,
    for the terminal; the rest are counted ("and N more"), and all are in the report."""
    lines = [f"{'AGENT':<20} {'CRITICAL':>8} {'RECOMMEND':>9} {'OBSERVE':>7}  STATUS"]
    if result.get("error"):  # the server kept the children but could not merge them: say so, loudly
        lines.insert(0, f"warning: the server could not merge the findings: {result['error']}\n")
    for a in result.get("agents", []):
        status = a["status"] + (f": {a['reason']}" if a.get("reason") else "")
        lines.append(
            f"{a['agent']:<20} {a['critical']:>8} {a['recommendation']:>9} {a['observation']:>7}  {status[:60]}"
        )
    s = result.get("summary", {})
    lines.append(
        f"\n{s.get('findings', 0)} unique findings ({s.get('critical', 0)} critical, "
        f"{s.get('recommendation', 0)} recommendations, {s.get('observation', 0)} observations); "
        f"{s.get('consensus', 0)} raised by 2 or more independent reviewers"
    )
    agreed = [f for f in result.get("findings", []) if f["consensus"] >= 2]
    for f in agreed[:top]:
        where = f"{f['file']}:{f['line']}" if f.get("line") else f["file"]
        lines.append(f"  [{f['consensus']}] {f['severity']:<14} {where}  {f['title']}  ({', '.join(f['agents'])})")
    if len(agreed) > top:
        lines.append(f"  ... and {len(agreed) - top} more (see the report)")
    return "\n".join(lines)
