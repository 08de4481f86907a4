"""`mcs admin`: agent accounts (create, rotate, delete)."""

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
    """Create, rotate and delete agents."""


def _secrets_human(d: dict[str, Any]) -> str:
    return (
        f"agent {d['name']}\n  MCS_AGENT_ID={d['name']}\n  MCS_AGENT_SECRET={d['secret']}\n"
        f"  webhook secret (verify webhooks with it): {d['webhook_secret']}\n"
        "These secrets are shown once; store them now."
    )


@admin_agent.command("create")
@click.argument("name")
@click.option(
    "--capability",
    "-c",
    "capabilities",
    multiple=True,
    help="Grant a capability (repeatable): the agent may register only these. None: it may register any.",
)
@url_option
@json_option
def admin_agent_create(name: str, capabilities: tuple[str, ...], url: str, as_json: bool) -> None:
    """Create agent NAME; prints its secret and webhook secret once."""
    with client(url) as c:
        emit(c.create_agent(name, list(capabilities)), as_json, _secrets_human)


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
