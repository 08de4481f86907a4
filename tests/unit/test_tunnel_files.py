"""The tunnel's every incarnation (sidecar, laptop script, systemd unit, launchd plist) carries the
keepalive options the write-up learned the hard way: without them a dead tunnel looks alive."""

from __future__ import annotations

import plistlib
import subprocess
from pathlib import Path

import pytest

TUNNEL = Path(__file__).resolve().parents[2] / "tunnel"
KEEPALIVE = (
    "ServerAliveInterval=30",
    "ServerAliveCountMax=3",
    "ExitOnForwardFailure=yes",
    "AUTOSSH_GATETIME",
    "AUTOSSH_POLL",
)


@pytest.mark.parametrize(
    "path", ["entrypoint.sh", "laptop/mcs-tunnel.sh", "laptop/mcs-tunnel.service", "laptop/com.mcs.tunnel.plist"]
)
def test_every_tunnel_keeps_alive(path: str) -> None:
    text = (TUNNEL / path).read_text()
    missing = [option for option in KEEPALIVE if option not in text]
    assert not missing, f"{path} lacks {missing}"
    assert "-M 0" in text or "<string>-M</string><string>0</string>" in text  # no monitor port


def test_launchd_plist_runs_autossh_and_keeps_it_alive() -> None:
    plist = plistlib.loads((TUNNEL / "laptop" / "com.mcs.tunnel.plist").read_bytes())
    args = plist["ProgramArguments"]
    assert args[0].endswith("/autossh") and "-N" in args and args[-1] == "you@home-server"
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["EnvironmentVariables"] == {"AUTOSSH_GATETIME": "0", "AUTOSSH_POLL": "60"}


def test_the_sidecar_clears_a_stale_control_socket() -> None:
    """ControlMaster=yes would run without a master after a crash left the socket: the check fails forever."""
    text = (TUNNEL / "entrypoint.sh").read_text()
    assert "-o ControlMaster=auto" in text and "ControlMaster=yes" not in text


def test_the_systemd_user_unit_has_no_ordering_it_cannot_honour() -> None:
    """A user manager cannot see network-online.target: such a line would only look like it works."""
    unit = (TUNNEL / "laptop" / "mcs-tunnel.service").read_text()
    directives = [line for line in unit.splitlines() if not line.startswith("#")]
    assert not [line for line in directives if "network-online" in line]
    assert "$MCS_TUNNEL_WEBHOOK" in unit  # the optional -R, empty by default


def _laptop_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run tunnel/laptop/mcs-tunnel.sh with an `autossh` on PATH that prints its arguments and environment."""
    fake = tmp_path / "autossh"
    fake.write_text('#!/bin/sh\necho "GATETIME=$AUTOSSH_GATETIME POLL=$AUTOSSH_POLL"\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    environ = {"PATH": f"{tmp_path}:/usr/bin:/bin", **env}
    script = TUNNEL / "laptop" / "mcs-tunnel.sh"
    return subprocess.run(["sh", str(script)], env=environ, capture_output=True, text=True, timeout=30)


def test_laptop_script_forwards_the_api_and_optionally_the_webhook_port(tmp_path: Path) -> None:
    plain = _laptop_script(tmp_path, MCS_TUNNEL_HOST="me@rendezvous")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0] == "GATETIME=0 POLL=60"
    assert lines[1:] == [
        "-M", "0", "-N", "-p", "22",
        "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3", "-o", "ExitOnForwardFailure=yes",
        "-o", "BatchMode=yes",
        "-L", "127.0.0.1:8080:127.0.0.1:8080",
        "me@rendezvous",
    ]  # fmt: skip

    hooks = _laptop_script(tmp_path, MCS_TUNNEL_HOST="me@rendezvous", MCS_TUNNEL_WEBHOOK_PORT="8765")
    args = hooks.stdout.splitlines()[1:]
    assert args[-5:] == ["-L", "127.0.0.1:8080:127.0.0.1:8080", "-R", "127.0.0.1:8765:127.0.0.1:8765", "me@rendezvous"]

    bound = _laptop_script(tmp_path, MCS_TUNNEL_HOST="me@server", MCS_TUNNEL_API_HOST="100.64.0.7")
    assert "127.0.0.1:8080:100.64.0.7:8080" in bound.stdout.splitlines()  # MCS_BIND set on the server


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MCS_TUNNEL_HOST"),
        ({"MCS_TUNNEL_HOST": "me@rendezvous", "MCS_TUNNEL_WEBHOOK_PORT": "87a5"}, "MCS_TUNNEL_WEBHOOK_PORT"),
    ],
)
def test_laptop_script_refuses_bad_settings_in_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    proc = _laptop_script(tmp_path, **env)
    assert proc.returncode != 0 and proc.stdout == ""  # autossh never ran
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
