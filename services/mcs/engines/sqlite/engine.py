"""The SQLite engine's `Store` (an `Engine`: connections, migrations, transactions handing `SqliteTx` to
mcs.state) and `AsyncStore` (its calls off the event loop).

`Store` owns the connections of one process. Sync code (dispatcher, watchdog, CLI) calls `write`/`read`
directly; async code (api, notifier) goes through `AsyncStore`, which runs writes on one writer thread that
group-commits whatever requests are waiting (one transaction, one fsync, a savepoint each) and reads on
one reader thread that batches the same way, each thread with its own connection, never on the event loop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mcs.config import Settings
from mcs.engines.sqlite import migrations
from mcs.engines.sqlite.connection import (
    Connection,
    DatabaseError,
    FileIdentity,
    WriterLock,
    connect,
    data_version,
    disk_free,
    in_read,
    in_read_batch,
    in_write,
    in_write_batch,
    sqlite_version,
    translate,
)

if TYPE_CHECKING:  # asyncio only where AsyncStore runs (api, notifier): the dispatcher and watchdog are sync
    import asyncio

T = TypeVar("T")

__all__ = ["AsyncStore", "Store", "data_version", "disk_free", "sqlite_version"]

BATCH_MAX = 64  # requests run together at most (one transaction)


class Store:
    """Thread-local connections to one database file, each with its own handle on the writer lock.

    The file is the one the path named when the first connection opened it (`identity`): every write
    checks the path still names it, and a connection opened later by another thread must find it there.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = Settings.synchronous,
        write_lock_timeout: float = Settings.write_lock_timeout,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.write_lock_timeout = write_lock_timeout
        self.identity: FileIdentity | None = None
        self._local = threading.local()
        self._all: list[tuple[Connection, WriterLock]] = []
        self._lock = threading.Lock()

    def _open(self) -> tuple[Connection, WriterLock]:
        pair: tuple[Connection, WriterLock] | None = getattr(self._local, "pair", None)
        if pair is None:
            if self.identity is not None:
                self.identity.check()  # never create a fresh file at the path behind the others' back
            conn = connect(self.path, synchronous=self.synchronous)
            with self._lock:
                if self.identity is None:
                    self.identity = FileIdentity(self.path)
            pair = (conn, WriterLock(self.path, timeout=self.write_lock_timeout, identity=self.identity))
            self._local.pair = pair
            with self._lock:
                self._all.append(pair)
        return pair

    def same_file(self) -> bool:
        """Whether the database path still names the file this store opened (a stat: cheap)."""
        return self.identity is None or self.identity.same_file()

    def check_file(self) -> None:
        """Raise DatabaseReplaced if the database path no longer names the file this store opened."""
        if self.identity is not None:
            self.identity.check()

    @property
    def replaced(self) -> str | None:
        """What happened ("data/mcs.db was deleted", ...), once a check has seen the path name another file."""
        return self.identity.lost if self.identity is not None else None

    @property
    def conn(self) -> Connection:
        return self._open()[0]

    @property
    def writer_lock(self) -> WriterLock:
        return self._open()[1]

    def migrate(self) -> list[str]:
        try:
            return migrations.apply(self.conn, self.writer_lock)
        except DatabaseError as exc:  # e.g. a full disk: DiskFull, one line at start-up, not a traceback
            raise translate(exc, self.path.parent) from exc

    def pending_migrations(self) -> list[str]:
        return migrations.pending(self.conn)

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        conn, lock = self._open()
        return in_write(conn, fn, *args, lock=lock, **kwargs)

    def write_batch(self, jobs: list[Callable[[Connection], Any]], *, since: float | None = None) -> list[Any]:
        """Run jobs in one transaction; `since` (time.monotonic()) is when the oldest was asked for, so its
        whole wait for the write lock, queueing included, stays within write_lock_timeout."""
        conn, lock = self._open()
        timeout = None if since is None else self.write_lock_timeout - (time.monotonic() - since)
        return in_write_batch(conn, jobs, lock, timeout=timeout)

    def read_batch(self, jobs: list[Callable[[Connection], Any]]) -> list[Any]:
        return in_read_batch(self.conn, jobs)

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return in_read(self.conn, fn, *args, **kwargs)

    def data_version(self) -> int:
        """Changes whenever another connection commits: how a process learns of new work cheaply."""
        return data_version(self.conn)

    def close(self) -> None:
        with self._lock:
            for conn, lock in self._all:
                try:
                    conn.close()
                    lock.close()
                except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                    pass
            self._all.clear()
        self._local = threading.local()
        if self.identity is not None:
            # Closing the last connection to the database removes its -wal and -shm: not a replacement.
            self.identity.next_companion_check = float("inf")


@dataclass
class _Job:
    call: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    queued: float  # time.monotonic() when it was asked for


def _settle(jobs: list[_Job], outcomes: list[Any]) -> None:
    for job, outcome in zip(jobs, outcomes, strict=True):
        if job.future.done():  # the request went away meanwhile
            continue
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


class _BatchThread:
    """One thread that takes whatever jobs are queued, runs them as one batch, and wakes each waiting
    event loop once per batch (not once per job)."""

    def __init__(self, run_batch: Callable[[list[Callable[[Connection], Any]], float], list[Any]], name: str) -> None:
        self.run_batch = run_batch
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < BATCH_MAX:
                try:
                    more = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.jobs.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                outcomes = self.run_batch([j.call for j in batch], batch[0].queued)
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
                outcomes = [exc] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, tuple[list[_Job], list[Any]]] = {}
            for j, outcome in zip(batch, outcomes, strict=True):
                jobs, results = by_loop.setdefault(j.loop, ([], []))
                jobs.append(j)
                results.append(outcome)
            for loop, (jobs, results) in by_loop.items():
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_settle, jobs, results)

    async def submit(self, call: Callable[[Connection], T]) -> T:
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.jobs.put(_Job(call, future, loop, time.monotonic()))
        return await future

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join()


class AsyncStore:
    """Store calls off the event loop: one group-committing writer thread and one batching reader thread.

    A write's future resolves only after the COMMIT that holds its changes, so a 2xx still means durable.
    Reads queued together run in one read transaction (one snapshot, at least as new as when they queued).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._writer = _BatchThread(lambda jobs, since: store.write_batch(jobs, since=since), "mcs-write")
        self._reader = _BatchThread(lambda jobs, since: store.read_batch(jobs), "mcs-read")

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._writer.submit(lambda conn: fn(conn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._reader.submit(lambda conn: fn(conn, *args, **kwargs))

    def shutdown(self) -> None:
        """Finish queued work and stop the threads; the store's connections stay open for its owner."""
        self._writer.stop()
        self._reader.stop()

    def close(self) -> None:
        self.shutdown()
        self.store.close()
