"""Counts that a transaction's changes should add to the metrics, published only once it commits.

Store functions call `note()` where a task changes state, so every process counts the transitions it
makes itself (the api's completions, the watchdog's expired leases, a fanout parent settled by whoever
finished its last child) from one place, and a change that rolls back counts nothing. The writer
(`connection.in_write`, `in_write_batch`) collects the notes of each job and hands them to
`mcs.metrics.count_transitions` after COMMIT.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

Note = tuple[str, str, str]  # (event, task type, priority label)

_local = threading.local()


def note(event: str, task_type: str, priority: str) -> None:
    """Record that this transaction made a task event (submitted, completed, failed, retried, ...)."""
    pending: list[Note] | None = getattr(_local, "pending", None)
    if pending is not None:
        pending.append((event, task_type, priority))


@contextmanager
def collecting() -> Iterator[list[Note]]:
    """Collect the notes made in this thread until the block ends."""
    outer = getattr(_local, "pending", None)
    pending: list[Note] = []
    _local.pending = pending
    try:
        yield pending
    finally:
        _local.pending = outer


def mark() -> int:
    """Where this transaction's notes stand now, for `discard_since` when a savepoint rolls back."""
    pending: list[Note] | None = getattr(_local, "pending", None)
    return len(pending) if pending is not None else 0


def discard_since(position: int) -> None:
    """Forget the notes made since `mark()` returned `position`: their changes were rolled back."""
    pending: list[Note] | None = getattr(_local, "pending", None)
    if pending is not None:
        del pending[position:]
