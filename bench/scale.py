"""MCS with a million stored tasks: does submit -> webhook stay flat, and do the queries people and the
processes run stay fast?

    python bench/scale.py                                   # 1,000,000 finished + 100,000 queued: 8-10 min
    python bench/scale.py --terminal 100000 --queued 10000  # reduced: about 2 min

1. Fills a fresh database (bench/scalefill.py: the store's migrations, then set-based INSERTs) with
   `--terminal` finished tasks (completed, failed, canceled, with their audit rows, event_log rows and
   delivered webhooks, over 25 days, 20 types, 40 agents) and `--queued` queued tasks of 50 types no agent
   serves. `--filled DB` copies a database filled before instead.
2. Runs the same scenario on an empty database and on the filled one, each in its own `mcs up` (run.py's
   Server, start_load and latency_phase): 4 agents, a warm-up, then `--latency-tasks` at `--rate`/s.
   On the filled one it first waits until the dispatcher has set the unservable backlog aside (parked)
   after the agents came online, and says how long that took.
3. Times, on both, the list and filter queries a user runs (GET /v1/tasks with filters and paging, the
   console's, /v1/status, /v1/agents, /metrics) over HTTP, and the processes' own recurring queries
   (the dispatcher's queue read, the watchdog's) on a read connection, with their EXPLAIN QUERY PLAN.

Writes its section inside the notes markers of bench/RESULTS.md (run.py keeps it). Compare ratios within
one run: the machine is shared. Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import scalefill
from run import (
    NOTES_END,
    NOTES_START,
    RESULTS,
    Helper,
    Server,
    code_version,
    cpu_snapshot,
    latency_phase,
    say,
    start_load,
    throughput_phase,
)

SECTION_START, SECTION_END = "<!-- scale-bench:start -->", "<!-- scale-bench:end -->"
LATENCY_RATIO_TARGET = 1.2  # p50 and p99 at a million stored tasks / on an empty database
QUERY_TARGET = 0.050  # seconds: every list, filter and status query
PARK_TIMEOUT = 600.0


# ---------------------------------------------------------------- the queries


def http_queries(cursor_mid: str) -> list[tuple[str, str]]:
    """(label, path) of what users and the console ask."""
    return [
        ("newest tasks", "/v1/tasks?limit=100"),
        ("a page in the middle (cursor)", f"/v1/tasks?limit=100&cursor={cursor_mid}"),
        ("state=completed", "/v1/tasks?state=completed&limit=100"),
        ("state=failed", "/v1/tasks?state=failed&limit=100"),
        ("state=canceled", "/v1/tasks?state=canceled&limit=100"),
        ("state=queued", "/v1/tasks?state=queued&limit=100"),
        ("state=retrying (none)", "/v1/tasks?state=retrying&limit=100"),
        ("type=job-07 (a small type)", "/v1/tasks?type=job-07&limit=100"),
        ("type=job-00&state=failed", "/v1/tasks?type=job-00&state=failed&limit=100"),
        ("agent=worker-07", "/v1/tasks?agent=worker-07&limit=100"),
        ("agent=worker-07&state=failed", "/v1/tasks?agent=worker-07&state=failed&limit=100"),
        ("agent=worker-07&type=job-03", "/v1/tasks?agent=worker-07&type=job-03&limit=100"),
        ("agent=bench-0 (the live agent)", "/v1/tasks?agent=bench-0&limit=100"),
        ("console glance: completed, last 5 min", "/v1/tasks?state=completed&updated_after=5m&limit=500"),
        ("console running: state=claimed", "/v1/tasks?state=claimed&limit=500"),
        ("console: updated_after=30m", "/v1/tasks?updated_after=30m&limit=100"),
        ("console: failed in the last day", "/v1/tasks?state=failed&updated_after=1d&limit=100"),
        ("console search q= (bounded scan)", "/v1/tasks?q=upstream&limit=100"),
        ("GET /v1/status", "/v1/status"),
        ("GET /v1/agents", "/v1/agents"),
        ("GET /v1/workflows", "/v1/workflows?limit=100"),
        ("GET /metrics (mesh state read)", "/metrics"),
    ]


def process_queries() -> list[tuple[str, str, tuple[Any, ...]]]:
    """(label, SQL, parameters) the dispatcher and watchdog run on every pass or sweep (copied from the store:
    mcs.store.tasks, agents, stats)."""
    from mcs.store import stats as stats_store
    from mcs.store import tasks as tasks_store

    now = time.time()
    queue_page = (
        "SELECT id, type, route, capabilities, priority, seq, concurrency_key, max_concurrency FROM tasks"
        " WHERE state = 'queued' AND parked = 0 ORDER BY priority, seq LIMIT 200"
    )
    return [
        ("dispatcher: queue page (unparked, 200)", queue_page, ()),
        ("dispatcher: has work (queued)", "SELECT 1 FROM tasks WHERE state = 'queued' LIMIT 1", ()),
        (
            "dispatcher: has work (unparked)",
            "SELECT 1 FROM tasks WHERE state = 'queued' AND parked = 0 LIMIT 1",
            (),
        ),
        (
            "dispatcher: has work, agents full (fan-outs/approvals only)",
            f"SELECT 1 FROM tasks WHERE state = 'queued' AND parked = 0 AND {tasks_store.NEEDS_NO_AGENT} LIMIT 1",
            (),
        ),
        (
            "dispatcher: due retries",
            "SELECT 1 FROM tasks WHERE state = 'retrying' AND not_before <= ? LIMIT 1",
            (now,),
        ),
        (
            "dispatcher: agents' loads",
            "SELECT assigned_to, count(*) FROM tasks WHERE state IN ('assigned', 'claimed')"
            " AND assigned_to IS NOT NULL GROUP BY assigned_to",
            (),
        ),
        (
            "watchdog: expired leases",
            "SELECT * FROM tasks WHERE state = 'claimed' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT 500",
            (now,),
        ),
        (
            "watchdog: unclaimed",
            "SELECT * FROM tasks t WHERE t.state = 'assigned' AND (t.assigned_at + t.claim_ttl <= ? OR EXISTS ("
            " SELECT 1 FROM outbox AS o INDEXED BY outbox_task WHERE o.task_id = t.id AND o.kind = 'webhook'"
            " AND o.state = 'dead'"
            " AND o.agent = t.assigned_to AND o.created_at >= t.assigned_at)) ORDER BY t.seq LIMIT 500",
            (now,),
        ),
        (
            "start-up: task types",
            getattr(stats_store, "_TYPES_SQL", "SELECT DISTINCT type FROM tasks ORDER BY type LIMIT ?"),
            (500,),
        ),
    ]


def store_calls() -> list[tuple[str, Callable[..., Any], dict[str, Any]]]:
    """(label, store function, keyword arguments) behind the HTTP queries whose SQL is not fixed text."""
    from mcs.store import stats as stats_store
    from mcs.store import status as status_store

    return [
        ("GET /metrics: stats.snapshot", stats_store.snapshot, {"now": time.time()}),
        ("GET /v1/status: status.read", status_store.read, {"now": time.time()}),
    ]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """(first, median, max) seconds over 1 + `repeats` calls (the first may find cold caches)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs), max(runs)


def time_http(server: Server, repeats: int) -> list[dict[str, Any]]:
    client = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.token}"}, timeout=60)
    (max_seq,) = server.query("SELECT coalesce(max(seq), 0) FROM tasks")[0]
    from mcs.store.tasks import encode_cursor

    out = []
    try:
        for label, path in http_queries(encode_cursor(max(1, max_seq // 2))):

            def get(path: str = path) -> None:
                r = client.get(path)
                if r.status_code != 200:
                    raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")

            if path == "/metrics":
                # the mesh state is cached for 5 s: ask once per cache period, and read how long the read took
                runs = []
                for _ in range(3):
                    t = time.perf_counter()
                    r = client.get(path)
                    took = time.perf_counter() - t
                    read = _gauge(r.text, "mcs_state_read_duration_seconds")
                    runs.append((took, read))
                    time.sleep(5.2)
                out.append(
                    {
                        "label": label,
                        "path": path,
                        "first": runs[0][0],
                        "median": statistics.median(t for t, _ in runs),
                        "max": max(t for t, _ in runs),
                        "state_read": max(r for _, r in runs),
                    }
                )
                continue
            first, med, worst = timed(get, repeats)
            out.append({"label": label, "path": path, "first": first, "median": med, "max": worst})
            say(f"  {label:<45} first {first * 1000:7.1f} ms  median {med * 1000:7.1f} ms  max {worst * 1000:7.1f}")
    finally:
        client.close()
    return out


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def plan(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


def time_sql(db: Path, repeats: int) -> list[dict[str, Any]]:
    """The processes' recurring queries, and the store functions behind /metrics and /v1/status, on a read
    connection of the bench's own (the server keeps running)."""
    from mcs.store import Store

    out = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        for label, sql, params in process_queries():
            first, med, worst = timed(lambda sql=sql, params=params: conn.execute(sql, params).fetchall(), repeats)
            out.append(
                {"label": label, "first": first, "median": med, "max": worst, "plans": [(sql, plan(conn, sql, params))]}
            )
            say(f"  {label:<45} first {first * 1000:7.1f} ms  median {med * 1000:7.1f} ms  max {worst * 1000:7.1f}")
    finally:
        conn.close()
    store = Store(db)
    try:
        for label, fn, kwargs in store_calls():
            first, med, worst = timed(lambda fn=fn, kwargs=kwargs: store.read(fn, **kwargs), repeats)
            out.append(
                {"label": label, "first": first, "median": med, "max": worst, "plans": traced(store, fn, kwargs)}
            )
            say(f"  {label:<45} first {first * 1000:7.1f} ms  median {med * 1000:7.1f} ms  max {worst * 1000:7.1f}")
    finally:
        store.close()
    return out


def traced(store: Any, fn: Callable[..., Any], kwargs: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Each statement `fn` runs (its bound values in), with its plan, each statement timed alone."""
    seen: list[str] = []

    def run(conn: Any) -> list[tuple[str, list[str]]]:
        conn.set_trace_callback(seen.append)
        try:
            fn(conn, **kwargs)
        finally:
            conn.set_trace_callback(None)
        return [(sql, plan(conn, sql)) for sql in dict.fromkeys(seen) if sql.lstrip().upper().startswith("SELECT")]

    return store.read(run)


def http_plans(db: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """The SQL behind each GET /v1/tasks of http_queries, with its plan (list_tasks called on a read connection)."""
    from urllib.parse import parse_qs, urlsplit

    from mcs.api.tasks import since
    from mcs.store import Store
    from mcs.store import tasks as tasks_store

    store = Store(db)
    (max_seq,) = store.read(lambda c: c.execute("SELECT coalesce(max(seq), 0) FROM tasks").fetchone())
    out = {}
    try:
        for label, path in http_queries(tasks_store.encode_cursor(max(1, max_seq // 2))):
            u = urlsplit(path)
            if u.path != "/v1/tasks":
                continue
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            kwargs = {
                "state": q.get("state"),
                "type": q.get("type"),
                "agent": q.get("agent"),
                "parent": None,
                "limit": int(q.get("limit", 100)),
                "cursor": q.get("cursor"),
                "updated_after": since(q["updated_after"], time.time()) if "updated_after" in q else None,
                "q": q.get("q"),
            }
            out[label] = [p for p in traced(store, tasks_store.list_tasks, kwargs) if "FROM tasks" in p[0]][:1]
    finally:
        store.close()
    return out


# ---------------------------------------------------------------- the two databases


def backlog(server: Server) -> tuple[int, int]:
    """(queued, of them not parked)."""
    row = server.query("SELECT count(*), coalesce(sum(parked = 0), 0) FROM tasks WHERE state = 'queued'")[0]
    return int(row[0]), int(row[1])


def wait_parked(server: Server, started: float, label: str) -> float | None:
    """Seconds from `started` until the dispatcher has looked at every queued task (none left unparked)."""
    last = 0.0
    while time.monotonic() - started < PARK_TIMEOUT:
        queued, unparked = backlog(server)
        if unparked == 0:
            took = time.monotonic() - started
            say(f"{label}: all {queued:,} queued tasks parked {took:.1f} s after the agents came online")
            return took
        if time.monotonic() - last > 5:
            say(f"{label}: {unparked:,} of {queued:,} queued tasks not looked at yet")
            last = time.monotonic()
        time.sleep(0.2)
    say(f"{label}: backlog still not parked after {PARK_TIMEOUT:.0f} s")
    return None


def join_agent(server: Server) -> None:
    """An agent with a capability nobody submits registers: the set of who could take what changed."""
    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.token}"}, timeout=30)
    try:
        r = admin.post("/v1/agents", json={"name": "joiner", "capabilities": ["joiner"]})
        r.raise_for_status()
        headers = {"X-Agent-ID": "joiner", "X-Agent-Secret": r.json()["secret"]}
        body = {"capabilities": ["joiner"], "notify_url": "http://127.0.0.1:9/hook"}
        httpx.post(f"{server.url}/v1/agents/register", headers=headers, json=body, timeout=30).raise_for_status()
    finally:
        admin.close()


def run_one(label: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = Server(workdir, "FULL")
    t = time.monotonic()
    server.start(timeout=180)
    res: dict[str, Any] = {"label": label, "startup": time.monotonic() - t}
    say(f"{label}: mcs up healthy in {res['startup']:.1f} s")
    helpers: list[tuple[Helper, Any]] = []
    try:
        t = time.monotonic()
        agents, gen, started = start_load(server, agents=args.agents, submitters=4, prefix="bench")
        helpers += started
        res["parked_after"] = wait_parked(server, t, label) if backlog(server)[0] else 0.0
        throughput_phase(server, gen, agents, args.warmup, 4, 120, f"{label} warm-up")
        before = cpu_snapshot(server.pids)
        res["latency"] = latency_phase(server, gen, agents, args.latency_tasks, args.rate)
        after = cpu_snapshot(server.pids)
        res["cpu"] = {name: after[name] - before[name] for name in server.pids}
        say(f"{label}: an agent of another capability comes online, then {args.join_tasks} tasks at once")
        join_agent(server)
        res["after_join"] = latency_phase(server, gen, agents, args.join_tasks, args.rate)
        say(f"{label}: queries over HTTP")
        res["http"] = time_http(server, args.repeats)
        say(f"{label}: the processes' queries on a read connection")
        res["sql"] = time_sql(server.db, args.repeats)
        res["plans"] = http_plans(server.db)
        res["rows"] = dict(server.query("SELECT state, count(*) FROM tasks GROUP BY state"))
    finally:
        for h, msg in helpers:
            h.stop(msg)
        server.stop()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--terminal", type=int, default=1_000_000, help="finished tasks to store (default 1,000,000)")
    ap.add_argument("--queued", type=int, default=100_000, help="queued tasks nobody serves (default 100,000)")
    ap.add_argument("--unserved-types", type=int, default=50)
    ap.add_argument("--filled", type=Path, help="copy this database (filled before) instead of filling one")
    ap.add_argument("--latency-tasks", type=int, default=400)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--join-tasks", type=int, default=60, help="tasks submitted right after an agent joins")
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each query after a first one")
    ap.add_argument("--note", default="", help="a remark printed with the figures (e.g. the machine was busy)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (both databases)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mcs-scale-bench-"))
    (root / "empty").mkdir()
    (root / "full").mkdir()
    _, code = code_version(Server(root / "empty", "FULL").env)
    say(f"code: {code}; work dir {root}")
    res: dict[str, Any] = {}
    try:
        full_db = root / "full" / "mcs.db"
        t = time.monotonic()
        if args.filled:
            say(f"copying {args.filled}")
            shutil.copyfile(args.filled, full_db)
            res["fill"] = f"copied from a database filled before ({time.monotonic() - t:.0f} s)"
            from mcs.store import Store

            store = Store(full_db)
            store.migrate()  # the code under test may have migrations the copy has not
            store.close()
        else:
            took = scalefill.fill(
                full_db, terminal=args.terminal, queued=args.queued, unserved_types=args.unserved_types
            )
            res["fill"] = f"filled in {took:.0f} s"
        res["size_mib"] = full_db.stat().st_size / 2**20
        res["empty"] = run_one("empty", root / "empty", args)
        res["full"] = run_one("full", root / "full", args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"kept {root}")

    table = report(code, res, args)
    print(table)
    if not args.no_write:
        write(args.output, table)
        say(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------- the report


def _ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def report(code: str, res: dict[str, Any], args: argparse.Namespace) -> str:
    empty, full = res["empty"], res["full"]
    le, lf = empty["latency"], full["latency"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = full["rows"]
    stored = ", ".join(f"{rows[s]:,} {s}" for s in sorted(rows, key=lambda s: -rows[s]))
    lines = [
        f"### A million stored tasks (issue 15 item 6; `python bench/scale.py {' '.join(sys.argv[1:])}`, {when})",
        "",
        f"Code: {code}. The filled database ({res['fill']}, {res['size_mib']:,.0f} MiB) held {stored} "
        f"(the queued ones of {args.unserved_types} types no agent serves), with their audit rows and delivered "
        "webhooks. The same scenario ran on an empty database and on the filled one, one `mcs up` each, in this "
        f"run: {args.agents} agents, a warm-up of {args.warmup} tasks, then {args.latency_tasks} tasks at "
        f"{args.rate:g}/s. The machine is shared: compare the ratios." + (f" {args.note}" if args.note else ""),
        "",
        "| figure | empty | 1M stored | ratio | target | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, name in (("p50", "submit -> webhook p50"), ("p99", "submit -> webhook p99")):
        ratio = lf[key] / le[key] if le[key] else float("nan")
        verdict = "meets" if ratio <= LATENCY_RATIO_TARGET else "misses"
        lines.append(
            f"| {name} | {_ms(le[key])} ms | {_ms(lf[key])} ms | {ratio:.2f}x "
            f"| <= {LATENCY_RATIO_TARGET}x | {verdict} |"
        )
    je, jf = empty["after_join"], full["after_join"]
    for key in ("p50", "p99"):
        ratio = jf[key] / je[key] if je[key] else float("nan")
        lines.append(
            f"| submit -> webhook {key}, {args.join_tasks} tasks right after an agent joined | {_ms(je[key])} ms "
            f"| {_ms(jf[key])} ms | {ratio:.2f}x | | |"
        )
    lines.append(f"| webhooks received | {le['received']}/{le['n']} | {lf['received']}/{lf['n']} | | | |")
    n_e, n_f = max(1, le["received"]), max(1, lf["received"])
    for name in sorted(full["cpu"]):
        ce, cf = empty["cpu"].get(name, float("nan")) / n_e, full["cpu"][name] / n_f
        lines.append(
            f"| CPU per task in the latency run, {name} | {ce * 1000:.2f} ms | {cf * 1000:.2f} ms "
            f"| {cf / ce if ce else float('nan'):.2f}x | | |"
        )
    lines.append(f"| `mcs up` healthy after | {empty['startup']:.1f} s | {full['startup']:.1f} s | | | |")
    if full.get("parked_after") is not None:
        lines.append(
            f"| agents online -> every queued task looked at (parked) | | {full['parked_after']:.1f} s | | | |"
        )
    lines += [
        "",
        f"Queries: over HTTP as the admin (first call, then the median and worst of {args.repeats}); the "
        "processes' own on a read connection. /metrics: the mesh state is cached for 5 s, so it was scraped three "
        "times 5.2 s apart; `mcs_state_read_duration_seconds` is the read itself.",
        "",
        "| query | empty: median | 1M: first | 1M: median | 1M: max | target | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    e_by = {q["label"]: q for q in empty["http"] + empty["sql"]}
    for q in full["http"] + full["sql"]:
        e = e_by.get(q["label"], {})
        verdict = "meets" if q["median"] <= QUERY_TARGET else "misses"
        extra = f" (state read {_ms(q['state_read'])} ms)" if "state_read" in q else ""
        lines.append(
            f"| {q['label']} | {_ms(e.get('median', float('nan')))} ms | {_ms(q['first'])} ms | "
            f"{_ms(q['median'])} ms{extra} | {_ms(q['max'])} ms | < {QUERY_TARGET * 1000:.0f} ms | {verdict} |"
        )
    lines += ["", "<details><summary>Query plans at 1M stored tasks (EXPLAIN QUERY PLAN)</summary>", ""]
    for label, plans in list(full["plans"].items()) + [(q["label"], q["plans"]) for q in full["sql"]]:
        for sql, steps in plans:
            lines.append(f"- {label}: `{_short(sql)}`")
            lines += [f"  - {s}" for s in steps]
    lines += ["", "</details>"]
    return "\n".join(lines)


def _short(sql: str, n: int = 300) -> str:
    sql = " ".join(sql.split()).replace("`", "'").replace("|", "\\|")
    return sql if len(sql) <= n else sql[: n - 3] + "..."


def write(path: Path, table: str) -> None:
    text = path.read_text()
    section = f"{SECTION_START}\n{table}\n{SECTION_END}"
    if SECTION_START in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + section + rest.split(SECTION_END, 1)[1]
    else:
        text = text.replace(NOTES_END, f"{section}\n{NOTES_END}")
    assert NOTES_START in text
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
