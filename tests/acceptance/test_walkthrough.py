"""The README's walkthrough, as a newcomer runs it: `mcs up` with no token set (it makes one, and writes the
CLI's config file), the CLI creating an agent with its secrets in an env file, the example agent started
from that file answering webhooks, and `mcs task submit --wait` printing the result; the CLI in another
folder finds the mesh through the config file."""

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
        "PYTHONUNBUFFERED": "1",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no MCS_URL: the config file `mcs up` writes says it
    }
    url = f"http://127.0.0.1:{api}"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen([sys.executable, "-m", "mcs", "up"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    agent = None
    try:
        wait_until(lambda: _healthy(url), timeout=30, what="mcs up to answer /healthz")
        token_file = tmp_path / "data" / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        up_log = (tmp_path / "up.log").read_text()
        assert "admin token created in data/admin-token" in up_log
        config = tmp_path / "config" / "mcs" / "config.toml"
        written = f"CLI config written to {config}"  # once the api listens
        wait_until(lambda: written in (tmp_path / "up.log").read_text(), timeout=10, what="mcs up to write the config")

        def mcs(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "mcs", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
            )

        # README: mcs admin agent create echo --capability echo --out echo.env
        created = mcs("admin", "agent", "create", "echo", "--capability", "echo", "--out", "echo.env")
        assert created.returncode == 0, created.stderr  # the CLI found the mesh and its token by itself
        assert created.stdout == "" and "secret" not in created.stderr.replace("secrets written", "")
        assert stat.S_IMODE((tmp_path / "echo.env").stat().st_mode) == 0o600
        # README: set -a; . ./echo.env; set +a; python examples/echo_agent.py --capability echo --port 8765
        agent = subprocess.Popen(
            ["bash", "-c", f'set -a; . ./echo.env; set +a; exec "$0" {EXAMPLE} --capability echo --port {agent_port}',
             sys.executable],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_until(lambda: "online" in mcs("agent", "list").stdout, timeout=20, what="the example agent online")
        (tmp_path / "hello.json").write_text('{"hello": "mesh"}')
        done = mcs("task", "submit", "--type", "echo", "--payload-file", "hello.json", "--wait", "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"echo": {"hello": "mesh"}, "by": "echo"}
        listed = json.loads(mcs("task", "list", "--json").stdout)["tasks"]
        assert [t["state"] for t in listed] == ["completed"]
        events = mcs("task", "events", listed[0]["id"][:8]).stdout  # README: the first 8 characters will do
        for kind in ("submitted", "claimed", "completed"):  # claimed at assignment: the SDK registers claim_on_push
            assert kind in events
        trail = json.loads(mcs("task", "events", listed[0]["id"][:8], "--json").stdout)
        claims = [(e["kind"], e["actor"]) for e in trail if e["kind"] in ("assigned", "claimed")]
        assert claims == [("claimed", "dispatcher")], trail  # queued -> claimed: no `assigned` step
        elsewhere = tmp_path / "elsewhere"  # no data/ folder here: the config file leads to the mesh
        elsewhere.mkdir()
        status = mcs("status", cwd=elsewhere)
        assert status.returncode == 0, status.stderr
        assert "agents: 1 online, 0 offline" in status.stdout and "queue" in status.stdout
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
