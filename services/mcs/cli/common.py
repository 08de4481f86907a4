"""Helpers every `mcs` command group shares: options, the client, output, and one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mcs.client import Client, McsApiError, McsUnavailable


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")(fn)


def url_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url",
        envvar="MCS_URL",
        default="http://127.0.0.1:8080",
        show_default=True,
        show_envvar=True,
        help="The MCS API.",
    )(fn)


def client(url: str) -> Client:
    return Client.from_env(url=url)


def emit(data: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    if as_json or human is None:
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(human(data))


class McsGroup(click.Group):
    """Turns client errors into one line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except McsApiError as exc:
            click.echo(f"error: {exc.message} ({exc.code}, HTTP {exc.status})", err=True)
            ctx.exit(1)
        except McsUnavailable as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except TimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            from mcs.errors import McsError

            if isinstance(exc, McsError):
                click.echo(f"error: {exc}", err=True)
                ctx.exit(1)
            raise


def load_payload(payload: str | None, payload_file: str | None) -> Any:
    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    try:
        if payload_file is not None:
            text = sys.stdin.read() if payload_file == "-" else Path(payload_file).read_text()
            return json.loads(text)
        return json.loads(payload) if payload is not None else None
    except OSError as exc:
        raise click.BadParameter(f"cannot read {payload_file}: {exc.strerror}", param_hint="the file") from exc
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="the JSON value") from exc
