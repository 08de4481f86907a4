"""Opening connections with the pragmas every MCS connection must have, and running write transactions.

The SQLite library comes from pysqlite3 (bundling a current SQLite) when installed, the same choice of
module sqlite-utils makes; the stdlib build on many distributions is older than 3.51.3 and has the
WAL-reset bug that hits exactly our shape (several processes writing and checkpointing one WAL database).
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

try:  # pysqlite3 when installed, as sqlite-utils chooses (its Database wraps our connections in migrations)
    sqlite3: Any = importlib.import_module("pysqlite3")
except ImportError:  # not through sqlite_utils.utils: that imports all of sqlite-utils (about 3 MiB a process)
    sqlite3 = importlib.import_module("sqlite3")

from mcs import effects, metrics
from mcs.engines.sqlite.tx import SqliteTx
from mcs.errors import DatabaseReplaced, DiskFull, SqliteTooOld, StoreBusy, StoreError

log = logging.getLogger("mcs.engines.sqlite")
SLOW_WRITE = 0.1  # seconds: a write transaction that held the writer lock longer is logged (what, work vs commit)

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
        mode = _switch_to_wal(conn)
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: could not switch to WAL (journal_mode is {mode}); is it on a network disk?")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        if isinstance(translate(exc, path.parent), DiskFull):
            raise DiskFull() from exc
        raise StoreError(f"cannot open {path}: {exc}") from exc
    return conn


def _switch_to_wal(conn: Connection) -> str:
    """PRAGMA journal_mode = WAL, tried again while another process holds a lock on a file still in
    rollback mode: switching needs an exclusive lock, and SQLite answers "database is locked" at once,
    without its busy handler, when waiting could deadlock (several processes opening a new database at the
    same time: compose's first start). Bounded by BUSY_TIMEOUT_MS, like every other wait for a lock."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def writer_lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-writelock")


def _is_busy(exc: Exception) -> bool:
    """Whether a driver error is SQLite's SQLITE_BUSY (its write lock stayed taken past busy_timeout)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
    return "database is locked" in str(exc)


def translate(exc: Exception, folder: Path | None = None) -> StoreError:
    """A driver or OS error as the StoreError the api can answer with (never the SQL in its text):
    DiskFull (507) when the disk is full, whatever wrote (SQLITE_FULL, ENOSPC, or a disk I/O error, as
    growing the -shm file gives, on a disk with next to no room left in `folder`); StoreBusy when another
    writer held SQLite's lock past busy_timeout; otherwise a StoreError saying only that the database failed."""
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
    if _is_busy(exc):
        metrics.write_lock_timeouts.inc()
        return StoreBusy(
            f"the database is locked by another writer (waited {BUSY_TIMEOUT_MS / 1000:g} s); try again shortly"
        )
    return StoreError(f"database error: {exc}")


COMPANION_CHECK_INTERVAL = 1.0  # seconds between checks of the -wal and -shm beside the database


def _dev_ino(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot stat {path}: {exc.strerror}") from exc
    return st.st_dev, st.st_ino


class FileIdentity:
    """Which file the database path named when this process opened it, by device and inode.

    Deleting the files (`rm data/mcs.db*`) or moving another database into place leaves every open
    connection writing the old inode, which nobody will ever read again: each write transaction checks,
    before BEGIN and again after COMMIT, that the path still names that file, so no write is acknowledged
    into a ghost. A stat costs a few microseconds next to a commit's fsync. Once it fails it stays failed:
    the process must restart to open the file now at the path (`lost` says so to its loops).

    The loops' own checks (about once a second) also look at `-wal` and `-shm`: while this process has
    a connection open SQLite never removes them, so one deleted or replaced under it (a "clean-up" of
    stale-looking files) means the processes no longer share one log and index; they restart too.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dev_ino = _dev_ino(path)
        self.companions: dict[str, tuple[int, int]] = {}  # "-wal"/"-shm" -> identity, once seen
        self.next_companion_check = 0.0  # time.monotonic()
        self.lost: str | None = None  # what happened, once the path was seen to name another file (or none)

    def same_file(self, *, companions: bool = True, now: float | None = None) -> bool:
        """Whether the path still names the file opened (remembering the answer once it is no); with
        `companions`, also its -wal and -shm, at most once per COMPANION_CHECK_INTERVAL."""
        if self.lost is None:
            current = _dev_ino(self.path)
            if current != self.dev_ino:
                self.lost = f"{self.path} was {'deleted' if current is None else 'replaced by another file'}"
            elif companions:
                now = time.monotonic() if now is None else now
                if now >= self.next_companion_check:
                    self.next_companion_check = now + COMPANION_CHECK_INTERVAL
                    self._check_companions()
        return self.lost is None

    def _check_companions(self) -> None:
        for suffix in ("-wal", "-shm"):
            path = self.path.with_name(self.path.name + suffix)
            current = _dev_ino(path)
            known = self.companions.get(suffix)
            if known is None:
                if current is not None:  # SQLite makes them at the first transaction in WAL mode
                    self.companions[suffix] = current
            elif current != known:
                self.lost = f"{path} was {'deleted' if current is None else 'replaced by another file'}"
                return

    def check(self, *, companions: bool = True) -> None:
        if not self.same_file(companions=companions):
            raise DatabaseReplaced(
                f"the database file {self.lost} while this process had it open; nothing is stored "
                "there any more, and the process restarts on the file now at the path"
            )


class WriterLock:
    """Queues MCS's writers, across processes, on an flock of a file beside the database.

    SQLite's busy handler sleeps 1, 2, 5, 10 ... ms between tries, so a writer waiting on another
    process oversleeps a lock that came free long ago; under load that, not the work, set the pace.
    Writers take this kernel lock first (the kernel wakes the next waiter the moment it is released, no
    polling) and then BEGIN IMMEDIATE, which then almost never waits. `busy_timeout` stays as the safety
    net for writers that are not MCS (the sqlite3 shell). The flock is held only around one short
    transaction and the kernel drops it if its process dies.

    A process frozen while holding it (SIGSTOP, a debugger) must not stall every writer for as long as it
    stays frozen, so a wait ends after `timeout` seconds with StoreBusy. Linux has no timed flock and
    polling with LOCK_NB cost about 2 ms of CPU per task in bench/, so: one non-blocking try (the lock is
    free almost always), and only when it is taken a dedicated waiter thread blocks in flock while the
    caller waits on a lock handed over with a timeout. A wait given up on is released by the waiter the
    moment it gets the lock. (A signal cannot interrupt the flock instead: off the main thread Python
    retries the call after EINTR, PEP 475.) One WriterLock serves one thread, as Store arranges.
    """

    def __init__(self, db_path: Path, *, timeout: float, identity: FileIdentity | None = None) -> None:
        self.path = writer_lock_path(db_path)
        self.timeout = timeout
        self.identity = identity
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull() from exc
            raise StoreError(f"cannot open {self.path}: {exc.strerror}") from exc
        self._mutex = threading.Lock()  # guards the hand-over between the caller and the waiter
        self._granted = threading.Lock()  # released by the waiter to hand the flock over to the caller
        self._granted.acquire()
        self._requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._waiter: threading.Thread | None = None
        self._waiting = False  # the waiter thread is in (or on its way into) a blocking flock
        self._wanted = False  # the caller still waits for what the waiter is getting
        self._closing = False

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock within `timeout` seconds (default: the lock's own), else raise StoreBusy."""
        if not self._waiting:  # while the waiter is in flock, a try of ours would only look like success
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                metrics.write_lock_acquisitions.inc()
                return True
            except BlockingIOError:
                pass
        return self._acquire_contended(self.timeout if timeout is None else timeout)

    def _acquire_contended(self, timeout: float) -> bool:
        started = time.monotonic()
        with self._mutex:
            self._wanted = True
            if not self._waiting:
                self._waiting = True
                if self._waiter is None:
                    self._waiter = threading.Thread(target=self._wait_loop, name="mcs-writelock", daemon=True)
                    self._waiter.start()
                self._requests.put(True)
        if self._granted.acquire(timeout=max(0.0, timeout)):
            metrics.write_lock_waits.observe(time.monotonic() - started)
            metrics.write_lock_acquisitions.inc()
            return True
        with self._mutex:
            if self._granted.acquire(blocking=False):  # handed over just as the wait ran out
                metrics.write_lock_acquisitions.inc()
                return True
            self._wanted = False  # the waiter releases it as soon as it gets it
        metrics.write_lock_timeouts.inc()
        raise StoreBusy(
            f"another process has held the database's write lock for over {self.timeout:g} s "
            "(is one frozen or stopped?); try again shortly"
        )

    def _wait_loop(self) -> None:
        while self._requests.get():
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            with self._mutex:
                self._waiting = False
                if self._wanted:
                    self._wanted = False
                    self._granted.release()
                    continue
                fcntl.flock(self.fd, fcntl.LOCK_UN)  # the caller gave up meanwhile
                if self._closing:
                    os.close(self.fd)
                    return

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def check_file(self) -> None:
        """Raise DatabaseReplaced if the database path no longer names the file this process opened."""
        if self.identity is not None:
            self.identity.check(companions=False)  # the main file only: this runs twice per transaction

    def close(self) -> None:
        with self._mutex:
            self._closing = True
            if self._waiting:  # the waiter closes the fd when its flock returns; closing it now could
                return  # let it lock or unlock whatever file reuses the number
            if self._waiter is not None:
                self._requests.put(False)
        os.close(self.fd)


@contextmanager
def immediate(conn: Connection, lock: WriterLock | None = None, *, what: str = "write") -> Iterator[Connection]:
    """One short write transaction: BEGIN IMMEDIATE takes the write lock up front, so it never upgrades."""
    held = lock.acquire() if lock is not None else False
    started = committing = time.monotonic()
    try:
        if lock is not None:
            lock.check_file()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            committing = time.monotonic()
            conn.execute("COMMIT")
            if lock is not None:
                lock.check_file()  # deleted meanwhile: the commit went to a ghost, so do not acknowledge it
    finally:
        if held and lock is not None:
            lock.release()
            _held(what, started, committing)


def _held(what: str, started: float, committing: float) -> None:
    """Count how long the writer lock was held; say which write held it long, and whether the work or the
    commit (the fsync, a WAL checkpoint) took the time: every other writer of the mesh waited meanwhile."""
    now = time.monotonic()
    metrics.write_lock_holds.observe(now - started)
    if now - started > SLOW_WRITE:
        log.warning(
            "a write held the database's write lock for %.0f ms",
            (now - started) * 1000,
            extra={
                "action": "slow_write",
                "what": what,
                "work_ms": round((committing - started) * 1000, 1),
                "commit_ms": round((now - committing) * 1000, 1),
            },
        )


def in_write(conn: Connection, fn: Callable[..., T], *args: Any, lock: WriterLock | None = None, **kwargs: Any) -> T:
    """Run fn(conn, ...) in one BEGIN IMMEDIATE transaction, translating driver errors at the boundary."""
    try:
        with effects.collecting() as noted, immediate(conn, lock, what=getattr(fn, "__qualname__", "write")):
            result = fn(SqliteTx(conn), *args, **kwargs)
    except (sqlite3.Error, OSError) as exc:
        raise translate(exc, lock.path.parent if lock is not None else None) from exc
    metrics.count_transitions(noted)  # committed: now they happened
    return result


def in_write_batch(
    conn: Connection, jobs: list[Callable[[Connection], Any]], lock: WriterLock | None, *, timeout: float | None = None
) -> list[Any]:
    """Group commit: run several jobs in one transaction, each in its own savepoint, and commit once.

    Returns one outcome per job: its result, or the exception it raised (its own changes rolled back,
    the others' kept). If the commit itself fails, every outcome is that failure: nothing was stored.
    `timeout` bounds the wait for the writer lock (default: the lock's own); StoreBusy past it.
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

    held = lock.acquire(timeout) if lock is not None else False
    started = committing = time.monotonic()
    try:
        if lock is not None:
            lock.check_file()
        with effects.collecting() as noted:
            conn.execute("BEGIN IMMEDIATE")
            tx = SqliteTx(conn)
            for job in jobs:
                if not conn.in_transaction:
                    outcomes = lost_with_transaction(outcomes)
                    conn.execute("BEGIN IMMEDIATE")
                conn.execute("SAVEPOINT job")
                mark = len(noted)
                try:
                    outcomes.append(job(tx))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    del noted[mark:]  # its changes are rolled back, so are its counts
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    outcomes.append(translate(exc, folder) if isinstance(exc, sqlite3.Error | OSError) else exc)
            committing = time.monotonic()
            if conn.in_transaction:
                conn.execute("COMMIT")
            else:  # the last job's error ended it: there is nothing to commit
                outcomes = lost_with_transaction(outcomes)
        if lock is not None:
            lock.check_file()  # deleted meanwhile: the commit went to a ghost, so do not acknowledge it
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        failure = translate(exc, folder)
        return [failure for _ in jobs]
    finally:
        if held and lock is not None:
            lock.release()
            _held(f"group commit of {len(jobs)}", started, committing)
    metrics.count_transitions(noted)
    return outcomes


def data_version(conn: Connection) -> int:
    """PRAGMA data_version of this connection: it changes whenever another connection commits."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def in_read(conn: Connection, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(conn, ...) in one read transaction, so multi-query reads see one snapshot."""
    try:
        conn.execute("BEGIN")
        try:
            return fn(SqliteTx(conn), *args, **kwargs)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise translate(exc) from exc


def in_read_batch(conn: Connection, jobs: list[Callable[[Connection], Any]]) -> list[Any]:
    """Several reads in one read transaction; one outcome per job (its result or the exception it raised)."""
    outcomes: list[Any] = []
    try:
        conn.execute("BEGIN")
        tx = SqliteTx(conn)
        for job in jobs:
            try:
                outcomes.append(job(tx))
            except sqlite3.Error as exc:
                outcomes.append(translate(exc))
            except Exception as exc:
                outcomes.append(exc)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        failure = translate(exc)
        return outcomes + [failure] * (len(jobs) - len(outcomes))
    return outcomes
