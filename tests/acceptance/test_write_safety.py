"""Faults that used to lose or stall writes, on the real `mcs up`: the database files deleted under the
running processes (every write answered 201 went to a file nobody would read again), and a process frozen
while holding the writer lock (every write hung for as long as it stayed frozen)."""

from __future__ import annotations

import fcntl
import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlite_utils.utils import sqlite3

from .conftest import PROCESSES, Mesh, _proc_stat, running_mesh, uid, wait_until

pytestmark = pytest.mark.acceptance

WRITE_LOCK_TIMEOUT = "1"  # seconds, for these meshes: a frozen holder turns into 503 quickly
HTTP_TIMEOUT = 20.0  # seconds: a write that hangs past this is the defect under test


def _post_task(mesh: Mesh, kind: str, payload: Any, *, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {mesh.admin_token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(
        f"{mesh.url}/v1/tasks", json={"type": kind, "payload": payload}, headers=headers, timeout=HTTP_TIMEOUT
    )


def _get_task(mesh: Mesh, task_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {mesh.admin_token}"}
    return httpx.get(f"{mesh.url}/v1/tasks/{task_id}", headers=headers, timeout=HTTP_TIMEOUT)


def _remove_database_files(db: Path) -> list[str]:
    """`rm data/mcs.db*`, as an operator would."""
    removed = []
    for path in db.parent.glob(db.name + "*"):
        path.unlink()
        removed.append(path.name)
    return removed


# ---------------------------------------------------------------- the database deleted under the mesh


def test_deleted_database_refuses_writes_restarts_every_process_and_loses_nothing_acknowledged(tmp_path):
    root = tmp_path / "mesh"
    kind = f"ghost-{uid()}"
    acknowledged: list[str] = []  # answered 201 after the files were deleted
    answers: Counter[str] = Counter()
    with running_mesh(root, MCS_WRITE_LOCK_TIMEOUT=WRITE_LOCK_TIMEOUT) as mesh:
        before = mesh.admin.submit(kind, {"n": "before"})["id"]
        old = mesh.children()
        removed = _remove_database_files(mesh.db)
        assert "mcs.db" in removed and "mcs.db-wal" in removed

        def restarted_and_taking_writes() -> bool:
            try:
                response = _post_task(mesh, kind, {"n": len(acknowledged)})
            except httpx.TransportError:  # the api is restarting
                answers["no answer"] += 1
                return False
            if response.status_code == 201:
                acknowledged.append(response.json()["id"])
                answers["201"] += 1
            else:
                error = response.json()["error"]
                answers[f"{response.status_code} {error['code']}"] += 1
                assert response.status_code == 503 and "Retry-After" in response.headers, response.text
            current = mesh.children()
            return len(acknowledged) >= 3 and all(current.get(n) not in (None, old[n]) for n in PROCESSES)

        wait_until(restarted_and_taking_writes, timeout=60, what="all four processes restarted, writes answered")
        wait_until(mesh.healthy, timeout=30, what="the restarted processes to answer /healthz")
        print(f"answers after the files were deleted: {dict(answers)}")
        # Each of the four noticed, said so, and exited with 75 (not 78): `mcs up` restarted it.
        log = mesh.log()
        for name in PROCESSES:
            assert re.search(rf'"restart_process" child="{name}" exit_code=75', log), name
        assert "cannot_start" not in log
        for task_id in acknowledged:
            assert _get_task(mesh, task_id).status_code == 200, task_id
        # The operator deleted the database: what it held is gone, and a fresh one was made and migrated.
        assert _get_task(mesh, before).status_code == 404
        after_restart = mesh.admin.submit(kind, {"n": "after"})["id"]
    with running_mesh(root) as again:  # the same data folder, every process started afresh
        ids = {t["id"] for t in again.admin.list_tasks(type=kind, limit=500)["tasks"]}
        assert set(acknowledged) | {after_restart} <= ids, "a write answered 201 was lost"


# ---------------------------------------------------------------- a frozen holder of the writer lock


@contextmanager
def writer_lock_held(db: Path) -> Iterator[None]:
    """Hold MCS's writer flock and SQLite's write lock, as a process frozen mid-transaction does."""
    fd = os.open(str(db) + "-writelock", os.O_RDWR | os.O_CREAT, 0o600)
    conn = sqlite3.connect(str(db), isolation_level=None)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _assert_writes_busy_reads_answer(mesh: Mesh, kind: str, known: str) -> None:
    response = _post_task(mesh, kind, {"n": "during"})  # before the fix: hung until the lock came free
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_busy"
    assert int(response.headers["Retry-After"]) >= 1
    assert _get_task(mesh, known).status_code == 200  # reads do not wait for the writer lock
    assert httpx.get(f"{mesh.url}/healthz", timeout=HTTP_TIMEOUT).status_code == 200


def _wait_completed(mesh: Mesh, task_ids: list[str]) -> None:
    def all_completed() -> bool:
        return all(mesh.admin.get_task(t)["state"] == "completed" for t in task_ids)

    wait_until(all_completed, timeout=30, what="every acknowledged task to complete", interval=0.1)


def _submit_and_complete_all(mesh: Mesh, kind: str, acknowledged: list[str]) -> None:
    acknowledged.append(mesh.admin.submit(kind, {"n": "after"})["id"])
    _wait_completed(mesh, acknowledged)


def test_writer_lock_held_by_a_frozen_holder_answers_503_busy_and_nothing_acknowledged_is_lost(
    mesh_factory, agent_factory
):
    mesh = mesh_factory(MCS_WRITE_LOCK_TIMEOUT=WRITE_LOCK_TIMEOUT)
    kind = f"frozen-{uid()}"
    agent_factory(mesh, capabilities=[kind])
    acknowledged = [mesh.admin.submit(kind, {"n": i})["id"] for i in range(3)]
    _wait_completed(mesh, acknowledged)  # the agent's own calls would meet the held lock too
    with writer_lock_held(mesh.db):
        for _ in range(2):  # a second write waits again, and is answered again
            _assert_writes_busy_reads_answer(mesh, kind, acknowledged[0])
    _submit_and_complete_all(mesh, kind, acknowledged)
    assert "write_lock_timeouts_total" in httpx.get(f"{mesh.url}/metrics", timeout=HTTP_TIMEOUT).text


def _state(pid: int) -> str:
    stat = _proc_stat(pid)
    return stat[1] if stat else "gone"


def _holds_writer_lock(pid: int, lock_file: Path) -> bool:
    """Whether `pid` holds (not waits for) the flock on `lock_file`, per /proc/locks."""
    inode = lock_file.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if int(fields[4]) == pid and int(fields[5].rsplit(":", 1)[1]) == inode:
            return True
    return False


def test_a_real_watchdog_frozen_holding_the_writer_lock_answers_503_busy_then_recovers(mesh_factory, agent_factory):
    """SIGSTOP the real watchdog at a moment it holds the writer lock (it writes every few milliseconds
    here: stop it, look in /proc/locks, let it go on and try again until caught), then write."""
    mesh = mesh_factory(MCS_WRITE_LOCK_TIMEOUT=WRITE_LOCK_TIMEOUT, MCS_WATCHDOG_INTERVAL="0.002")
    kind = f"sigstop-{uid()}"
    agent_factory(mesh, capabilities=[kind])
    acknowledged = [mesh.admin.submit(kind, {"n": i})["id"] for i in range(3)]
    _wait_completed(mesh, acknowledged)  # the agent's own calls would meet the freeze too
    watchdog = mesh.child_pid("watchdog")
    lock_file = Path(str(mesh.db) + "-writelock")

    def frozen_holding_the_lock() -> bool:
        os.kill(watchdog, signal.SIGSTOP)
        wait_until(lambda: _state(watchdog) == "T", timeout=5, what="the watchdog to stop", interval=0.001)
        if _holds_writer_lock(watchdog, lock_file):
            return True
        os.kill(watchdog, signal.SIGCONT)
        return False

    try:
        wait_until(frozen_holding_the_lock, timeout=60, what="the watchdog caught holding the writer lock", interval=0)
        _assert_writes_busy_reads_answer(mesh, kind, acknowledged[0])
    finally:
        os.kill(watchdog, signal.SIGCONT)
    _submit_and_complete_all(mesh, kind, acknowledged)
    assert mesh.children()["watchdog"] == watchdog  # it was frozen, not restarted
