"""Metrics read from the database when Prometheus scrapes: queue depth, the oldest queued task, agents,
memory keys, pending deliveries, approvals waiting, workflows by state, heartbeats and the size of the
database files.

The api exports them (one process, so sums across processes never double count). A snapshot is cached
for a few seconds, so several scrapers or a dashboard refresh cost one read; the read runs off the event
loop. If the database cannot be read, `mcs_state_up` is 0 and the other families are left out, rather
than /metrics failing as a whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mcs.engines.sqlite.engine import Store
from mcs.state import stats as stats_store
from mcs.state.stats import MeshSnapshot

if TYPE_CHECKING:
    from mcs.engines.postgres.engine import PostgresEngine

log = logging.getLogger("mcs.metrics")

CACHE_SECONDS = 5.0  # a snapshot younger than this is served again


class MeshStateCollector(Collector):
    def __init__(
        self,
        store: Store | PostgresEngine,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[MeshSnapshot, float] | None = None  # (snapshot, seconds it took)
        self._cached_at = 0.0  # monotonic: a wall clock stepping back must not pin an old snapshot
        self._failing = False

    def _snapshot(self) -> tuple[MeshSnapshot, float] | None:
        with self._lock:
            started = time.monotonic()
            if self._cached is not None and started - self._cached_at < self.cache_seconds:
                return self._cached
            try:
                snap = self.store.read(stats_store.snapshot, now=self.clock())
            except Exception as exc:  # a metrics scrape must never fail because the database did
                extra = {"action": "state_metrics", "error": repr(exc)}
                log.error("could not read the mesh state for /metrics", extra=extra, exc_info=not self._failing)
                self._failing, self._cached = True, None
                return None
            if self._failing:
                log.info("reading the mesh state for /metrics works again", extra={"action": "state_metrics"})
            self._failing = False
            self._cached, self._cached_at = (snap, time.monotonic() - started), started
            return self._cached

    def collect(self) -> Iterator[GaugeMetricFamily]:
        got = self._snapshot()
        up = GaugeMetricFamily("mcs_state_up", "1 when the last read of the mesh state from the database worked")
        up.add_metric([], 0 if got is None else 1)
        yield up
        if isinstance(self.store, Store):  # SQLite's files (PostgreSQL's disk is not ours)
            yield from _files(self.store.path)
        if got is None:
            return
        snap, took = got
        now = snap.at

        took_g = GaugeMetricFamily("mcs_state_read_duration_seconds", "Time the last mesh state read took")
        took_g.add_metric([], took)
        yield took_g

        depth = GaugeMetricFamily(
            "mcs_queue_depth", "Unfinished tasks by state and priority", labels=["state", "priority"]
        )
        for (state, priority), count in sorted(snap.tasks.items()):
            depth.add_metric([state, priority], count)
        yield depth

        failed = GaugeMetricFamily(
            "mcs_tasks_failed_recently",
            "Tasks that failed for good in the last 15 minutes, by type and priority (from the database, so "
            "exact across restarts; the McsTaskFailed alert uses it)",
            labels=["type", "priority"],
        )
        for (task_type, priority), count in sorted(snap.recently_failed.items()):
            failed.add_metric([task_type, priority], count)
        yield failed

        oldest = GaugeMetricFamily(
            "mcs_queue_oldest_age_seconds",
            "How long the oldest queued task has waited for an agent (0 when none waits)",
            labels=["priority"],
        )
        for priority in sorted({p for _, p in snap.tasks}):
            since = snap.oldest_queued.get(priority)
            oldest.add_metric([priority], 0.0 if since is None else max(0.0, now - since))
        yield oldest

        by_status = GaugeMetricFamily("mcs_agents", "Agents by status", labels=["status"])
        online = sum(1 for a in snap.agents if a.online)
        by_status.add_metric(["online"], online)
        by_status.add_metric(["offline"], len(snap.agents) - online)
        yield by_status

        agent_online = GaugeMetricFamily(
            "mcs_agent_online", "1 while the agent is online (registered within its TTL)", labels=["agent"]
        )
        seen = GaugeMetricFamily(
            "mcs_agent_last_seen_seconds",
            "Seconds since the agent last registered (agents that never did are left out)",
            labels=["agent"],
        )
        for agent in snap.agents:
            agent_online.add_metric([agent.name], 1 if agent.online else 0)
            if agent.last_seen is not None:
                seen.add_metric([agent.name], max(0.0, now - agent.last_seen))
        yield agent_online
        yield seen

        keys = GaugeMetricFamily("mcs_memory_keys", "Live shared-memory keys by namespace", labels=["namespace"])
        keys.add_metric(["mesh"], snap.memory_keys.get("mesh", 0))  # always there, so panels have a line
        for ns, count in sorted(snap.memory_keys.items()):
            if ns != "mesh":
                keys.add_metric([ns], count)
        yield keys

        pending = GaugeMetricFamily(
            "mcs_outbox_pending", "Webhooks and alerts waiting to be delivered", labels=["kind"]
        )
        for kind in sorted({"webhook", "alert", *snap.outbox_pending}):
            pending.add_metric([kind], snap.outbox_pending.get(kind, 0))
        yield pending

        approvals = GaugeMetricFamily("mcs_approvals_waiting", "Approval tasks waiting for a person to decide")
        approvals.add_metric([], snap.approvals_waiting)
        yield approvals
        approval_age = GaugeMetricFamily(
            "mcs_approval_oldest_wait_seconds",
            "How long the longest-waiting approval has waited (0 when none waits; McsApprovalWaiting uses it)",
        )
        waited = 0.0 if snap.oldest_approval is None else max(0.0, now - snap.oldest_approval)
        approval_age.add_metric([], waited)
        yield approval_age

        keyed = GaugeMetricFamily(
            "mcs_queue_keyed",
            "Queued tasks with a concurrency key: they go out only while their key is under its max_concurrency",
        )
        keyed.add_metric([], snap.keyed_queued)
        yield keyed

        workflows = GaugeMetricFamily(
            "mcs_workflows",
            "Workflows by state (running, completed, failed, canceled; finished ones until retention deletes them)",
            labels=["state"],
        )
        for state, count in snap.workflows.items():
            workflows.add_metric([state], count)
        yield workflows

        beat = GaugeMetricFamily(
            "mcs_process_heartbeat_age_seconds",
            "Seconds since each worker process (dispatcher, watchdog, notifier) last wrote its heartbeat row",
            labels=["worker"],  # not "process": Prometheus's target label of that name would rename it
        )
        for process, at in sorted(snap.heartbeats.items()):
            beat.add_metric([process], max(0.0, now - at))
        yield beat


def _files(db: Path) -> Iterator[GaugeMetricFamily]:
    size = GaugeMetricFamily("mcs_database_size_bytes", "Size of the SQLite files on disk", labels=["file"])
    for label, path in (("db", db), ("wal", db.with_name(db.name + "-wal"))):
        try:
            size.add_metric([label], path.stat().st_size)
        except OSError:  # no WAL file between checkpoints on some systems: it is empty
            size.add_metric([label], 0)
    yield size


def state_registry(store: Store | PostgresEngine, *, cache_seconds: float = CACHE_SECONDS) -> CollectorRegistry:
    """A registry holding only the mesh-state collector (the api adds it to its own /metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeshStateCollector(store, cache_seconds=cache_seconds))
    return registry
