"""`AsyncPostgres`: the PostgreSQL engine's calls off the event loop, as `AsyncStore`
(mcs.engines.sqlite.engine) for SQLite.

Each job runs as its own transaction on a thread of a bounded pool (MCS_PG_POOL_SIZE threads, one
connection each at most): PostgreSQL group-commits its fsyncs itself, so SQLite's batching is not needed.
A job's wait for a thread counts in its MCS_WRITE_LOCK_TIMEOUT (StoreBusy past it), so a backlog ends in
503s rather than ever-longer waits. A write's future resolves only after its COMMIT: a 2xx still means
durable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mcs.engines.postgres.engine import PostgresEngine

T = TypeVar("T")


class AsyncPostgres:
    """`await db.write(fn, ...)` / `await db.read(fn, ...)` on a PostgresEngine, never on the event loop."""

    def __init__(self, engine: PostgresEngine, *, threads: int | None = None) -> None:
        self.engine = engine
        self.store = engine  # the name AsyncStore callers use for the synchronous side
        workers = threads or engine.pool.size
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mcs-pg")

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        since = time.monotonic()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: self.engine.write_at(since, fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        since = time.monotonic()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, lambda: self.engine.read_at(since, fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Finish queued work and stop the threads; the engine stays open for its owner."""
        self._threads.shutdown(wait=True)

    def close(self) -> None:
        self.shutdown()
        self.engine.close()
