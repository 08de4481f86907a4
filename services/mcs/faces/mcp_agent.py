"""Any stdio MCP server as a mesh agent (`mcs agent mcp -- COMMAND...`): the server runs as a child process
through the `mcp` SDK's stdio client; its tools become capabilities (`mcp:<tool>`), and each task calls one.

Task payload: `{"tool": "word_count", "arguments": {"text": "..."}}`; without `tool`, a task of type
`mcp:<tool>` names it. The result is the tool's structured content when it has some, else its text.
An unknown tool, bad arguments or a tool error (`isError`) fail the task for good, with the tool's words;
a call that times out fails it retryably, and so does a server that died (`gone` is set then: `mcs agent
mcp` stops the agent and exits 1, so no more tasks go to a process that is not there).

The child process gets only the SDK's safe environment (HOME, PATH, ...) plus what `env` names: never the
agent's MCS credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Self

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, PaginatedRequestParams, TextContent, Tool

from mcs.agent.runner import PermanentError, RetryableError, Task

log = logging.getLogger("mcs.agent.mcp")

CAPABILITY_PREFIX = "mcp:"
DEFAULT_CALL_TIMEOUT = 300.0  # seconds one tool call may take before the task fails (retryably)
MAX_TOOL_PAGES = 100  # tools/list pages followed at most (a server that paginates forever must not hang us)


def _text(result: CallToolResult) -> str:
    """The text parts of a tool's result, joined; other kinds of content are named, not dropped silently."""
    parts = []
    for item in result.content:
        if isinstance(item, TextContent):
            parts.append(item.text)
        else:
            parts.append(f"[{item.type} content]")
    return "\n".join(parts)


class McpTools:
    """A handler for `mcs.agent.Agent` that calls the tools of a stdio MCP server. Use `async with`: it
    starts the server and lists its tools (`tools`, `capabilities`) on entry, and stops it on exit."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if not command:
            raise ValueError("no command: give the MCP server's command after --")
        self.params = StdioServerParameters(command=command[0], args=list(command[1:]), env=dict(env or {}), cwd=cwd)
        self.call_timeout = call_timeout
        self.tools: dict[str, Tool] = {}
        self.server_name = command[0]
        self._stack = contextlib.AsyncExitStack()
        self.gone = asyncio.Event()  # set once a call finds the server process gone: the agent should stop
        self._session: ClientSession | None = None

    @property
    def capabilities(self) -> list[str]:
        """`mcp:<tool>` for every tool the server lists."""
        return [CAPABILITY_PREFIX + name for name in self.tools]

    async def __aenter__(self) -> Self:
        try:
            read, write = await self._stack.enter_async_context(stdio_client(self.params, errlog=sys.stderr))
            session = await self._stack.enter_async_context(ClientSession(read, write))
            init = await session.initialize()
            if init.server_info is not None:
                self.server_name = init.server_info.name
            cursor: str | None = None
            for _ in range(MAX_TOOL_PAGES):
                page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
                self.tools |= {tool.name: tool for tool in page.tools}
                cursor = page.next_cursor
                if not cursor:
                    break
        except BaseException:
            await self._stack.aclose()
            raise
        self._session = session
        log.info(
            "MCP server %s: %d tools (%s)",
            self.server_name,
            len(self.tools),
            ", ".join(self.tools),
            extra={"action": "mcp_tools_listed"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._session = None
        await self._stack.aclose()

    def call_for(self, task: Task) -> tuple[str, dict[str, Any]]:
        """The tool and arguments a task asks for (PermanentError when it names none or an unknown one)."""
        payload = task.payload if isinstance(task.payload, dict) else {}
        if task.payload is not None and not isinstance(task.payload, dict):
            raise PermanentError('the payload must be an object: {"tool": NAME, "arguments": {...}}')
        tool = payload.get("tool")
        if tool is None and task.type.startswith(CAPABILITY_PREFIX):
            tool = task.type[len(CAPABILITY_PREFIX) :]
        if not isinstance(tool, str) or not tool:
            raise PermanentError('the payload names no tool: {"tool": NAME, "arguments": {...}}')
        if tool not in self.tools:
            known = ", ".join(sorted(self.tools)) or "none"
            raise PermanentError(f"unknown tool {tool!r}: the MCP server {self.server_name} has {known}")
        arguments = payload.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise PermanentError("the payload's arguments must be an object")
        return tool, arguments

    async def __call__(self, task: Task) -> Any:
        if self._session is None:
            raise RetryableError("the MCP server is not running")
        tool, arguments = self.call_for(task)
        try:
            result = await self._session.call_tool(tool, arguments, read_timeout_seconds=self.call_timeout)
        except MCPError as exc:  # a protocol error: bad arguments, or the server refused the call
            if exc.code == REQUEST_TIMEOUT:
                raise RetryableError(f"tool {tool} did not answer within {self.call_timeout:g} s") from None
            if exc.code == CONNECTION_CLOSED:
                self.gone.set()
                raise RetryableError(f"the MCP server {self.server_name} is gone: {exc.message}") from None
            raise PermanentError(f"tool {tool}: {exc.message} (MCP error {exc.code})") from None
        except (OSError, EOFError) as exc:
            self.gone.set()
            raise RetryableError(f"the MCP server {self.server_name} is gone: {exc}") from None
        if result.is_error:
            raise PermanentError(f"tool {tool} failed: {_text(result) or 'no message'}")
        if result.structured_content is not None:
            return result.structured_content
        return _text(result)
