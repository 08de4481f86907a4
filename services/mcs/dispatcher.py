"""The dispatcher: routes queued tasks to agents and writes each webhook's outbox row in the same
transaction. It never talks HTTP to agents; it learns of new work from PRAGMA data_version, which changes
only when another process commits, and sleeps on an inotify watch of the database's folder in between, so
a submission is routed within milliseconds without spinning. On PostgreSQL it sleeps on the engine's
LISTEN feed instead (Topic.TASKS: tasks and agents written), and has the committed event_log rows
numbered before each pass, since its RoutingView reads agents' changes by those numbers (design 5.3)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, cast

from mcs import metrics
from mcs.config import Settings
from mcs.engines import open_engine
from mcs.engines.base import ChangeFeed, Topic
from mcs.errors import DatabaseReplaced, StoreError
from mcs.process import Heartbeat, StatusServer, on_stop_signals, setup_logging
from mcs.state import agents as agents_store
from mcs.state import dispatch as dispatch_state
from mcs.state import stats as stats_store
from mcs.store import Store
from mcs.wake import CommitWatcher

if TYPE_CHECKING:
    from mcs.engines.postgres.engine import PostgresEngine

log = logging.getLogger("mcs.dispatcher")

IDLE_PASS_INTERVAL = 1.0  # seconds: a pass even when nothing committed (agents expire by the clock)
PAGE = 200  # queued tasks read per page within a pass


class Dispatcher:
    def __init__(self, store: Store | PostgresEngine, *, instance: str | None = None) -> None:
        self.store = store
        self._stop = threading.Event()
        self.view = agents_store.RoutingView()  # the online agents, re-read only where they changed
        self.unparked_at = -1  # the view's `routable` count when parked tasks were last looked at again
        self.heartbeat = Heartbeat(cast(Store, store), "dispatcher", instance=instance)  # (duck-typed)
        self.last_pass = time.monotonic()
        # SQLite: data_version and an inotify watch; PostgreSQL: the engine's LISTEN feed (closed with it).
        self.watcher = CommitWatcher(store.path) if isinstance(store, Store) else None
        self.feed: ChangeFeed | None = None if isinstance(store, Store) else store.changes()
        self.sequenced = -1  # the EVENTS version when this dispatcher last had event_log rows numbered
        self.resume: tuple[int, int] | None = None  # where the next pass reads on, when one stopped at its limit

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return time.monotonic() - self.last_pass < 30

    def run_once(self, now: float | None = None) -> dispatch_state.DispatchResult:
        """One pass (the store pages through the queue); another at once if it stopped at its scan limit,
        going on from where it stopped, until the whole queue had a look. `now` (tests): the clock the pass
        reads, instead of the time."""
        while True:
            now = time.time() if now is None else now
            self._sequence_events()
            reads = (self.view.full_reads, self.view.partial_reads)
            try:
                if not self.store.read(dispatch_state.has_work, now=now, view=self.view, unparked_at=self.unparked_at):
                    self.last_pass = time.monotonic()
                    return dispatch_state.DispatchResult(
                        routable=self.unparked_at, next_due=self.store.read(dispatch_state.next_retry_due)
                    )
                metrics.dispatcher_passes.inc()
                result = self.store.write(
                    dispatch_state.dispatch,
                    now=now,
                    view=self.view,
                    unparked_at=self.unparked_at,
                    limit=PAGE,
                    resume=self.resume,
                )
            finally:
                metrics.dispatcher_agent_reads.labels("all").inc(self.view.full_reads - reads[0])
                metrics.dispatcher_agent_reads.labels("changed").inc(self.view.partial_reads - reads[1])
            self.unparked_at, self.resume = result.routable, result.resume
            done = time.time()
            for task_id, agent, eligible_at in result.assigned:
                metrics.dispatch_latency.observe(max(0.0, done - eligible_at))
                log.debug("assigned task", extra={"action": "assign", "task_id": task_id, "agent": agent})
            metrics.tasks_dispatched.inc(len(result.assigned))
            metrics.tasks_push_claimed.inc(result.push_claimed)
            self.last_pass = time.monotonic()
            metrics.loop_last_pass.set(done)
            if not result.more:
                return result

    def _sequence_events(self) -> None:
        """PostgreSQL: have the committed event_log rows numbered (mcs.engines.postgres.sequencer) before
        the RoutingView reads agents' changes past the last number it saw; an agent event not numbered
        yet would be seen only at the next pass that numbers it. Skipped while no EVENTS notification
        came since the last run: an agent event's commit notifies EVENTS before TASKS (the channels go
        out in name order), so the TASKS wake-up it causes always finds EVENTS moved. SQLite: nothing."""
        if self.feed is None or isinstance(self.store, Store):
            return
        seen = self.feed.version(Topic.EVENTS)
        if seen != self.sequenced:
            self.store.sequence_events()
            self.sequenced = seen

    def _version(self) -> int:
        """What the next wait compares with: SQLite's data_version, or the TASKS notifications so far."""
        return self.feed.version(Topic.TASKS) if self.feed is not None else self.store.data_version()

    def run(self) -> None:
        log.info("dispatcher started", extra={"action": "start", "db": str(getattr(self.store, "path", "postgresql"))})
        next_due: float | None = None
        while not self._stop.is_set():
            # The version before the pass: a commit during the pass must end the next wait at once.
            version = self._version()
            try:
                self.store.check_file()  # deleted or replaced: exit, to be restarted on the file now there
                next_due = self.run_once().next_due
                self.heartbeat.maybe_beat()
            except DatabaseReplaced:
                log.error("database file deleted or replaced; exiting", extra={"action": "database_replaced"})
                raise
            except StoreError:
                log.exception("dispatch pass failed; trying again", extra={"action": "pass_failed"})
                next_due = None
                self._stop.wait(0.5)
            self._wait(version, next_due)
        log.info("dispatcher stopped", extra={"action": "stop"})

    def _wait(self, version: int, next_due: float | None) -> None:
        """Sleep until another process commits (after `version`), a retry falls due, or the idle interval."""
        deadline = time.time() + IDLE_PASS_INTERVAL
        if next_due is not None:
            deadline = min(deadline, next_due)
        if self.feed is not None:
            self.feed.wait((Topic.TASKS,), version, deadline=deadline, stop=self._stop.is_set)
            return
        assert self.watcher is not None
        self.watcher.wait_until(lambda: self.store.data_version() != version, deadline=deadline, stop=self._stop.is_set)


def main(settings: Settings | None = None) -> None:
    setup_logging()
    settings = settings or Settings.from_env()
    store = open_engine(settings, process="dispatcher")  # SQLite's Store, or PostgreSQL with MCS_DATABASE_URL
    store.migrate()
    metrics.init_task_series(store.read(stats_store.task_types))
    dispatcher = Dispatcher(store, instance=settings.instance)
    on_stop_signals(dispatcher.stop)
    status = StatusServer(
        host=settings.bind_metrics_host,
        port=settings.dispatcher_metrics_port,
        process="dispatcher",
        alive=dispatcher.alive,
        store=cast(Store, store),  # (duck-typed, as the Heartbeat's)
    ).start()
    try:
        dispatcher.run()
    finally:
        dispatcher.heartbeat.stopped()
        status.stop()
        if dispatcher.watcher is not None:
            dispatcher.watcher.close()
        store.close()
