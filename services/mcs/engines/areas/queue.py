"""QueueTx: the queue area of one transaction's data access (see mcs.engines.base).

The dispatcher's pass (mcs.state.dispatch) and the watchdog's sweeps (mcs.state.sweeps) read and write
the queue through these. The reads a decision is taken on lock their rows on PostgreSQL (`SKIP LOCKED`:
a row another transaction is deciding on is left to it); on SQLite the write transaction already holds
the whole database.
"""

from __future__ import annotations

from typing import Protocol

from mcs.models import QueuedRow, QueueGroup, Task


class QueueTx(Protocol):
    # ------------------------------------------------------------ is there work (reads)

    def work_due(self, now: float) -> bool:
        """Whether a retry fell due or a blocked task's run_at came with its dependencies all ended."""
        ...

    def queued_any(self, *, unparked: bool = False, needs_no_agent: bool = False) -> bool:
        """Whether any task is queued (`unparked`: and not parked; `needs_no_agent`: a fanout or approval)."""
        ...

    def next_due(self) -> float | None:
        """When the next retry falls due or the next blocked task's run_at comes (dependencies ended)."""
        ...

    # ------------------------------------------------------------ a dispatch pass

    def requeue_due_retries(self, now: float) -> list[str]:
        """Retrying tasks whose time came back to queued (unparked, unassigned): their ids."""
        ...

    def queued_groups(self) -> list[QueueGroup]:
        """The (capabilities, route) groups that have queued tasks, from the kept counts (no backlog read)."""
        ...

    def unpark(self, group: QueueGroup) -> int:
        """Give a group's parked queued tasks back to the queue; how many."""
        ...

    def queue_page(
        self,
        *,
        after: tuple[int, int] | None,
        needs_no_agent: bool,
        skip_keys: list[tuple[str, int | None]],
        limit: int,
    ) -> list[QueuedRow]:
        """Unparked queued tasks in (priority, seq) order after `after`, leaving out the (key, limit)
        pairs in `skip_keys`; `needs_no_agent`: only fanout parents and approvals."""
        ...

    def next_for_agent(
        self, name: str, capabilities: tuple[str, ...], *, after: tuple[int, int] | None = None, limit: int
    ) -> list[QueuedRow]:
        """Queued tasks agent `name` with these capabilities may claim, in (priority, seq) order after
        `after`: routed to any agent or to it, every required capability among its own, not rejected by
        it, neither a fanout parent nor an approval. Concurrency keys are the caller's to check."""
        ...

    def queued_take(self, task_id: str) -> Task | None:
        """The task if it is still queued and no other transaction is deciding on it (SKIP LOCKED)."""
        ...

    def park(self, task_id: str) -> bool:
        """Mark a queued task parked (nobody could take it): passes skip it until the agents change."""
        ...

    def avoid_get(self, task_id: str) -> dict[str, bool]:
        """The agents a task should not go to again: name -> hard (it rejected the task)."""
        ...

    def task_insert_child(self, parent: Task, *, kid_id: str, route: str, now: float) -> Task:
        """A fanout child of `parent`, queued and routed to one agent, copying the parent's spec."""
        ...

    def loads(self) -> dict[str, int]:
        """Tasks each agent holds now (assigned or claimed)."""
        ...

    def agent_load(self, name: str) -> int:
        """Tasks one agent holds now (assigned or claimed)."""
        ...

    def agent_lock(self, name: str, *, share: bool) -> bool:
        """Hold an agent's load (its assigned and claimed tasks) still until commit, 4.1 site 3: exclusive
        (the dispatcher, before counting it) or shared (the agent's own claims, once they hold the task).
        Not the agents row (that is AgentTx.agent_for_update): heartbeats write the row and never wait for
        a pass. True: other transactions may have changed its load since this one read it, so count it
        again now; False: this transaction holds the whole database (SQLite: a no-op)."""
        ...

    def agent_mark_assigned(self, name: str, now: float) -> None:
        """Record when an agent was last assigned a task (routing spreads work by it)."""
        ...

    # ------------------------------------------------------------ the watchdog's sweeps

    def expired_leases(self, now: float, limit: int) -> list[Task]:
        """Claimed tasks whose lease ran out, soonest expired first (SKIP LOCKED)."""
        ...

    def unclaimed(self, now: float, limit: int) -> list[Task]:
        """Assigned tasks unclaimed past their claim TTL, or whose assignment webhook went dead (SKIP LOCKED)."""
        ...

    def undelivered_claims(self, limit: int) -> list[Task]:
        """Tasks claimed at assignment whose webhook, the one carrying their current claim, went dead
        (SKIP LOCKED)."""
        ...
