"""Many clients connecting to the api at once: connect time and time to a /healthz answer.

    python bench/connstorm.py                      # 2000 connections, the configured backlog (2048)
    python bench/connstorm.py --compare            # the same with Hypercorn's old backlog (100) first
    python bench/connstorm.py -n 500 --backlog 128

Starts a real `mcs api` (alone, in a temp dir, on a free loopback port), opens N TCP connections at the
same moment from one asyncio process, then sends `GET /healthz` on each. A listen backlog smaller than
the burst makes the kernel drop SYNs, and those clients retry after 1 s, 3 s, 7 s: the max and p99
connect times show it. The client is one thread on epoll (no asyncio), so it measures the kernel and the
server, not its own scheduling. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MAX_CONNECTIONS = 5000  # bounded: this is a loopback bench on a shared machine
CONNECT_GIVE_UP = 30.0  # seconds a single connection may take before it counts as failed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def storm(port: int, n: int) -> list[tuple[float, float] | None]:
    """Start N non-blocking connects back to back, then wait on epoll: connect time is SYN to established
    as the kernel reports it, not the client's own scheduling. Each connection then asks for /healthz."""
    sel = selectors.DefaultSelector()
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    began: dict[socket.socket, float] = {}
    connected: dict[socket.socket, float] = {}
    answered: dict[socket.socket, float] = {}
    received: dict[socket.socket, bytes] = {}
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        began[sock] = time.perf_counter()
        sock.connect_ex(("127.0.0.1", port))
        sel.register(sock, selectors.EVENT_WRITE)
    deadline = time.perf_counter() + CONNECT_GIVE_UP
    while len(answered) < n and time.perf_counter() < deadline:
        for key, _events in sel.select(timeout=1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            now = time.perf_counter()
            if sock not in connected:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    sel.unregister(sock)
                    answered[sock] = float("nan")
                    continue
                connected[sock] = now - began[sock]
                sock.send(request)
                sel.modify(sock, selectors.EVENT_READ)
                continue
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            received[sock] = received.get(sock, b"") + chunk
            if not chunk:
                sel.unregister(sock)
                answered[sock] = now - began[sock]
    sel.close()
    out: list[tuple[float, float] | None] = []
    for sock in began:
        ok = sock in connected and received.get(sock, b"").startswith(b"HTTP/1.1 200")
        out.append((connected[sock], answered[sock]) if ok else None)
        sock.close()
    return out


def run(n: int, backlog: int) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {
            "MCS_DB": str(Path(tmp) / "mcs.db"),
            "MCS_HOST": "127.0.0.1",
            "MCS_PORT": str(port),
            "MCS_ADMIN_TOKEN": "bench",
            "MCS_API_BACKLOG": str(backlog),
        }
        log = (Path(tmp) / "api.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "mcs", "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the api did not start:\n{(Path(tmp) / 'api.log').read_text()[-2000:]}")
                time.sleep(0.1)
            results = storm(port, n)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            log.close()
    done = [r for r in results if r is not None]
    connects = [c for c, _ in done]
    answers = [a for _, a in done]
    return {
        "backlog": backlog,
        "ok": len(done),
        "failed": n - len(done),
        "connect_p50": pct(connects, 50),
        "connect_p99": pct(connects, 99),
        "connect_max": max(connects, default=float("nan")),
        "slow_connects": sum(1 for c in connects if c > 1.0),
        "answer_p50": pct(answers, 50),
        "answer_p99": pct(answers, 99),
        "answer_max": max(answers, default=float("nan")),
    }


def show(n: int, r: dict[str, float]) -> None:
    print(
        f"backlog {r['backlog']:>5.0f}: {r['ok']:.0f}/{n} answered, {r['failed']:.0f} failed; "
        f"connect p50 {r['connect_p50'] * 1000:.1f} ms, p99 {r['connect_p99'] * 1000:.1f} ms, "
        f"max {r['connect_max'] * 1000:.1f} ms, {r['slow_connects']:.0f} over 1 s; "
        f"/healthz answered p50 {r['answer_p50'] * 1000:.0f} ms, p99 {r['answer_p99'] * 1000:.0f} ms, "
        f"max {r['answer_max'] * 1000:.0f} ms"
    )


def main() -> int:
    from mcs.config import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--connections", type=int, default=2000)
    ap.add_argument("--backlog", type=int, default=Settings.api_backlog)
    ap.add_argument("--compare", action="store_true", help="run with Hypercorn's default backlog (100) first")
    args = ap.parse_args()
    n = min(args.connections, MAX_CONNECTIONS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    print(f"{n} simultaneous connections on loopback; net.core.somaxconn = {somaxconn}")
    for backlog in ([100] if args.compare else []) + [args.backlog]:
        show(n, run(n, backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
