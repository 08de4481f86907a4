"""Opening connections with the pragmas every MCS connection must have, and running write transactions.

The SQLite library comes from pysqlite3 (bundling a current SQLite) through sqlite-utils' own choice of
module; the stdlib build on many distributions is older than 3.51.3 and has the WAL-reset bug that hits
exactly our shape (several processes writing and checkpointing one WAL database).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils.utils import sqlite3  # type: ignore[attr-defined]  # pysqlite3 when installed

from mcs import metrics
from mcs.errors import DiskFull, SqliteTooOld, StoreError
from mcs.store import effects

MIN_SQLITE = (3, 51, 3)
BUSY_TIMEOUT_MS = 5000

Connection = Any  # pysqlite3 or sqlite3 Connection; both share the DB-API shape
T = TypeVar("T")

DatabaseError = sqlite3.DatabaseError
IntegrityError = sqlite3.IntegrityError


SQLITE_IOERR = 10  # primary result codes (extended codes keep them in the low byte)
SQLITE_FULL = 13  # "database or disk is full"
NEARLY_FULL = 256 * 1024  # bytes free under which a disk I/O error is taken for a full disk


def disk_free(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the disk holding `folder` (None if unknown); 0 when
    it has no inode left either, which refuses new files (the -wal, -shm) as surely as no space."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_files > 0 and st.f_favail == 0:
        return 0
    return st.f_bavail * st.f_frsize


def store_error(exc: Exception, folder: Path | None = None) -> StoreError:
    """A driver or OS error as the store reports it: DiskFull (507) when the disk is full, whatever wrote
    (SQLITE_FULL, ENOSPC, or a disk I/O error, as growing the -shm file gives, on a disk with next to no
    room left in `folder`); otherwise a StoreError saying only that the database failed."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return DiskFull()
        return StoreError(f"{exc.filename or 'database'}: {exc.strerror}")
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == SQLITE_FULL or "database or disk is full" in str(exc):
        return DiskFull()
    if primary == SQLITE_IOERR and folder is not None:
        free = disk_free(folder)
        if free is not None and free < NEARLY_FULL:
            return DiskFull()
    return StoreError(f"database error: {exc}")


def sqlite_version() -> str:
    return str(sqlite3.sqlite_version)


def check_sqlite_version() -> None:
    """Refuse to run on a SQLite with the WAL-reset corruption bug."""
    version = tuple(int(part) for part in sqlite_version().split("."))
    if version < MIN_SQLITE:
        raise SqliteTooOld(
            f"SQLite {sqlite_version()} is too old: MCS needs 3.51.3 or newer (older versions can corrupt a "
            "WAL database written by several processes). Install the pysqlite3 wheel: "
            "pip install 'pysqlite3>=0.6.1'"
        )


def connect(path: Path, *, synchronous: str = "FULL") -> Connection:
    """A connection in autocommit mode (we issue BEGIN IMMEDIATE ourselves) with every pragma verified."""
    check_sqlite_version()
    if synchronous not in {"FULL", "NORMAL"}:
        raise StoreError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull() from exc
        raise StoreError(f"cannot create the data folder {path.parent}: {exc.strerror}") from exc
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: could not switch to WAL (journal_mode is {mode}); is it on a network disk?")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        if isinstance(store_error(exc, path.parent), DiskFull):
            raise DiskFull() from exc
        raise StoreError(f"cannot open {path}: {exc}") from exc
    return conn


def writer_lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-writelock")


class WriterLock:
    """Queues MCS's writers, across processes, on an flock of a file beside the database.

    SQLite's busy handler sleeps 1, 2, 5, 10 ... ms between tries, so a writer waiting on another
    process oversleeps a lock that came free long ago; under load that, not the work, set the pace.
    Writers take this kernel lock first (the kernel wakes the next waiter the moment it is released, no
    polling) and then BEGIN IMMEDIATE, which then almost never waits. `busy_timeout` stays as the safety
    net for writers that are not MCS (the sqlite3 shell). The flock is held only around one short
    transaction and the kernel drops it if its process dies.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = writer_lock_path(db_path)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull() from exc
            raise StoreError(f"cannot open {self.path}: {exc.strerror}") from exc

    def acquire(self) -> bool:
        # Blocking, with no timeout: Linux has no timed flock, and polling with LOCK_NB measured about 2 ms
        # more CPU per task in bench/. A holder is always inside one short transaction; if its process
        # dies the kernel drops the lock. A process frozen mid-transaction (SIGSTOP, a debugger) stalls
        # the other writers until it resumes, as it would hold SQLite's own write lock meanwhile anyway.
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)


@contextmanager
def immediate(conn: Connection, lock: WriterLock | None = None) -> Iterator[Connection]:
    """One short write transaction: BEGIN IMMEDIATE takes the write lock up front, so it never upgrades."""
    held = lock.acquire() if lock is not None else False
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
    finally:
        if held and lock is not None:
            lock.release()


def in_write(conn: Connection, fn: Callable[..., T], *args: Any, lock: WriterLock | None = None, **kwargs: Any) -> T:
    """Run fn(conn, ...) in one BEGIN IMMEDIATE transaction, translating driver errors at the boundary."""
    try:
        with effects.collecting() as noted, immediate(conn, lock):
            result = fn(conn, *args, **kwargs)
    except (sqlite3.Error, OSError) as exc:
        raise store_error(exc, lock.path.parent if lock is not None else None) from exc
    metrics.count_transitions(noted)  # committed: now they happened
    return result


def in_write_batch(conn: Connection, jobs: list[Callable[[Connection], Any]], lock: WriterLock | None) -> list[Any]:
    """Group commit: run several jobs in one transaction, each in its own savepoint, and commit once.

    Returns one outcome per job: its result, or the exception it raised (its own changes rolled back,
    the others' kept). If the commit itself fails, every outcome is that failure: nothing was stored.
    """
    outcomes: list[Any] = []
    folder = lock.path.parent if lock is not None else None

    def lost_with_transaction(outcomes: list[Any]) -> list[Any]:
        """An error rolled the whole transaction back (SQLite does for a full disk, for one): the jobs
        before it that had succeeded lost their changes too, and fail as the one that caused it."""
        cause = outcomes[-1] if outcomes else None
        lost = DiskFull() if isinstance(cause, DiskFull) else StoreError("database error: rolled back")
        noted.clear()
        return [lost if not isinstance(o, BaseException) else o for o in outcomes]

    held = lock.acquire() if lock is not None else False
    try:
        with effects.collecting() as noted:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                if not conn.in_transaction:
                    outcomes = lost_with_transaction(outcomes)
                    conn.execute("BEGIN IMMEDIATE")
                conn.execute("SAVEPOINT job")
                mark = len(noted)
                try:
                    outcomes.append(job(conn))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    del noted[mark:]  # its changes are rolled back, so are its counts
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    outcomes.append(store_error(exc, folder) if isinstance(exc, sqlite3.Error | OSError) else exc)
            if conn.in_transaction:
                conn.execute("COMMIT")
            else:  # the last job's error ended it: there is nothing to commit
                outcomes = lost_with_transaction(outcomes)
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        failure = store_error(exc, folder)
        return [failure for _ in jobs]
    finally:
        if held and lock is not None:
            lock.release()
    metrics.count_transitions(noted)
    return outcomes


def in_read(conn: Connection, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(conn, ...) in one read transaction, so multi-query reads see one snapshot."""
    try:
        conn.execute("BEGIN")
        try:
            return fn(conn, *args, **kwargs)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"database error: {exc}") from exc


def in_read_batch(conn: Connection, jobs: list[Callable[[Connection], Any]]) -> list[Any]:
    """Several reads in one read transaction; one outcome per job (its result or the exception it raised)."""
    outcomes: list[Any] = []
    try:
        conn.execute("BEGIN")
        for job in jobs:
            try:
                outcomes.append(job(conn))
            except sqlite3.Error as exc:
                outcomes.append(StoreError(f"database error: {exc}"))
            except Exception as exc:
                outcomes.append(exc)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        failure = StoreError(f"database error: {exc}")
        return outcomes + [failure] * (len(jobs) - len(outcomes))
    return outcomes
