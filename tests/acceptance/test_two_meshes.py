"""Two meshes on one host (issue 11): `mcs up --port --data` twice, neither setting the metrics ports; the
second moves its metrics ports off the first's, both run healthy, and the CLI in a third folder reaches
each through the profiles `mcs up` wrote to the config file. `mcs status` says which agent is unreachable
and which work nobody online serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib

import pytest

from mcs.client import Client

from .conftest import free_ports, wait_until

pytestmark = pytest.mark.acceptance

LAUNCH = (  # `python -m mcs up ARGS` that gets SIGTERM if pytest dies
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM); "
    "os.execv(sys.executable, [sys.executable, '-m', 'mcs', 'up', *sys.argv[1:]])"
)


def test_two_meshes_on_one_host_and_the_cli_finds_each(tmp_path):
    api1, api2, dead = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PYTHONUNBUFFERED": "1",
        "MCS_WATCHDOG_INTERVAL": "0.2",
        "MCS_WEBHOOK_RETRY_BASE": "0.05",
        "MCS_WEBHOOK_RETRY_MAX": "0.2",
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def mcs(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mcs", *args],
            cwd=elsewhere,
            env=env | (extra or {}),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def status(*profile: str) -> dict | None:
        done = mcs(*profile, "status", "--json") if not profile else mcs("status", "--json", *profile)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def all_beating(*profile: str) -> bool:
        s = status(*profile)
        return s is not None and sorted(p["name"] for p in s["processes"] if p["healthy"]) == [
            "dispatcher",
            "notifier",
            "watchdog",
        ]

    meshes, logs = [], []
    try:
        for n, port in ((1, api1), (2, api2)):
            folder = tmp_path / f"mesh{n}"
            folder.mkdir()
            log = open(folder / "up.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            meshes.append(
                subprocess.Popen(
                    [sys.executable, "-c", LAUNCH, "--port", str(port), "--data", str(folder / "data")],
                    cwd=folder,
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
            profile = ("--profile", f"local-{port}")
            wait_until(lambda p=profile: all_beating(*p), timeout=40, what=f"mesh {n}: its three workers beating")

        config = tomllib.loads((tmp_path / "config" / "mcs" / "config.toml").read_text())
        assert config["default_profile"] == f"local-{api1}"  # the first `mcs up` wrote the file
        assert config["profiles"][f"local-{api2}"]["url"] == f"http://127.0.0.1:{api2}"  # the second added itself
        assert config["profiles"][f"local-{api2}"]["token_file"] == str(tmp_path / "mesh2" / "data" / "admin-token")
        up2 = (tmp_path / "mesh2" / "up.log").read_text()
        assert f"added profile 'local-{api2}'" in up2
        # Two meshes cannot both have 9101-9103: the second says where its metrics went (or both moved,
        # when something else on this host holds them).
        assert "metrics on port" in up2 and "is in use" in up2

        # The default profile is mesh 1; MCS_PROFILE picks mesh 2. Each its own agents.
        assert mcs("admin", "agent", "create", "one", "-c", "echo").returncode == 0
        out = elsewhere / "two.env"
        created = mcs(
            "admin", "agent", "create", "two", "-c", "echo", "--out", str(out), extra={"MCS_PROFILE": f"local-{api2}"}
        )
        assert created.returncode == 0, created.stderr
        assert "one" in mcs("agent", "list").stdout and "two" not in mcs("agent", "list").stdout
        assert "two" in mcs("agent", "list", "--profile", f"local-{api2}").stdout

        # Mesh 2: an agent whose notify URL nobody answers, and work for a capability nobody online has.
        lines = [line for line in out.read_text().splitlines() if line and not line.startswith("#")]
        secrets = dict(line.split("=", 1) for line in lines)
        with Client(secrets["MCS_URL"], agent_id="two", agent_secret=secrets["MCS_AGENT_SECRET"]) as two:
            two.register(["echo"], notify_url=f"http://127.0.0.1:{dead}/hook")
        submitted = mcs("task", "submit", "--type", "echo", "--profile", f"local-{api2}")
        assert submitted.returncode == 0 and "warning" not in submitted.stderr  # two is online
        mcs("task", "submit", "--type", "translate", "--profile", f"local-{api2}")

        def unreachable() -> str | None:
            shown = mcs("status", "--profile", f"local-{api2}")
            return shown.stdout if "unreachable" in shown.stdout else None

        text = wait_until(unreachable, timeout=30, what="mcs status to call agent two unreachable")
        assert f"agent two unreachable at http://127.0.0.1:{dead}/hook: " in text
        assert "need translate and no online agent serves it; no agent has it" in text
        assert "queued" in text and "agents: 1 online, 0 offline" in text
    finally:
        for proc in meshes:
            proc.send_signal(signal.SIGINT)
        for proc in meshes:
            assert proc.wait(timeout=20) == 0
        for log in logs:
            log.close()
