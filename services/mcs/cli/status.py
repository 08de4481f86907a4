"""`mcs status`: the mesh at a glance (GET /v1/status; needs the admin token)."""

from __future__ import annotations

from typing import Any

from mcs.cli.common import client, emit, json_option, url_option
from mcs.cli.root import main


def _status_human(s: dict[str, Any]) -> str:
    lines = ["processes:", "  api         answered this request"]
    if not s["processes"]:
        lines.append("  none has written a heartbeat (is `mcs up` running against this database?)")
    replicas: dict[str, int] = {}
    for p in s["processes"]:
        replicas[p["name"]] = replicas.get(p["name"], 0) + 1
    for p in s["processes"]:
        state = "ok" if p["healthy"] else "STALE"
        line = f"  {p['name']:<11} pid {p['pid']:<8} heartbeat {p['age_seconds']:.1f} s ago  {state}"
        if replicas[p["name"]] > 1:  # several replicas of one process: say which row is which
            line += f"  instance {p.get('instance') or '-'}"
        lines.append(line)
    lines.append("queue (state: urgent/normal/low):")
    busy = {state: by for state, by in s["queue"].items() if any(by.values())}
    if not busy:
        lines.append("  empty")
    for state, by in busy.items():
        lines.append(f"  {state:<9} {by.get('urgent', 0)}/{by.get('normal', 0)}/{by.get('low', 0)}")
    online, offline = s["agents"]["online"], s["agents"]["offline"]
    lines.append(f"agents: {len(online)} online, {len(offline)} offline")
    for a in online + offline:
        lines.append(f"  {a['name']:<20} {a['status']:<8} {','.join(a['capabilities'])}")
    for u in s["unserved"]:
        who = f"agent {u['route']} with " if u["route"] not in ("any", "all") else ""
        would = (
            f"offline agents that would: {', '.join(u['offline_agents'])}" if u["offline_agents"] else "no agent has it"
        )
        lines.append(
            f"warning: {u['queued']} queued task(s) need {who}{', '.join(u['capabilities'])} "
            f"and no online agent serves it; {would}"
        )
    for r in s["unreachable"]:
        verb = "gave up" if r["gave_up"] else f"retrying (attempt {r['attempts']})"
        lines.append(f"warning: agent {r['agent']} unreachable at {r['notify_url'] or '?'}: {r['error']} ({verb})")
    return "\n".join(lines)


@main.command()
@url_option
@json_option
def status(url: str, as_json: bool) -> None:
    """The mesh at a glance: processes and their heartbeats, queue depth by state and priority, agents
    online and offline, queued work nobody online can take, and agents whose webhooks fail."""
    with client(url) as c:
        emit(c.status(), as_json, _status_human)
