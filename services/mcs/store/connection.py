"""Opening connections with the pragmas every MCS connection must have, and running write transactions.

The SQLite library comes from pysqlite3 (bundling a current SQLite) through sqlite-utils' own choice of
module; the stdlib build on many distributions is older than 3.51.3 and has the WAL-reset bug that hits
exactly our shape (several processes writing and checkpointing one WAL database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils.utils import sqlite3

from mcs.errors import SqliteTooOld, StoreError

MIN_SQLITE = (3, 51, 3)
BUSY_TIMEOUT_MS = 5000

Connection = Any  # pysqlite3 or sqlite3 Connection; both share the DB-API shape
T = TypeVar("T")

DatabaseError = sqlite3.DatabaseError
IntegrityError = sqlite3.IntegrityError


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
    path.parent.mkdir(parents=True, exist_ok=True)
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
        raise StoreError(f"cannot open {path}: {exc}") from exc
    return conn


@contextmanager
def immediate(conn: Connection) -> Iterator[Connection]:
    """One short write transaction: BEGIN IMMEDIATE takes the write lock up front, so it never upgrades."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def in_write(conn: Connection, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(conn, ...) in one BEGIN IMMEDIATE transaction, translating driver errors at the boundary."""
    try:
        with immediate(conn):
            return fn(conn, *args, **kwargs)
    except sqlite3.Error as exc:
        raise StoreError(f"database error: {exc}") from exc


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
