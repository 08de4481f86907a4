"""MCS workflows: the overhead MCS adds between two steps, next to single-task submit -> webhook.

    python bench/workflows.py               # 30 chains and 15 fan-outs, about a minute
    python bench/workflows.py --chains 10 --fanouts 5   # smaller

Starts a real `mcs up` as bench/run.py does, with agents from bench/agentsim.py (one process, a webhook
server per agent, each task claimed and completed as soon as its webhook arrives) and the submitter from
bench/loadgen.py. First single tasks (submit -> webhook, paced, as run.py measures it), then workflows
submitted from this process at a steady pace:

- a 3-step chain (a -> b -> c): per-step overhead = step N's `complete` call returned at the agent ->
  step N+1's webhook arrived at its agent (two per chain);
- a 10-wide fan-out + synthesis (ten independent steps, then one depending on all ten): overhead = the
  last of the ten completed -> the synthesis step's webhook arrived.

The same gap is also shown from the `completed` event the api writes (server time) to the webhook. Target:
the per-step overhead's p50 and p99 within 1.5x of submit -> webhook's. Writes its section inside the
notes markers of bench/RESULTS.md (bench/run.py keeps them) and prints it; nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from run import (
    NOTES_END,
    NOTES_START,
    RESULTS,
    Helper,
    Server,
    add_push_claim_flag,
    agents_claim,
    code_version,
    latency_phase,
    ms,
    pct,
    say,
    start_load,
)

TARGET_RATIO = 1.5  # per-step overhead / submit -> webhook, at p50 and at p99
WIDTH = 10  # steps of the fan-out
SECTION_START, SECTION_END = "<!-- workflows-bench:start -->", "<!-- workflows-bench:end -->"

CHAIN = [
    {"id": "a", "type": "bench"},
    {"id": "b", "type": "bench", "depends_on": ["a"]},
    {"id": "c", "type": "bench", "depends_on": ["b"]},
]
FANOUT = [{"id": f"r{i}", "type": "bench"} for i in range(WIDTH)] + [
    {"id": "synth", "type": "bench", "depends_on": [f"r{i}" for i in range(WIDTH)]}
]


def run_workflows(
    server: Server, agents: Helper, chains: int, fanouts: int, rate: float, timeout: float
) -> dict[str, Any]:
    """Submit the workflows at `rate` per second (chains and fan-outs interleaved), wait for them all."""
    agents.call("reset")
    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.token}"}, timeout=30)
    kinds = ["chain"] * chains + ["fanout"] * fanouts
    kinds = [k for pair in zip(kinds[::2], kinds[1::2], strict=False) for k in pair] + kinds[len(kinds) // 2 * 2 :]
    submitted: list[tuple[str, str]] = []  # (kind, workflow id)
    start = time.monotonic()
    try:
        for i, kind in enumerate(kinds):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = {"name": f"bench-{kind}", "steps": CHAIN if kind == "chain" else FANOUT}
            r = admin.post("/v1/workflows", json=body)
            r.raise_for_status()
            submitted.append((kind, r.json()["id"]))
        steps = chains * len(CHAIN) + fanouts * len(FANOUT)
        deadline = time.monotonic() + timeout
        while agents.call("status")["completed"] < steps:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflow steps completed: {agents.call('status')} of {steps}")
            time.sleep(0.2)
        workflows = [(kind, admin.get(f"/v1/workflows/{wf}").json()) for kind, wf in submitted]
    finally:
        admin.close()
    rep = agents.call("report")
    arrived, done = rep["arrivals"], rep["completed_at"]
    event_done = dict(
        server.query("SELECT task_id, max(at) FROM task_events WHERE kind = 'completed' GROUP BY task_id")
    )
    gaps: dict[str, list[float]] = {"chain": [], "fanout": []}
    server_gaps: dict[str, list[float]] = {"chain": [], "fanout": []}
    not_completed = 0
    for kind, wf in workflows:
        not_completed += wf["state"] != "completed"
        ids = {step: task["id"] for step, task in wf["steps"].items()}
        pairs = [(["a"], "b"), (["b"], "c")] if kind == "chain" else [([f"r{i}" for i in range(WIDTH)], "synth")]
        for before, after in pairs:
            nxt = ids[after]
            if nxt not in arrived or any(ids[b] not in done or ids[b] not in event_done for b in before):
                continue
            gaps[kind].append(arrived[nxt] - max(done[ids[b]] for b in before))
            server_gaps[kind].append(arrived[nxt] - max(event_done[ids[b]] for b in before))
    took = time.monotonic() - start
    res = {
        "chains": chains,
        "fanouts": fanouts,
        "rate": rate,
        "not_completed": not_completed,
        "took": took,
        "errors": rep["error_samples"],
        "duplicates": rep["duplicates"],
    }
    for kind in ("chain", "fanout"):
        res[kind] = {
            "n": len(gaps[kind]),
            "p50": pct(gaps[kind], 50),
            "p99": pct(gaps[kind], 99),
            "server_p50": pct(server_gaps[kind], 50),
            "server_p99": pct(server_gaps[kind], 99),
        }
        say(
            f"{kind}: step completed -> next step's webhook p50 {ms(res[kind]['p50'])} p99 {ms(res[kind]['p99'])}"
            f" ({len(gaps[kind])} gaps); from the completed event p50 {ms(res[kind]['server_p50'])}"
            f" p99 {ms(res[kind]['server_p99'])}"
        )
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=30, help="3-step chains (default 30)")
    ap.add_argument("--fanouts", type=int, default=15, help="10-wide fan-outs with a synthesis step (default 15)")
    ap.add_argument("--rate", type=float, default=3.0, help="workflows submitted per second (default 3)")
    ap.add_argument("--latency-tasks", type=int, default=200, help="single tasks for submit -> webhook (default 200)")
    ap.add_argument("--task-rate", type=float, default=20.0, help="single tasks per second (default 20)")
    ap.add_argument("--agents", type=int, default=4, help="agents (default 4, each taking 8 tasks at once)")
    add_push_claim_flag(ap)
    ap.add_argument("--note", default="", help="a remark printed with the figures (e.g. the machine was busy)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mcs-workflows-bench-"))
    server = Server(workdir, "FULL")
    _, code = code_version(server.env)
    say(f"code: {code}")
    server.start()
    helpers: list[tuple[Helper, Any]] = []
    try:
        agents, gen, started = start_load(
            server, agents=args.agents, submitters=2, prefix="bench", push_claim=args.push_claim
        )
        helpers += started
        say("warm-up (not reported): the first deliveries open the notifier's connections")
        latency_phase(server, gen, agents, 40, args.task_rate)
        single = latency_phase(server, gen, agents, args.latency_tasks, args.task_rate)
        say(f"workflows: {args.chains} chains and {args.fanouts} fan-outs at {args.rate:g}/s")
        flows = run_workflows(server, agents, args.chains, args.fanouts, args.rate, timeout=120)
    finally:
        for h, msg in helpers:
            h.stop(msg)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    table = report(code, single, flows, args)
    print(table)
    if not args.no_write:
        write(args.output, table, args)
        say(f"wrote {args.output}")
    return 0


def report(code: str, single: dict[str, Any], flows: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        "| measured | n | p50 | p99 | p50 ratio | p99 ratio |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| single task: submit -> webhook | {single['received']} | {ms(single['p50'])} | {ms(single['p99'])}"
        " | 1 | 1 |",
    ]
    verdicts = []
    for kind, what in (
        ("chain", "3-step chain: step completed -> next step's webhook"),
        ("fanout", "fan-out of 10: last completed -> synthesis webhook"),
    ):
        f = flows[kind]
        ratios = []
        for label, p50, p99 in (
            (what, f["p50"], f["p99"]),
            ("same, from the api's completed event", f["server_p50"], f["server_p99"]),
        ):
            r50 = p50 / single["p50"] if single["p50"] else float("nan")
            r99 = p99 / single["p99"] if single["p99"] else float("nan")
            rows.append(f"| {label} | {f['n']} | {ms(p50)} | {ms(p99)} | {r50:.2f}x | {r99:.2f}x |")
            ratios += [r50, r99]
        # The verdict takes the worse of the two ways of measuring the gap.
        worst = max(ratios)
        ok = worst <= TARGET_RATIO
        verdicts.append(
            f"{kind}: {'meets' if ok else 'misses'} the {TARGET_RATIO:g}x target (worst ratio {worst:.2f}x)"
        )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        f"### Workflows (`python bench/workflows.py`, {when}, {code})\n\n"
        f"{args.chains} 3-step chains and {args.fanouts} fan-outs of {WIDTH} + a synthesis step, submitted at"
        f" {args.rate:g} workflows/s to a fresh `mcs up`, {args.agents} agents (bench/agentsim.py,"
        f" {agents_claim(args.push_claim)}) completing each step as its webhook arrives; single tasks:"
        f" {args.latency_tasks} at {args.task_rate:g}/s in the same run."
        f" Workflows not completed: {flows['not_completed']}; agent errors: {len(flows['errors'])}."
        + (f" {args.note}" if args.note else "")
        + "\n\n"
    )
    return head + "\n".join(rows) + "\n\n" + "; ".join(verdicts) + "."


def write(path: Path, section: str, args: argparse.Namespace) -> None:
    """Replace this script's section inside the notes markers (which bench/run.py keeps)."""
    text = path.read_text()
    block = f"{SECTION_START}\n{section}\n{SECTION_END}"
    if SECTION_START in text:
        before, rest = text.split(SECTION_START, 1)
        _, after = rest.split(SECTION_END, 1)
    else:
        before, after = text.split(NOTES_END, 1)
        before, after = before.rstrip("\n") + "\n\n", "\n" + NOTES_END + after
    assert NOTES_START in before, "the section goes inside the notes markers"
    path.write_text(before + block + after)


if __name__ == "__main__":
    sys.exit(main())
