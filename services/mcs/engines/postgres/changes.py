"""`PgChangeFeed`: wake-ups from LISTEN/NOTIFY (docs/design/engines.md 5.1, 5.2).

Every write transaction of the PostgreSQL engine notifies one channel per topic it touched, just before
COMMIT; PostgreSQL delivers the notifications only if it commits. One dedicated connection per process
(not from the pool) LISTENs on the four channels, and a daemon thread blocks in `notifies()` and bumps a
counter per topic. Waiters compare the counters with a version they read before looking at the tables,
so a commit between their read and their wait still ends the wait at once.

A lost listener connection is reconnected; every counter is bumped on each (re)connect, since anything
could have committed meanwhile: a spurious wake, never a lost one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mcs.engines.base import Topic

log = logging.getLogger("mcs.engines.postgres")

LISTEN_SLICE = 0.5  # seconds the listener blocks in notifies() before looking at its stop flag
STOP_POLL = 0.05  # seconds between looks at a sync waiter's stop() (as wake.FALLBACK_POLL)
CONNECT_WAIT = 10.0  # seconds the constructor waits for LISTEN to be in place
RECONNECT_PAUSE = (0.1, 5.0)  # first and longest pause between reconnection attempts
ALL = tuple(Topic)


@dataclass(eq=False)
class _AsyncWaiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    topics: frozenset[Topic] = field(default_factory=frozenset)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PgChangeFeed:
    """Per-topic counters fed by LISTEN; `wait` for threads, `wait_async` for event loops."""

    def __init__(self, url: str, *, process: str = "mcs", connect: Callable[..., Any] | None = None) -> None:
        import psycopg

        self._url = url  # never logged: it may carry a password
        self._process = process
        self._connect = connect or psycopg.connect
        self._counts: dict[Topic, int] = dict.fromkeys(ALL, 0)
        self._cond = threading.Condition()
        self._waiters: list[_AsyncWaiter] = []
        self._stop = threading.Event()
        self._listening = threading.Event()
        self.reconnects = 0  # connections made after the first (tests, health)
        self._conn: Any = None
        self._thread = threading.Thread(target=self._loop, name="mcs-listen", daemon=True)
        self._thread.start()
        self._listening.wait(CONNECT_WAIT)

    # Counters
    def version(self, *topics: Topic) -> int:
        """The sum of the topics' counters (every topic's when none is named)."""
        with self._cond:
            return self._sum(topics)

    def _sum(self, topics: Iterable[Topic]) -> int:
        chosen = tuple(topics) or ALL
        return sum(self._counts[Topic(t)] for t in chosen)

    def _bump(self, topics: Iterable[Topic]) -> None:
        bumped = set(topics)
        with self._cond:
            for topic in bumped:
                self._counts[topic] += 1
            self._cond.notify_all()
            woken = [w for w in self._waiters if not w.topics or w.topics & bumped]
            self._waiters = [w for w in self._waiters if w not in woken]
        for waiter in woken:
            if not waiter.loop.is_closed():
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)

    # Waiting
    def wait(self, topics: Iterable[Topic], after: int, *, deadline: float, stop: Callable[[], bool]) -> None:
        """Return once the topics' version differs from `after`, `stop()` is true, or time.time() passes
        `deadline` (sync callers: the dispatcher, the watchdog)."""
        chosen = tuple(topics)
        with self._cond:
            while self._sum(chosen) == after and not stop():
                remaining = deadline - time.time()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, STOP_POLL))

    def wait_until(self, changed: Callable[[], bool], *, deadline: float, stop: Callable[[], bool]) -> None:
        """wake.CommitWatcher's call: return once `changed()` or `stop()` is true or time.time() passes
        `deadline`, looking again at each notification (and every STOP_POLL)."""
        with self._cond:
            while not stop() and not changed():
                remaining = deadline - time.time()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, STOP_POLL))

    async def wait_async(self, topics: Iterable[Topic], after: int, *, timeout: float) -> bool:
        """Wait without blocking the event loop until the topics' version differs from `after`: True, or
        False once `timeout` seconds passed without it."""
        chosen = frozenset(topics)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter = _AsyncWaiter(loop, loop.create_future(), chosen)
            with self._cond:
                if self._sum(chosen) != after:
                    return True
                self._waiters.append(waiter)
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                done, _ = await asyncio.wait({waiter.future}, timeout=remaining)
                if not done:
                    return self.version(*chosen) != after
            finally:
                with self._cond:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    # The listener thread
    def _loop(self) -> None:
        import psycopg

        pause = RECONNECT_PAUSE[0]
        first = True
        while not self._stop.is_set():
            try:
                conn = self._connect(
                    self._url, autocommit=True, application_name=f"mcs-{self._process}-listen"[:63], connect_timeout=10
                )
            except psycopg.Error as exc:
                log.warning(
                    "cannot connect the change listener (SQLSTATE %s); retrying",
                    getattr(exc, "sqlstate", None),
                    extra={"action": "listen_connect_failed"},
                )
                self._stop.wait(pause)
                pause = min(pause * 2, RECONNECT_PAUSE[1])
                continue
            self._conn = conn
            try:
                for topic in ALL:
                    conn.execute(f"LISTEN {topic.value}")
                if not first:
                    self.reconnects += 1
                first = False
                pause = RECONNECT_PAUSE[0]
                self._bump(ALL)  # anything may have committed while nobody listened
                self._listening.set()
                while not self._stop.is_set():
                    for notice in conn.notifies(timeout=LISTEN_SLICE):
                        if notice.channel in self._counts:
                            self._bump((Topic(notice.channel),))
            except psycopg.Error:
                if self._stop.is_set():
                    break
                log.warning("the change listener lost its connection; reconnecting", extra={"action": "listen_lost"})
                self._bump(ALL)
                self._stop.wait(pause)
            finally:
                self._conn = None
                try:
                    conn.close()
                except psycopg.Error:
                    pass

    def close(self) -> None:
        """Stop listening and join the thread (within about LISTEN_SLICE)."""
        self._stop.set()
        self._thread.join()
        with self._cond:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.loop.is_closed():
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
