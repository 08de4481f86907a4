"""psycopg's errors as the StoreErrors the api answers with (docs/design/engines.md 1, row 8).

A message never carries the SQL, the parameters, or the server's connection text (which names the host
and user, and behind a URL may hold a password): only the SQLSTATE and a sentence of ours.
"""

from __future__ import annotations

from mcs.errors import DiskFull, McsError, StoreBusy, StoreError, Unprocessable

SERIALIZATION_FAILURE = "40001"
DEADLOCK = "40P01"
RETRIED = frozenset({SERIALIZATION_FAILURE, DEADLOCK})  # Engine.write runs the job again on these

DISK_FULL = "53100"
BUSY = {
    "53200": "the database server is out of memory",
    "53300": "the database server has too many connections",
    "55P03": "a row or lock stayed taken past MCS_WRITE_LOCK_TIMEOUT",
    "57014": "a statement ran past its time limit",
    SERIALIZATION_FAILURE: "concurrent writers kept conflicting",
    DEADLOCK: "concurrent writers kept deadlocking",
}
UNAVAILABLE = {"57P01", "57P02", "57P03", "25006"}  # shutdowns, cannot connect now, a read-only standby


def sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_connection_lost(exc: BaseException) -> bool:
    """Whether the connection (not the statement) failed: class 08, a server shutdown, or no SQLSTATE at all
    from psycopg's OperationalError (libpq saw the socket close)."""
    state = sqlstate(exc)
    if state is not None:
        return state.startswith("08") or state in UNAVAILABLE
    try:
        import psycopg
    except ImportError:  # pragma: no cover - only called with psycopg loaded
        return False
    return isinstance(exc, psycopg.OperationalError)


# A value the request carried that PostgreSQL cannot store: the request's fault, never an outage to retry.
# psycopg refuses NUL in text itself (a DataError without SQLSTATE); the server: 22021 (bad byte for the
# encoding), 22P05 (untranslatable character), 22003 (a number out of its column's range).
BAD_VALUE = {"22021", "22P05", "22003"}


def translate(exc: BaseException) -> McsError:
    """A driver error as DiskFull (507), StoreBusy (503 database_busy), StoreError (503), or Unprocessable
    (422 bad_value) for a value PostgreSQL cannot store (a NUL character in text, a number out of range)."""
    if isinstance(exc, McsError):
        return exc
    if type(exc).__name__ == "PoolTimeout":  # psycopg_pool's (an OperationalError): not imported here
        return StoreBusy("all of this process's database connections stayed busy; try again shortly")
    state = sqlstate(exc)
    if state in BAD_VALUE or (type(exc).__name__ == "DataError" and "NUL" in str(exc)):
        return Unprocessable("a value in this request cannot be stored (a NUL character, or a number out of range)",
                             code="bad_value")  # fmt: skip
    if state == DISK_FULL:
        return DiskFull()
    if state in BUSY:
        return StoreBusy(f"the database is busy: {BUSY[state]} (SQLSTATE {state}); try again shortly")
    if is_connection_lost(exc):
        suffix = f" (SQLSTATE {state})" if state else ""
        return StoreError(f"the database server is not reachable or not accepting writes now{suffix}")
    if state is not None:
        return StoreError(f"database error (SQLSTATE {state})")
    return StoreError(f"database error ({type(exc).__name__})")
