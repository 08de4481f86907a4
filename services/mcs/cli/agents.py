"""`mcs agent`: see the mesh's agents, or run one (`run`, `llm`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, url_option
from mcs.cli.root import main


@main.group()
def agent() -> None:
    """See the agents of the mesh, or run one (`mcs agent run`, `mcs agent llm`, `mcs agent a2a`)."""


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
    "Credentials come from the environment or --env-file, never arguments: MCS_AGENT_ID (or --name), "
    "MCS_AGENT_SECRET, and MCS_WEBHOOK_SECRET (to verify webhooks; not needed with --pull). "
    "`mcs admin agent create NAME --out NAME.env` writes such a file."
)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines, `#` comments and a leading `export ` allowed; values may be quoted).
    Errors name the line, never its content: the file holds secrets."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise click.BadParameter(f"cannot read {path}: {why}", param_hint="--env-file") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{path} line {number} is not KEY=VALUE", param_hint="--env-file")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _load_env_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Eager: the file's values are in the environment before --name, --url and the rest read it; they win
    over variables already set (the file is named on this command line)."""
    if value is not None:
        os.environ.update(read_env_file(value))
    return value


def _agent_options(fn: Callable[..., Any], *, capability_required: bool = True) -> Callable[..., Any]:
    """The options every runnable agent shares: who it is, how work reaches it, how much at once."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--env-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            is_eager=True,
            expose_value=False,
            callback=_load_env_file,
            help="Read MCS_AGENT_ID, MCS_AGENT_SECRET, MCS_WEBHOOK_SECRET, MCS_URL ... from this KEY=VALUE file.",
        ),
        click.option(
            "--capability",
            "-c",
            "capabilities",
            multiple=True,
            required=capability_required,
            help="Repeatable: what it can do.",
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
            "--claim-on-push/--no-claim-on-push",
            default=True,
            show_default=True,
            help="With webhooks: MCS claims each task for the agent as it assigns it and the webhook carries "
            "the claim (one request a task). --no-claim-on-push: the agent claims each task itself.",
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
    agent = make_agent(handler, opts)
    with listen_errors(opts):
        agent.run()


@contextlib.contextmanager
def listen_errors(opts: dict[str, Any]) -> Iterator[None]:
    """The webhook receiver's address in use (or another OSError) as one line."""
    import errno

    try:
        yield
    except OSError as exc:
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else str(exc)
        raise click.ClickException(f"cannot listen on {opts['listen']}: {why}") from None


def make_agent(handler: Any, opts: dict[str, Any], capabilities: list[str] | None = None) -> Any:
    """The Agent the shared options describe (with logging set up); missing credentials are one line."""
    from mcs.agent import Agent
    from mcs.process import setup_logging

    setup_logging()
    check_agent_credentials(opts)
    return Agent(
        handler,
        capabilities=capabilities if capabilities is not None else list(opts["capabilities"]),
        url=opts["url"],
        name=opts["name"],
        listen=None if opts["pull"] else opts["listen"],
        notify_url=opts["notify_url"],
        concurrency=opts["concurrency"],
        shutdown_grace=opts["shutdown_grace"],
        claim_on_push=opts["claim_on_push"],
    )


def check_agent_credentials(opts: dict[str, Any]) -> None:
    """Missing agent credentials (or webhook secret, when not pulling) as one line."""
    # Say what is missing in the command line's terms (the SDK's own messages name its Python arguments).
    if not (opts["name"] and os.environ.get("MCS_AGENT_SECRET")):
        raise click.ClickException(
            "agent credentials missing: set MCS_AGENT_ID and MCS_AGENT_SECRET, or --env-file FILE "
            "(written by `mcs admin agent create NAME --out FILE`); --name sets the name"
        )
    if not opts["pull"] and not os.environ.get("MCS_WEBHOOK_SECRET"):
        raise click.ClickException(
            "MCS_WEBHOOK_SECRET is not set: it verifies the webhooks this agent receives; set it "
            "(--env-file FILE), or use --pull to long-poll for work instead"
        )


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
    help="Seconds the model may stay silent (before its answer starts, or between two streamed chunks); "
    "longer fails the task (retryably).",
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Stream the answer, reporting progress on the task while it comes; --no-stream for servers that "
    "cannot stream.",
)
@click.option("--temperature", type=float, help="Sampling temperature, unless the task says otherwise.")
@click.option("--max-tokens", type=click.IntRange(1), help="Answer length limit, unless the task says otherwise.")
@click.option(
    "--max-input-chars",
    type=click.IntRange(0),
    default=None,
    help="Characters of a task's inputs (its dependencies' results) put into the prompt (default 100000); "
    "more is cut, with a note.",
)
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
    max_input_chars: int | None,
    allow_fetch: tuple[str, ...],
    stream: bool,
    **opts: Any,
) -> None:
    """Answer tasks with a model behind any OpenAI-compatible chat API (Ollama, vLLM, llama.cpp, OpenAI).

    A task's payload is {"prompt": ..., "system"?: ..., "url"?: material to fetch and include}; the result
    is {"answer": ..., "model": ..., "usage": ...}. A task's inputs (its dependencies' results: every child's
    of a fanout) follow the prompt, one delimited block each. The answer is streamed, and the task reports
    progress ("streaming: 1234 chars") while it comes. The model server's timeouts, 429, 5xx and a stream that
    breaks off fail the task retryably; its other 4xx (wrong key, unknown model) fail it for good.
    """

    from mcs import egress
    from mcs.agent.llm import API_KEY_ENV, ChatAgent, check_model_server

    try:
        egress.parse_rules(allow_fetch)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-fetch") from None
    api_key = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
    budget: dict[str, Any] = {} if max_input_chars is None else {"max_input_chars": max_input_chars}
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
            stream=stream,
            **budget,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from None
    problem = check_model_server(base_url, model, api_key=api_key)
    if problem:
        click.echo(f"warning: {problem}", err=True)
    _run_agent(handler, opts)


def _a2a_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _agent_options(fn, capability_required=False)  # default: one capability per skill on the card


@agent.command("a2a", epilog=_AGENT_ENV_HELP + " A bearer token for the remote agent, if it needs one: MCS_A2A_TOKEN.")
@click.option(
    "--a2a-url",
    "remote_url",
    envvar="MCS_A2A_URL",
    show_envvar=True,
    required=True,
    help="The remote A2A agent's base URL (its card is at URL/.well-known/agent-card.json).",
)
@click.option(
    "--prefix",
    default="",
    show_default=True,
    help="Put this before each skill id to make its capability, e.g. `a2a:` serves skill echo as a2a:echo.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds one remote task may take; longer fails the MCS task (retryably) and cancels the remote one.",
)
@_a2a_options
def agent_a2a(remote_url: str, prefix: str, timeout: float, **opts: Any) -> None:
    """Put a remote A2A agent on the mesh: its skills become capabilities and each task is sent to it as an
    A2A message (the payload as text when a string, else as data; the skill in metadata.skill).

    The result is {"answer": <its text>, "data"?: [...], "a2a": {task_id, context_id, state}}. A remote
    failure, rejection or request for input fails the task for good with the remote agent's words; an
    unreachable agent, a timeout or HTTP 429/5xx fails it retryably. --url is MCS; --a2a-url the remote agent.
    --capability (repeatable) serves only those, instead of one capability per skill on the remote card.
    """
    import asyncio

    from a2a.utils.errors import A2AError

    from mcs.agent.a2a import TOKEN_ENV, A2AForwarder, capability_for, fetch_card

    if not remote_url.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--a2a-url")
    token = os.environ.get(TOKEN_ENV) or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        card = asyncio.run(fetch_card(remote_url, headers=headers))
    except (A2AError, OSError) as exc:
        raise click.ClickException(f"cannot read the A2A agent card at {remote_url}: {exc}") from None
    handler = A2AForwarder(card=card, token=token, prefix=prefix, timeout=timeout)
    wanted = [capability_for(c) for c in opts["capabilities"]]
    capabilities = wanted or handler.capabilities
    if not capabilities:
        raise click.ClickException(
            f"the A2A agent at {remote_url} lists no skills: name what it serves with --capability"
        )
    opts["capabilities"] = capabilities
    click.echo(f"forwarding {', '.join(capabilities)} to {card.name or remote_url} ({remote_url})", err=True)
    _run_agent(handler, opts)
