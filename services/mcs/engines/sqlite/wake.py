"""Waking up when another process commits, without spinning.

Every commit appends to the database's `-wal` file, so an inotify watch on the data folder fires at once.
The event comes when the WAL frames are written, a moment before the commit is visible (fsync, then the
shared-memory index), so the waiter then takes the writers' flock (see `WriterLock`) in shared mode: the
kernel grants it the moment the writer releases its exclusive hold, which is right after COMMIT. Then
PRAGMA data_version (which changes only for other connections' commits) says whether there is anything
new; a spurious wake-up (our own commit, a checkpoint) costs one check. Events stay queued until read, so
a commit that lands while the caller is busy ends its next wait at once. Where inotify is missing (not
Linux), callers check every NO_INOTIFY_POLL seconds; with it, every FALLBACK_POLL seconds as a safety net
(writers that are not MCS do not take the flock).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mcs.engines.sqlite.connection import writer_lock_path

FALLBACK_POLL = 0.05  # seconds between data_version checks when no event arrives
NO_INOTIFY_POLL = 0.001  # seconds between checks where inotify is not available

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_MOVED_TO = 0x00000080


class CommitWatcher:
    """A readable file descriptor that becomes ready when a file in the database's folder changes."""

    def __init__(self, db_path: Path) -> None:
        self.fd: int | None = None
        self.lock_fd = os.open(writer_lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o600)
        if not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            folder = str(db_path.resolve().parent).encode()
            if libc.inotify_add_watch(fd, folder, _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO) < 0:
                os.close(fd)
                return
            self.fd = fd
        except (OSError, AttributeError):
            self.fd = None

    @property
    def poll_interval(self) -> float:
        """How long to wait for an event before checking anyway."""
        return FALLBACK_POLL if self.fd is not None else NO_INOTIFY_POLL

    def drain(self) -> None:
        """Forget the events seen so far."""
        if self.fd is None:
            return
        try:
            while os.read(self.fd, 65536):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def writer_done(self, *, block: bool = True) -> bool:
        """Wait until no MCS writer is mid-transaction (so a commit that woke us is visible). With
        block=False, answer at once whether that is already so."""
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_SH | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        return True

    def wait_until(self, changed: Callable[[], bool], *, deadline: float, stop: Callable[[], bool]) -> None:
        """Return once `changed()` is true, `stop()` is true, or time.time() passes `deadline` (sync
        callers: the dispatcher)."""
        while not stop() and not changed():
            now = time.time()
            if now >= deadline:
                return
            if self.fd is None:
                time.sleep(min(NO_INOTIFY_POLL, deadline - now))
            elif select.select([self.fd], [], [], min(deadline - now, FALLBACK_POLL))[0]:
                self.drain()
                self.writer_done()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        os.close(self.lock_fd)
