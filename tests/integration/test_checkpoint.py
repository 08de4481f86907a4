"""WAL checkpoints run off the write path: a commit never checkpoints (which held the writer lock, so every
writer of the mesh, 120-470 ms at SQLite's default of 1000 pages), the watchdog does, between its sweeps."""

from __future__ import annotations

from pathlib import Path

from mcs.store import Store
from mcs.watchdog import Watchdog

BLOB = b"x" * 4000  # about a page per row


def fill(store: Store, rows: int) -> None:
    for _ in range(rows):
        store.write(lambda conn: conn.execute("INSERT INTO scratch (b) VALUES (?)", (BLOB,)))


def wal_pages(db: Path) -> int:
    """Pages in the WAL now, read from a connection of its own (a PASSIVE checkpoint reports them)."""
    other = Store(db)
    try:
        return other.checkpoint()[0]
    finally:
        other.close()


def test_writers_leave_the_wal_to_the_watchdogs_checkpoint(tmp_path: Path):
    db = tmp_path / "mcs.db"
    store = Store(db)
    store.migrate()
    store.write(lambda conn: conn.execute("CREATE TABLE scratch (b BLOB)"))
    fill(store, 1500)
    # Past SQLite's default of 1000 pages no commit checkpointed: the WAL holds every page written.
    assert (db.parent / "mcs.db-wal").stat().st_size > 1500 * 4096

    Watchdog(store, interval=3600, retry_base=1, retry_max=1)._between_sweeps(1.5)
    store.write(lambda conn: conn.execute("INSERT INTO scratch (b) VALUES (?)", (BLOB,)))
    # Checkpointed by the watchdog: the next commit started the WAL over.
    assert wal_pages(db) < 20
    assert store.read(lambda conn: conn.execute("SELECT count(*) FROM scratch").fetchone()[0]) == 1501
    store.close()


def test_a_checkpoint_copies_every_committed_page(tmp_path: Path):
    store = Store(tmp_path / "mcs.db")
    store.migrate()
    store.write(lambda conn: conn.execute("CREATE TABLE scratch (b BLOB)"))
    fill(store, 50)
    in_wal, done = store.checkpoint()
    assert in_wal >= 50 and done == in_wal
    store.close()
