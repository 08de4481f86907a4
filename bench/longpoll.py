"""Long-polling agents and unrelated commits: how many times the api takes the database's write lock per
commit that gives the waiting agents nothing to do.

    python bench/longpoll.py                 # 8 agents waiting, 200 unrelated writes 20 ms apart: about 10 s
    python bench/longpoll.py --agents 32 --writes 500

A real `mcs api` (no dispatcher: nobody else writes), `--agents` agents without a notify URL each holding a
`POST /v1/tasks/claim {"wait": 30}`, then `--writes` memory puts one after another (each its own commit,
nothing an agent could claim). Reads mcs_write_lock_acquisitions_total from /metrics before and after: the
puts take one each, so anything above 1.0 per write is waiting agents waking into write transactions.
Then one task at a time, as many as agents wait: how long until a waiting agent has each (the submit
request included). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_ports  # noqa: E402


def metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith(name + "_created"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_api(root: Path) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    (port,) = free_ports(1)
    token = secrets.token_hex(8)
    env = dict(os.environ) | {
        "MCS_DB": str(root / "mcs.db"),
        "MCS_HOST": "127.0.0.1",
        "MCS_PORT": str(port),
        "MCS_ADMIN_TOKEN": token,
        "MCS_RATE_SUBMITS": "0",
        "MCS_QUOTA_QUEUED_TASKS": "0",
    }
    proc = subprocess.Popen([sys.executable, "-m", "mcs", "api"], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url, {"Authorization": f"Bearer {token}"}
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("mcs api did not start")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between the unrelated writes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcs-longpoll-") as tmp:
        proc, url, admin = start_api(Path(tmp))
        try:
            with httpx.Client(base_url=url, timeout=60) as c:
                agents = []
                for i in range(args.agents):
                    made = c.post("/v1/agents", json={"name": f"poller{i}", "capabilities": ["lp"]}, headers=admin)
                    who = {"X-Agent-ID": f"poller{i}", "X-Agent-Secret": made.json()["secret"]}
                    c.post("/v1/agents/register", json={"capabilities": ["lp"]}, headers=who).raise_for_status()
                    agents.append(who)
            got: list[tuple[float, str]] = []

            def poll(who: dict[str, str]) -> None:
                with httpx.Client(base_url=url, timeout=60) as mine:
                    r = mine.post("/v1/tasks/claim", json={"wait": 30}, headers=who)
                    if r.status_code == 200:
                        got.append((time.monotonic(), r.json()["id"]))

            threads = [threading.Thread(target=poll, args=(who,), daemon=True) for who in agents]
            for t in threads:
                t.start()
            time.sleep(1.0)  # every poller made its first claim attempt and waits (bench, not a test)
            before = metric(url, "mcs_write_lock_acquisitions_total")
            with httpx.Client(base_url=url, timeout=60) as c:
                started = time.monotonic()
                for i in range(args.writes):
                    c.put(f"/v1/memory/mesh/k{i}", json={"value": i}, headers=admin).raise_for_status()
                    time.sleep(args.interval)  # paced like other agents' heartbeats, not one burst
                elapsed = time.monotonic() - started
                time.sleep(0.5)  # let the last wake-ups finish
                after = metric(url, "mcs_write_lock_acquisitions_total")
                # Then one task at a time, each to a waiting agent, until none waits (so the api stops at once).
                delays = []
                for n in range(1, args.agents + 1):
                    submitted = time.monotonic()
                    c.post("/v1/tasks", json={"type": "lp"}, headers=admin).raise_for_status()
                    deadline = time.monotonic() + 10
                    while len(got) < n and time.monotonic() < deadline:
                        time.sleep(0.0005)
                    if len(got) < n:
                        break
                    delays.append(got[-1][0] - submitted)
            per_write = (after - before) / args.writes
            apart = f"{args.interval * 1000:g} ms apart"
            print(f"agents waiting: {args.agents}; unrelated writes: {args.writes}, {apart}, in {elapsed:.2f} s")
            print(f"write-lock acquisitions {after - before:.0f}: {per_write:.2f} per unrelated write (1: none extra)")
            if delays:
                delays.sort()
                median, worst = delays[len(delays) // 2] * 1000, delays[-1] * 1000
                print(f"task submitted -> claimed by a waiting agent: median {median:.1f} ms, max {worst:.1f} ms")
            if len(delays) < args.agents:
                print(f"only {len(delays)} of {args.agents} tasks reached a waiting agent within 10 s each")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # long polls still held: do not leave the api behind
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
