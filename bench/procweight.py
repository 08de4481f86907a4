"""Start-up time and memory of each server process: starts a real `mcs up` in a temp dir and reports, per
process, the time from `mcs up`'s start until its /healthz answers (and the CPU time it had used by then),
its memory once started (idle), and its memory right after a load (4 agents completing `--tasks` tasks
from 8 submitters).

    python bench/procweight.py                                       # about 30 s
    PYTHONPATH=/path/to/other/build/services python bench/procweight.py --label before

Memory per process: RSS (VmRSS: what `ps` and `docker stats` show; pages of shared libraries count in
every process that maps them), PSS (shared pages split between the processes sharing them: the four
PSS add up to what the mesh really takes) and peak RSS (VmHWM). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import procinfo
from run import Server, add_push_claim_flag, code_version, run_load, say, start_load


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def memory(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """{process: {rss, pss, peak}} in MiB."""
    return {
        name: {
            "rss": procinfo.status_kib(pid, "VmRSS") / 1024,
            "pss": pss_kib(pid) / 1024,
            "peak": procinfo.status_kib(pid, "VmHWM") / 1024,
        }
        for name, pid in pids.items()
    }


def start_timed(server: Server, timeout: float = 60.0) -> tuple[dict[str, float], dict[str, float]]:
    """Start `mcs up`; seconds from its start until each process's /healthz first answers 200, and the CPU
    seconds each had used by then (its start-up work: imports, settings, migrations; unlike the wall
    time, hardly changed by other work on the machine)."""
    mcs = Path(sys.executable).parent / "mcs"
    cmd = [str(mcs), "up"] if mcs.exists() else [sys.executable, "-m", "mcs", "up"]
    started = time.monotonic()
    with open(server.log, "wb") as log:
        server.proc = subprocess.Popen(cmd, env=server.env, stdout=log, stderr=subprocess.STDOUT, cwd=server.workdir)
    pending = {
        "api": f"{server.url}/healthz",
        "dispatcher": f"http://127.0.0.1:{server.disp_port}/healthz",
        "watchdog": f"http://127.0.0.1:{server.wd_port}/healthz",
        "notifier": f"http://127.0.0.1:{server.notif_port}/healthz",
    }
    ready: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with httpx.Client(timeout=0.5) as client:
        while pending:
            if server.proc.poll() is not None:
                raise RuntimeError(f"mcs up exited with {server.proc.returncode}:\n{server.tail()}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"not healthy after {timeout:.0f} s: {sorted(pending)}\n{server.tail()}")
            for name, url in list(pending.items()):
                try:
                    if client.get(url).status_code == 200:
                        ready[name] = time.monotonic() - started
                        cpu[name] = procinfo.cpu_seconds(procinfo.children(server.proc.pid)[name])
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(0.01)
    server.pids = procinfo.children(server.proc.pid)
    return ready, cpu


def table(ready: dict[str, float], cpu: dict[str, float], idle: dict[str, Any], loaded: dict[str, Any]) -> str:
    rows = [
        "| process | ready after | CPU to ready | RSS idle | PSS idle | RSS after load | PSS after load | peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in procinfo.NAMES:
        i, ld = idle[name], loaded[name]
        rows.append(
            f"| {name} | {ready[name]:.2f} s | {cpu[name]:.2f} s | {i['rss']:.0f} MiB | {i['pss']:.0f} MiB |"
            f" {ld['rss']:.0f} MiB | {ld['pss']:.0f} MiB | {ld['peak']:.0f} MiB |"
        )
    rows.append(
        f"| all four | {max(ready.values()):.2f} s | {sum(cpu.values()):.2f} s |"
        f" {sum(v['rss'] for v in idle.values()):.0f} MiB |"
        f" {sum(v['pss'] for v in idle.values()):.0f} MiB | {sum(v['rss'] for v in loaded.values()):.0f} MiB |"
        f" {sum(v['pss'] for v in loaded.values()):.0f} MiB | {sum(v['peak'] for v in loaded.values()):.0f} MiB |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the load (default 1000)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before the idle reading")
    parser.add_argument("--label", default="this build")
    add_push_claim_flag(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcs-procweight-") as tmp:
        server = Server(Path(tmp), "FULL")
        _, version = code_version(server.env)
        say(f"mcs up from {version}")
        helpers: list[tuple[Any, Any]] = []
        try:
            ready, cpu = start_timed(server)
            time.sleep(args.settle)
            idle = memory(server.pids)
            agents, gen, helpers = start_load(server, agents=4, submitters=8, push_claim=args.push_claim)
            n = args.tasks
            run_load(gen, agents, {"mode": "flood", "n": n, "concurrency": 8, "tag": "weight"}, n / 20 + 60, "load")
            loaded = memory(server.pids)
        finally:
            for helper, stop in helpers:
                try:
                    helper.call(stop, timeout=10)
                except Exception:  # noqa: BLE001 - best effort at the end
                    pass
            server.stop()
    print(f"\n{args.label}: {version}\n")
    print(table(ready, cpu, idle, loaded))
    print(json.dumps({"label": args.label, "ready_s": ready, "cpu_s": cpu, "idle": idle, "loaded": loaded}))


if __name__ == "__main__":
    main()
