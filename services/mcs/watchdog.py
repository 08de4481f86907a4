"""The watchdog: every MCS_WATCHDOG_INTERVAL, and once at start-up to catch up on whatever was orphaned
while everything was down: expired leases -> retry or fail; assignments nobody claimed -> routed again;
agents past their TTL -> offline; expired memory keys -> purged; and, through the retention pruner
(mcs.maintenance.retention, its own interval), finished tasks past MCS_RETENTION_DAYS, old outbox rows and
expired idempotency keys -> deleted."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from mcs import metrics
from mcs.config import Settings
from mcs.errors import DatabaseReplaced
from mcs.maintenance.retention import Pruned, Pruner
from mcs.process import Heartbeat, StatusServer, on_stop_signals, setup_logging
from mcs.store import Store
from mcs.store import agents as agents_store
from mcs.store import memory as memory_store
from mcs.store import stats as stats_store
from mcs.store import tasks as tasks_store

log = logging.getLogger("mcs.watchdog")

FILE_CHECK_INTERVAL = 1.0  # seconds between checks, while waiting, that the database file is still there


@dataclass
class Sweep:
    expired_leases: list[str]
    rerouted: list[str]
    offline: list[str]
    purged_keys: int
    purged_outbox: int
    purged_memory: int
    pruned: Pruned | None  # None when the pruner was not due this sweep


class Watchdog:
    def __init__(
        self,
        store: Store,
        *,
        interval: float,
        retry_base: float,
        retry_max: float,
        alert_offline: bool = False,
        retention: float = 0.0,
    ) -> None:
        self.store = store
        self.interval, self.retry_base, self.retry_max = interval, retry_base, retry_max
        self.alert_offline = alert_offline
        self._stop = threading.Event()
        self.pruner = Pruner(store, retention=retention, pause=self._stop.wait)
        self.heartbeat = Heartbeat(store, "watchdog")
        self.last_pass = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return time.monotonic() - self.last_pass < max(60.0, 3 * self.interval)

    def run_once(self, *, now: float | None = None) -> Sweep:
        """One sweep, each kind of work in its own short transaction (looping while batches are full)."""
        now = time.time() if now is None else now
        # Series for what may expire below start at 0 a sweep ahead, so their first count is an increase.
        for task_type, priority in self.store.read(stats_store.claimed_kinds):
            metrics.init_task_series([task_type], priorities=[priority])
        expired: list[str] = []
        while batch := self.store.write(tasks_store.expire_leases, now=now, base=self.retry_base, cap=self.retry_max):
            expired += batch
            if len(batch) < 500:
                break
        rerouted: list[str] = []
        while batch := self.store.write(tasks_store.reroute_unclaimed, now=now):
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
        return Sweep(expired, rerouted, offline, keys, outbox, purged_memory, pruned)

    def run(self) -> None:
        log.info("watchdog started", extra={"action": "start", "interval": self.interval})
        while not self._stop.is_set():
            try:
                self.store.check_file()  # deleted or replaced: exit, to be restarted on the file now there
                self.run_once()
            except DatabaseReplaced:
                log.error("database file deleted or replaced; exiting", extra={"action": "database_replaced"})
                raise
            except Exception:
                log.exception("sweep failed; trying again next interval", extra={"action": "sweep_failed"})
            self._wait(self.interval)
        log.info("watchdog stopped", extra={"action": "stop"})

    def _wait(self, seconds: float) -> None:
        """Until the next sweep, stop(), or the database file is seen gone (a stat a second costs nothing)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(left, FILE_CHECK_INTERVAL)) or not self.store.same_file():
                return


def main(settings: Settings | None = None) -> None:
    setup_logging()
    settings = settings or Settings.from_env()
    store = Store(settings.db, synchronous=settings.synchronous, write_lock_timeout=settings.write_lock_timeout)
    store.migrate()
    metrics.init_task_series(store.read(stats_store.task_types))
    watchdog = Watchdog(
        store,
        interval=settings.watchdog_interval,
        retry_base=settings.retry_base,
        retry_max=settings.retry_max,
        alert_offline=settings.alert_agent_offline,
        retention=settings.retention,
    )
    on_stop_signals(watchdog.stop)
    status = StatusServer(
        host=settings.bind_metrics_host,
        port=settings.watchdog_metrics_port,
        process="watchdog",
        alive=watchdog.alive,
        store=store,
    ).start()
    try:
        watchdog.run()
    finally:
        watchdog.heartbeat.stopped()
        status.stop()
        store.close()
