"""How the SDK reports a finished task when MCS has trouble answering: a moment's 503 (a busy database, a
proxy's 502/504 during a restart) or a 429 is retried, never turned into a permanent failure."""

from __future__ import annotations

import pytest

from mcs.agent import Agent, Task
from mcs.client import api_error

pytestmark = pytest.mark.asyncio


class FlakyServer:
    """Answers `complete` with the given error statuses first, then accepts it; records every call."""

    def __init__(self, statuses: list[int], code: str = "busy") -> None:
        self.code = code
        self.statuses = list(statuses)
        self.completes: list[str] = []
        self.fails: list[tuple[str, bool]] = []

    async def complete(self, task_id: str, token: str, result: object) -> dict:
        self.completes.append(task_id)
        if self.statuses:
            status = self.statuses.pop(0)
            raise api_error(status, self.code, f"HTTP {status}")
        return {"id": task_id, "state": "completed"}

    async def fail(self, task_id: str, token: str, error: str, *, retryable: bool = True) -> dict:
        self.fails.append((error, retryable))
        return {"id": task_id, "state": "failed"}


def agent() -> Agent:
    return Agent(lambda task: None, capabilities=["x"], url="http://127.0.0.1:9", name="a", secret="s", listen=None)


TASK = Task(id="t1", type="x", payload={}, attempts=1, priority="normal")


@pytest.mark.parametrize("status", [503, 502, 504, 429])
async def test_a_transient_error_on_complete_is_retried(status):
    a, server = agent(), FlakyServer([status])
    a.client = server  # type: ignore[assignment]
    await a._report_result(TASK, "token", {"ok": True})
    assert server.completes == ["t1", "t1"] and server.fails == []
    assert a.completed == 1


async def test_a_real_refusal_fails_the_task_for_good():
    a, server = agent(), FlakyServer([413])
    a.client = server  # type: ignore[assignment]
    await a._report_result(TASK, "token", {"ok": True})
    assert server.completes == ["t1"]
    assert server.fails and server.fails[0][1] is False and "MCS refused the result" in server.fails[0][0]


async def test_a_task_that_changed_under_a_concurrent_change_is_reported_again():
    # 409 task_changed means "another transaction changed the task first; try again", not a refusal.
    a, server = agent(), FlakyServer([409], code="task_changed")
    a.client = server  # type: ignore[assignment]
    await a._report_result(TASK, "token", {"ok": True})
    assert server.completes == ["t1", "t1"] and server.fails == [] and a.completed == 1


async def test_another_conflict_is_not_retried():
    a, server = agent(), FlakyServer([409], code="stale_claim_token")
    a.client = server  # type: ignore[assignment]
    await a._report_result(TASK, "token", {"ok": True})
    assert server.completes == ["t1"] and a.completed == 0
