"""Retention bench: does the database of a mesh that runs for a long time stop growing?

    python bench/retention.py                 # about 4 minutes: 180 s of steady load, retention 20 s
    python bench/retention.py --duration 60   # shorter
    python bench/retention.py --batch-rows 1000000   # also time prune batches on a million finished tasks

Starts a real `mcs up` with a tiny retention (MCS_RETENTION_DAYS worth `--retention` seconds) and a short
watchdog interval, registers agents (bench/agentsim.py: webhook receivers that complete each task with the
claim its webhook brings, `claim_on_push`; `--no-push-claim`: they claim it first) and submits a steady
stream (bench/loadgen.py), sampling the database and WAL file sizes, SQLite's page and freelist counts and
the row counts every few seconds. With retention working, rows plateau after about one retention period and
the file stops growing: SQLite puts the pages freed by the pruner on its freelist and fills them with new
rows before it extends the file.

`--batch-rows N` first builds a database of N finished tasks (two events each) and times the pruner's
batches on it: the first ones (every row old), and one over a table where nothing is old. Results are
printed and written to bench/RESULTS.md, inside its notes markers (run.py keeps that block when it
rewrites the file). Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
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
    machine,
    say,
    start_load,
)

from mcs.maintenance.retention import TASK_BATCH

DAY = 86400.0
SECTION_START, SECTION_END = "<!-- retention:start -->", "<!-- retention:end -->"
OBSERVED = (
    'SQLite puts the pages a prune frees on its freelist ("free pages") and the next inserts take them before'
    " the file is extended, so the file levels off at what one retention period plus one pruner interval holds,"
    " with some slack. The WAL stays at its checkpoint size (`wal_autocheckpoint`, 1000 pages: about 4 MB),"
    " reused, not truncated. Not used: `auto_vacuum=INCREMENTAL` with `PRAGMA incremental_vacuum` (it must be"
    " set before the tables exist, or by a `VACUUM`, and would only give the filesystem pages the next inserts"
    " want back); `VACUUM` with the mesh stopped shrinks a file after the retention was lowered."
)


def file_kib(path: Path) -> float:
    try:
        return path.stat().st_size / 1024
    except FileNotFoundError:
        return 0.0


def sample(server: Server, t0: float) -> dict[str, Any]:
    (pages,), (free,), (page_size,) = (
        server.query("PRAGMA page_count")[0],
        server.query("PRAGMA freelist_count")[0],
        server.query("PRAGMA page_size")[0],
    )
    counts = server.query(
        "SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM task_events), (SELECT count(*) FROM outbox)"
    )[0]
    try:
        metrics = httpx.get(f"http://127.0.0.1:{server.wd_port}/metrics", timeout=5).text
        pruned = sum(float(m) for m in re.findall(r'^mcs_pruned_total\{kind="tasks"\} (\S+)$', metrics, re.M))
    except httpx.HTTPError:
        pruned = float("nan")
    return {
        "t": time.monotonic() - t0,
        "db_kib": file_kib(server.db),
        "wal_kib": file_kib(server.db.with_name(server.db.name + "-wal")),
        "pages": pages,
        "free": free,
        "page_size": page_size,
        "tasks": counts[0],
        "events": counts[1],
        "outbox": counts[2],
        "pruned": pruned,
    }


def steady_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = Server(workdir, args.synchronous)
    server.env |= {
        "MCS_RETENTION_DAYS": repr(args.retention / DAY),
        "MCS_WATCHDOG_INTERVAL": str(args.watchdog_interval),
    }
    helpers: list[tuple[Helper, Any]] = []
    out: dict[str, Any] = {"samples": []}
    try:
        _, out["code"] = code_version(server.env)
        say(f"starting mcs up in {workdir}: retention {args.retention:g} s, watchdog every {args.watchdog_interval} s")
        server.start()
        agents, gen, started = start_load(
            server, agents=args.agents, submitters=4, prefix="keep", push_claim=args.push_claim
        )
        helpers += started
        n = int(args.rate * args.duration)
        say(f"{args.agents} agents; submitting {n} tasks at {args.rate:g}/s for {args.duration:g} s")
        watchdog_cpu0 = procinfo.cpu_seconds(server.pids["watchdog"])
        t0 = time.monotonic()
        gen.pipe.send({"mode": "paced", "n": n, "rate": args.rate, "tag": "keep"})
        load = None
        next_sample = t0
        while load is None or time.monotonic() - t0 < args.duration:
            if time.monotonic() >= next_sample:
                s = sample(server, t0)
                out["samples"].append(s)
                say(
                    f"  t={s['t']:5.0f}s db {s['db_kib']:7.0f} KiB wal {s['wal_kib']:6.0f} KiB pages {s['pages']}"
                    f" (free {s['free']}) tasks {s['tasks']} events {s['events']} outbox {s['outbox']}"
                    f" pruned {s['pruned']:.0f}"
                )
                next_sample += args.every
            if load is None and gen.pipe.poll(0):
                load = gen.pipe.recv()
            if time.monotonic() - t0 > args.duration + 120:
                raise RuntimeError("the submitter did not finish in time")
            time.sleep(0.2)
        out["samples"].append(sample(server, t0))
        out["watchdog_cpu"] = procinfo.cpu_seconds(server.pids["watchdog"]) - watchdog_cpu0
        out["submitted"] = sum(1 for r in load["records"] if r[3] == 201)
        out["completed"] = agents.call("status")["completed"]
        out["wall"] = time.monotonic() - t0
    finally:
        for helper, msg in helpers:
            helper.stop(msg)
        say(f"mcs up stopped (exit code {server.stop()})")
    return out


def batch_cost(rows: int, workdir: Path) -> dict[str, Any]:
    """Time prune batches on a database holding `rows` finished tasks (two events each), all old."""
    from mcs.engines.sqlite.engine import Store
    from mcs.state import retention as retention_store

    path = workdir / "batch.db"
    store = Store(path, synchronous="NORMAL")
    store.migrate()
    say(f"batch cost: writing {rows} finished tasks and {2 * rows} events")
    started = time.monotonic()
    conn = store.conn
    chunk = 50_000
    for first in range(0, rows, chunk):
        ids = [(str(uuid.uuid4()), float(first + i)) for i in range(min(chunk, rows - first))]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO tasks (id, type, payload, priority, capabilities, route, state, max_retries, claim_ttl,"
            " submitted_by, created_at, updated_at) VALUES (?, 'b', '{}', 1, '[\"b\"]', 'any', 'completed', 3, 300,"
            " 'admin', ?, ?)",
            [(i, at, at) for i, at in ids],
        )
        conn.executemany(
            "INSERT INTO task_events (task_id, at, kind, actor) VALUES (?, ?, 'submitted', 'admin'),"
            " (?, ?, 'completed', 'a')",
            [(i, at, i, at) for i, at in ids],
        )
        conn.execute("COMMIT")
    say(f"  written in {time.monotonic() - started:.0f} s ({file_kib(path) / 1024:.0f} MiB)")
    timings = []
    for _ in range(5):
        t = time.perf_counter()
        batch = store.write(retention_store.prune_tasks, before=float(rows + 1), after=None, limit=TASK_BATCH)
        timings.append((time.perf_counter() - t, batch.tasks, batch.task_events))
    t = time.perf_counter()
    none = store.write(retention_store.prune_tasks, before=-1.0, after=None, limit=500)
    nothing = time.perf_counter() - t
    store.close()
    for suffix in ("", "-wal", "-shm", "-writelock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    say("  batches: " + ", ".join(f"{s * 1000:.0f} ms ({n} tasks, {e} events)" for s, n, e in timings))
    say(f"  a batch with nothing old: {nothing * 1000:.1f} ms ({none.tasks} tasks)")
    return {"rows": rows, "timings": timings, "nothing": nothing}


def verdict(samples: list[dict[str, Any]], retention: float) -> dict[str, Any]:
    """Sizes once the first pruning had time to catch up (after twice the retention), first vs last."""
    settled = [s for s in samples if s["t"] >= 2 * retention + 10] or samples[-1:]
    first, last = settled[0], settled[-1]
    peak = max(s["db_kib"] for s in settled)
    return {
        "from": first["t"],
        "to": last["t"],
        "db_first": first["db_kib"],
        "db_last": last["db_kib"],
        "db_peak": peak,
        "wal_peak": max(s["wal_kib"] for s in settled),
        "tasks_max": max(s["tasks"] for s in settled),
        "growth": (last["db_kib"] - first["db_kib"]) / max(first["db_kib"], 1),
    }


def write_results(res: dict[str, Any], path: Path) -> None:
    m, run, v = res["machine"], res["run"], res["verdict"]
    lines = [
        SECTION_START,
        f"### Retention: the database stays flat ({res['date']}, `{res['command']}`)",
        "",
        f"Machine: {m['nproc']} cores, SQLite {m['sqlite']}, database on {m['tmpfs']}. Code: {run.get('code', '?')}."
        f" A real `mcs up` with `MCS_RETENTION_DAYS` = {res['retention']:g} s,"
        f" `MCS_WATCHDOG_INTERVAL={res['interval']}`, `MCS_SYNCHRONOUS={res['synchronous']}`; {res['agents']} agents"
        f" ({agents_claim(res.get('push_claim', True))}) completing every task; {res['rate']:g} tasks/s for"
        f" {res['duration']:g} s ({run['submitted']} submitted,"
        f" {run['completed']} completed).",
        "",
        "| t (s) | mcs.db (KiB) | WAL (KiB) | pages | free pages | tasks | task events | outbox | tasks pruned |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in run["samples"]:
        lines.append(
            f"| {s['t']:.0f} | {s['db_kib']:.0f} | {s['wal_kib']:.0f} | {s['pages']} | {s['free']} | {s['tasks']} |"
            f" {s['events']} | {s['outbox']} | {s['pruned']:.0f} |"
        )
    lines += [
        "",
        f"From t={v['from']:.0f} s to t={v['to']:.0f} s (after twice the retention) the file went from "
        f"{v['db_first']:.0f} KiB to {v['db_last']:.0f} KiB ({v['growth']:+.1%}; peak {v['db_peak']:.0f} KiB), the WAL "
        f"peaked at {v['wal_peak']:.0f} KiB, and at most {v['tasks_max']} tasks were stored at once. The watchdog "
        f"used {run['watchdog_cpu']:.1f} s of CPU over the {run['wall']:.0f} s run, pruning included.",
        "",
        OBSERVED,
    ]
    bc = res.get("batch")
    if bc:
        lines += [
            "",
            f"Prune batches on a database of {bc['rows']:,} finished tasks ({2 * bc['rows']:,} events): "
            + ", ".join(f"{s * 1000:.0f} ms" for s, _, _ in bc["timings"])
            + f" for {TASK_BATCH} tasks and their events each;"
            f" {bc['nothing'] * 1000:.1f} ms for a batch with nothing old.",
        ]
    lines.append(SECTION_END)
    section = "\n".join(lines)
    old = path.read_text() if path.exists() else ""
    if SECTION_START in old and SECTION_END in old:
        new = old[: old.index(SECTION_START)] + section + old[old.index(SECTION_END) + len(SECTION_END) :]
    elif NOTES_END in old:
        new = old.replace(NOTES_END, section + "\n" + NOTES_END, 1)
    else:
        new = old + f"\n{NOTES_START}\n{section}\n{NOTES_END}\n"
    path.write_text(new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of steady load")
    ap.add_argument("--rate", type=float, default=20.0, help="tasks submitted per second")
    ap.add_argument("--retention", type=float, default=20.0, help="retention in seconds (MCS_RETENTION_DAYS)")
    ap.add_argument("--watchdog-interval", type=float, default=1.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--agents", type=int, default=4)
    add_push_claim_flag(ap)
    ap.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    ap.add_argument("--batch-rows", type=int, default=0, help="also time prune batches on this many tasks")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mcs-retention-"))
    res: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/retention.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": machine(),
        "retention": args.retention,
        "interval": args.watchdog_interval,
        "synchronous": args.synchronous,
        "agents": args.agents,
        "push_claim": args.push_claim,
        "rate": args.rate,
        "duration": args.duration,
    }
    try:
        if args.batch_rows:
            res["batch"] = batch_cost(args.batch_rows, workdir)
        res["run"] = steady_run(args, workdir)
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero
        say(f"bench failed: {exc!r}")
        say(f"kept {workdir}")
        return 1
    res["verdict"] = v = verdict(res["run"]["samples"], args.retention)
    say(
        f"after t={v['from']:.0f} s: mcs.db {v['db_first']:.0f} -> {v['db_last']:.0f} KiB ({v['growth']:+.1%}), "
        f"WAL peak {v['wal_peak']:.0f} KiB, at most {v['tasks_max']} tasks stored"
    )
    write_results(res, args.output)
    say(f"wrote {args.output}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
