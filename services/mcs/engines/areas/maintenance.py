"""MaintenanceTx: retention's bounded deletes and the status reads (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol

from mcs.models import Agent, Unreachable


class MaintenanceTx(Protocol):
    """Every retention statement runs on an index (checked by `retention_query_plans`): a batch costs the
    same with a million rows as with ten. Id lists are passed whole (one parameter)."""

    def retention_finished_roots(
        self, *, before: float, after: tuple[float, int], limit: int
    ) -> list[tuple[str, int, float, str | None]]:
        """Finished top-level tasks changed before `before`, past the cursor `after` (updated_at, seq), in
        cursor order: (id, seq, updated_at, workflow_id)."""
        ...

    def retention_children(self, parents: list[str]) -> list[tuple[str, str, str, float]]:
        """The children of `parents`: (id, parent_id, state, updated_at)."""
        ...

    def retention_undelivered(self, ids: list[str]) -> set[str]:
        """Those of the tasks `ids` that still have a pending outbox row."""
        ...

    def retention_depended_on(self, ids: list[str]) -> set[str]:
        """Those of the tasks `ids` that an unfinished task depends on."""
        ...

    def retention_running_workflows(self, ids: list[str]) -> set[str]:
        """Those of the workflows `ids` still running."""
        ...

    def retention_delete_task_rows(self, ids: list[str]) -> tuple[int, int]:
        """Delete the events, avoid-lists, dependency edges and outbox rows of the tasks `ids`:
        (events deleted, outbox rows deleted)."""
        ...

    def retention_delete_tasks(self, ids: list[str]) -> int:
        """Delete the tasks `ids` (their children first: parent_id is a foreign key)."""
        ...

    def retention_finished_workflows(
        self, *, before: float, after: tuple[float, int], limit: int
    ) -> list[tuple[str, int, float]]:
        """Workflows finished before `before`, past the cursor `after`: (id, seq, finished_at)."""
        ...

    def retention_workflows_with_steps(self, ids: list[str]) -> set[str]:
        """Those of the workflows `ids` that still have a step."""
        ...

    def retention_delete_workflows(self, ids: list[str]) -> tuple[int, int]:
        """Delete the workflows `ids` with their events: (workflows, events) deleted."""
        ...

    def prune_outbox(self, *, before: float, limit: int) -> int:
        """Delete up to `limit` delivered, superseded or dead outbox rows changed before `before`."""
        ...

    def prune_idempotency_keys(self, *, now: float, limit: int) -> int:
        """Delete up to `limit` expired idempotency keys."""
        ...

    def prune_agent_events(self, *, before: float, limit: int) -> int:
        """Delete up to `limit` agent audit events older than `before`."""
        ...

    def prune_schedule_runs(self, *, before: float, limit: int) -> int:
        """Delete up to `limit` records of schedule ticks handled before `before`."""
        ...

    def prune_heartbeats(self, *, before: float) -> int:
        """Delete heartbeat rows silent since `before` of processes another replica of which beat later."""
        ...

    def retention_query_plans(self) -> dict[str, list[str]]:
        """The plan of every retention statement, by name (how a test proves none scans a table)."""
        ...

    def status_agents(self) -> list[Agent]:
        """Every agent, by name."""
        ...

    def status_unserved(self) -> list[tuple[tuple[str, ...], str, int]]:
        """Queued work by (capabilities, route), largest first, from the counts migration 0017 keeps."""
        ...

    def status_unreachable(self, since: float) -> list[Unreachable]:
        """Agents whose latest webhook failed after `since` and is neither delivered nor superseded."""
        ...
