"""`mcs admin`: agent accounts (create, update, rotate, delete)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, url_option
from mcs.cli.root import main
from mcs.client import UNSET, Unset


@main.group()
def admin() -> None:
    """Admin commands (the admin token: MCS_ADMIN_TOKEN, or the config file and token file `mcs up` writes)."""


@admin.group("agent")
def admin_agent() -> None:
    """Create, update, rotate and delete agents."""


def _secrets_human(d: dict[str, Any]) -> str:
    pinned = f"  notify host (pinned): {d['notify_host']}\n" if d.get("notify_host") else ""
    return (
        f"agent {d['name']}\n  MCS_AGENT_ID={d['name']}\n  MCS_AGENT_SECRET={d['secret']}\n"
        f"  MCS_WEBHOOK_SECRET={d['webhook_secret']}\n{pinned}"
        "These secrets are shown once; store them now (--out FILE writes them to an env file)."
    )


def env_lines(d: dict[str, Any], url: str) -> str:
    """The agent's settings as KEY=VALUE lines, for `mcs agent run --env-file` or `set -a; . ./FILE`."""
    return (
        f"# agent {d['name']}: secrets, keep this file private (mode 0600) and out of git\n"
        f"MCS_URL={url}\nMCS_AGENT_ID={d['name']}\nMCS_AGENT_SECRET={d['secret']}\n"
        f"MCS_WEBHOOK_SECRET={d['webhook_secret']}\n"
    )


def _check_out(out: Path | None, force: bool) -> None:
    """Refuse an existing --out file before any secret is issued (they would be lost otherwise)."""
    if out is not None and out.exists() and not force:
        raise click.ClickException(f"{out} exists; --force overwrites it (its secrets stop being useful)")


def _write_out(out: Path, text: str) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _show_secrets(d: dict[str, Any], url: str, *, as_json: bool, as_env: bool, out: Path | None) -> None:
    if out is not None:
        try:
            _write_out(out, env_lines(d, url))
        except OSError as exc:
            click.echo(_secrets_human(d), err=True)  # issued already: do not lose them
            raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
        click.echo(
            f"agent {d['name']}: secrets written to {out} (mode 0600); "
            f"run it with `mcs agent run MODULE:FUNCTION --env-file {out} -c CAPABILITY`",
            err=True,
        )
        if as_json:
            emit(d, True)
    elif as_env:
        click.echo(env_lines(d, url), nl=False)
    else:
        emit(d, as_json, _secrets_human)


def _secrets_options(fn: Any) -> Any:
    fn = click.option("--force", is_flag=True, help="With --out: overwrite an existing file.")(fn)
    fn = click.option(
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write MCS_URL, MCS_AGENT_ID, MCS_AGENT_SECRET and MCS_WEBHOOK_SECRET to this env file (mode 0600).",
    )(fn)
    return click.option("--env", "as_env", is_flag=True, help="Print them as KEY=VALUE lines for an env file.")(fn)


_NOTIFY_HOST_HELP = "Pin the host its notify URL must name (a DNS name or an IP address)."
_CLAIM_ON_PUSH_HELP = (
    "The dispatcher claims each task for the agent as it assigns it; the webhook carries the claim token, so the"
    " agent completes without a claim request (the SDK's agents register so themselves)."
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
@click.option("--notify-host", help=_NOTIFY_HOST_HELP)
@click.option("--claim-on-push", is_flag=True, help=_CLAIM_ON_PUSH_HELP)
@_secrets_options
@url_option
@json_option
def admin_agent_create(
    name: str,
    capabilities: tuple[str, ...],
    notify_host: str | None,
    claim_on_push: bool,
    as_env: bool,
    out: Path | None,
    force: bool,
    url: str,
    as_json: bool,
) -> None:
    """Create agent NAME; prints its secret and webhook secret once (--out FILE: into an env file)."""
    _check_out(out, force)
    with client(url) as c:
        created = c.create_agent(name, list(capabilities), notify_host=notify_host, claim_on_push=claim_on_push or None)
    _show_secrets(created, url, as_json=as_json, as_env=as_env, out=out)


@admin_agent.command("update")
@click.argument("name")
@click.option("--notify-host", help=_NOTIFY_HOST_HELP)
@click.option("--no-notify-host", is_flag=True, help="Unpin: its notify URL may name any host the policy allows.")
@click.option("--claim-on-push/--no-claim-on-push", default=None, help=_CLAIM_ON_PUSH_HELP)
@url_option
@json_option
def admin_agent_update(
    name: str, notify_host: str | None, no_notify_host: bool, claim_on_push: bool | None, url: str, as_json: bool
) -> None:
    """Change agent NAME: pin its notify host (a notify URL on another host is dropped at once) or unpin it;
    turn claim-on-push on or off."""
    if notify_host is not None and no_notify_host:
        raise click.UsageError("give --notify-host HOST or --no-notify-host, not both")
    if notify_host is None and not no_notify_host and claim_on_push is None:
        raise click.UsageError("give --notify-host HOST or --no-notify-host, or --claim-on-push / --no-claim-on-push")
    pin: str | None | Unset = UNSET if notify_host is None and not no_notify_host else notify_host
    with client(url) as c:
        agent = c.update_agent(name, notify_host=pin, claim_on_push=claim_on_push)
    emit(
        agent,
        as_json,
        lambda a: (
            f"agent {a['name']}: notify host {a['notify_host'] or 'not pinned'},"
            f" claim on push {'on' if a.get('claim_on_push') else 'off'}"
        ),
    )


@admin_agent.command("rotate")
@click.argument("name")
@_secrets_options
@url_option
@json_option
def admin_agent_rotate(name: str, as_env: bool, out: Path | None, force: bool, url: str, as_json: bool) -> None:
    """Issue new secrets for NAME (the old ones stop working at once); --out FILE writes them."""
    _check_out(out, force)
    with client(url) as c:
        rotated = c.rotate_agent(name)
    _show_secrets(rotated, url, as_json=as_json, as_env=as_env, out=out)


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
