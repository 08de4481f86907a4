"""A minimal MCS agent on the SDK: registers, verifies signed webhooks, runs `work` on the task each one
carries (claimed for it by MCS: claim_on_push), completes.

    export MCS_URL=http://127.0.0.1:8080 MCS_AGENT_ID=echo MCS_AGENT_SECRET=... MCS_WEBHOOK_SECRET=whsec_...
    python examples/echo_agent.py --capability echo --port 8765

It echoes each task's payload back as the result. Replace `work()` with your model call. The same without
this file: `mcs agent run examples/echo_agent.py:work --capability echo --listen 127.0.0.1:8765`.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from mcs.agent import Agent, Task


def work(task: Task) -> Any:
    """The agent's actual job. Here: echo the payload. Raise mcs.agent.PermanentError for 'never retry'."""
    return {"echo": task.payload, "by": os.environ.get("MCS_AGENT_ID")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capability", "-c", action="append", default=None, help="repeatable; default: echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Agent(work, capabilities=args.capability or ["echo"], listen=f"{args.host}:{args.port}").run()


if __name__ == "__main__":
    main()
