"""Heartbeats of replicas on a real SQLite file: one row per (process, instance), what `mcs check PROCESS`
reads (this instance's row), what `mcs status` shows when a process has several replicas, and how a
restarted replica forgets the row of the process it replaces."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mcs.cli import main
from mcs.cli.status import _status_human
from mcs.engines.sqlite.engine import Store
from mcs.process import Heartbeat
from mcs.state import outbox as outbox_state
from mcs.state import status as status_state

HOST = socket.gethostname()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    path = tmp_path / "data" / "mcs.db"
    monkeypatch.setenv("MCS_DB", str(path))
    monkeypatch.delenv("MCS_INSTANCE", raising=False)
    s = Store(path)
    s.migrate()
    yield s
    s.close()


def beat(store: Store, process: str, instance: str, *, pid: int, age: float) -> None:
    now = time.time()
    store.write(outbox_state.beat, process=process, instance=instance, pid=pid, started_at=now - 900, now=now - age)


def check(process: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", process], env=env)
    return result.exit_code, (result.stdout + result.stderr).strip()


def test_check_reads_this_instances_row(store: Store) -> None:
    assert check("notifier") == (1, "notifier: no heartbeat (it never ran on this database)")
    beat(store, "notifier", "", pid=11, age=2)  # the only replica, as before replicas
    code, said = check("notifier")
    assert code == 0 and said.startswith("notifier ok (heartbeat 2.")
    beat(store, "notifier", "n1", pid=12, age=1)
    beat(store, "notifier", "n2", pid=13, age=400)
    code, said = check("notifier", MCS_INSTANCE="n2")
    assert code == 1 and said == "notifier n2: no heartbeat for 400 s"
    code, said = check("notifier", MCS_INSTANCE="n1")
    assert code == 0 and said.startswith("notifier n1 ok")
    assert check("notifier", MCS_INSTANCE="n3")[0] == 1
    # Without MCS_INSTANCE: the replica on this host (a container's healthcheck runs beside its process).
    beat(store, "notifier", f"{HOST}:4242", pid=4242, age=300)
    code, said = check("notifier")
    assert code == 1 and said == f"notifier {HOST}:4242: no heartbeat for 300 s"


def test_status_lists_every_replica(store: Store) -> None:
    beat(store, "dispatcher", "", pid=10, age=1)
    beat(store, "notifier", "a", pid=11, age=1)
    beat(store, "notifier", "b", pid=12, age=500)
    status = store.read(status_state.read, now=time.time()).to_api()
    got = [(p["name"], p["instance"], p["pid"], p["healthy"]) for p in status["processes"]]
    assert got == [("dispatcher", "", 10, True), ("notifier", "a", 11, True), ("notifier", "b", 12, False)]
    text = _status_human(status)
    lines = [line for line in text.splitlines() if line.startswith("  dispatcher") or line.startswith("  notifier")]
    assert "instance" not in lines[0]  # one replica: as before
    assert lines[1].endswith("ok  instance a") and lines[2].endswith("STALE  instance b")


def test_a_restarted_replica_forgets_the_rows_of_gone_processes_on_its_host(store: Store) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    beat(store, "notifier", "", pid=7, age=30)  # from before replicas
    beat(store, "notifier", f"{HOST}:{dead.pid}", pid=dead.pid, age=30)
    beat(store, "notifier", f"{HOST}:{os.getpid()}0", pid=os.getpid(), age=3)  # alive here: kept
    beat(store, "notifier", "elsewhere:1", pid=1, age=3)  # another host's: not ours to judge
    beat(store, "watchdog", f"{HOST}:{dead.pid}", pid=dead.pid, age=30)  # another process: kept
    heartbeat = Heartbeat(store, "notifier")
    assert heartbeat.instance == f"{HOST}:{os.getpid()}"
    heartbeat.maybe_beat()
    rows = {(b.name, b.instance) for b in store.read(outbox_state.heartbeats)}
    assert rows == {
        ("notifier", f"{HOST}:{os.getpid()}"),
        ("notifier", f"{HOST}:{os.getpid()}0"),
        ("notifier", "elsewhere:1"),
        ("watchdog", f"{HOST}:{dead.pid}"),
    }
    heartbeat.stopped()
    [mine] = [b for b in store.read(outbox_state.heartbeats) if b.instance == heartbeat.instance]
    assert mine.pid == 0
