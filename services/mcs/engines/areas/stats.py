"""StatsTx: the counts the metrics collector and `mcs status` read (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol


class StatsTx(Protocol):
    """Read-only counts over the whole mesh, each a cheap query (an index step or a trigger-kept count)."""

    def stats_task_types(self, limit: int) -> list[str]:
        """Task types the database knows, in order, at most `limit` (a skip through the type index)."""
        ...

    def stats_queue_counts(self, states: tuple[str, ...]) -> dict[tuple[str, int], int]:
        """(state, priority) -> unfinished tasks in those states (the trigger-kept task_counts); no zeros."""
        ...

    def stats_claimed_kinds(self) -> list[tuple[str, int]]:
        """(type, priority) of the tasks agents hold claimed now."""
        ...

    def stats_oldest_queued(self, priority: int) -> float | None:
        """When the longest-waiting queued task of this priority became eligible, or None."""
        ...

    def stats_agents(self) -> list[tuple[str, str, float | None, float | None]]:
        """(name, stored status, expires_at, last_seen) of every agent, by name."""
        ...

    def stats_memory_keys(self, now: float) -> dict[str, int]:
        """Namespace -> keys live at `now`."""
        ...

    def stats_outbox_pending(self) -> dict[str, int]:
        """Outbox kind -> rows waiting for delivery."""
        ...

    def stats_heartbeats(self) -> dict[str, float]:
        """Process -> its latest beat (the newest of its instances)."""
        ...

    def stats_failed_since(self, since: float) -> dict[tuple[str, int], int]:
        """(type, priority) -> tasks that failed after `since`."""
        ...

    def stats_approvals_waiting(self, approval_type: str) -> tuple[int, float | None]:
        """Approval gates waiting for a person: how many, and since when the oldest waits."""
        ...

    def stats_keyed_queued(self) -> int:
        """Queued tasks with a concurrency key."""
        ...

    def stats_workflows(self) -> dict[str, int]:
        """Workflow state -> workflows (states with none are absent)."""
        ...
