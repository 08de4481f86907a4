"""MCS with many agents: how long 10,000 agents take to register, what the dispatcher spends meanwhile, and
submit -> webhook latency with 10,000 agents online against the same figure with 5.

    python bench/agents.py                    # 10,000 agents, about 1.5 minutes
    python bench/agents.py --agents 2000      # smaller

Starts a real `mcs up` as bench/run.py does. Five agents have the capability the submitter asks for and real
webhook receivers (bench/agentsim.py, one process); the others register a capability nobody submits, with a
notify_url nobody listens on (they are never sent anything). Registration is raw HTTP from this process
(bench/rawhttp.py, kept-alive connections, bounded concurrency). While latency is measured with every agent
online, the idle agents keep heartbeating as the contract asks (each every `--heartbeat-every` seconds).

Appends its table to bench/RESULTS.md between the notes markers (one row per `--label`, so runs of two
builds sit side by side) and prints it. Timing is reported against targets, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agentsim
import loadgen
import procinfo
import rawhttp
from run import NOTES_END, NOTES_START, RESULTS, Helper, Server, code_version, latency_phase, ms, say

TARGET_REGISTER_S = 20.0  # seconds for every agent to register
TARGET_P99_RATIO = 2.0  # p99 with every agent online / p99 with the capable ones only
CAPABLE = "bench"  # what the submitter's tasks require (their type)
NOBODY = "idle-nobody-submits-this"  # the idle agents' capability
SECTION_START, SECTION_END = "<!-- agents-bench:start -->", "<!-- agents-bench:end -->"


class Sent:
    """What a batch of requests got back."""

    def __init__(self) -> None:
        self.done: list[float] = []  # when each answer came (time.monotonic)
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []  # a few samples
        self.answers: dict[int, bytes] = {}  # job index -> body, when kept


async def _requests(
    api: tuple[str, int], jobs: list[tuple[str, str, bytes, bytes]], concurrency: int, *, keep: bool = False
) -> Sent:
    """Send (method, path, headers, body) jobs over `concurrency` kept-alive connections."""
    pending = iter(enumerate(jobs))
    out = Sent()

    async def worker() -> None:
        conn = rawhttp.Connection(*api)
        try:
            for i, (method, path, headers, body) in pending:
                try:
                    status, data = await conn.request(method, path, headers, body)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    status, data = -1, repr(exc).encode()
                    conn.close()
                out.statuses[status] = out.statuses.get(status, 0) + 1
                if status not in (200, 201) and len(out.errors) < 5:
                    out.errors.append(f"{path}: {status} {data[:200]!r}")
                if keep:
                    out.answers[i] = data
                out.done.append(time.monotonic())
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def _agent_headers(name: str, secret: str) -> bytes:
    return f"x-agent-id: {name}\r\nx-agent-secret: {secret}\r\ncontent-type: application/json\r\n".encode()


def _register_body(capability: str, notify_url: str, capacity: int) -> bytes:
    return json.dumps(
        {"capabilities": [capability], "notify_url": notify_url, "ttl": 3600, "concurrency": capacity}
    ).encode()


class Heartbeats:
    """The idle agents heartbeating in the background at `rate` per second (a thread with its own loop)."""

    def __init__(self, api: tuple[str, int], jobs: list[tuple[str, str, bytes, bytes]], rate: float) -> None:
        self.api, self.jobs, self.rate = api, jobs, rate
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="heartbeats", daemon=True)

    async def _run(self) -> None:
        conns = [rawhttp.Connection(*self.api) for _ in range(4)]
        start = time.monotonic()
        for i, (method, path, headers, body) in enumerate(itertools.cycle(self.jobs)):
            if self._stop.is_set():
                break
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                status, _ = await conns[i % len(conns)].request(method, path, headers, body)
            except (OSError, asyncio.IncompleteReadError):
                status = -1
            self.sent += 1
            self.failed += status != 200
        for c in conns:
            c.close()

    def start(self) -> Heartbeats:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=10_000, help="agents in all (default 10,000)")
    ap.add_argument("--capable", type=int, default=5, help="of which can take the submitted tasks (default 5)")
    ap.add_argument("--concurrency", type=int, default=64, help="registrations in flight at once (default 64)")
    ap.add_argument("--latency-tasks", type=int, default=300, help="tasks per latency run (default 300)")
    ap.add_argument("--rate", type=float, default=20.0, help="tasks per second in the latency runs (default 20)")
    ap.add_argument(
        "--heartbeat-every", type=float, default=240.0, help="seconds between one agent's heartbeats (default 240)"
    )
    ap.add_argument("--label", default=None, help="the row's name in RESULTS.md (default: the code's commit)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mcs-agents-bench-"))
    server = Server(workdir, "FULL")
    _, code = code_version(server.env)
    say(f"code: {code}")
    server.start()
    api = ("127.0.0.1", server.api_port)
    admin = f"authorization: Bearer {server.token}\r\ncontent-type: application/json\r\n".encode()
    helpers: list[Helper] = []
    try:
        capable = [f"cap-{i}" for i in range(args.capable)]
        idle = [f"idle-{i:05d}" for i in range(args.agents - args.capable)]
        say(f"creating {args.agents} agents")
        creates = [
            ("POST", "/v1/agents", admin, json.dumps({"name": n, "capabilities": [CAPABLE]}).encode()) for n in capable
        ] + [("POST", "/v1/agents", admin, json.dumps({"name": n, "capabilities": [NOBODY]}).encode()) for n in idle]
        t0 = time.monotonic()
        created = asyncio.run(_requests(api, creates, args.concurrency, keep=True))
        if created.statuses.get(201) != len(creates):
            raise RuntimeError(f"creating agents: {created.statuses} {created.errors}")
        secret = {a["name"]: a["secret"] for a in (json.loads(body) for body in created.answers.values())}
        say(f"  created in {time.monotonic() - t0:.1f} s")

        capacity = 8
        agents = Helper(
            agentsim.main,
            {
                "api_url": server.url,
                "agents": [{"name": n, "secret": secret[n]} for n in capable],
                "concurrency": 4,
                "capacity": capacity,
            },
            "agentsim",
        )
        helpers.append(agents)
        gen = Helper(
            loadgen.main,
            {"api_url": server.url, "admin_token": server.token, "concurrency": 4, "client": "raw"},
            "loadgen",
        )
        helpers.append(gen)

        say("warm-up (not reported): the first deliveries open the notifier's connections")
        latency_phase(server, gen, agents, 40, args.rate)
        say(f"latency with {args.capable} agents online")
        few = latency_phase(server, gen, agents, args.latency_tasks, args.rate)

        ports = agents.ready["ports"]
        registrations = [
            (
                "POST",
                "/v1/agents/register",
                _agent_headers(n, secret[n]),
                _register_body(CAPABLE, f"http://127.0.0.1:{ports[n]}/{n}", capacity),
            )
            for n in capable
        ] + [
            (
                "POST",
                "/v1/agents/register",
                _agent_headers(n, secret[n]),
                _register_body(NOBODY, f"http://127.0.0.1:9/{n}", 1),
            )
            for n in idle
        ]
        say(f"registering {len(registrations)} agents, {args.concurrency} at once")
        cpu0 = {k: procinfo.cpu_seconds(p) for k, p in server.pids.items()}
        t0 = time.monotonic()
        sent = asyncio.run(_requests(api, registrations, args.concurrency))
        elapsed = time.monotonic() - t0
        cpu1 = {k: procinfo.cpu_seconds(p) for k, p in server.pids.items()}
        registered = sent.statuses.get(200, 0)
        in_window = sum(1 for t in sent.done if t - t0 <= TARGET_REGISTER_S)
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        say(
            f"  {registered}/{len(registrations)} registered in {elapsed:.1f} s ({registered / elapsed:.0f}/s);"
            f" {in_window} within {TARGET_REGISTER_S:.0f} s; CPU "
            + ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
            + (f"; errors {sent.statuses} {sent.errors}" if sent.errors else "")
        )
        online = server.query("SELECT count(*) FROM agents WHERE status = 'online' AND expires_at > ?", (time.time(),))
        say(f"  online now: {online[0][0]}")

        rate = len(idle) / args.heartbeat_every
        say(f"latency with {online[0][0]} agents online, {rate:.0f} heartbeats/s in the background")
        beats = Heartbeats(api, registrations[args.capable :], rate).start()
        cpu0 = {k: procinfo.cpu_seconds(p) for k, p in server.pids.items()}
        w0 = time.monotonic()
        try:
            many = latency_phase(server, gen, agents, args.latency_tasks, args.rate)
        finally:
            beats.stop()
        during = {k: (procinfo.cpu_seconds(p) - cpu0[k]) / (time.monotonic() - w0) for k, p in server.pids.items()}
        say(f"  heartbeats sent {beats.sent} ({beats.failed} failed); cores used: {during}")
    finally:
        for h in helpers:
            h.stop("stop" if h.proc.name == "agentsim" else {"mode": "stop"})
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    row = {
        "label": args.label or code.split(" (")[0],
        "agents": args.agents,
        "registered": registered,
        "register_s": elapsed,
        "register_rate": registered / elapsed,
        "in_window": in_window,
        "dispatcher_cpu": cpu["dispatcher"],
        "api_cpu": cpu["api"],
        "few_p50": few["p50"],
        "few_p99": few["p99"],
        "many_p50": many["p50"],
        "many_p99": many["p99"],
        "many_received": many["received"],
        "dispatcher_cores": during["dispatcher"],
        "heartbeats": beats.sent,
    }
    table = report(row, args)
    print(table)
    if not args.no_write:
        write(args.output, row, args)
        say(f"wrote {args.output}")


def _row_md(r: dict[str, Any]) -> str:
    ratio = r["many_p99"] / r["few_p99"] if r["few_p99"] else float("nan")
    return (
        f"| {r['label']} | {r['registered']}/{r['agents']} in {r['register_s']:.1f} s ({r['register_rate']:.0f}/s)"
        f" | {r['dispatcher_cpu']:.1f} s | {r['api_cpu']:.1f} s | {ms(r['few_p50'])} / {ms(r['few_p99'])}"
        f" | {ms(r['many_p50'])} / {ms(r['many_p99'])} | {ratio:.2f}x | {r['dispatcher_cores'] * 100:.0f}% |"
    )


HEADER = (
    "| code | registered (time, rate) | dispatcher CPU while registering | api CPU while registering"
    " | submit -> webhook p50 / p99, 5 online | same, all online + heartbeats | p99 ratio"
    " | dispatcher CPU during that run (% of a core) |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def report(row: dict[str, Any], args: argparse.Namespace) -> str:
    ratio = row["many_p99"] / row["few_p99"] if row["few_p99"] else float("nan")
    verdicts = (
        f"register all {row['agents']}: {row['register_s']:.1f} s (target < {TARGET_REGISTER_S:.0f} s:"
        f" {'meets' if row['register_s'] < TARGET_REGISTER_S and row['registered'] == row['agents'] else 'misses'});"
        f" p99 with all online / with {args.capable}: {ratio:.2f}x (target <= {TARGET_P99_RATIO:g}x:"
        f" {'meets' if ratio <= TARGET_P99_RATIO else 'misses'})"
    )
    return HEADER + "\n" + _row_md(row) + "\n\n" + verdicts


def write(path: Path, row: dict[str, Any], args: argparse.Namespace) -> None:
    """Replace this script's section (kept inside the notes, which bench/run.py preserves), keeping the rows
    of other labels."""
    text = path.read_text()
    rows: list[str] = []
    if SECTION_START in text:
        before, rest = text.split(SECTION_START, 1)
        old, after = rest.split(SECTION_END, 1)
        rows = [
            line
            for line in old.splitlines()
            if line.startswith("| ") and not line.startswith(("| code ", "| --- ", f"| {row['label']} |"))
        ]
    else:
        before, after = text.split(NOTES_END, 1)
        before, after = before.rstrip("\n") + "\n\n", "\n" + NOTES_END + after
    rows.append(_row_md(row))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"{SECTION_START}\n### Many agents (`python bench/agents.py`, last run {when})\n\n"
        f"{args.agents} agents register (raw HTTP, {args.concurrency} at once, loopback) against a fresh `mcs up`;"
        f" {args.capable} of them have the tasks' capability and real webhook receivers, the rest a capability"
        f" nobody submits. Latency: {args.latency_tasks} tasks at {args.rate:g}/s, first with only the"
        f" {args.capable} online, then with every agent online while the idle ones heartbeat every"
        f" {args.heartbeat_every:g} s. Targets: every agent registered in under {TARGET_REGISTER_S:.0f} s; p99 with"
        f" all online within {TARGET_P99_RATIO:g}x of p99 with {args.capable}. One row per build; rows measured"
        " back to back on this shared machine compare, rows from different days may not.\n\n"
        + HEADER
        + "\n"
        + "\n".join(rows)
        + f"\n{SECTION_END}"
    )
    assert NOTES_START in before, "the section goes inside the notes markers"
    path.write_text(before + section + after)


if __name__ == "__main__":
    sys.exit(main())
