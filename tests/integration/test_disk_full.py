"""A full disk (issue 10, item 7): writes answer 507 disk_full, /healthz says so, nothing stored is lost,
and writes work again once space is freed. On a real, really full filesystem: a 2 MiB tmpfs."""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mcs.config import Settings
from mcs.engines.sqlite.engine import Store
from mcs.errors import DiskFull
from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.test_api import error_of
from tests.polling import wait_until

pytestmark = pytest.mark.sqlite_only  # a full disk under the SQLite file (small tmpfs)

CHUNK = 64 * 1024


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("filling a real disk needs a small tmpfs, and mounting one needs root (CI runs as root)")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def settings(small_disk):
    return Settings.from_env(
        {},
        db=small_disk / "mcs.db",
        admin_token=ADMIN_TOKEN,
        synchronous="NORMAL",
        rate_submits=0,
        quota_queued_tasks=0,
        quota_memory_bytes=0,
        disk_min_free_bytes=CHUNK,
    )


def disk_full_count(metrics: bytes) -> float:
    found = re.search(r"^mcs_disk_full_total (\S+)$", metrics.decode(), re.M)
    assert found, "mcs_disk_full_total is not exported"
    return float(found.group(1))


def fill(folder: Path) -> Path:
    """Write a file until the filesystem refuses more; returns it (delete it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (CHUNK, 1):  # big chunks, then the last few bytes one at a time
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.mark.asyncio
async def test_a_full_disk_answers_507_keeps_what_was_stored_and_recovers(mesh, settings):
    a = await mesh.agent("a", ["x"])
    accepted = [(await mesh.submit(who=a, type="x", payload={"n": i}))["id"] for i in range(5)]
    await mesh.ok("PUT", "/v1/memory/mesh/before", who=a, json={"value": "kept"})
    assert (await mesh.ok("GET", "/healthz"))["status"] == "ok"

    full_before = disk_full_count(await (await mesh.client.get("/metrics")).get_data())
    filler = fill(settings.data_dir)
    health = await mesh.call("GET", "/healthz")
    assert health.status_code == 503 and (await health.get_json())["status"] == "disk_full"

    # the WAL may still have room for a little: every submit is stored (201) or refused as disk_full
    refused = None
    for i in range(100):
        response = await mesh.call("POST", "/v1/tasks", who=a, json={"type": "x", "payload": "p" * 20_000 + str(i)})
        if response.status_code == 201:
            accepted.append((await response.get_json())["id"])
            continue
        refused = response
        break
    assert refused is not None, "100 submits of 20 KB fitted on a full 2 MiB disk"
    assert await error_of(refused) == (507, "disk_full")
    put = await mesh.call("PUT", "/v1/memory/mesh/big", who=a, json={"value": "v" * 100_000})
    assert await error_of(put) == (507, "disk_full")
    bulk = await mesh.call("POST", "/v1/memory/mesh/_bulk", who=a, json={"put": [{"key": "b", "value": "v" * 100_000}]})
    assert await error_of(bulk) == (507, "disk_full")
    assert disk_full_count(await (await mesh.client.get("/metrics")).get_data()) - full_before == 3

    # reads go on, and show everything acknowledged
    listed = await mesh.ok("GET", "/v1/tasks?limit=500", who="admin")
    assert sorted(t["id"] for t in listed["tasks"]) == sorted(accepted)
    assert (await mesh.ok("GET", "/v1/memory/mesh/before", who=a))["value"] == "kept"

    filler.unlink()
    assert (await mesh.ok("GET", "/healthz"))["status"] == "ok"
    accepted.append((await mesh.submit(who=a, type="x", payload="after"))["id"])
    await mesh.ok("PUT", "/v1/memory/mesh/big", who=a, json={"value": "v" * 100_000})

    fresh = Store(settings.db)  # what a restarted process would see
    try:
        assert fresh.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in fresh.conn.execute("SELECT id FROM tasks")}
        assert stored == set(accepted)
        keys = {r[0] for r in fresh.conn.execute("SELECT key FROM memory")}
        assert keys == {"before", "big"}
    finally:
        fresh.close()


def mcs_up(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MCS_ADMIN_TOKEN"} | {"MCS_DB": str(folder / "mcs.db")}
    return subprocess.run(
        [sys.executable, "-m", "mcs", "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("database", ["new", "existing"])
def test_starting_on_a_full_disk_is_one_line_and_leaves_no_empty_token_file(small_disk, database):
    if database == "existing":
        Store(small_disk / "mcs.db").migrate()
    filler = fill(small_disk)
    started = mcs_up(small_disk)
    assert started.returncode == 78, started.stderr
    said = started.stderr.replace(str(small_disk), "DATA")  # the folder's name holds "full" already
    assert len(said.strip().splitlines()) == 1, said
    assert "disk holding the database is full" in said or "no space left on the disk" in said, said
    assert not (small_disk / "admin-token").exists()
    filler.unlink()
    assert not (small_disk / "admin-token").exists()


def test_group_commit_on_a_full_disk_reports_every_job_truthfully(small_disk):
    """One batch (the api's group commit): a job whose outcome is a result is stored, every other one
    is DiskFull and is not, whichever job ran out of room and whatever SQLite rolled back with it."""
    store = Store(small_disk / "mcs.db")
    store.migrate()
    store.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER, pad TEXT)"))
    filler = fill(small_disk)
    os.truncate(filler, os.path.getsize(filler) - 300 * 1024)  # leave about 300 KB
    sizes = [10, 1_500_000, 10, 200_000, 10, 10]

    def job(n: int, size: int):
        return lambda conn: conn.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * size)).rowcount

    try:
        outcomes = store.write_batch([job(n, size) for n, size in enumerate(sizes)])
        outcomes += store.write_batch([job(n, size) for n, size in enumerate(sizes, start=len(sizes))][:2])
        assert any(isinstance(o, DiskFull) for o in outcomes)
        assert all(o == 1 or isinstance(o, DiskFull) for o in outcomes), outcomes
        filler.unlink()
        stored = {r[0] for r in store.read(lambda conn: conn.execute("SELECT n FROM t").fetchall())}
        assert stored == {n for n, o in enumerate(outcomes) if o == 1}
        assert store.write(job(99, 10)) == 1  # and writes work again
    finally:
        store.close()


def test_the_api_healthcheck_says_disk_full(small_disk, tmp_path):
    """`mcs check api` (the compose healthcheck) against a real `mcs api` whose disk fills up."""
    with socket.socket() as probe:  # a port the kernel says is free
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "MCS_DB": str(small_disk / "mcs.db"),
        "MCS_HOST": "127.0.0.1",
        "MCS_PORT": str(port),
        "MCS_ADMIN_TOKEN": ADMIN_TOKEN,
        "MCS_DISK_MIN_FREE_BYTES": str(CHUNK),
    }
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen([sys.executable, "-m", "mcs", "api"], env=env, stdout=log, stderr=subprocess.STDOUT)

    def check() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mcs", "check", "api"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)

    try:
        wait_until(lambda: check().returncode == 0, timeout=30, what="the api to start")
        filler = fill(small_disk)
        unhealthy = check()
        assert unhealthy.returncode == 1 and "api unhealthy: disk full" in unhealthy.stderr, unhealthy.stderr
        filler.unlink()
        assert check().returncode == 0
    finally:
        api.terminate()
        api.wait(timeout=15)
        log.close()
