"""The one list of schema migrations, each with its SQLite side and its PostgreSQL side (design, section 3).

SQLite keeps the numbered functions of `mcs.engines.sqlite.migrations` (existing databases have their names in
`_sqlite_migrations`) and applies them as before. PostgreSQL starts from a squashed baseline,
`postgres/0019_baseline.sql`, equal to what SQLite's 0001-0019 produce: those nineteen carry `BASELINE`
and are recorded together when it runs. Every later migration is a pair: a SQLite function and a
`postgres/<name>.sql` file. `tests/integration/test_schema.py` checks both sides give one schema.

PostgreSQL runner: a session advisory lock, so several replicas starting at once serialise and the later
ones find nothing pending; then each migration in its own transaction together with its row in
`mcs_migrations` (DDL is transactional: a failed migration leaves nothing behind).

Adding migration N: its SQLite function at the end of `mcs/engines/sqlite/migrations.py` as today; its PostgreSQL
script as `postgres/N_name.sql` (text COLLATE "C", times double precision, integers bigint); a line
`Migration("N_name", sqlite_migrations.mN_name, "N_name.sql")` at the end of MIGRATIONS; then
`python -m mcs.engines.migrations.describe` rewrites schema.json (review its diff).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from mcs.engines.sqlite import migrations as sqlite_migrations
from mcs.errors import StoreError

if TYPE_CHECKING:
    import psycopg
    from sqlite_utils import Database

MIGRATION_SET = "mcs"  # the set's name in mcs_migrations, as sqlite-utils' migration_set on SQLite
TABLE = "mcs_migrations"  # PostgreSQL's record of the migrations applied
LOCK_KEY = 0x6D63735F6D6967  # pg_advisory_lock key of migrators ("mcs_mig"): one at a time per database


class _Baseline:
    """Marks a migration PostgreSQL gets from the squashed baseline file."""

    file = "0019_baseline.sql"

    def __repr__(self) -> str:
        return "BASELINE"


BASELINE: Final = _Baseline()


@dataclass(frozen=True)
class Migration:
    """One migration: its name, its SQLite function, and its PostgreSQL script (a file in postgres/)."""

    name: str
    sqlite: Callable[[Database], None]
    postgres: str | _Baseline


def _sqlite_side(name: str) -> Callable[[Database], None]:
    fn: Callable[[Database], None] = getattr(sqlite_migrations, f"m{name}")
    return fn


_BASELINE_NAMES = [
    "0001_core",
    "0002_agent_concurrency",
    "0003_outbox_task_index",
    "0004_memory",
    "0005_agent_notify_host",
    "0006_agent_grants",
    "0007_retention",
    "0008_quotas",
    "0009_schedules",
    "0010_workflows",
    "0011_gates",
    "0012_workflow_retention",
    "0013_event_log",
    "0014_console_sessions",
    "0015_event_log_pruned",
    "0016_claim_on_push",
    "0017_scale",
    "0018_a2a",
    "0019_outbox_pending_by_agent",
]

MIGRATIONS: list[Migration] = [Migration(name, _sqlite_side(name), BASELINE) for name in _BASELINE_NAMES] + [
    Migration("0020_replicas", sqlite_migrations.m0020_replicas, "0020_replicas.sql"),
    Migration("0021_a2a_push_notify", sqlite_migrations.m0021_a2a_push_notify, "0021_a2a_push_notify.sql"),
    Migration("0022_task_counts_slots", sqlite_migrations.m0022_task_counts_slots, "0022_task_counts_slots.sql"),
]


def check(catalog: Sequence[Migration] = MIGRATIONS) -> None:
    """Raise unless the catalog is the SQLite list, in order, each with a PostgreSQL script that exists."""
    names = [m.name for m in catalog]
    if names != sqlite_migrations.migrations.names:
        raise StoreError(f"migration catalog {names} differs from the SQLite list {sqlite_migrations.migrations.names}")
    for m in catalog:
        script = BASELINE.file if isinstance(m.postgres, _Baseline) else m.postgres
        if not script.endswith(".sql") or not _script_path(script).is_file():
            raise StoreError(f"migration {m.name} has no PostgreSQL script ({script})")


def _script_path(file: str) -> resources.abc.Traversable:
    return resources.files("mcs.engines.migrations").joinpath("postgres", file)


def script(file: str) -> str:
    """The text of postgres/<file>."""
    return _script_path(file).read_text(encoding="utf-8")


def _applied(conn: psycopg.Connection[Any]) -> set[str]:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()
    if not exists or not exists[0]:
        return set()
    rows = conn.execute(f"SELECT name FROM {TABLE} WHERE migration_set = %s", (MIGRATION_SET,)).fetchall()  # noqa: S608 - fixed name
    return {str(row[0]) for row in rows}


def _pending(conn: psycopg.Connection[Any], catalog: Sequence[Migration]) -> list[Migration]:
    applied = _applied(conn)
    return [m for m in catalog if m.name not in applied]


def pending_postgres(conn: psycopg.Connection[Any], catalog: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """The names of the migrations this PostgreSQL database lacks, oldest first (two reads, in the caller's
    transaction if it has one open)."""
    return [m.name for m in _pending(conn, catalog)]


def apply_postgres(conn: psycopg.Connection[Any], catalog: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply pending migrations to a PostgreSQL database; return the names applied.

    Runs in autocommit mode (the session lock outlives the migrations' transactions; a transaction the
    caller left open is rolled back first) and gives the connection back in the mode it came in. A
    migration that fails is rolled back whole, its record included, and raised."""
    was_autocommit = conn.autocommit
    if not was_autocommit:
        conn.rollback()
        conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS {TABLE} (migration_set text COLLATE "C" NOT NULL,'
            ' name text COLLATE "C" NOT NULL, applied_at double precision NOT NULL,'
            " PRIMARY KEY (migration_set, name))"
        )
        todo = _pending(conn, catalog)
        base = [m for m in todo if isinstance(m.postgres, _Baseline)]
        if base and len(base) != sum(isinstance(m.postgres, _Baseline) for m in catalog):
            raise StoreError(
                f"this PostgreSQL database has part of the baseline only (missing {', '.join(m.name for m in base)})"
            )
        applied: list[str] = []
        if base:
            _run(conn, BASELINE.file, [m.name for m in base])
            applied += [m.name for m in base]
        for m in todo:
            if isinstance(m.postgres, _Baseline):
                continue
            _run(conn, m.postgres, [m.name])
            applied.append(m.name)
        return applied
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            conn.autocommit = was_autocommit


def _run(conn: psycopg.Connection[Any], file: str, names: list[str]) -> None:
    """One script and its records in one transaction."""
    text = script(file)
    with conn.transaction():
        conn.execute(text.encode())  # several statements: the simple query protocol (no parameters)
        now = time.time()
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (migration_set, name, applied_at) VALUES (%s, %s, %s)",  # noqa: S608
                [(MIGRATION_SET, name, now) for name in names],
            )


def migrate_url(url: str, *, check: bool = False) -> tuple[list[str], str]:
    """`mcs migrate` on PostgreSQL: apply the pending migrations of the database at `url` (with `check`,
    only list them); returns the names and the server's version. Driver errors become one-line StoreErrors."""
    import psycopg

    from mcs.engines.migrations.connection import connect_postgres, reason

    with connect_postgres(url) as conn:
        version = str(conn.info.parameter_status("server_version") or conn.info.server_version)
        try:
            names = pending_postgres(conn) if check else apply_postgres(conn)
        except psycopg.Error as exc:
            raise StoreError(
                f"migrating PostgreSQL failed (nothing of that migration was kept): {reason(exc)}"
            ) from None
    return names, version
