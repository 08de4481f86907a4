"""The agent SDK: a few lines turn a Python function into a mesh agent.

    from mcs.agent import Agent, PermanentError

    def handle(task):                      # or `async def handle(task)`
        if not task.payload:
            raise PermanentError("empty payload")   # failed for good; any other exception is retried
        return {"echo": task.payload}       # any JSON value: the task's result

    Agent(handle, capabilities=["echo"]).run()  # MCS_URL, MCS_AGENT_ID, MCS_AGENT_SECRET, MCS_WEBHOOK_SECRET

From the shell: `mcs agent run mymodule:handle --capability echo`.
"""

from __future__ import annotations

from mcs.agent.runner import Agent, Handler, PermanentError, RetryableError, Task

__all__ = ["Agent", "Handler", "PermanentError", "RetryableError", "Task"]
