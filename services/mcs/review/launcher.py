"""`mcs review agents`: one command that brings the offline analyzer reviewers online.

With the admin token it creates an agent per analyzer (or, if it exists, rotates its secrets: they are
shown once, so the only way to get working ones again), then runs each as its own
`mcs agent run mcs.review.analyzers:TOOL` process with that agent's credentials in its environment (and
not the admin token). Ctrl-C or SIGTERM stops them all; if one exits on its own, the rest are stopped too.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from mcs.client import Client, McsApiError
from mcs.config import Settings
from mcs.errors import ConfigError
from mcs.review.analyzers import ANALYZERS

STOP_GRACE = 45.0  # seconds the agents get to finish or release their work (their own grace is 30 s)
ONLINE_TIMEOUT = 60.0  # seconds to wait for every agent to register


class LaunchError(Exception):
    """The analyzer agents could not be started."""


@dataclass
class Running:
    tool: str
    name: str
    proc: subprocess.Popen[bytes]


def available_tools(wanted: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(installed, missing) among `wanted` (default: every analyzer)."""
    tools = wanted or list(ANALYZERS)
    unknown = [t for t in tools if t not in ANALYZERS]
    if unknown:
        raise LaunchError(f"unknown analyzer {', '.join(unknown)}; choose from {', '.join(ANALYZERS)}")
    installed = [t for t in tools if importlib.util.find_spec(t) is not None]
    return installed, [t for t in tools if t not in installed]


def credentials(client: Client, name: str, capability: str) -> dict[str, Any]:
    """Fresh secrets for agent `name`: created, or rotated when it already exists."""
    try:
        return dict(client.create_agent(name, [capability]))
    except McsApiError as exc:
        if exc.status == 409:
            return dict(client.rotate_agent(name))
        if exc.status in (401, 403):
            raise LaunchError(
                "creating agents needs the admin token: set MCS_ADMIN_TOKEN, or run this next to the data/ "
                "folder of `mcs up`"
            ) from exc
        raise


def _relay(stream: IO[bytes], prefix: str, out: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        out(f"[{prefix}] {raw.decode(errors='replace').rstrip()}")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(
    client: Client,
    *,
    url: str,
    tools: list[str],
    capability: str,
    prefix: str,
    listen_host: str,
    out: Callable[[str], None],
) -> list[Running]:
    """Create or rotate the agents and start one process each (not yet waiting for them)."""
    try:
        Settings.from_env()  # the agents read their sandbox limits (MCS_REVIEW_*) from this environment
    except ConfigError as exc:
        raise LaunchError(str(exc)) from exc
    running: list[Running] = []
    base_env = {k: v for k, v in os.environ.items() if k not in ("MCS_ADMIN_TOKEN",)}
    try:
        for tool in tools:
            name = f"{prefix}{tool}"
            creds = credentials(client, name, capability)
            env = base_env | {
                "MCS_URL": url,
                "MCS_AGENT_ID": name,
                "MCS_AGENT_SECRET": creds["secret"],
                "MCS_WEBHOOK_SECRET": creds["webhook_secret"],
                "PYTHONUNBUFFERED": "1",
            }
            handler = f"mcs.review.analyzers:{tool}"
            cmd = [sys.executable, "-m", "mcs", "agent", "run", handler, "--capability", capability,
                   "--name", name, "--url", url, "--listen", f"{listen_host}:0"]  # fmt: skip
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads of ours are running yet
            )
            assert proc.stdout is not None
            threading.Thread(target=_relay, args=(proc.stdout, name, out), daemon=True).start()
            running.append(Running(tool, name, proc))
    except BaseException:
        stop(running)
        raise
    return running


def wait_online(client: Client, running: list[Running], *, timeout: float = ONLINE_TIMEOUT) -> None:
    """Return once every agent is online; LaunchError if one exits or the time runs out."""
    deadline = time.monotonic() + timeout
    names = {r.name for r in running}
    while True:
        for r in running:
            if r.proc.poll() is not None:
                raise LaunchError(f"{r.name} exited with code {r.proc.returncode} before it came online")
        online = {a["name"] for a in client.list_agents() if a.get("status") == "online"}
        if names <= online:
            return
        if time.monotonic() > deadline:
            raise LaunchError(f"not online after {timeout:.0f} s: {', '.join(sorted(names - online))}")
        time.sleep(0.2)


def stop(running: list[Running], *, grace: float = STOP_GRACE) -> None:
    """SIGTERM each agent (it finishes or releases its task and goes offline), then SIGKILL stragglers."""
    for r in running:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for r in running:
        try:
            r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()


def supervise(running: list[Running], out: Callable[[str], None]) -> int:
    """Block until SIGINT/SIGTERM (exit 0) or until an agent exits on its own (exit 1); stops them all."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping.wait(0.2):
            dead = [r for r in running if r.proc.poll() is not None]
            if dead:
                out(f"{dead[0].name} exited with code {dead[0].proc.returncode}; stopping the others")
                stop(running)
                return 1
        out("stopping the analyzer agents")
        stop(running)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
