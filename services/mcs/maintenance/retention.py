"""The retention pruner: keeps the database of a long-running mesh from growing forever.

Every run deletes finished (completed, failed, canceled) tasks last changed more than MCS_RETENTION_DAYS
ago, together with their events and their fanout children, then finished workflows (and their events)
once every one of their steps is gone; delivered or given-up outbox rows once they
are a day old (or older than the retention, if that is shorter); expired idempotency keys; and agent
audit events and records of schedule ticks older than the retention; heartbeat rows of replicas silent for a
day while another replica of the same process still beats. MCS_RETENTION_DAYS=0 keeps every
task and event (outbox rows and expired idempotency keys are still cleared: they are plumbing, not
history).

The work is cut in batches of about BATCH rows (TASK_BATCH tasks with their rows), one short write
transaction each, with a pause as long as the
batch took between two batches, so the api and the dispatcher get the write lock at least half the time;
a run does at most MAX_BATCHES batches of each kind and, when it stopped with more to do, the next run
comes at the watchdog's next sweep instead of a full interval later. SQLite reuses the pages freed this
way for new rows, so the file stops growing once deletes keep pace with inserts (see bench/retention.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mcs import metrics
from mcs.engines.sqlite.engine import Store
from mcs.state import retention as retention_store

if TYPE_CHECKING:
    from mcs.engines.postgres.engine import PostgresEngine

log = logging.getLogger("mcs.retention")

BATCH = 500  # rows per transaction
TASK_BATCH = 100  # finished tasks per transaction: each goes with its events (about five) and outbox rows
MAX_BATCHES = 20  # batches of each kind per run: bounded work per sweep
RUN_EVERY = 300.0  # seconds between runs (a quarter of the retention when that is shorter)
HEARTBEAT_KEEP = 86400.0  # seconds a replica's heartbeat row stays after it went silent (others still beating)
OUTBOX_KEEP = 86400.0  # seconds a delivered or dead outbox row is kept for inspection (at most the retention)


@dataclass(frozen=True, kw_only=True)
class Pruned:
    """Rows deleted by one run, by kind (the `kind` label of mcs_pruned_total)."""

    tasks: int = 0
    task_events: int = 0
    outbox: int = 0
    idempotency_keys: int = 0
    agent_events: int = 0
    schedule_runs: int = 0
    workflows: int = 0
    workflow_events: int = 0
    heartbeats: int = 0  # rows of replicas gone for a day (another replica of the process beats later)
    more: bool = False  # a kind stopped at MAX_BATCHES: run again at the next sweep

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "more"}


class Pruner:
    """Deletes what the retention no longer keeps, a bounded amount per run.

    `retention` is in seconds (0 keeps all tasks and events); `pause(seconds)` is called between batches
    and may return True to cut the run short (the watchdog passes its stop event's `wait`).
    """

    def __init__(
        self,
        store: Store | PostgresEngine,
        *,
        retention: float,
        interval: float | None = None,
        batch: int = BATCH,
        task_batch: int = TASK_BATCH,
        max_batches: int = MAX_BATCHES,
        pause: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.store = store
        self.retention = retention
        self.interval = interval if interval is not None else min(RUN_EVERY, retention / 4 or RUN_EVERY)
        self.batch, self.task_batch, self.max_batches = batch, task_batch, max_batches
        self.pause = pause
        self._took = 0.0  # seconds the last batch held the write lock
        self.next_run = float("-inf")
        for kind in metrics.PRUNED_KINDS:
            metrics.pruned.labels(kind)

    @property
    def outbox_keep(self) -> float:
        return min(OUTBOX_KEEP, self.retention) if self.retention > 0 else OUTBOX_KEEP

    def maybe_run(self, *, now: float) -> Pruned | None:
        """Run when the interval has passed (or the last run left work behind); None when not due."""
        if now < self.next_run:
            return None
        pruned = self.run_once(now=now)
        self.next_run = now if pruned.more else now + self.interval
        return pruned

    def run_once(self, *, now: float) -> Pruned:
        counts = dict.fromkeys(metrics.PRUNED_KINDS, 0)
        more = False
        if self.retention > 0:
            more |= self._tasks(before=now - self.retention, counts=counts)
            more |= self._workflows(before=now - self.retention, counts=counts)
            n, left = self._drain(retention_store.prune_agent_events, before=now - self.retention)
            counts["agent_events"], more = n, more or left
            n, left = self._drain(retention_store.prune_schedule_runs, before=now - self.retention)
            counts["schedule_runs"], more = n, more or left
        n, left = self._drain(retention_store.prune_outbox, before=now - self.outbox_keep)
        counts["outbox"], more = counts["outbox"] + n, more or left
        n, left = self._drain(retention_store.prune_idempotency_keys, now=now)
        counts["idempotency_keys"], more = n, more or left
        counts["heartbeats"] = self.store.write(retention_store.prune_heartbeats, before=now - HEARTBEAT_KEEP, limit=0)
        for kind, n in counts.items():
            if n:
                metrics.pruned.labels(kind).inc(n)
        pruned = Pruned(**counts, more=more)
        if any(counts.values()):
            log.info("pruned old rows", extra={"action": "prune", **counts, "more": more})
        return pruned

    def _tasks(self, *, before: float, counts: dict[str, int]) -> bool:
        cursor: tuple[float, int] | None = None
        for i in range(self.max_batches):
            if i and self._paused():
                return True
            started = time.monotonic()
            batch = self.store.write(retention_store.prune_tasks, before=before, after=cursor, limit=self.task_batch)
            self._took = time.monotonic() - started
            counts["tasks"] += batch.tasks
            counts["task_events"] += batch.task_events
            counts["outbox"] += batch.outbox
            if not batch.full:
                return False
            cursor = batch.cursor
        return True

    def _workflows(self, *, before: float, counts: dict[str, int]) -> bool:
        """After the tasks: a finished workflow goes once the task pruner took every one of its steps."""
        cursor: tuple[float, int] | None = None
        for i in range(self.max_batches):
            if i and self._paused():
                return True
            started = time.monotonic()
            batch = self.store.write(retention_store.prune_workflows, before=before, after=cursor, limit=self.batch)
            self._took = time.monotonic() - started
            counts["workflows"] += batch.workflows
            counts["workflow_events"] += batch.workflow_events
            if not batch.full:
                return False
            cursor = batch.cursor
        return True

    def _drain(self, fn: Callable[..., int], **kwargs: float) -> tuple[int, bool]:
        total = 0
        for i in range(self.max_batches):
            if i and self._paused():
                return total, True
            started = time.monotonic()
            n = self.store.write(fn, limit=self.batch, **kwargs)
            self._took = time.monotonic() - started
            total += n
            if n < self.batch:
                return total, False
        return total, True

    def _paused(self) -> bool:
        """Between two batches: leave the write lock free as long as the last batch held it."""
        return bool(self.pause(self._took))
