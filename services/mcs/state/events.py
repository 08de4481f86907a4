"""The live event log: task, workflow and agent audit rows in one id space (table event_log, filled by
triggers on the three audit tables), read in id order for GET /v1/events."""

from __future__ import annotations

from mcs.engines.base import Tx
from mcs.models import Event

__all__ = ["PAGE", "Event", "after", "last_id"]

PAGE = 500  # events one read returns at most
NO_BOUND = 2**62  # an id no event reaches


def last_id(tx: Tx) -> int:
    return tx.events_last()


def after(tx: Tx, after: int, *, upto: int | None = None, limit: int = PAGE) -> list[Event]:
    """Events with after < id <= upto (any when upto is None), oldest first, at most `limit`. An event
    whose audit row retention already removed is skipped."""
    bound = tx.events_bound(after, limit)
    upto_id = min(upto if upto is not None else NO_BOUND, bound if bound is not None else NO_BOUND)
    return tx.events_between(after, upto_id)
