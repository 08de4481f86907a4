"""The dispatcher's pass where another writer acts while it runs (docs/design/engines.md 4.1, sites 2 and 3).

On SQLite nothing runs beside a write transaction, so these races cannot happen there; on PostgreSQL they
do. The pass is run here on the test's database (either engine) with its Tx answering as a racing
PostgreSQL transaction would make it answer: the task another transaction is deciding on is skipped by
`queued_take` (SKIP LOCKED), and an agent's claim commits while the pass waits for the agent's lock.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mcs.state import dispatch as dispatch_state

pytestmark = pytest.mark.asyncio


def run_pass(mesh: Any, race: type) -> dispatch_state.DispatchResult:
    """One dispatch pass whose Tx (SQLite's or PostgreSQL's, the same transaction) has `race`'s methods."""
    view = mesh.dispatcher.view

    def job(tx: Any) -> dispatch_state.DispatchResult:
        tx.__class__ = type(f"{race.__name__}Tx", (race, type(tx)), {})
        return dispatch_state.dispatch(tx, now=time.time(), view=view, unparked_at=-1, limit=200)

    return mesh.store.write(job)


async def test_a_task_an_agent_is_claiming_is_skipped_not_a_conflict(mesh):
    await mesh.agent("a", ["x"])  # concurrency 1
    first = await mesh.submit(type="x")
    second = await mesh.submit(type="x")

    class ClaimInFlight:
        def queued_take(self, task_id: str) -> Any:
            return None if task_id == first["id"] else super().queued_take(task_id)  # locked: SKIP LOCKED

    result = run_pass(mesh, ClaimInFlight)  # on PostgreSQL before: a 409 task_changed ended the whole pass
    assert [task_id for task_id, _, _ in result.assigned] == [second["id"]]
    assert (await mesh.task(first["id"]))["state"] == "queued"  # left to the claim, not parked
    assert (await mesh.task(second["id"]))["assigned_to"] == "a"


async def test_a_claim_committed_during_the_pass_counts_against_the_agents_concurrency(mesh):
    await mesh.agent("a", ["x"])  # concurrency 1
    routed = await mesh.submit(type="x")
    claimed = await mesh.submit(type="x")

    class ClaimCommitsMeanwhile:
        def agent_lock(self, name: str, *, share: bool) -> bool:
            # The agent's own claim of the other task committed after the pass read the loads and before
            # the pass got the agent's lock, as READ COMMITTED lets it on PostgreSQL.
            self.execute(
                "UPDATE tasks SET state = 'claimed', assigned_to = ?, claim_token = 'tok' WHERE id = ?",
                (name, claimed["id"]),
            )
            return True

    result = run_pass(mesh, ClaimCommitsMeanwhile)
    assert result.assigned == []  # before: assigned too, two tasks held by an agent of concurrency 1
    assert (await mesh.task(routed["id"]))["state"] == "queued"
    held = mesh.store.read(lambda tx: tx.execute("SELECT count(*) FROM tasks WHERE assigned_to = 'a'").fetchone()[0])
    assert held == 1
