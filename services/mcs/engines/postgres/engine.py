"""`PostgresEngine`: `mcs.engines.base.Engine` on PostgreSQL (docs/design/engines.md 1, 2.2).

A write is one READ COMMITTED transaction on a pooled connection; the serialisation sites of design 4.1
take their locks through the `Tx`. A job that loses a race (40001, 40P01, `RaceLost`) runs again, at most
MAX_ATTEMPTS times in all, after a jittered pause, so a job must have no side effect outside its
transaction except through `effects` (counted only after COMMIT). A read is one REPEATABLE READ READ
ONLY transaction: its queries see one snapshot, as on SQLite, and it can never fail to serialise.

The database's identity is `mcs_meta.database_id` (migration 0020), read on every new pooled connection:
a connection that finds another id (the database was dropped and re-created, restored, or a failover
reached another cluster) marks the engine replaced, and the process exits and restarts as it does when a
SQLite file is replaced.
"""

from __future__ import annotations

import importlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import PoolTimeout

from mcs import effects, metrics
from mcs.config import Settings
from mcs.engines.base import RaceLost, Tx
from mcs.engines.postgres.errors import RETRIED, is_connection_lost, sqlstate, translate
from mcs.engines.postgres.pool import Pool, read_database_id
from mcs.engines.postgres.tx import PostgresTx
from mcs.errors import DatabaseReplaced, McsError, StoreBusy, StoreError

if TYPE_CHECKING:
    from mcs.engines.postgres.changes import PgChangeFeed

log = logging.getLogger("mcs.engines.postgres")
T = TypeVar("T")

MAX_ATTEMPTS = 5  # runs of one job in all, after serialisation failures, deadlocks, lost races
RETRY_PAUSE = (0.005, 0.05)  # seconds, jittered, between two runs of a job
MIN_SERVER = 150000  # server_version_num: PostgreSQL 15
BEGIN_WRITE = "BEGIN ISOLATION LEVEL READ COMMITTED"
BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


class _InDoubt(Exception):
    """COMMIT itself failed: the transaction may or may not have committed, so it is not run again."""


class PostgresEngine:
    """One process's access to one PostgreSQL database: a pool, the change feed, the identity check."""

    kind: Literal["sqlite", "postgres"] = "postgres"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = Settings.pg_pool_size,
        synchronous: str = Settings.synchronous,
        write_lock_timeout: float = Settings.write_lock_timeout,
        process: str = "mcs",
    ) -> None:
        self._url = url  # never logged nor put in a message: it may carry a password
        self.process = process
        self.write_lock_timeout = write_lock_timeout
        self.pool = Pool(
            url,
            size=pool_size,
            synchronous=synchronous,
            lock_timeout=write_lock_timeout,
            process=process,
            timeout=write_lock_timeout,
        )
        self.database_id: str | None = None  # adopted from the first connection that has one
        self.lost: str | None = None
        self._lock = threading.Lock()
        self._changes: PgChangeFeed | None = None
        try:
            self._check_server()
        except BaseException:
            self.pool.close()
            raise

    @classmethod
    def from_settings(cls, settings: Settings, *, process: str = "mcs") -> PostgresEngine:
        if settings.database_url is None:
            raise McsError("MCS_DATABASE_URL is not set")
        return cls(
            settings.database_url,
            pool_size=settings.pg_pool_size,
            synchronous=settings.synchronous,
            write_lock_timeout=settings.write_lock_timeout,
            process=process,
        )

    def __repr__(self) -> str:
        return f"PostgresEngine(process={self.process!r})"

    # Connections and identity
    def _check_server(self) -> None:
        try:
            with self._borrow(self.write_lock_timeout, check=False) as conn:
                number = int(conn.info.server_version)
        except PoolTimeout:  # nothing connected in time: the server is not there (or refuses us)
            raise StoreError(f"cannot connect to the database server within {self.write_lock_timeout:g} s") from None
        except psycopg.Error as exc:
            raise translate(exc) from exc
        if number < MIN_SERVER:
            raise StoreError(
                f"PostgreSQL {number // 10000}.{number % 10000} is too old: MCS needs PostgreSQL 15 or newer"
            )

    def _identify(self, conn: Any, *, fresh: bool = False) -> None:
        """Raise DatabaseReplaced if this connection's database is not the one this engine opened."""
        known = None if fresh else self.pool.database_ids.get(conn)
        if known is None:  # before migration 0020, or a connection made before it ran: look again
            known = read_database_id(conn)
            self.pool.database_ids[conn] = known
        with self._lock:
            if self.lost is None and self.database_id is None:
                self.database_id = known
            elif self.lost is None and known != self.database_id:
                self.lost = (
                    "the database was dropped and re-created or restored (its database_id changed)"
                    if known is not None
                    else "the database lost its mcs_meta (dropped and re-created empty?)"
                )
                log.error("database replaced under this process", extra={"action": "database_replaced"})
        self.check_file(connect=False)

    @contextmanager
    def _borrow(self, timeout: float, *, check: bool = True) -> Iterator[Any]:
        self.check_file(connect=False)
        conn = self.pool.getconn(timeout=max(0.001, timeout))
        try:
            if check:
                self._identify(conn)
            yield conn
        finally:
            self.pool.putconn(conn)

    def check_file(self, *, connect: bool = False) -> None:
        """Raise DatabaseReplaced once a connection found another database_id (every new pooled connection
        reads it: a dropped database ends every connection, so the next transaction finds out); with
        `connect`, read it now on a borrowed connection (one round trip)."""
        if self.lost is None and connect:
            try:
                with self._borrow(self.write_lock_timeout, check=False) as conn:
                    self._identify(conn, fresh=True)
            except DatabaseReplaced:
                raise
            except psycopg.Error as exc:  # PoolTimeout too
                raise translate(exc) from exc
        if self.lost is not None:
            raise DatabaseReplaced(
                f"{self.lost} while this process had it open; the process restarts on the database now there"
            )

    def check_identity(self) -> None:
        """Read the database_id now and raise DatabaseReplaced if it is not the one this engine opened."""
        self.check_file(connect=True)

    @property
    def replaced(self) -> str | None:
        return self.lost

    def version(self) -> str:
        with self._borrow(self.write_lock_timeout, check=False) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])

    # Migrations (mcs.engines.migrations, written by the migrations piece: imported only when asked)
    def migrate(self) -> list[str]:
        migrations = importlib.import_module("mcs.engines.migrations")
        with self._borrow(self.write_lock_timeout, check=False) as conn:
            try:
                applied: list[str] = migrations.apply_postgres(conn)
            except psycopg.Error as exc:
                raise translate(exc) from exc
            self.pool.database_ids[conn] = None  # 0020 may just have written it: read it again
        return applied

    def pending_migrations(self) -> list[str]:
        migrations = importlib.import_module("mcs.engines.migrations")
        with self._borrow(self.write_lock_timeout, check=False) as conn:
            pending: list[str] = migrations.pending_postgres(conn)
        return pending

    # Transactions
    def _attempt(self, conn: Any, fn: Callable[..., T], args: Any, kwargs: Any, *, read: bool) -> tuple[T, int]:
        tx = PostgresTx(conn, begin=BEGIN_READ if read else BEGIN_WRITE)
        try:
            result = fn(tx, *args, **kwargs)
        except BaseException:
            self._rollback(conn)
            raise
        if conn.pgconn.transaction_status == TransactionStatus.INERROR:
            # The job caught a statement's error (a Duplicate, say) and carried on: PostgreSQL has aborted
            # the transaction, and COMMIT would quietly roll it back. Fail as that statement did.
            self._rollback(conn)
            raise tx.failed or StoreError("a statement failed inside the transaction; nothing was stored")
        if tx.begin is not None:  # the job sent no statement: there is no transaction to end
            return result, 0
        try:
            conn.execute("COMMIT" if read else tx.commit_sql())
        except psycopg.Error as exc:
            self._rollback(conn)
            raise _InDoubt() from exc
        return result, tx.statements + 2  # with BEGIN and COMMIT

    @staticmethod
    def _rollback(conn: Any) -> None:
        if conn.closed:
            return
        if conn.pgconn.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                pass  # the connection broke: the pool replaces it

    def _run(self, fn: Callable[..., T], args: Any, kwargs: Any, *, read: bool, since: float | None) -> T:
        started = time.monotonic() if since is None else since
        connection_lost = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            timeout = self.write_lock_timeout - (time.monotonic() - started)
            if timeout <= 0:
                metrics.write_lock_timeouts.inc()
                raise StoreBusy(
                    f"no database connection came free within {self.write_lock_timeout:g} s; try again shortly"
                )
            try:
                with effects.collecting() as noted, self._borrow(timeout) as conn:
                    result, round_trips = self._attempt(conn, fn, args, kwargs, read=read)
            except RaceLost:
                if attempt == MAX_ATTEMPTS:
                    raise StoreBusy("concurrent writers kept changing the rows this request decides on") from None
                self._pause("race_lost")
                continue
            except _InDoubt as exc:
                raise translate(exc.__cause__ or exc) from exc.__cause__
            except PoolTimeout as exc:
                metrics.write_lock_timeouts.inc()
                if connection_lost:
                    raise StoreError("the database server is not reachable now") from exc
                raise translate(exc) from exc
            except psycopg.Error as exc:
                state = sqlstate(exc)
                if state in RETRIED and attempt < MAX_ATTEMPTS:
                    self._pause("deadlock" if state == "40P01" else "serialization")
                    continue
                if is_connection_lost(exc) and attempt < MAX_ATTEMPTS:
                    # Lost before COMMIT was sent: nothing was stored; a fresh connection may serve.
                    connection_lost = True
                    metrics.db_retries.labels("connection").inc()
                    self.pool.discard_broken()
                    continue
                failure = translate(exc)
                if type(failure) is StoreError:  # not busy, not full: say what PostgreSQL said, in the log only
                    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
                    log.warning("database error %s: %s", state, primary, extra={"action": "database_error"})
                raise failure from exc
            metrics.count_transitions(noted)
            metrics.db_round_trips.labels("read" if read else "write").inc(round_trips)
            return result
        raise StoreBusy("the database kept failing this request; try again shortly")  # pragma: no cover

    @staticmethod
    def _pause(reason: str) -> None:
        metrics.db_retries.labels(reason).inc()
        time.sleep(random.uniform(*RETRY_PAUSE))

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._run(fn, args, kwargs, read=False, since=None)

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._run(fn, args, kwargs, read=True, since=None)

    def write_at(self, since: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`write` for a job asked for at `since` (time.monotonic()): its queueing counts in its timeout."""
        return self._run(fn, args, kwargs, read=False, since=since)

    def read_at(self, since: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._run(fn, args, kwargs, read=True, since=since)

    def write_batch(self, jobs: list[Callable[[Tx], Any]], *, since: float | None = None) -> list[Any]:
        """Each job in its own transaction (PostgreSQL group-commits fsyncs itself); one outcome per job:
        its result or the exception it raised."""
        return [self._outcome(job, read=False, since=since) for job in jobs]

    def read_batch(self, jobs: list[Callable[[Tx], Any]]) -> list[Any]:
        return [self._outcome(job, read=True, since=None) for job in jobs]

    def _outcome(self, job: Callable[[Tx], Any], *, read: bool, since: float | None) -> Any:
        try:
            return self._run(job, (), {}, read=read, since=since)
        except Exception as exc:  # noqa: BLE001 - handed back as the job's outcome
            return exc

    # Wake-ups, health, shutdown
    def changes(self) -> PgChangeFeed:
        with self._lock:
            if self._changes is None:
                from mcs.engines.postgres.changes import PgChangeFeed

                self._changes = PgChangeFeed(self._url, process=self.process)
            return self._changes

    # What the processes ask of SQLite's Store today, so moving them onto this engine is a change of
    # constructor: `data_version` is the change feed's counters (no query), `same_file` the identity.
    def data_version(self) -> int:
        """Changes whenever another transaction committed something a waiter cares about (any topic)."""
        return self.changes().version()

    def sequence_events(self) -> int:
        """Number the committed event_log rows that have no id yet (sequencer.py): a reader of events
        calls this before reading past an id. How many it numbered."""
        from mcs.engines.postgres.sequencer import events_sequence

        return self.write(events_sequence)

    def same_file(self) -> bool:
        """False once a connection found another database_id behind the URL (cheap: no query)."""
        return self.lost is None

    def health(self) -> dict[str, Any]:
        stats = self.pool.stats()
        return {
            "engine": "postgres",
            "pool_size": stats.get("pool_size", 0),
            "pool_available": stats.get("pool_available", 0),
        }

    def close(self) -> None:
        with self._lock:
            changes, self._changes = self._changes, None
        if changes is not None:
            changes.close()
        self.pool.close()


if TYPE_CHECKING:  # mypy checks here that PostgresEngine implements the Engine protocol
    from mcs.engines.base import Engine

    _implements: type[Engine] = PostgresEngine
