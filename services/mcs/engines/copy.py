"""`mcs migrate-to-postgres`: copy a SQLite database into an empty PostgreSQL one, then prove the copy.

Refuses, with nothing written, unless the SQLite database has no live process (`running_processes`) and
is fully migrated, and the target holds no MCS data. Then: migrate the target; in ONE transaction,
disable the user triggers of every table (the copied task_counts, memory_usage and event_log rows are
already what the triggers would make), COPY every table in dependency order (tasks by seq, so parents
precede children), re-enable the triggers, and set every identity past the largest id copied (or
SQLite's AUTOINCREMENT high-water mark, so an id is never handed out twice); event ids are kept, so a
resumed event stream goes on where it was. A failure rolls the copy back: the target is left migrated and
empty, and the command can run again.

Verify: per table, count(*) and a SHA-256 over the rows in primary-key order, each value canonicalised in
Python (None, int, repr(float), text as UTF-8) as read from each side. `mcs_meta`'s database_id is not
copied: the PostgreSQL database is another database and keeps the id its migration gave it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcs.errors import McsError, StoreError

COPY_BATCH = 5000  # rows read from SQLite at a time
# Rows not copied (nor compared), with the reason.
SKIPPED_ROWS = {"mcs_meta": "key <> 'database_id'"}  # the target keeps its own database_id


class CopyRefused(McsError):
    """migrate-to-postgres cannot start: nothing was written."""


@dataclass(frozen=True, kw_only=True)
class TableCheck:
    """One table's rows on both sides after the copy."""

    table: str
    source_rows: int
    target_rows: int
    source_sha256: str
    target_sha256: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sha256 == self.target_sha256

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "source_sha256": self.source_sha256,
            "target_sha256": self.target_sha256,
            "ok": self.ok,
        }


@dataclass(frozen=True, kw_only=True)
class CopyReport:
    source: Path
    target: str  # the URL without its password
    applied: list[str]  # migrations applied to the target first
    tables: list[TableCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "target": self.target,
            "applied": self.applied,
            "tables": [t.as_json() for t in self.tables],
            "rows": sum(t.source_rows for t in self.tables),
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
        }


def canonical(value: Any) -> bytes:
    """One value as bytes that say its type, so that 1, 1.0, '1' and NULL all differ."""
    if value is None:
        return b"N"
    if isinstance(value, bool):  # not stored by MCS; never let it pass as an int
        raise StoreError(f"unexpected boolean value {value!r}")
    if isinstance(value, int):
        return b"i%d" % value
    if isinstance(value, float):
        return b"f" + repr(value).encode()
    if isinstance(value, str):
        data = value.encode("utf-8")
        return b"s%d:" % len(data) + data
    if isinstance(value, bytes | memoryview):
        data = bytes(value)
        return b"b%d:" % len(data) + data
    raise StoreError(f"unexpected value of type {type(value).__name__}")


def digest(rows: Iterable[Iterable[Any]]) -> tuple[int, str]:
    """(row count, SHA-256) over rows in the order given."""
    h = hashlib.sha256()
    n = 0
    for row in rows:
        n += 1
        parts = [canonical(v) for v in row]
        h.update(b"R%d|" % len(parts) + b"|".join(parts) + b"\n")
    return n, h.hexdigest()


def _order(description: dict[str, Any]) -> list[str]:
    """Tables so that a table comes after the tables it references (then by name)."""
    tables = description["tables"]
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done or name in path:
            return
        for fk in tables[name]["foreign_keys"]:
            if fk["table"] != name and fk["table"] in tables:
                visit(fk["table"], (*path, name))
        done.append(name)

    for name in sorted(tables):
        visit(name, ())
    return done


def _select(table: str, columns: list[str], pk: list[str]) -> str:
    cols = ", ".join(f'"{c}"' for c in columns)
    where = f" WHERE {SKIPPED_ROWS[table]}" if table in SKIPPED_ROWS else ""
    order = ", ".join(f'"{c}"' for c in pk) or cols
    return f'SELECT {cols} FROM "{table}"{where} ORDER BY {order}'  # noqa: S608 - names from the catalog


def _sqlite_rows(conn: Any, sql: str) -> Iterator[tuple[Any, ...]]:
    cur = conn.execute(sql)
    while batch := cur.fetchmany(COPY_BATCH):
        yield from (tuple(r) for r in batch)


def _open_source(source: Path) -> Any:
    from sqlite_utils.utils import sqlite3  # type: ignore[attr-defined]  # pysqlite3 when installed

    try:
        conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise CopyRefused(f"cannot read {source}: {exc}") from None
    return conn


def _check_source(conn: Any, source: Path, *, now: float) -> None:
    from mcs.engines.sqlite import migrations
    from mcs.engines.sqlite.backup import running_processes

    running = running_processes(source, now=now)
    if running:
        raise CopyRefused(
            f"refusing to copy while MCS runs on {source}: {', '.join(running)}; stop it first "
            "(Ctrl-C on mcs up, or docker compose stop)"
        )
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"tasks", "agents", migrations.MIGRATIONS_TABLE} <= tables:
        raise CopyRefused(f"{source} is not an MCS database")
    pending = migrations.pending(conn)
    if pending:
        raise CopyRefused(
            f"{source} is not fully migrated (pending: {', '.join(pending)}); run `MCS_DB={source} mcs migrate` first"
        )


def _check_target(pg: Any, tables: list[str], shown: str) -> None:
    from mcs.engines.migrations.catalog import TABLE

    present = [t for t in tables if pg.execute("SELECT to_regclass(%s)", (f'"{t}"',)).fetchone()[0] is not None]
    migrated = pg.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0] is not None
    if present and not migrated:  # not ours: our migrations would fail on them, or worse, mix with them
        raise CopyRefused(f"{shown} already has tables named like MCS's ({', '.join(present)}): use an empty database")
    holding = []
    for t in present:
        where = f" WHERE {SKIPPED_ROWS[t]}" if t in SKIPPED_ROWS else ""
        n = int(pg.execute(f'SELECT count(*) FROM "{t}"{where}'.encode()).fetchone()[0])  # noqa: S608
        if n:
            holding.append(f"{t}: {n}")
    if holding:
        raise CopyRefused(f"{shown} already holds MCS data ({', '.join(holding)}): copy into an empty database")


def _writer_lock(source: Path) -> int:
    """Hold the SQLite database's writer lock for the copy: an MCS process starting now waits, then finds
    the database it was given (nothing of the copy changes it)."""
    from mcs.engines.sqlite.connection import writer_lock_path

    try:
        fd = os.open(writer_lock_path(source), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CopyRefused(f"cannot lock {source}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CopyRefused(f"an MCS process is writing to {source}; stop it first") from None
    return fd


def migrate_to_postgres(source: Path, url: str, *, now: float | None = None) -> CopyReport:
    """Copy the SQLite database `source` into the PostgreSQL database at `url`; see the module docstring."""
    import psycopg

    from mcs.engines.migrations import describe
    from mcs.engines.migrations.catalog import apply_postgres
    from mcs.engines.migrations.connection import connect_postgres, reason, redact

    started = time.monotonic()
    now = time.time() if now is None else now
    shown = redact(url)
    if not source.is_file():
        raise CopyRefused(f"no SQLite database at {source}")
    lock = _writer_lock(source)
    sqlite = _open_source(source)
    try:
        _check_source(sqlite, source, now=now)
        schema = describe.comparable(describe.describe(sqlite))
        order = _order(schema)
        with connect_postgres(url) as pg:
            try:
                _check_target(pg, order, shown)
                applied = apply_postgres(pg)
                target = describe.comparable(describe.describe(pg))
                drift = describe.differences(schema, target, names=("sqlite", "postgres"))
                if drift:
                    raise StoreError(f"the two schemas differ after migrating {shown}: {drift[0]}")
                _copy(sqlite, pg, schema, order)
                checks = _verify(sqlite, pg, schema, order)
            except psycopg.Error as exc:
                where = "".join(f" ({note})" for note in getattr(exc, "__notes__", []))
                raise StoreError(f"copy into {shown} failed, nothing was copied: {reason(exc)}{where}") from None
    finally:
        sqlite.close()
        os.close(lock)
    return CopyReport(source=source, target=shown, applied=applied, tables=checks, seconds=time.monotonic() - started)


def _copy(sqlite: Any, pg: Any, schema: dict[str, Any], order: list[str]) -> None:
    tables = schema["tables"]
    high_water = {}
    if sqlite.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        high_water = {str(r[0]): int(r[1]) for r in sqlite.execute("SELECT name, seq FROM sqlite_sequence")}
    sqlite.execute("BEGIN")  # one snapshot of the source for the whole copy
    try:
        with pg.transaction():
            for table in order:
                pg.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER USER'.encode())
            for table in order:
                columns = [c["name"] for c in tables[table]["columns"]]
                rows = _sqlite_rows(sqlite, _select(table, columns, tables[table]["primary_key"]))
                names = ", ".join(f'"{c}"' for c in columns)
                try:
                    with pg.cursor().copy(f'COPY "{table}" ({names}) FROM STDIN'.encode()) as copy:
                        for row in rows:
                            copy.write_row(row)
                except Exception as exc:
                    exc.add_note(f"table {table}")  # which table, for the one-line message
                    raise
            for table in order:
                pg.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER USER'.encode())
            identities = pg.execute(
                "SELECT c.relname, a.attname, pg_get_serial_sequence(quote_ident(c.relname), a.attname)"
                " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND a.attidentity IN ('a', 'd') AND NOT a.attisdropped"
            ).fetchall()
            for table, column, sequence in identities:
                if table not in tables:
                    continue
                top = pg.execute(f'SELECT max("{column}") FROM "{table}"'.encode()).fetchone()[0]  # noqa: S608
                value = max(int(top or 0), high_water.get(str(table), 0))
                if value > 0:
                    pg.execute("SELECT setval(%s, %s, true)", (sequence, value))
    finally:
        sqlite.execute("ROLLBACK")


def verify(source: Path, url: str) -> list[TableCheck]:
    """Compare a SQLite database with a PostgreSQL one, table by table (counts and checksums)."""
    import psycopg

    from mcs.engines.migrations import describe
    from mcs.engines.migrations.connection import connect_postgres, reason, redact

    sqlite = _open_source(source)
    try:
        schema = describe.comparable(describe.describe(sqlite))
        with connect_postgres(url) as pg:
            try:
                return _verify(sqlite, pg, schema, _order(schema))
            except psycopg.Error as exc:
                raise StoreError(f"cannot read {redact(url)}: {reason(exc)}") from None
    finally:
        sqlite.close()


def _verify(sqlite: Any, pg: Any, schema: dict[str, Any], order: list[str]) -> list[TableCheck]:
    checks = []
    for table in order:
        t = schema["tables"][table]
        sql = _select(table, [c["name"] for c in t["columns"]], t["primary_key"])
        n_source, h_source = digest(_sqlite_rows(sqlite, sql))
        with pg.transaction(), pg.cursor(name=f"verify_{table}") as cur:  # server side: rows stream
            cur.itersize = COPY_BATCH
            cur.execute(sql.encode())
            n_target, h_target = digest(cur)
        checks.append(
            TableCheck(
                table=table,
                source_rows=n_source,
                target_rows=n_target,
                source_sha256=h_source,
                target_sha256=h_target,
            )
        )
    return checks
