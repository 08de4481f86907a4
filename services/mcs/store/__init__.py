"""The only code that imports sqlite: connections, migrations and the queries behind every state change.

`Store` owns the connections of one process. Sync code (dispatcher, watchdog, CLI) calls `write`/`read`
directly; async code (api, notifier) goes through `AsyncStore`, which runs every write on one writer
thread (so writes from one process never contend with each other in SQLite's busy handler) and reads on a
small pool, each thread with its own connection, never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mcs.store import migrations
from mcs.store.connection import Connection, connect, in_read, in_write, sqlite_version

T = TypeVar("T")

__all__ = ["AsyncStore", "Store", "sqlite_version"]


class Store:
    """Thread-local connections to one database file."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()

    @property
    def conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, synchronous=self.synchronous)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def migrate(self) -> list[str]:
        return migrations.apply(self.conn)

    def pending_migrations(self) -> list[str]:
        return migrations.pending(self.conn)

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return in_write(self.conn, fn, *args, **kwargs)

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return in_read(self.conn, fn, *args, **kwargs)

    def data_version(self) -> int:
        """Changes whenever another connection commits: how a process learns of new work cheaply."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                    pass
            self._all.clear()
        self._local = threading.local()


class AsyncStore:
    """Store calls off the event loop: one writer thread, a few reader threads."""

    def __init__(self, store: Store, *, readers: int = 2) -> None:
        self.store = store
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcs-write")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="mcs-read")

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: self.store.write(fn, *args, **kwargs))

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: self.store.read(fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Stop the threads; the store's connections stay open for whoever owns it."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    def close(self) -> None:
        self.shutdown()
        self.store.close()
