"""Helpers every `mcs` command group shares: options, the client, output, and one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import click
from click.core import ParameterSource

from mcs import profiles
from mcs.errors import ConfigError
from mcs.profiles import DEFAULT_URL

if TYPE_CHECKING:  # the client (httpx, tenacity) is imported by the commands that talk to the api, not by
    # the server processes' commands: `mcs dispatcher` must not carry it
    from mcs.client import AsyncClient, Client

C = TypeVar("C", "Client", "AsyncClient")


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")(fn)


PROFILE_META = "mcs.profile"  # where --profile leaves its value for the --url callback and client()
PROFILE_EXPLICIT_META = "mcs.profile_on_command_line"


def _remember_profile(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    ctx.meta[PROFILE_META] = value
    ctx.meta[PROFILE_EXPLICIT_META] = ctx.get_parameter_source("profile") is ParameterSource.COMMANDLINE
    return value


def load_profile(ctx: click.Context | None = None) -> profiles.Profile | None:
    """The config file's profile for this command (--profile, MCS_PROFILE or default_profile), if any."""
    ctx = ctx or click.get_current_context()
    try:
        return profiles.load(ctx.meta.get(PROFILE_META))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _resolve_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    # `--profile NAME` on the command line is an option like --url: it beats MCS_URL from the environment
    # (an agent's env file sourced into the shell must not redirect an explicit --profile).
    given = ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE
    if value and (given or not ctx.meta.get(PROFILE_EXPLICIT_META)):
        return value
    profile = load_profile(ctx)
    return profile.url if profile is not None and profile.url else value or DEFAULT_URL


def url_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--url and --profile: which mesh a client command talks to (options > environment > the config
    file's profile > the default)."""
    fn = click.option(
        "--url",
        envvar="MCS_URL",
        show_envvar=True,
        callback=_resolve_url,
        help=f"The MCS API [default: the profile's url, else {DEFAULT_URL}].",
    )(fn)
    return click.option(
        "--profile",
        envvar=profiles.PROFILE_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_remember_profile,
        help="A profile of the config file (~/.config/mcs/config.toml) [default: its default_profile]; "
        "given here, its url and credentials beat the environment's.",
    )(fn)


@overload
def client(url: str) -> Client: ...
@overload
def client(url: str, cls: type[C]) -> C: ...
def client(url: str, cls: Any = None) -> Any:
    """The client for a command (`cls`: Client, the default, or AsyncClient): credentials from an explicit
    --profile, else the environment, else the config file's profile, else ./data/admin-token."""
    if cls is None:
        from mcs.client import Client

        cls = Client
    ctx = click.get_current_context()
    try:
        explicit: dict[str, Any] = {}
        if ctx.meta.get(PROFILE_EXPLICIT_META):
            profile = load_profile(ctx)
            if profile is not None and (profile.url is None or profile.url.rstrip("/") == url.rstrip("/")):
                explicit = {
                    "admin_token": profile.admin_token(),
                    "agent_id": profile.agent_id,
                    "agent_secret": profile.agent_secret,
                }
                if not (explicit["admin_token"] or (explicit["agent_id"] and explicit["agent_secret"])):
                    explicit = {}
        return cls.from_env(url=url, profile=ctx.meta.get(PROFILE_META), **explicit)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def emit(data: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    if as_json or human is None:
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(human(data))


def auth_hint() -> str:
    """How to sign in, for a 401: the three ways, with the config file's path."""
    return (
        "authenticate with one of: MCS_ADMIN_TOKEN (the admin token); the config file "
        f"{profiles.config_path()} (a profile with url and token_file or token; `mcs up` writes it); "
        "agent credentials MCS_AGENT_ID + MCS_AGENT_SECRET (e.g. from `mcs admin agent create NAME --out FILE`)"
    )


class McsGroup(click.Group):
    """Turns client errors into one line on stderr and exit code 1, never a traceback. Without a subcommand
    it prints its help to stdout and exits 0. Its subgroups are McsGroups too."""

    group_class = type

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # (resilient: shell completion asking what comes next)
            click.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            from mcs.errors import McsError

            client = sys.modules.get("mcs.client")  # not imported: no client error can have been raised
            if client is not None and isinstance(exc, client.McsApiError):
                click.echo(f"error: {exc.message} ({exc.code}, HTTP {exc.status})", err=True)
                if exc.status == 401:
                    click.echo(auth_hint(), err=True)
                ctx.exit(1)
            if isinstance(exc, McsError):  # McsUnavailable (the api cannot be reached) among them
                click.echo(f"error: {exc}", err=True)
                ctx.exit(1)
            raise


def load_payload(payload: str | None, payload_file: str | None) -> Any:
    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    if payload_file is not None:
        try:
            text = sys.stdin.read() if payload_file == "-" else Path(payload_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {payload_file}: {exc.strerror}", param_hint="the file") from exc
        except UnicodeDecodeError as exc:
            raise click.BadParameter(f"{payload_file} is not UTF-8 text", param_hint="the file") from exc
        source = "stdin" if payload_file == "-" else payload_file
    elif payload is not None:
        text, source = payload, None
    else:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{source}, line {exc.lineno} column {exc.colno}" if source else f"column {exc.colno}"
        raise click.BadParameter(f"not valid JSON ({where}): {exc.msg}", param_hint="the JSON value") from exc


def resolve_task_id(c: Client, given: str) -> str:
    """The full id of the task `given` names: itself when it is a full id, else the one task whose id starts
    with it (8 characters at least). UsageError when several match."""
    if len(given) >= 36 or len(given) < 8:
        return given
    found = c.list_tasks(id_prefix=given, limit=2)["tasks"]
    if len(found) > 1:
        raise click.UsageError(f"{given} is the start of several task ids ({found[0]['id']}, ...): give more of it")
    return str(found[0]["id"]) if found else given


def load_document(path: str) -> Any:
    """A JSON or YAML file (by its suffix; JSON otherwise), with the file and line named when it is bad."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise click.BadParameter(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
