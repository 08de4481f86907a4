"""`mcs admin`: agent accounts (create, update, rotate, delete)."""

from __future__ import annotations

from typing import Any

import click

from mcs.cli.common import client, emit, json_option, url_option
from mcs.cli.root import main


@main.group()
def admin() -> None:
    """Admin commands (env: MCS_ADMIN_TOKEN, or the token file `mcs up` writes)."""


@admin.group("agent")
def admin_agent() -> None:
    """Create, update, rotate and delete agents."""


def _secrets_human(d: dict[str, Any]) -> str:
    pinned = f"  notify host (pinned): {d['notify_host']}\n" if d.get("notify_host") else ""
    return (
        f"agent {d['name']}\n  MCS_AGENT_ID={d['name']}\n  MCS_AGENT_SECRET={d['secret']}\n"
        f"  webhook secret (verify webhooks with it): {d['webhook_secret']}\n{pinned}"
        "These secrets are shown once; store them now."
    )


_NOTIFY_HOST_HELP = "Pin the host its notify URL must name (a DNS name or an IP address)."


@admin_agent.command("create")
@click.argument("name")
@click.option(
    "--capability",
    "-c",
    "capabilities",
    multiple=True,
    help="Grant a capability (repeatable): the agent may register only these. None: it may register any.",
)
@click.option("--notify-host", help=_NOTIFY_HOST_HELP)
@url_option
@json_option
def admin_agent_create(
    name: str, capabilities: tuple[str, ...], notify_host: str | None, url: str, as_json: bool
) -> None:
    """Create agent NAME; prints its secret and webhook secret once."""
    with client(url) as c:
        emit(c.create_agent(name, list(capabilities), notify_host=notify_host), as_json, _secrets_human)


@admin_agent.command("update")
@click.argument("name")
@click.option("--notify-host", help=_NOTIFY_HOST_HELP)
@click.option("--no-notify-host", is_flag=True, help="Unpin: its notify URL may name any host the policy allows.")
@url_option
@json_option
def admin_agent_update(name: str, notify_host: str | None, no_notify_host: bool, url: str, as_json: bool) -> None:
    """Change agent NAME: pin its notify host (a notify URL on another host is dropped at once) or unpin it."""
    if (notify_host is None) == (not no_notify_host):
        raise click.UsageError("give --notify-host HOST or --no-notify-host")
    with client(url) as c:
        agent = c.update_agent(name, notify_host=None if no_notify_host else notify_host)
    emit(agent, as_json, lambda a: f"agent {a['name']}: notify host {a['notify_host'] or 'not pinned'}")


@admin_agent.command("rotate")
@click.argument("name")
@url_option
@json_option
def admin_agent_rotate(name: str, url: str, as_json: bool) -> None:
    """Issue new secrets for NAME (the old ones stop working at once)."""
    with client(url) as c:
        emit(c.rotate_agent(name), as_json, _secrets_human)


@admin_agent.command("delete")
@click.argument("name")
@url_option
@json_option
def admin_agent_delete(name: str, url: str, as_json: bool) -> None:
    """Delete agent NAME and its memory (private:NAME, agent:NAME); work assigned to it goes back to the
    queue, tasks routed to it by name fail."""
    with client(url) as c:
        emit(c.delete_agent(name), as_json, _deleted_human)


def _deleted_human(d: dict[str, Any]) -> str:
    keys = ", ".join(f"{n} key{'s' if n != 1 else ''} from {ns}" for ns, n in d["memory_keys"].items())
    return (
        f"deleted {d['deleted']}: {keys}; {d['tasks_requeued']} assigned task(s) back to the queue,"
        f" {d['tasks_failed']} task(s) routed to it failed"
    )
