"""The egress policy on the real `mcs up`: an agent whose notify URL the policy refuses stops at once with
one line that names the setting, and `MCS_NOTIFY_ALLOW` reaches every process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import uid

pytestmark = pytest.mark.acceptance

DEADLINE = 30.0  # seconds


def run_agent(mesh, *args: str) -> subprocess.CompletedProcess[str]:
    name = f"egress-{uid()}"
    creds = mesh.admin.create_agent(name, ["x"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCS_")} | {
        "MCS_URL": mesh.url,
        "MCS_AGENT_ID": name,
        "MCS_AGENT_SECRET": creds["secret"],
        "MCS_WEBHOOK_SECRET": creds["webhook_secret"],
    }
    return subprocess.run(
        [sys.executable, "-m", "mcs", "agent", "run", "json:dumps", "-c", "x", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def test_a_refused_notify_url_stops_the_agent_with_one_line_naming_the_setting(mesh_factory):
    mesh = mesh_factory(MCS_NOTIFY_ALLOW="cgnat,ula")  # a tailnet only
    laptop = run_agent(mesh)  # the receiver on 127.0.0.1: not in the list
    assert laptop.returncode == 1, laptop.stderr
    assert "notify_url host 127.0.0.1 is a loopback address, not allowed by MCS_NOTIFY_ALLOW" in laptop.stderr
    assert "Traceback" not in laptop.stderr
    metadata = run_agent(mesh, "--notify-url", "http://169.254.169.254/latest/meta-data/")
    assert metadata.returncode == 1
    assert "notify_url host 169.254.169.254 is a cloud metadata address: refused always" in metadata.stderr
