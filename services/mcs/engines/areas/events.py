"""EventTx: the events area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol

from mcs.models import Event


class EventTx(Protocol):
    """The live event log (event_log over the task, workflow and agent audit tables), read in id order."""

    def events_last(self) -> int:
        """The newest event id (0 when there is none)."""
        ...

    def events_bound(self, after: int, limit: int) -> int | None:
        """The id of the `limit`-th event after `after`, or None when there are fewer."""
        ...

    def events_between(self, after: int, upto: int) -> list[Event]:
        """Events with after < id <= upto, oldest first (an event whose audit row is gone is skipped)."""
        ...
