"""A small stdio MCP server for the tests of `mcs agent mcp`, built on the `mcp` SDK like any real one.

Tools: word_count (structured result), shout (text only), refuse (always a tool error), env_has (whether an
environment variable reached this process: the agent must not hand it its MCS credentials), crash (the
process dies).

    python tests/mcp_word_count.py
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

server: MCPServer = MCPServer("word-count")


class Count(BaseModel):
    words: int
    characters: int


@server.tool()
def word_count(text: str) -> Count:
    """Count the words and characters of a text."""
    return Count(words=len(text.split()), characters=len(text))


@server.tool(structured_output=False)
def shout(text: str) -> str:
    """The text in capitals (text content only, no structured result)."""
    return text.upper()


@server.tool()
def refuse(reason: str = "no") -> str:
    """Always fails, with the reason given."""
    raise ToolError(f"refused: {reason}")


@server.tool()
def env_has(name: str) -> bool:
    """Whether an environment variable is set in this server's process."""
    return name in os.environ


@server.tool()
def crash() -> str:
    """The server process dies (a crashed MCP server)."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
