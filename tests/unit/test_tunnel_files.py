"""The tunnel's every incarnation (sidecar, laptop script, systemd unit, launchd plist) carries the
keepalive options the write-up learned the hard way: without them a dead tunnel looks alive."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

TUNNEL = Path(__file__).resolve().parents[2] / "tunnel"
KEEPALIVE = ("ServerAliveInterval=30", "ServerAliveCountMax=3", "ExitOnForwardFailure=yes", "AUTOSSH_GATETIME")


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
    assert plist["EnvironmentVariables"]["AUTOSSH_GATETIME"] == "0"
