"""What each server process loads, started the way `mcs up` and compose start it (`python -m mcs NAME`):
the dispatcher, watchdog and notifier carry no web framework, no API client and no command groups they do
not run. Memory is what a user sees (`ps`, `docker stats`), and every module imported stays resident."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import free_ports

# Runs `python -m mcs NAME` itself and, at a clean exit (SIGTERM), writes the names in sys.modules.
RUN_AND_DUMP = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "mcs"
runpy.run_module("mcs", run_name="__main__", alter_sys=True)
"""

WEB = ("quart", "quart_schema", "hypercorn", "werkzeug", "flask", "pydantic", "h2", "jinja2")
NEVER_IN_WORKERS = (*WEB, "mcs.api", "mcs.client", "mcs.cli.tasks", "mcs.cli.admin", "sqlite_utils", "rich")


def _loaded(name: str, tmp_path: Path) -> set[str]:
    """Start `python -m mcs NAME` on a migrated database, wait until it says it started, stop it with
    SIGTERM, and return the modules it had loaded."""
    api_port, *metrics_ports = free_ports(4)
    env = {
        **os.environ,
        "MCS_DB": str(tmp_path / "mcs.db"),
        "MCS_PORT": str(api_port),
        "MCS_DISPATCHER_METRICS_PORT": str(metrics_ports[0]),
        "MCS_WATCHDOG_METRICS_PORT": str(metrics_ports[1]),
        "MCS_NOTIFIER_METRICS_PORT": str(metrics_ports[2]),
    }
    subprocess.run([sys.executable, "-m", "mcs", "migrate"], env=env, check=True, capture_output=True)
    dump = tmp_path / f"{name}.modules.json"
    log = tmp_path / f"{name}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN_AND_DUMP, str(dump), name], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        try:
            deadline = time.monotonic() + 60
            while "started" not in log.read_text() and "listening" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return set(json.loads(dump.read_text()))


@pytest.mark.parametrize("name", ["dispatcher", "watchdog", "notifier"])
def test_a_worker_process_loads_no_web_framework(name, tmp_path):
    modules = _loaded(name, tmp_path)
    assert f"mcs.{name}" in modules  # it really ran
    assert sorted(m for m in modules if m.split(".")[0] in NEVER_IN_WORKERS or m in NEVER_IN_WORKERS) == []


def test_the_api_loads_no_client_or_command_groups(tmp_path):
    modules = _loaded("api", tmp_path)
    assert "quart" in modules  # it really ran
    assert sorted(m for m in modules if m in ("mcs.client", "mcs.cli.tasks", "mcs.cli.admin", "rich")) == []
