"""The `mcs` command: the server processes, admin, tasks and agents. Data goes to stdout, messages to
stderr; `--json` prints the API's JSON; a failure exits non-zero with a one-line message.

Secrets are read from the environment (or the admin token file that `mcs up` writes), never from command
arguments, so they stay out of shell history and `ps`. One module per command group."""

from __future__ import annotations

from mcs.cli import (  # noqa: F401  (they register their commands)
    admin,
    agents,
    backup,
    mcp,
    memory,
    review,
    schedules,
    server,
    status,
    tasks,
    watch,
    workflows,
)
from mcs.cli.root import main

__all__ = ["main"]
