"""The api process's connections (issue 10, item 13): a client that stops sending half-way through a
request is dropped after MCS_API_READ_TIMEOUT, long polls still answer, and the listen backlog is the
configured one. The real `mcs api` process on loopback."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import free_ports
from tests.polling import wait_until

READ_TIMEOUT = 3.0  # seconds, small so the test is quick (keep-alive and long polls: 1 s)
GIVE_UP = 15.0  # seconds a socket waits for the server to close it before the test fails
ADMIN = "conn-admin-token"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    [port] = free_ports(1)
    folder = Path(tmp_path_factory.mktemp("conn"))
    env = os.environ | {
        "MCS_DB": str(folder / "mcs.db"),
        "MCS_HOST": "127.0.0.1",
        "MCS_PORT": str(port),
        "MCS_ADMIN_TOKEN": ADMIN,
        "MCS_API_READ_TIMEOUT": str(READ_TIMEOUT),
        "MCS_API_BACKLOG": "1500",
    }
    log = (folder / "api.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mcs", "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _healthy(port), timeout=30, what="the api to answer /healthz")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` (whatever it sent first); fails if it never does."""
    started = time.monotonic()
    sock.settimeout(GIVE_UP)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept a silent, half-sent request open for {GIVE_UP} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize(
    "half",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow",  # stopped in the headers
        b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + ADMIN.encode() + b'\r\nContent-Length: 100\r\n\r\n{"type": ',  # in the body
        b"",  # connected, sent nothing
        # answered before its body was read (no body schema), then silent
        b"POST /v1/tasks/nope/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
    ],
    ids=["headers", "body", "nothing", "unread-body"],
)
def test_a_half_sent_request_is_dropped_after_the_read_timeout(api, half):
    with socket.create_connection(api, timeout=5) as sock:
        sock.sendall(half)
        closed_after(sock)
    # and nothing half-sent was stored
    tasks = httpx.get(f"http://{api[0]}:{api[1]}/v1/tasks", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert tasks["tasks"] == []


def test_a_long_poll_longer_than_the_read_timeout_still_answers(api):
    base = f"http://{api[0]}:{api[1]}"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = httpx.post(f"{base}/v1/agents", headers=admin, json={"name": "poller"}).json()
    agent = {"X-Agent-ID": "poller", "X-Agent-Secret": created["secret"]}
    with httpx.Client(base_url=base, headers=agent, timeout=GIVE_UP) as client:
        for _ in range(2):  # back to back on one kept-alive connection, as an agent's loop does
            response = client.post("/v1/tasks/claim", json={"wait": 30})
            assert response.status_code == 204  # an empty answer to come back for, not a dropped connection
        assert client.get("/healthz").status_code == 200


def test_the_listen_backlog_is_the_configured_one(api):
    """ss shows a listening socket's backlog as Send-Q (capped by net.core.somaxconn)."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: the backlog cannot be read")
    out = subprocess.run(["ss", "-ltnH", f"sport = :{api[1]}"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"ss is not usable here: {out.stderr.strip()}")
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    [line] = out.stdout.strip().splitlines()
    assert int(line.split()[2]) == min(1500, somaxconn)


def test_a_slowloris_trickling_its_headers_is_dropped(api):
    """A byte every 0.3 s keeps the read timeout from firing; the keep-alive timer, started when the
    connection opened and not reset by bytes, closes it anyway."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    with socket.create_connection(api, timeout=5) as sock:
        deadline = time.monotonic() + GIVE_UP
        for byte in request:
            if time.monotonic() > deadline:
                pytest.fail(f"the server kept a trickling connection open for {GIVE_UP} s")
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                return  # closed
            ready, _, _ = select.select([sock], [], [], 0.3)
            if ready:
                try:
                    if sock.recv(4096) == b"":
                        return  # closed
                except ConnectionResetError:
                    return
        pytest.fail("the whole trickled request was read without the connection being closed")
