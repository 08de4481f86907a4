"""`mcs agent`: see the mesh's agents, or run one (`run`, `llm`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, url_option
from mcs.cli.root import main


@main.group()
def agent() -> None:
    """See the agents of the mesh, or run one (`mcs agent run`, `mcs agent llm`)."""


def _agents_human(agents: list[dict[str, Any]]) -> str:
    if not agents:
        return "no agents"
    rows = [f"{'NAME':<20} {'STATUS':<8} {'LAST SEEN':<25} CAPABILITIES"]
    for a in agents:
        rows.append(f"{a['name']:<20} {a['status']:<8} {a['last_seen'] or '-':<25} {','.join(a['capabilities'])}")
    return "\n".join(rows)


@agent.command("list")
@url_option
@json_option
def agent_list(url: str, as_json: bool) -> None:
    """List agents with their status and capabilities (every page)."""
    with client(url) as c:
        emit(c.list_agents(), as_json, _agents_human)


@agent.command("show")
@click.argument("name")
@url_option
@json_option
def agent_show(name: str, url: str, as_json: bool) -> None:
    """Show one agent."""
    with client(url) as c:
        emit(c.get_agent(name), as_json, _agent_human)


def _agent_human(a: dict[str, Any]) -> str:
    granted = "any (unrestricted)" if a.get("granted") is None else ",".join(a["granted"]) or "-"
    return _agents_human([a]) + f"\ngranted: {granted}"


_AGENT_ENV_HELP = (
    "Credentials come from the environment only (never arguments): MCS_AGENT_ID (or --name), "
    "MCS_AGENT_SECRET, and MCS_WEBHOOK_SECRET (to verify webhooks; not needed with --pull)."
)


def _agent_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every runnable agent shares: who it is, how work reaches it, how much at once."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--capability", "-c", "capabilities", multiple=True, required=True, help="Repeatable: what it can do."
        ),
        click.option("--name", envvar="MCS_AGENT_ID", show_envvar=True, help="The agent's name (MCS_AGENT_ID)."),
        click.option(
            "--listen",
            envvar="MCS_AGENT_LISTEN",
            show_envvar=True,
            default="127.0.0.1:0",
            show_default=True,
            help="HOST:PORT of the webhook receiver (port 0: any free port).",
        ),
        click.option("--pull", is_flag=True, help="No webhooks: long-poll for work (no inbound connections)."),
        click.option(
            "--notify-url",
            envvar="MCS_AGENT_NOTIFY_URL",
            show_envvar=True,
            help="The URL MCS should call, when it is not the listen address (proxy, tunnel, container).",
        ),
        click.option(
            "--concurrency", type=click.IntRange(1, 1000), default=1, show_default=True, help="Tasks at once."
        ),
        click.option(
            "--shutdown-grace",
            type=click.FloatRange(0),
            default=30.0,
            show_default=True,
            help="Seconds running tasks get to finish on SIGINT/SIGTERM before they are released.",
        ),
        url_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run_agent(handler: Any, opts: dict[str, Any]) -> None:
    """Build the Agent from the shared options and serve until SIGINT/SIGTERM; problems are one line."""
    import errno

    from mcs.agent import Agent
    from mcs.process import setup_logging

    setup_logging()
    agent = Agent(
        handler,
        capabilities=list(opts["capabilities"]),
        url=opts["url"],
        name=opts["name"],
        listen=None if opts["pull"] else opts["listen"],
        notify_url=opts["notify_url"],
        concurrency=opts["concurrency"],
        shutdown_grace=opts["shutdown_grace"],
    )
    try:
        agent.run()
    except OSError as exc:
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else str(exc)
        raise click.ClickException(f"cannot listen on {opts['listen']}: {why}") from None


@agent.command("run", epilog=_AGENT_ENV_HELP)
@click.argument("handler")
@_agent_options
def agent_run(handler: str, **opts: Any) -> None:
    """Run HANDLER (module:function or file.py:function) as an agent until SIGINT/SIGTERM.

    The function gets each task (task.id, task.type, task.payload, task.attempts, ...) and returns the
    result (any JSON value). Raising mcs.agent.PermanentError fails the task for good; any other exception
    fails it and MCS retries it. Async functions work too.
    """
    from mcs.agent.loader import load_handler

    _run_agent(load_handler(handler), opts)


@agent.command(
    "llm", epilog=_AGENT_ENV_HELP + " The model server's API key, if it needs one: MCS_LLM_API_KEY or OPENAI_API_KEY."
)
@click.option(
    "--base-url",
    envvar="MCS_LLM_BASE_URL",
    show_envvar=True,
    required=True,
    help="The OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1 for Ollama.",
)
@click.option("--model", "-m", envvar="MCS_LLM_MODEL", show_envvar=True, required=True, help="The model to ask.")
@click.option("--system", help="A system prompt for tasks that bring none.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds to wait for one answer; longer fails the task (retryably).",
)
@click.option("--temperature", type=float, help="Sampling temperature, unless the task says otherwise.")
@click.option("--max-tokens", type=click.IntRange(1), help="Answer length limit, unless the task says otherwise.")
@click.option(
    "--allow-fetch",
    "allow_fetch",
    multiple=True,
    metavar="CIDR|HOST[:PORT]",
    help="Repeatable: where a task's url may also be fetched from (default: public addresses only), e.g. "
    "192.168.1.0/24, wiki.lan, 127.0.0.1:8000, private. Link-local and metadata addresses never.",
)
@_agent_options
def agent_llm(
    base_url: str,
    model: str,
    system: str | None,
    timeout: float,
    temperature: float | None,
    max_tokens: int | None,
    allow_fetch: tuple[str, ...],
    **opts: Any,
) -> None:
    """Answer tasks with a model behind any OpenAI-compatible chat API (Ollama, vLLM, llama.cpp, OpenAI).

    A task's payload is {"prompt": ..., "system"?: ..., "url"?: material to fetch and include}; the result
    is {"answer": ..., "model": ..., "usage": ...}. The model server's timeouts, 429 and 5xx fail the task
    retryably; its other 4xx (wrong key, unknown model) fail it for good.
    """

    from mcs import egress
    from mcs.agent.llm import API_KEY_ENV, ChatAgent, check_model_server

    try:
        egress.parse_rules(allow_fetch)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-fetch") from None
    api_key = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
    try:
        handler = ChatAgent(
            base_url=base_url,
            model=model,
            api_key=api_key,
            system=system,
            timeout=timeout,
            temperature=temperature,
            max_tokens=max_tokens,
            allow_fetch=allow_fetch,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from None
    problem = check_model_server(base_url, model, api_key=api_key)
    if problem:
        click.echo(f"warning: {problem}", err=True)
    _run_agent(handler, opts)
