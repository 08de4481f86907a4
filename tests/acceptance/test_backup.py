"""`mcs backup` while the real `mcs up` takes a stream of submissions, and `mcs restore` into the stopped
data folder, which `mcs up` then serves."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlite_utils.utils import sqlite3

from mcs.client import Client

from .conftest import Mesh, running_mesh, uid, wait_until

pytestmark = pytest.mark.acceptance

SUBMITTERS = 3  # threads submitting all through the backup
BULK = 300  # tasks of PAD bytes each before the stream starts, so the copy has something to copy
PAD = 4000


def mcs(mesh_env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcs", *args], env=mesh_env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _task_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0] for r in conn.execute("SELECT id FROM tasks")}
    finally:
        conn.close()


def _leave_a_crashed_writers_wal(db: Path) -> None:
    """A process that wrote and died without closing: its frames stay in mcs.db-wal (not checkpointed)."""
    code = (
        "import os, sys; from sqlite_utils.utils import sqlite3;"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        "c.execute('PRAGMA wal_autocheckpoint = 0'); c.execute('CREATE TABLE crashed_writer (x)');"
        "c.execute('INSERT INTO crashed_writer VALUES (1)'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=30)
    assert Path(str(db) + "-wal").stat().st_size > 0


def test_backup_under_load_holds_every_acknowledged_task_and_restore_brings_them_back(tmp_path):
    root = tmp_path / "mesh"
    kind = f"backup-{uid()}"
    backup_path = tmp_path / "backup.db"
    acknowledged: list[tuple[float, str]] = []  # (time.monotonic() once the 201 was in hand, task id)
    errors: list[str] = []
    stop = threading.Event()

    def submit_stream(mesh: Mesh, n: int) -> None:
        with Client(mesh.url, admin_token=mesh.admin_token, timeout=30) as client:
            i = 0
            while not stop.is_set():
                try:
                    task_id = client.submit(kind, {"stream": n, "i": i})["id"]
                except Exception as exc:  # recorded: nothing may fail while a backup runs
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                acknowledged.append((time.monotonic(), task_id))
                i += 1

    with running_mesh(root) as mesh:
        for i in range(BULK):
            acknowledged.append((time.monotonic(), mesh.admin.submit(kind, {"bulk": i, "pad": "x" * PAD})["id"]))
        threads = [threading.Thread(target=submit_stream, args=(mesh, n)) for n in range(SUBMITTERS)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(acknowledged) >= BULK + 60, timeout=30, what="the submission stream to run")
            started = time.monotonic()
            result = mcs(mesh.env, root, "backup", str(backup_path), "--json")
            finished = time.monotonic()
            during = len(acknowledged)
            wait_until(lambda: len(acknowledged) >= during + 30, timeout=30, what="submissions after the backup")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert result.returncode == 0, result.stderr
        assert not errors, errors[:5]
        summary = json.loads(result.stdout)
        assert summary["integrity"] == "ok" and summary["path"] == str(backup_path)
        in_backup = _task_ids(backup_path)
        before = {task_id for at, task_id in acknowledged if at < started}
        while_copying = [task_id for at, task_id in acknowledged if started <= at <= finished]
        print(f"{len(before)} acknowledged before the backup, {len(while_copying)} while it ran")
        assert before <= in_backup, f"{len(before - in_backup)} acknowledged tasks missing from the backup"
        assert summary["tasks"] == len(in_backup)
        everything = {task_id for _, task_id in acknowledged}

        refused = mcs(mesh.env, root, "restore", str(backup_path))
        assert refused.returncode == 1
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "refusing to restore while MCS runs" in refused.stderr and "mcs api (pid" in refused.stderr
        env = mesh.env

    # Stopped. A process that crashed mid-write left frames in the old -wal: restore must not replay them.
    _leave_a_crashed_writers_wal(mesh.db)
    restored = mcs(env, root, "restore", str(backup_path), "--json")
    assert restored.returncode == 0, restored.stderr
    answer = json.loads(restored.stdout)
    assert answer["integrity"] == "ok" and answer["tasks"] == len(in_backup)
    aside = Path(answer["replaced_kept_as"])
    assert aside.name.startswith("mcs.db.before-restore-")
    assert _task_ids(aside) == everything  # the replaced database is kept whole, its WAL folded in
    conn = sqlite3.connect(f"{mesh.db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert "crashed_writer" not in tables  # the stale -wal was removed, not replayed onto the backup

    with running_mesh(root) as again:
        with Client(again.url, admin_token=again.admin_token, timeout=30) as client:
            for task_id in before:
                assert client.get_task(task_id)["type"] == kind
        after_restore = again.admin.submit(kind, {"n": "after restore"})["id"]
        assert again.admin.get_task(after_restore)["state"] in ("queued", "assigned")
