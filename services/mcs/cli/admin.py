"""`mcs admin`: agent accounts (create, rotate, delete)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, url_option
from mcs.cli.root import main


@main.group()
def admin() -> None:
    """Admin commands (the admin token: MCS_ADMIN_TOKEN, or the config file and token file `mcs up` writes)."""


@admin.group("agent")
def admin_agent() -> None:
    """Create, rotate and delete agents."""


def _secrets_human(d: dict[str, Any]) -> str:
    return (
        f"agent {d['name']}\n  MCS_AGENT_ID={d['name']}\n  MCS_AGENT_SECRET={d['secret']}\n"
        f"  MCS_WEBHOOK_SECRET={d['webhook_secret']}\n"
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


@admin_agent.command("create")
@click.argument("name")
@click.option("--capability", "-c", "capabilities", multiple=True, help="A capability (repeatable).")
@_secrets_options
@url_option
@json_option
def admin_agent_create(
    name: str, capabilities: tuple[str, ...], as_env: bool, out: Path | None, force: bool, url: str, as_json: bool
) -> None:
    """Create agent NAME; prints its secret and webhook secret once (--out FILE: into an env file)."""
    _check_out(out, force)
    with client(url) as c:
        created = c.create_agent(name, list(capabilities))
    _show_secrets(created, url, as_json=as_json, as_env=as_env, out=out)


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
    """Delete agent NAME; work assigned to it goes back to the queue."""
    with client(url) as c:
        c.delete_agent(name)
    emit({"deleted": name}, as_json, lambda d: f"deleted {d['deleted']}")
