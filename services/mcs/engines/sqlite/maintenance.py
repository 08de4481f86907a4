"""SQLite's own SQL for the maintenance area: overrides of mcs.engines.sql.maintenance where the dialects differ."""

from __future__ import annotations

from typing import ClassVar

from mcs.engines.sql.maintenance import MaintenanceSql, retention_sql

_IDS = "(SELECT value FROM json_each(?))"  # one bound JSON array instead of a variable number of ?s

# Each plan pinned with INDEXED BY (a statement whose index went missing fails instead of scanning).
RETENTION_SQL = retention_sql(
    ix=lambda index: f" INDEXED BY {index}",
    ids=_IDS,
    idem_pick="DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys"
    " INDEXED BY idempotency_expiry WHERE expires_at <= ? LIMIT ?)",
)


class MaintenanceSqlite(MaintenanceSql):
    """INDEXED BY and json_each in the retention statements; EXPLAIN QUERY PLAN for their plans."""

    RETENTION_SQL: ClassVar[dict[str, str]] = RETENTION_SQL

    def retention_query_plans(self) -> dict[str, list[str]]:
        plans: dict[str, list[str]] = {}
        for name, sql in self.RETENTION_SQL.items():
            params = ("[]",) if _IDS in sql else (0,) * sql.count("?")  # statements with _IDS take only that
            plans[name] = [row[3] for row in self.rows("EXPLAIN QUERY PLAN " + sql, params)]
        return plans
