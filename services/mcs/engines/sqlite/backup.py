"""Backups of the live database, and putting one back.

`backup` copies the database with SQLite's online backup API in one step: the copy is the snapshot of one
read transaction, so it holds every commit made before it started (every write answered 2xx by then),
while writers go on (WAL readers do not block them). The copy is written beside its destination, made a
self-contained single file (journal_mode=DELETE), checked with `PRAGMA integrity_check`, and only then
renamed into place, so a backup path never names a half-written or damaged file.

`restore` puts a backup in place of the database while no MCS process runs: it checks the backup first,
keeps the database it replaces aside (`mcs.db.before-restore-<UTC time>`, checkpointed so it is complete),
and removes the old `-wal` and `-shm`, whose frames SQLite would otherwise replay onto the restored file.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.utils import sqlite3  # type: ignore[attr-defined]  # pysqlite3 when installed

from mcs.engines.sqlite import migrations
from mcs.engines.sqlite.connection import Connection, connect, writer_lock_path
from mcs.errors import McsError, StoreError
from mcs.models import STOPPED_PID

RUNNING_IF_BEAT_WITHIN = 60.0  # seconds: a heartbeat this recent means its process may still run


class RestoreRefused(McsError):
    """The backup cannot be restored now."""


@dataclass(frozen=True, kw_only=True)
class DatabaseSummary:
    """What a database file holds, after its integrity check."""

    path: Path
    bytes: int
    tasks: int
    agents: int
    memory_keys: int
    integrity: str  # "ok", else SQLite's first complaints
    migrations: list[str]  # applied, oldest first

    def as_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "tasks": self.tasks,
            "agents": self.agents,
            "memory_keys": self.memory_keys,
            "integrity": self.integrity,
            "migrations": self.migrations,
        }


def _summary(conn: Connection, path: Path) -> DatabaseSummary:
    problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(5)")]
    db = Database(conn, recursive_triggers=False, execute_plugins=False)
    tables = set(db.table_names())
    missing = {"tasks", "agents", "memory"} - tables
    if missing:
        raise StoreError(f"{path} is not an MCS database (no {', '.join(sorted(missing))} table)")

    def count(table: str) -> int:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names

    return DatabaseSummary(
        path=path,
        bytes=path.stat().st_size,
        tasks=count("tasks"),
        agents=count("agents"),
        memory_keys=count("memory"),
        integrity="ok" if problems == ["ok"] else "; ".join(problems),
        migrations=[m.name for m in migrations.migrations.applied(db)],
    )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc_stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def backup(db: Path, dest: Path, *, now: float | None = None) -> DatabaseSummary:
    """Copy the live database `db` to `dest` (a new file, or a folder to put `mcs-<UTC time>.db` in)."""
    now = time.time() if now is None else now
    if not db.is_file():
        raise StoreError(f"no database at {db} (set MCS_DB)")
    if dest.is_dir():
        dest = dest / f"mcs-{_utc_stamp(now)}.db"
    if dest.exists():
        raise StoreError(f"{dest} already exists; give a new file name (a backup never overwrites one)")
    if not dest.parent.is_dir():
        raise StoreError(f"no folder {dest.parent} to write the backup in")
    partial = dest.with_name(dest.name + ".partial")
    try:
        partial.unlink(missing_ok=True)  # left by a backup that was killed
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # it holds secrets' hashes
    except OSError as exc:
        raise StoreError(f"cannot write {partial}: {exc.strerror}") from exc
    source = connect(db)
    try:
        target = sqlite3.connect(str(partial), isolation_level=None)
        try:
            source.backup(target)  # pages=-1: the whole file in one step, one read snapshot
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            summary = _summary(target, partial)
        finally:
            target.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    if summary.integrity != "ok":
        partial.unlink(missing_ok=True)
        raise StoreError(f"the copy of {db} failed its integrity check ({summary.integrity}): the database is damaged")
    try:
        _fsync_file(partial)
        os.replace(partial, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write {dest}: {exc.strerror}") from exc
    return replace(summary, path=dest)


def inspect(path: Path) -> DatabaseSummary:
    """Check a backup file, read-only: integrity, and that it is an MCS database this version can run."""
    if not path.is_file():
        raise StoreError(f"no file at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            summary = _summary(conn, path)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable SQLite database: {exc}") from exc
    known = {m.name for m in migrations.migrations._migrations}
    newer = [name for name in summary.migrations if name not in known]
    if newer:
        raise RestoreRefused(
            f"{path} was written by a newer MCS (migration {newer[0]} is unknown here): upgrade MCS first"
        )
    return summary


def _processes_with_open(paths: list[Path]) -> list[tuple[int, str]]:
    """Other local processes holding one of these files open (from /proc; Linux), as (pid, command)."""
    wanted = set()
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        wanted.add((st.st_dev, st.st_ino))
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    if not wanted or not proc.is_dir():
        return found
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list(os.scandir(f"/proc/{entry.name}/fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(fd.path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in wanted:
                argv = (proc / entry.name / "cmdline").read_bytes().decode(errors="replace").split("\0")
                is_mcs = len(argv) > 3 and argv[1:3] == ["-m", "mcs"]
                found.append((int(entry.name), "mcs " + argv[3] if is_mcs else Path(argv[0]).name or "?"))
                break
    return found


def running_processes(db: Path, *, now: float) -> list[str]:
    """What still uses the database: local processes with it open, and processes (in other containers,
    say) whose heartbeat is recent. A process that stops cleanly marks its heartbeat stopped (pid 0)."""
    local = _processes_with_open([db, db.with_name(db.name + "-wal")])
    running = [f"{cmd} (pid {pid})" for pid, cmd in local]
    if not db.is_file():
        return running
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        rows = conn.execute("SELECT process, pid, beat_at FROM heartbeats").fetchall()
    except sqlite3.Error:
        rows = []  # no heartbeats table yet: nothing ever ran on it
    finally:
        conn.close()
    for process, pid, beat_at in rows:
        age = now - float(beat_at)
        seen_here = (pid, f"mcs {process}") in local  # named already (another container's pids may repeat ours)
        if age < RUNNING_IF_BEAT_WITHIN and pid != STOPPED_PID and not seen_here:
            running.append(f"{process} (heartbeat {max(age, 0):.0f} s ago, pid {pid})")
    return running


def restore(db: Path, source: Path, *, now: float | None = None) -> tuple[DatabaseSummary, Path | None]:
    """Put the backup `source` in place of `db`; returns its summary and where the replaced database went."""
    now = time.time() if now is None else now
    if db.exists() and source.exists() and os.path.samefile(db, source):
        raise RestoreRefused(f"{source} is the database itself")
    summary = inspect(source)
    if summary.integrity != "ok":
        raise RestoreRefused(f"{source} failed its integrity check ({summary.integrity}); nothing was changed")
    running = running_processes(db, now=now)
    if running:
        raise RestoreRefused(
            f"refusing to restore while MCS runs on {db}: {', '.join(running)}; stop it first "
            "(Ctrl-C on mcs up, or docker compose stop)"
        )
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(writer_lock_path(db), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot use the data folder {db.parent}: {exc.strerror}") from exc
    incoming = db.with_name(db.name + ".restoring")
    try:
        try:  # no MCS writer may start while the files change (one starting now waits, then migrates ours)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RestoreRefused(f"an MCS process is writing to {db}; stop it first") from None
        try:  # the copy first: if it fails (a full disk), nothing else has changed
            shutil.copyfile(source, incoming)
            os.chmod(incoming, 0o600)
            _fsync_file(incoming)
        except OSError as exc:
            incoming.unlink(missing_ok=True)
            raise StoreError(f"cannot copy {source} into {db.parent}: {exc.strerror}; nothing was changed") from exc
        aside = _set_aside(db, now) if db.exists() else None
        for suffix in ("-wal", "-shm"):  # the old log and index: SQLite would replay them onto the backup
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        os.replace(incoming, db)
        _fsync_dir(db.parent)
    finally:
        incoming.unlink(missing_ok=True)
        os.close(lock_fd)
    conn = connect(db)  # back to WAL, as every MCS connection has it
    try:
        restored = _summary(conn, db)
    finally:
        conn.close()
    return restored, aside


def _set_aside(db: Path, now: float) -> Path:
    """Checkpoint the current database into its main file (so the file alone is complete) and move it aside."""
    try:
        conn = sqlite3.connect(str(db), isolation_level=None)
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RestoreRefused(f"cannot checkpoint {db} before setting it aside: {exc}; nothing was changed") from exc
    if busy:
        raise RestoreRefused(f"{db} is still in use (its checkpoint could not finish); nothing was changed")
    aside = db.with_name(f"{db.name}.before-restore-{_utc_stamp(now)}")
    os.replace(db, aside)
    return aside
