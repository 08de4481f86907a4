"""The watchdog: every MCS_WATCHDOG_INTERVAL, and once at start-up to catch up on whatever was orphaned
while everything was down: expired leases -> retry or fail; assignments nobody claimed -> routed again;
agents past their TTL -> offline; expired memory keys -> purged; and, through the retention pruner
(mcs.maintenance.retention, its own interval), finished tasks past MCS_RETENTION_DAYS, old outbox rows and
expired idempotency keys -> deleted; and due schedule ticks -> submitted (looked for every second between
sweeps, so a tick is never an interval late; on PostgreSQL at each tick's time and whenever a schedule is
written, told by the engine's LISTEN feed, Topic.SCHEDULES, instead of every second)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from mcs import metrics
from mcs.config import Settings
from mcs.engines import open_engine
from mcs.engines.base import ChangeFeed, Topic
from mcs.errors import DatabaseReplaced, McsError
from mcs.maintenance.retention import Pruned, Pruner
from mcs.models import ScheduleRun
from mcs.process import Heartbeat, StatusServer, on_stop_signals, setup_logging
from mcs.state import agents as agents_store
from mcs.state import memory as memory_store
from mcs.state import schedules as schedules_state
from mcs.state import stats as stats_store
from mcs.state import sweeps
from mcs.store import Store

if TYPE_CHECKING:
    from mcs.engines.postgres.engine import PostgresEngine

log = logging.getLogger("mcs.watchdog")

FILE_CHECK_INTERVAL = 1.0  # seconds between checks, while waiting, that the database file is still there
SCHEDULES_PER_PASS = 1000  # schedule ticks handled in one pass at most (the next pass takes the rest)
SCHEDULE_POLL = 1.0  # seconds between looks for a due (or newly added) schedule tick: one small read each


@dataclass
class Sweep:
    expired_leases: list[str]
    rerouted: list[str]
    offline: list[str]
    purged_keys: int
    purged_outbox: int
    purged_memory: int
    pruned: Pruned | None  # None when the pruner was not due this sweep
    scheduled: list[ScheduleRun] = field(default_factory=list)


class Watchdog:
    def __init__(
        self,
        store: Store | PostgresEngine,
        *,
        interval: float,
        retry_base: float,
        retry_max: float,
        alert_offline: bool = False,
        retention: float = 0.0,
        max_retries: int = 3,
        claim_ttl: float = 300.0,
        instance: str | None = None,
    ) -> None:
        self.store = store
        self.interval, self.retry_base, self.retry_max = interval, retry_base, retry_max
        self.alert_offline = alert_offline
        # A tick later than this (the watchdog was down) counts as missed for catch_up "none".
        self.schedule_defaults = schedules_state.Defaults(
            max_retries=max_retries, claim_ttl=claim_ttl, grace=max(60.0, 2 * interval)
        )
        self._stop = threading.Event()
        self.pruner = Pruner(cast(Store, store), retention=retention, pause=self._stop.wait)  # (duck-typed)
        self.heartbeat = Heartbeat(cast(Store, store), "watchdog", instance=instance)
        # PostgreSQL: schedule writes wake the wait between sweeps (SQLite looks every SCHEDULE_POLL).
        self.feed: ChangeFeed | None = None if isinstance(store, Store) else store.changes()
        self.last_pass = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return time.monotonic() - self.last_pass < max(60.0, 3 * self.interval)

    def fire_schedules(self, now: float) -> list[ScheduleRun]:
        """Every due schedule tick, each in its own transaction: fired once, or skipped with a reason."""
        handled: list[ScheduleRun] = []
        while len(handled) < SCHEDULES_PER_PASS:
            try:
                run = self.store.write(schedules_state.fire_next_due, now=now, defaults=self.schedule_defaults)
            except DatabaseReplaced:
                raise
            except McsError as exc:  # a schedule whose body no longer submits: say so, keep the others going
                log.error("schedule tick failed", extra={"action": "schedule_failed", "error": str(exc)})
                break
            if run is None:
                break
            handled.append(run)
            metrics.schedule_ticks.labels(run.outcome).inc()
            log.info(
                "schedule %s %s", run.schedule, run.outcome,
                extra={"action": f"schedule_{run.outcome}", "schedule": run.schedule, "task_id": run.task_id},
            )  # fmt: skip
        return handled

    def _next_tick(self) -> float | None:
        try:
            due: float | None = self.store.read(schedules_state.next_due)
        except McsError:
            return None
        return due

    def run_once(self, *, now: float | None = None) -> Sweep:
        """One sweep, each kind of work in its own short transaction (looping while batches are full)."""
        now = time.time() if now is None else now
        scheduled = self.fire_schedules(now)
        # Series for what may expire below start at 0 a sweep ahead, so their first count is an increase.
        for task_type, priority in self.store.read(stats_store.claimed_kinds):
            metrics.init_task_series([task_type], priorities=[priority])
        expired: list[str] = []
        while batch := self.store.write(sweeps.expire_leases, now=now, base=self.retry_base, cap=self.retry_max):
            expired += batch
            if len(batch) < 500:
                break
        rerouted: list[str] = []
        while batch := self.store.write(sweeps.reroute_unclaimed, now=now):
            rerouted += batch
            if len(batch) < 500:
                break
        offline = self.store.write(agents_store.mark_expired_offline, now=now, alert=self.alert_offline)
        purged_memory = 0
        while batch_size := self.store.write(memory_store.purge_expired, now=now):
            purged_memory += batch_size
            if batch_size < 1000:
                break
        pruned = self.pruner.maybe_run(now=now)
        for task_id in expired:
            log.info("lease expired", extra={"action": "lease_expired", "task_id": task_id})
        for task_id in rerouted:
            log.info("assignment unclaimed, routing again", extra={"action": "reroute", "task_id": task_id})
        for name in offline:
            log.info("agent offline", extra={"action": "agent_offline", "agent": name})
        metrics.claims_expired.inc(len(expired))
        metrics.unclaimed_rerouted.inc(len(rerouted))
        metrics.agents_marked_offline.inc(len(offline))
        self.last_pass = time.monotonic()
        metrics.loop_last_pass.set(time.time())
        self.heartbeat.maybe_beat()
        keys, outbox = (pruned.idempotency_keys, pruned.outbox) if pruned else (0, 0)
        return Sweep(expired, rerouted, offline, keys, outbox, purged_memory, pruned, scheduled)

    def run(self) -> None:
        """Sweep every interval; in between, look for due schedule ticks every SCHEDULE_POLL seconds (a read)
        and fire them as they fall."""
        log.info("watchdog started", extra={"action": "start", "interval": self.interval})
        while not self._stop.is_set():
            try:
                self.store.check_file()  # deleted or replaced: exit, to be restarted on the file now there
                self.run_once()
                self._between_sweeps(self.interval)
            except DatabaseReplaced:
                log.error("database file deleted or replaced; exiting", extra={"action": "database_replaced"})
                raise
            except Exception:
                log.exception("sweep failed; trying again next interval", extra={"action": "sweep_failed"})
                self._between_sweeps(self.interval)
        log.info("watchdog stopped", extra={"action": "stop"})

    def _between_sweeps(self, seconds: float) -> None:
        """Until the next sweep or stop(): fire schedule ticks as they fall (a read every SCHEDULE_POLL
        seconds finds new schedules too), and return early when the database file is seen gone."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            # The version before the read: a schedule written after it ends the wait below at once.
            version = self.feed.version(Topic.SCHEDULES) if self.feed is not None else 0
            tick = self._next_tick()
            wait = min(left, SCHEDULE_POLL, FILE_CHECK_INTERVAL) if self.feed is None else left
            if tick is not None:
                wait = min(wait, max(0.0, tick - time.time()))
            if self.feed is not None:
                self.feed.wait((Topic.SCHEDULES,), version, deadline=time.time() + wait, stop=self._stop.is_set)
            elif self._stop.wait(wait):
                return
            if self._stop.is_set() or not self.store.same_file():
                return
            if tick is not None and tick <= time.time():
                self.fire_schedules(time.time())
                self.heartbeat.maybe_beat()


def main(settings: Settings | None = None) -> None:
    setup_logging()
    settings = settings or Settings.from_env()
    store = open_engine(settings, process="watchdog")  # SQLite's Store, or PostgreSQL with MCS_DATABASE_URL
    store.migrate()
    metrics.init_task_series(store.read(stats_store.task_types))
    watchdog = Watchdog(
        store,
        interval=settings.watchdog_interval,
        retry_base=settings.retry_base,
        retry_max=settings.retry_max,
        alert_offline=settings.alert_agent_offline,
        retention=settings.retention,
        max_retries=settings.max_retries,
        claim_ttl=settings.claim_ttl,
        instance=settings.instance,
    )
    on_stop_signals(watchdog.stop)
    status = StatusServer(
        host=settings.bind_metrics_host,
        port=settings.watchdog_metrics_port,
        process="watchdog",
        alive=watchdog.alive,
        store=cast(Store, store),  # (duck-typed, as the Heartbeat's)
    ).start()
    try:
        watchdog.run()
    finally:
        watchdog.heartbeat.stopped()
        status.stop()
        store.close()
