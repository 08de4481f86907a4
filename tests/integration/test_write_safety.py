"""Writes that cannot be stored safely are refused, never hung and never acknowledged into a lost file:
a writer lock held past MCS_WRITE_LOCK_TIMEOUT (a frozen process) or SQLite's own lock held by a writer
that is not MCS -> StoreBusy; a database file deleted or replaced under the process -> DatabaseReplaced.
The other holders are real processes on the real files."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcs.engines.sqlite.connection import writer_lock_path
from mcs.engines.sqlite.engine import AsyncStore, Store
from mcs.errors import DatabaseReplaced, StoreBusy
from tests.polling import wait_until

pytestmark = pytest.mark.sqlite_only  # the writer lock (flock), a replaced or deleted file, WAL/SHM


def _insert_agent(name: str):
    def job(conn):
        conn.execute(
            "INSERT INTO agents (name, secret_hash, webhook_secret, created_at) VALUES (?, 'h', 'whsec_x', 0)", (name,)
        )
        return name

    return job


def _names(path: Path) -> list[str]:
    store = Store(path)
    try:
        return [r[0] for r in store.conn.execute("SELECT name FROM agents ORDER BY name")]
    finally:
        store.close()


HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    from sqlite_utils.utils import sqlite3
    db, mode = sys.argv[1], sys.argv[2]
    if mode in ("flock", "both"):
        fd = os.open(db + "-writelock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
    if mode in ("sqlite", "both"):
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    """
)


@contextmanager
def held_by_another_process(db: Path, mode: str) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the MCS writer flock ("flock"), SQLite's write lock ("sqlite"), or both."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def _flock_free(path: Path) -> bool:
    """Whether nobody holds the writer flock (asked from a fresh open file description, as another process would)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "mcs.db", write_lock_timeout=0.3)
    s.migrate()
    yield s
    s.close()


def test_a_write_behind_a_frozen_holder_of_the_writer_lock_ends_busy_then_succeeds(store):
    with held_by_another_process(store.path, "flock"):
        with pytest.raises(StoreBusy, match="held the database's write lock for over 0.3 s"):
            store.write(_insert_agent("during"))
        with pytest.raises(StoreBusy):  # again, while the first wait's waiter still sits in flock
            store.write(_insert_agent("during-2"))
    # The waiter got the lock once it came free and, nobody wanting it any more, let it go at once.
    wait_until(lambda: _flock_free(writer_lock_path(store.path)), timeout=5, what="the abandoned wait to let go")
    assert store.write(_insert_agent("after")) == "after"
    assert _names(store.path) == ["after"]


def test_a_wait_that_gets_the_lock_in_time_writes(store):
    """The contended path (the waiter thread) hands the lock over when it comes free within the timeout."""
    store.write_lock_timeout = 30.0
    store.writer_lock.timeout = 30.0
    with held_by_another_process(store.path, "flock") as holder:
        result: list[object] = []
        import threading

        def write() -> None:
            try:
                result.append(store.write(_insert_agent("waited")))
            except Exception as exc:  # recorded for the assert below
                result.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        assert holder.stdin is not None
        holder.stdin.close()  # the holder exits: the kernel drops its flock
        writer.join(timeout=20)
    assert result == ["waited"]
    assert _names(store.path) == ["waited"]


def test_sqlite_write_lock_held_by_a_writer_that_is_not_mcs_ends_busy(store):
    """The sqlite3 shell (or any non-MCS writer) holding SQLite's lock: busy_timeout, then StoreBusy."""
    with held_by_another_process(store.path, "sqlite"):
        with pytest.raises(StoreBusy, match="locked by another writer"):
            store.write(_insert_agent("during"))
        outcomes = store.write_batch([_insert_agent("b1"), _insert_agent("b2")])
        assert all(isinstance(o, StoreBusy) for o in outcomes), outcomes
    assert store.write(_insert_agent("after")) == "after"
    assert _names(store.path) == ["after"]


async def test_async_writes_queued_behind_a_frozen_holder_all_answer_busy(store):
    db = AsyncStore(store)
    try:
        with held_by_another_process(store.path, "both"):
            results = await asyncio.gather(
                *(db.write(_insert_agent(f"a{i}")) for i in range(5)), return_exceptions=True
            )
            assert all(isinstance(r, StoreBusy) for r in results), results
            assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM agents").fetchone()[0]) == 0
        assert await db.write(_insert_agent("after")) == "after"
    finally:
        db.shutdown()
    assert _names(store.path) == ["after"]


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-writelock"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def test_a_deleted_database_refuses_writes_and_creates_no_file(store):
    store.write(_insert_agent("before"))
    assert store.same_file()
    _remove_database(store.path)
    with pytest.raises(DatabaseReplaced, match="was deleted"):
        store.write(_insert_agent("ghost"))
    assert not store.same_file() and store.replaced == f"{store.path} was deleted"
    assert not store.path.exists()  # a refused write did not make a fresh file either

    # Another thread of the process needing a connection must not create a fresh file behind the others' back.
    import threading

    errors: list[BaseException] = []

    def read_in_another_thread() -> None:
        try:
            store.read(lambda conn: conn.execute("SELECT 1").fetchone())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assert
            errors.append(exc)

    t = threading.Thread(target=read_in_another_thread)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], DatabaseReplaced)
    assert not store.path.exists()


def test_a_database_replaced_by_another_file_refuses_writes(store, tmp_path):
    other = Store(tmp_path / "other.db")
    other.migrate()
    other.close()
    os.replace(tmp_path / "other.db", store.path)
    with pytest.raises(DatabaseReplaced, match="was replaced by another file"):
        store.write(_insert_agent("ghost"))
    assert _names(store.path) == []


def test_a_write_whose_file_vanished_during_its_transaction_is_not_acknowledged(store):
    """Deleted between BEGIN and COMMIT: the commit went to the old inode, so the caller hears it failed."""

    def insert_then_delete(conn):
        _insert_agent("mid")(conn)
        _remove_database(store.path)
        return "mid"

    with pytest.raises(DatabaseReplaced):
        store.write(insert_then_delete)
    assert store.replaced == f"{store.path} was deleted"


async def test_async_writes_after_the_file_was_deleted_answer_database_replaced(store):
    db = AsyncStore(store)
    try:
        assert await db.write(_insert_agent("before")) == "before"
        _remove_database(store.path)
        results = await asyncio.gather(*(db.write(_insert_agent(f"a{i}")) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, DatabaseReplaced) for r in results), results
    finally:
        db.shutdown()


def test_status_server_healthz_reports_a_deleted_database(store):
    import httpx

    from mcs.process import StatusServer

    status = StatusServer(host="127.0.0.1", port=0, process="dispatcher", alive=lambda: True, store=store).start()
    try:
        url = f"http://127.0.0.1:{status.port}/healthz"
        assert httpx.get(url, timeout=10).json()["status"] == "ok"
        _remove_database(store.path)
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 503 and answer.json()["status"] == "database_replaced"
    finally:
        status.stop()


async def test_api_answers_database_replaced_and_healthz_says_so(mesh):
    assert (await mesh.call("GET", "/healthz")).status_code == 200
    await mesh.submit(type="t", payload={})
    _remove_database(mesh.settings.db)
    response = await mesh.call("POST", "/v1/tasks", who="admin", json={"type": "t", "payload": {}})
    assert response.status_code == 503, await response.get_json()
    assert (await response.get_json())["error"]["code"] == "database_replaced"
    assert int(response.headers["Retry-After"]) >= 1
    health = await mesh.call("GET", "/healthz")
    assert health.status_code == 503 and (await health.get_json())["status"] == "database_replaced"


def test_a_process_that_cannot_take_the_lock_at_start_exits_75_to_be_restarted(store, tmp_path):
    """Not 78 ("restarting will not help"): `mcs up` would stop the whole mesh on that."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {"MCS_DB": str(store.path), "MCS_WRITE_LOCK_TIMEOUT": "0.3", "MCS_DISPATCHER_METRICS_PORT": "0"}
    with held_by_another_process(store.path, "flock"):
        proc = subprocess.run(
            [sys.executable, "-m", "mcs", "dispatcher"], env=env, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 75, proc.stderr
    assert "mcs dispatcher: cannot start now: another process has held the database's write lock" in proc.stderr


def test_a_deleted_wal_or_shm_is_seen_by_the_periodic_check(store):
    """Only `rm mcs.db-wal mcs.db-shm`: the main file is still there, but this process's log and index are
    not the ones a new process would open; the loops' once-a-second check says so, and they restart."""
    store.write(_insert_agent("before"))
    identity = store.identity
    assert identity is not None and identity.same_file(now=0.0)  # remembers the -wal and -shm it sees
    assert set(identity.companions) == {"-wal", "-shm"}
    Path(str(store.path) + "-shm").unlink()
    assert identity.same_file(now=0.5)  # not looked at again within the interval
    assert store.write(_insert_agent("per-write")) == "per-write"  # writes check the main file only
    assert not identity.same_file(now=1.0)
    assert store.replaced == f"{store.path}-shm was deleted"
    with pytest.raises(DatabaseReplaced, match="-shm was deleted"):
        store.write(_insert_agent("after"))


def test_closing_the_last_connection_is_not_a_replaced_database(store):
    """SQLite removes -wal and -shm when the last connection closes: the check made after close (why did
    serving stop?) must not take that for a replacement, or a clean stop would exit 75."""
    store.write(_insert_agent("before"))
    identity = store.identity
    assert identity is not None and identity.same_file(now=0.0) and set(identity.companions) == {"-wal", "-shm"}
    store.close()
    assert not Path(str(store.path) + "-wal").exists()  # what SQLite does on the last close
    assert identity.same_file() and store.replaced is None
