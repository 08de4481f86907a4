"""MCS live event stream (GET /v1/events): what watchers cost.

    python bench/events.py                       # 2000 tasks per run, 100 watchers, 500 idle streams
    python bench/events.py --tasks 600 --idle-seconds 10     # smaller

Starts a real `mcs up` as bench/run.py does, with its agents (bench/agentsim.py) and submitter
(bench/loadgen.py). Runs the throughput scenario twice in the same server: first with no watcher, then
with 100 clients following GET /v1/events (one helper process, raw asyncio sockets, counting events).
Reports the events delivered per second to the 100 watchers, the CPU per task of the four processes in
each run (target: watchers add under 10%), and the api's CPU with 500 open idle streams (target: under
2% of a core). Writes its section inside the notes markers of bench/RESULTS.md and prints it; nothing
is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing.connection
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import procinfo
from run import (
    NOTES_END,
    NOTES_START,
    RESULTS,
    Helper,
    Server,
    add_push_claim_flag,
    agents_claim,
    code_version,
    say,
    start_load,
    throughput_phase,
)

CPU_TARGET = 0.10  # extra CPU per task with 100 watchers, as a share of the CPU per task without
IDLE_TARGET = 0.02  # cores the api may use with 500 idle streams open
SECTION_START, SECTION_END = "<!-- events-bench:start -->", "<!-- events-bench:end -->"


def watchers_main(pipe: multiprocessing.connection.Connection, cfg: dict[str, Any]) -> None:
    """Open `count` streams (raw HTTP/1.1); count the events each receives; answer "count" and "stop"."""

    async def run() -> None:
        host, port = cfg["host"], cfg["port"]
        counts = [0] * cfg["count"]
        opened = asyncio.Event()
        ready = 0

        async def follow(i: int) -> None:
            nonlocal ready
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {cfg['token']}\r\n\r\n".encode()
            )
            await writer.drain()
            ready += 1
            if ready == cfg["count"]:
                opened.set()
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                counts[i] += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")

        tasks = [asyncio.create_task(follow(i)) for i in range(cfg["count"])]
        await asyncio.wait_for(opened.wait(), 60)
        await asyncio.sleep(1.0)  # every stream subscribed
        pipe.send({"open": cfg["count"]})
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, pipe.recv)
            if msg == "count":
                pipe.send({"events": sum(counts), "min": min(counts), "max": max(counts), "cpu": time.process_time()})
            else:
                break
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pipe.send("stopped")

    asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per throughput run (default 2000)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent submitters (default 16)")
    ap.add_argument("--watchers", type=int, default=100, help="streams during the second run (default 100)")
    ap.add_argument("--idle", type=int, default=500, help="idle streams for the idle measurement (default 500)")
    ap.add_argument("--idle-seconds", type=float, default=30.0, help="idle measurement (default 30 s)")
    ap.add_argument("--agents", type=int, default=4)
    add_push_claim_flag(ap)
    ap.add_argument("--note", default="", help="a remark printed with the figures (e.g. the machine was busy)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mcs-events-bench-"))
    server = Server(workdir, "FULL")
    _, code = code_version(server.env)
    say(f"code: {code}")
    server.start()
    helpers: list[tuple[Helper, Any]] = []
    res: dict[str, Any] = {}
    try:
        agents, gen, started = start_load(
            server, agents=args.agents, submitters=args.concurrency, prefix="bench", push_claim=args.push_claim
        )
        helpers += started
        say("warm-up (not reported)")
        throughput_phase(server, gen, agents, min(300, args.tasks), args.concurrency, 120, "warm-up")
        plain = throughput_phase(server, gen, agents, args.tasks, args.concurrency, 300, "no watchers")
        cfg = {"host": "127.0.0.1", "port": server.api_port, "token": server.token}
        watch = Helper(watchers_main, cfg | {"count": args.watchers}, "bench-watchers")
        helpers.append((watch, "stop"))
        before = watch.call("count")
        watched = throughput_phase(server, gen, agents, args.tasks, args.concurrency, 300, f"{args.watchers} watchers")
        time.sleep(1.0)  # the last events reach the watchers
        after = watch.call("count")
        watch.stop("stop")
        helpers.remove((watch, "stop"))
        delivered = after["events"] - before["events"]
        idle = Helper(watchers_main, cfg | {"count": args.idle}, "bench-idle")
        helpers.append((idle, "stop"))
        say(f"idle: {args.idle} open streams for {args.idle_seconds:g} s")
        api = server.pids["api"]
        cpu0, t0 = procinfo.cpu_seconds(api), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cores = (procinfo.cpu_seconds(api) - cpu0) / (time.monotonic() - t0)
        idle.stop("stop")
        helpers.remove((idle, "stop"))
        say("idle: no stream open, for comparison")
        cpu0, t0 = procinfo.cpu_seconds(api), time.monotonic()
        time.sleep(args.idle_seconds)
        bare_cores = (procinfo.cpu_seconds(api) - cpu0) / (time.monotonic() - t0)
        res = {
            "plain": plain,
            "watched": watched,
            "delivered": delivered,
            "per_watcher": (after["min"] - before["min"], after["max"] - before["max"]),
            "idle_cores": idle_cores,
            "bare_cores": bare_cores,
        }
    finally:
        for h, msg in helpers:
            h.stop(msg)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    table = report(code, res, args)
    print(table)
    if not args.no_write:
        write(args.output, table)
        say(f"wrote {args.output}")
    return 0


def cpu_per_task(run: dict[str, Any]) -> tuple[float, float]:
    """(all four processes, the api) CPU seconds per completed task."""
    n = max(1, run["completed"])
    return sum(run["cpu"].values()) / n, run["cpu"]["api"] / n


def report(code: str, res: dict[str, Any], args: argparse.Namespace) -> str:
    plain, watched = res["plain"], res["watched"]
    (p_all, p_api), (w_all, w_api) = cpu_per_task(plain), cpu_per_task(watched)
    extra = (w_all - p_all) / p_all if p_all else float("nan")
    rate = res["delivered"] / watched["elapsed"] if watched["elapsed"] > 0 else 0.0
    lo, hi = res["per_watcher"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict_cpu = "meets" if extra < CPU_TARGET else "misses"
    verdict_idle = "meets" if res["idle_cores"] < IDLE_TARGET else "misses"
    lines = [
        f"### Live event stream (issue 13; `python bench/events.py {' '.join(sys.argv[1:])}`, {when})",
        "",
        f"Code: {code}. The throughput scenario ({args.tasks} tasks, {args.concurrency} submitters, "
        f"{args.agents} agents, {agents_claim(args.push_claim)}) twice in one `mcs up`: without watchers, "
        f"then with {args.watchers} clients "
        "following GET /v1/events (each gets every event: admin, no filter)." + (f" {args.note}" if args.note else ""),
        "",
        "| figure | measured | target | verdict |",
        "| --- | --- | --- | --- |",
        f"| events delivered to {args.watchers} watchers | {res['delivered']} in {watched['elapsed']:.1f} s = "
        f"{rate:.0f} events/s (each watcher got {lo} to {hi}) | | |",
        f"| throughput without / with watchers | {plain['throughput']:.0f} / {watched['throughput']:.0f} tasks/s "
        f"({plain['completed']}, {watched['completed']} completed) | | |",
        f"| CPU per task, four processes, without / with watchers | {p_all * 1000:.2f} / {w_all * 1000:.2f} ms "
        f"(api {p_api * 1000:.2f} / {w_api * 1000:.2f} ms) | | |",
        f"| extra CPU per task that streaming costs | {extra * 100:+.1f}% "
        f"| < {CPU_TARGET * 100:.0f}% | {verdict_cpu} |",
        f"| api CPU with {args.idle} open idle streams | {res['idle_cores'] * 100:.2f}% of a core (none open: "
        f"{res['bare_cores'] * 100:.2f}%) | < {IDLE_TARGET * 100:.0f}% | {verdict_idle} |",
    ]
    return "\n".join(lines)


def write(path: Path, table: str) -> None:
    """Replace this script's section inside the notes markers (which bench/run.py keeps); what was written
    by hand after the previous table (an analysis of the figures) stays, after the new one."""
    text = path.read_text()
    section = f"{SECTION_START}\n{table}\n{SECTION_END}"
    if SECTION_START in text:
        head, rest = text.split(SECTION_START, 1)
        old, tail = rest.split(SECTION_END, 1)
        lines = old.strip("\n").splitlines()
        last_row = max((i for i, line in enumerate(lines) if line.startswith("|")), default=len(lines) - 1)
        notes = "\n".join(lines[last_row + 1 :]).strip("\n")
        if notes:
            section = f"{SECTION_START}\n{table}\n\n{notes}\n{SECTION_END}"
        text = head + section + tail
    else:
        text = text.replace(NOTES_END, f"{section}\n{NOTES_END}")
    assert NOTES_START in text
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
