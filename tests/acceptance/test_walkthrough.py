"""The README's walkthrough, as a newcomer runs it: `mcs up` with no token set (it makes one), the CLI
creating an agent, the example agent answering webhooks, and `mcs task submit --wait` printing the result."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_ports, wait_until

pytestmark = pytest.mark.acceptance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo_agent.py"


def test_readme_walkthrough_with_a_generated_admin_token(tmp_path):
    api, d, w, n, agent_port = free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")}
    env |= {
        "MCS_PORT": str(api),
        "MCS_DISPATCHER_METRICS_PORT": str(d),
        "MCS_WATCHDOG_METRICS_PORT": str(w),
        "MCS_NOTIFIER_METRICS_PORT": str(n),
        "MCS_URL": f"http://127.0.0.1:{api}",
        "PYTHONUNBUFFERED": "1",
    }
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen([sys.executable, "-m", "mcs", "up"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    agent = None
    try:
        wait_until(lambda: _healthy(env["MCS_URL"]), timeout=30, what="mcs up to answer /healthz")
        token_file = tmp_path / "data" / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert "admin token created in data/admin-token" in (tmp_path / "up.log").read_text()

        def mcs(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "mcs", *args],
                cwd=tmp_path,
                env=env | (extra or {}),
                capture_output=True,
                text=True,
                timeout=60,
            )

        created = mcs("admin", "agent", "create", "echo", "--capability", "echo", "--json")
        assert created.returncode == 0, created.stderr  # the CLI found the token file by itself
        secrets = json.loads(created.stdout)
        agent_env = env | {
            "MCS_AGENT_ID": "echo",
            "MCS_AGENT_SECRET": secrets["secret"],
            "MCS_WEBHOOK_SECRET": secrets["webhook_secret"],
        }
        agent = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--capability", "echo", "--port", str(agent_port)],
            cwd=tmp_path,
            env=agent_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(lambda: "online" in mcs("agent", "list").stdout, timeout=20, what="the example agent online")
        (tmp_path / "review.json").write_text('{"hello": "mesh"}')
        done = mcs("task", "submit", "--type", "echo", "--payload-file", "review.json", "--wait", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"echo": {"hello": "mesh"}, "by": "echo"}
        listed = json.loads(mcs("task", "list", "--json").stdout)["tasks"]
        assert [t["state"] for t in listed] == ["completed"]
        events = mcs("task", "events", listed[0]["id"]).stdout
        for kind in ("submitted", "assigned", "claimed", "completed"):
            assert kind in events
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=10)
            agent.stderr.close()
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=20) == 0
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.05)
        return False
