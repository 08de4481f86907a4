"""The `mcs` command: the server processes, admin, tasks and agents. Data goes to stdout, messages to
stderr; `--json` prints the API's JSON; a failure exits non-zero with a one-line message.

Secrets are read from the environment (or the admin token file that `mcs up` writes), never from command
arguments, so they stay out of shell history and `ps`. One module per command group."""

from __future__ import annotations

from mcs.cli import server  # noqa: F401  (the server processes' commands: light, so always registered)
from mcs.cli.root import main

# The modules of the other command groups, imported (and so registered) only when a command outside
# `server` is asked for, or the command list: `mcs dispatcher` (what `mcs up` and compose run four times)
# must not load the client, httpx and every command group (measured: about 15 MiB and 0.2 s a process).
COMMAND_MODULES = (
    "admin",
    "agents",
    "backup",
    "mcp",
    "memory",
    "review",
    "schedules",
    "server",
    "status",
    "tasks",
    "watch",
    "workflows",
)

__all__ = ["COMMAND_MODULES", "main"]
