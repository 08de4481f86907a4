"""Errors. Every error MCS raises on purpose derives from McsError; its message defaults to its docstring.

McsError
├── ConfigError            a setting is malformed (start-up)
├── SqliteTooOld           the linked SQLite has the WAL-reset bug
├── StoreError             the database failed underneath us (maps to 503, never leaks SQL)
│   ├── StoreBusy              the writer lock was not free in time (503 database_busy, Retry-After)
│   ├── DatabaseReplaced       the database path names another file than the one opened (503)
│   ├── DatabaseUnreachable    the PostgreSQL server did not answer (503; at start: exit to restart)
│   └── DiskFull               the disk holding the database is full (507 disk_full)
└── ApiError               a request the API refuses; each has an HTTP status and a stable code
    ├── BadRequest             400
    ├── Unauthorized           401
    ├── Forbidden              403
    ├── NotFound               404
    ├── Conflict               409
    ├── PreconditionFailed     412
    ├── PayloadTooLarge        413
    ├── Unprocessable          422
    ├── TooManyRequests        429 (with Retry-After)
    │   └── QuotaExceeded          a per-caller rate limit or quota (see mcs.quotas); names which one
    └── ServiceUnavailable     503 (with Retry-After): something MCS needs is not answering now

An error may carry `retry_after` (seconds): the api sends it as the Retry-After header.
"""

from __future__ import annotations


class McsError(Exception):
    """MCS failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(McsError):
    """A setting is not valid."""


class SqliteTooOld(McsError):
    """The SQLite library is older than 3.51.3 and has the WAL-reset corruption bug."""


class StoreError(McsError):
    """The database failed."""

    status, code = 503, "database_unavailable"
    retry_after: float | None = None


class StoreBusy(StoreError):
    """The database is busy (another process holds the write lock); try again shortly."""

    status, code = 503, "database_busy"
    retry_after = 1.0


class DatabaseReplaced(StoreError):
    """The database file was deleted or replaced while this process had it open; it restarts on the new one."""

    status, code = 503, "database_replaced"
    retry_after = 2.0


class DatabaseUnreachable(StoreError):
    """The database server did not answer (down, starting, or out of connections); a process that finds
    this at start exits to be restarted."""

    retry_after = 1.0


class DiskFull(StoreError):
    """The disk holding the database is full: nothing more can be stored until space is freed."""

    status, code = 507, "disk_full"


class ApiError(McsError):
    """The request was refused."""

    status = 400
    code = "bad_request"
    retry_after: float | None = None

    def __init__(
        self, message: str | None = None, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        if code:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after


class BadRequest(ApiError):
    """The request is malformed."""

    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    """Missing or invalid credentials."""

    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    """You may not do that."""

    status, code = 403, "forbidden"


class NotFound(ApiError):
    """No such object."""

    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    """That method does not apply here."""

    status, code = 405, "method_not_allowed"


class Conflict(ApiError):
    """The object is not in a state that allows this."""

    status, code = 409, "conflict"


class PreconditionFailed(ApiError):
    """The object changed since you read it."""

    status, code = 412, "precondition_failed"


class PayloadTooLarge(ApiError):
    """The request body is too large."""

    status, code = 413, "payload_too_large"


class Unprocessable(ApiError):
    """The request is well-formed but its values are not acceptable."""

    status, code = 422, "unprocessable"


class TooManyRequests(ApiError):
    """Slow down."""

    status, code = 429, "too_many_requests"


class ServiceUnavailable(ApiError):
    """Something this request needs is not answering right now; try again."""

    status, code = 503, "unavailable"
    retry_after: float | None = 1.0


class QuotaExceeded(TooManyRequests):
    """A rate limit or quota refused this request."""

    def __init__(self, message: str, *, quota: str, code: str, retry_after: float) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.quota = quota
