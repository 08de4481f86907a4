"""`mcs mcp` (MCS's tools for an MCP client, over stdio) and `mcs agent mcp` (a stdio MCP server's tools as a
mesh agent): the MCP face, in one module."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click

from mcs.cli.agents import _AGENT_ENV_HELP, _agent_options, agent, check_agent_credentials, listen_errors, make_agent
from mcs.cli.common import auth_hint, client, url_option
from mcs.cli.root import main
from mcs.client import AsyncClient


@main.command("mcp")
@url_option
def mcp(url: str) -> None:
    """Serve MCS's tools to an MCP client over stdin/stdout (Claude Code: `claude mcp add mcs -- mcs mcp`).

    Tools: submit_task, submit_workflow, get_task, wait_task, list_tasks, cancel_task, list_agents,
    memory_get, memory_put, memory_list, memory_delete, and for agents claim_next, complete_task, fail_task.
    They act with the credentials any `mcs` command would use (MCS_URL, MCS_ADMIN_TOKEN or MCS_AGENT_ID +
    MCS_AGENT_SECRET, the config file's profile): the admin token orchestrates, an agent's credentials work
    as that agent. Logs go to stderr; stdout carries only the protocol.
    """
    from mcs.faces.mcp_server import run_stdio
    from mcs.process import setup_logging

    setup_logging(os.environ.get("MCS_LOG_LEVEL", "WARNING").upper())
    c = client(url, AsyncClient)
    if not ({"authorization", "x-agent-id"} & set(c.http.headers)):  # every tool would answer unauthorized
        click.echo(f"mcs mcp: no credentials for {c.url}: {auth_hint()}", err=True)
    asyncio.run(run_stdio(c))


@agent.command(
    "mcp",
    epilog=_AGENT_ENV_HELP + " The MCP server gets only HOME, PATH, SHELL, TERM, USER, LOGNAME and what --env "
    "names: never the agent's MCS credentials.",
)
@click.argument("command", nargs=-1, required=True)
@click.option(
    "--env",
    "pass_env",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Repeatable: an environment variable for the MCP server (NAME alone: its value here).",
)
@click.option(
    "--call-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds one tool call may take; longer fails the task (retryably).",
)
@lambda fn: _agent_options(fn, capability_required=False)
def agent_mcp(command: tuple[str, ...], pass_env: tuple[str, ...], call_timeout: float, **opts: Any) -> None:
    """Run COMMAND as a stdio MCP server and serve its tools as a mesh agent: `mcs agent mcp -- npx -y
    @modelcontextprotocol/server-everything`.

    Capabilities: `mcp:<tool>` for every tool the server lists (--capability replaces them). A task's payload
    is {"tool": NAME, "arguments": {...}} (a task of type mcp:NAME may leave out "tool"); the result is the
    tool's structured content, else its text. An unknown tool, bad arguments or a tool error fail the task for
    good with the tool's message; a timeout fails it retryably.
    """
    from mcs.faces.mcp_agent import McpTools

    check_agent_credentials(opts)
    env: dict[str, str] = {}
    for item in pass_env:
        name, sep, value = item.partition("=")
        if not name.isidentifier():
            raise click.BadParameter(f"{item!r} is not NAME or NAME=VALUE", param_hint="--env")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]

    started = False

    async def serve() -> None:
        nonlocal started
        async with McpTools(command, env=env, call_timeout=call_timeout) as tools:
            started = True
            capabilities = list(opts["capabilities"]) or tools.capabilities
            if not capabilities:
                raise click.ClickException(f"the MCP server {tools.server_name} lists no tools")
            agent = make_agent(tools, opts, capabilities)
            serving = asyncio.create_task(agent.serve_until_signal())
            gone = asyncio.create_task(tools.gone.wait())
            await asyncio.wait({serving, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            await asyncio.gather(gone, return_exceptions=True)
            if tools.gone.is_set() and not serving.done():
                await agent.stop()  # offline at once; the task it was on is retried elsewhere
                await serving
                raise click.ClickException(f"the MCP server {tools.server_name} stopped; the agent went offline")
            await serving

    try:
        asyncio.run(serve())
    except Exception as exc:
        leaf = _leaf(exc)  # the SDK's task groups wrap what went wrong in exception groups
        if not started and not isinstance(leaf, click.ClickException):
            raise click.ClickException(f"cannot start the MCP server {command[0]!r}: {leaf}") from None
        with listen_errors(opts):
            raise leaf from None


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
