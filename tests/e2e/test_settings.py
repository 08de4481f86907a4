"""Bad settings fail loudly, in one line, before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, Images, docker


def test_compose_refuses_to_start_without_the_admin_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MCS_ADMIN_TOKEN", "COMPOSE_PROJECT_NAME")}
    env_file = tmp_path / "empty.env"
    env_file.write_text("GRAFANA_ADMIN_PASSWORD=x\n")
    proc = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", str(REPO / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "set MCS_ADMIN_TOKEN in .env" in proc.stderr


def test_compose_builds_one_image_for_the_four_processes_and_never_pulls_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCS_", "COMPOSE_"))}
    env_file = tmp_path / "some.env"
    env_file.write_text("MCS_ADMIN_TOKEN=x\nGRAFANA_ADMIN_PASSWORD=x\n")
    proc = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", str(REPO / "compose.yaml"), "config", "--format",
         "json"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    services = json.loads(proc.stdout)["services"]
    mcs = {name: services[name] for name in ("api", "dispatcher", "watchdog", "notifier")}
    assert {s["image"] for s in mcs.values()} == {"local/mcs-server:latest"}  # one image, a name nobody pulls
    assert [name for name, s in mcs.items() if "build" in s] == ["api"]  # built once
    assert mcs["api"]["pull_policy"] == "build"
    assert {mcs[n]["pull_policy"] for n in ("dispatcher", "watchdog", "notifier")} == {"never"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "set TUNNEL_TARGET to user@host[:port]"),
        ({"TUNNEL_TARGET": "host-without-user"}, "set TUNNEL_FORWARDS"),
        ({"TUNNEL_TARGET": "me@host", "TUNNEL_FORWARDS": "-D 1080"}, "expected -L or -R, got '-D'"),
        ({"TUNNEL_TARGET": "me@host", "TUNNEL_FORWARDS": "-L 8765"}, "'-L 8765' is not [bind:]port:host:hostport"),
        ({"TUNNEL_TARGET": "host", "TUNNEL_FORWARDS": "-L 1:a:1"}, "TUNNEL_TARGET must look like user@host[:port]"),
        ({"TUNNEL_TARGET": "me@host", "TUNNEL_FORWARDS": "-L 1:a:1"}, "cannot read the private key"),
    ],
)
def test_tunnel_sidecar_explains_bad_settings(images: Images, settings: dict[str, str], message: str) -> None:
    env_args = [a for k, v in settings.items() for a in ("-e", f"{k}={v}")]
    proc = docker("run", "--rm", *env_args, images.tunnel, check=False, timeout=60)
    assert proc.returncode == 78, proc.stderr  # EX_CONFIG: restarting will not help
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
