"""OutboxTx: the outbox and liveness area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol

from mcs.models import NewOutbox, OutboxItem, OutboxOutcome, ProcessBeat


class OutboxTx(Protocol):
    """The outbox the notifiers lease and deliver, and the heartbeat rows of every process replica."""

    def outbox_insert(self, row: NewOutbox) -> None:
        """Add one pending row, due now."""
        ...

    def outbox_due(self, *, now: float, limit: int, per_key: int) -> list[OutboxItem]:
        """Due pending rows nobody holds a live lease on, at most `per_key` per agent (alerts one key)."""
        ...

    def outbox_take(self, owner: str, *, now: float, lease_until: float, limit: int, per_key: int) -> list[OutboxItem]:
        """The rows `outbox_due` would return, leased to `owner` until `lease_until` (rows locked by
        another transaction are skipped)."""
        ...

    def outbox_renew(self, owner: str, ids: list[int], until: float) -> int:
        """Extend the lease of those of `ids` that `owner` still holds; how many it still holds."""
        ...

    def outbox_release(self, owner: str, ids: list[int]) -> int:
        """Give back the leases `owner` holds on `ids` (taken but not started); how many it held."""
        ...

    def outbox_record(self, owner: str, outcomes: list[OutboxOutcome], now: float) -> list[OutboxOutcome]:
        """Write the outcomes of rows `owner` still holds (a final one ends the lease); those written."""
        ...

    def outbox_next_due(self, after: float) -> float | None:
        """When the next pending row not due at `after` falls due."""
        ...

    def beat(self, process: str, instance: str, pid: int, started_at: float, now: float) -> None:
        """Write the heartbeat row of one replica of a process."""
        ...

    def mark_stopped(self, process: str, instance: str, pid: int) -> None:
        """Mark that replica's row stopped (pid 0) if `pid` still owns it."""
        ...

    def heartbeats_forget(self, process: str, instances: list[str]) -> int:
        """Delete the heartbeat rows of replicas of `process` that are gone; how many."""
        ...

    def heartbeats(self) -> list[ProcessBeat]:
        """Every heartbeat row, by process then instance."""
        ...
