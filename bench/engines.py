"""SQLite and PostgreSQL in one run (issue 16, "Measured"): submit -> webhook p50/p99 at 20/s and end-to-end
throughput with 4 push-claim agents, with 1 and with 2 replicas of each process, CPU per task of MCS's
processes and of PostgreSQL's, and the database work per task. Writes its section of bench/RESULTS.md.

    python bench/engines.py            # about 3-5 minutes: 4 setups (2 engines x 1 and 2 replicas)
    python bench/engines.py --quick    # about 2 minutes, smaller runs

The processes are started one by one (`mcs api`, `mcs dispatcher`, `mcs watchdog`, `mcs notifier`; with
`--replicas 2` two of each, the two apis on two ports with the submitter and the agents split across them),
not through `mcs up`, which runs one of each. PostgreSQL is a throwaway cluster (tests/pg.py's PgCluster)
with `synchronous_commit=on`: a commit waits for its WAL flush, the durability of SQLite's
`synchronous=FULL` that the SQLite runs use. The scenario code (loads, latency and throughput phases) is
bench/run.py's.

If `mcs notifier` does not open MCS_DATABASE_URL's engine yet, no webhook can reach an agent on PostgreSQL:
then both engines run with pull agents (long-poll claims; latency is submit -> claim answered) and the
results say so (`--mode pull` forces that on both).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agentsim
import httpx
import loadgen
import procinfo
import run
from run import Helper, free_ports, ms, say

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests import pg  # noqa: E402 - the repository root goes on the path first

RESULTS = HERE / "RESULTS.md"
START, END = "<!-- engines-bench:start -->", "<!-- engines-bench:end -->"
ROLES = ("api", "dispatcher", "watchdog", "notifier")
PORT_ENV = {
    "api": "MCS_PORT",
    "dispatcher": "MCS_DISPATCHER_METRICS_PORT",
    "watchdog": "MCS_WATCHDOG_METRICS_PORT",
    "notifier": "MCS_NOTIFIER_METRICS_PORT",
}
PG_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track_utility": "on",
}


def notifier_on_engine() -> bool:
    """Whether `mcs notifier` opens the engine MCS_DATABASE_URL names (read from its source: the notifier
    of a build that does not would quietly use a SQLite file of its own and deliver nothing)."""
    import mcs.notifier

    return "open_engine" in Path(mcs.notifier.__file__).read_text()


# ---------------------------------------------------------------- the processes


class Mesh:
    """`replicas` of each of MCS's processes on one database (SQLite's file, or `database_url`)."""

    def __init__(self, workdir: Path, replicas: int, database_url: str | None, roles: tuple[str, ...]) -> None:
        self.workdir, self.replicas, self.roles = workdir, replicas, roles
        self.token = "mcsadm_bench_" + secrets.token_urlsafe(16)
        self.db = workdir / "mcs.db"
        self.env = dict(os.environ) | {
            "MCS_DB": str(self.db),
            "MCS_HOST": "127.0.0.1",
            "MCS_ADMIN_TOKEN": self.token,
            "MCS_SYNCHRONOUS": "FULL",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("MCS_DATABASE_URL", None)
        if database_url:
            self.env["MCS_DATABASE_URL"] = database_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 90.0) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "mcs", "migrate"], env=self.env, cwd=self.workdir, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"mcs migrate failed: {done.stderr.strip()[-2000:]}")
        for role in self.roles:
            for i in range(self.replicas):
                name = f"{role}-{i + 1}"
                (port,) = free_ports(1)
                env = self.env | {PORT_ENV[role]: str(port), "MCS_INSTANCE": name}
                with open(self.workdir / f"{name}.log", "wb") as log:
                    self.procs[name] = subprocess.Popen(
                        [sys.executable, "-m", "mcs", role],
                        env=env,
                        cwd=self.workdir,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self.ports[name] = port
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        while pending:
            for name, port in list(pending.items()):
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {self.procs[name].returncode}:\n{self.tail(name)}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {timeout:.0f} s: {sorted(pending)}")
            time.sleep(0.1)

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for name, port in self.ports.items() if name.startswith("api-")]

    def metric(self, name: str) -> float:
        """A metric summed over every process and label (Prometheus text from each /metrics)."""
        total = 0.0
        for port in self.ports.values():
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            for line in text.splitlines():
                if line.startswith((name + "{", name + " ")):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def log_bytes(self) -> int:
        return sum((self.workdir / f"{name}.log").stat().st_size for name in self.procs)

    def tail(self, name: str, n: int = 20) -> str:
        try:
            return "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def pg_writers(pids: list[int]) -> dict[str, int]:
    """write_bytes per kind of PostgreSQL process (its title: checkpointer, walwriter, postgres: backend...)."""
    out: dict[str, int] = {}
    for pid in pids:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        kind = title.split(":", 1)[1].split()[0] if ":" in title else "postmaster"
        out[kind] = out.get(kind, 0) + write_bytes([pid])
    return out


def write_bytes(pids: list[int]) -> int:
    """Bytes these processes caused to be written to storage (/proc/<pid>/io write_bytes: page-cache pages
    they dirtied, 4 KiB each)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# ---------------------------------------------------------------- database readings


class PgReadings:
    """PostgreSQL's side: its processes' CPU and writes, and the work its statistics show for one database."""

    def __init__(self, cluster: pg.PgCluster, database: str) -> None:
        self.cluster, self.database = cluster, database

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.cluster.url(), autocommit=True) as conn:
            return list(conn.execute(sql, params).fetchall())

    def _query_in(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A query in the measured database itself (after its window: pg_stat_statements would count it)."""
        import psycopg

        with psycopg.connect(self.cluster.url(self.database), autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def reset(self) -> None:
        self._query("SELECT pg_stat_statements_reset()")

    def snapshot(self) -> dict[str, Any]:
        tree = procinfo.descendants(self.cluster.postmaster_pid())
        ((lsn, wal_bytes, commits, xmax),) = self._query(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0'), (SELECT wal_bytes FROM pg_stat_wal),"
            " (SELECT xact_commit FROM pg_stat_database WHERE datname = %s),"
            " pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
            (self.database,),
        )
        return {
            "cpu": procinfo.tree_cpu_seconds([self.cluster.postmaster_pid()]),
            "write_bytes": write_bytes(tree),
            "writers": pg_writers(tree),
            "lsn": float(lsn),
            "stat_wal_bytes": float(wal_bytes),
            "xact_commit": int(commits or 0),
            "xid": int(xmax),
        }

    def statements(self, *, toplevel: bool = True) -> list[tuple[str, int, float]]:
        """(query, calls, total execution ms) of this database's statements since `reset` (those MCS sent)."""
        rows = self._query(
            "SELECT query, calls, total_exec_time FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) AND toplevel = %s ORDER BY calls DESC",
            (self.database, toplevel),
        )
        return [(str(q), int(c), float(t)) for q, c, t in rows]


class WaitSampler:
    """Samples what PostgreSQL's backends of one database wait on (pg_stat_activity's wait events, and the
    tables of the row locks waited for in pg_locks) every 20 ms, on a thread, over a window."""

    def __init__(self, pgr: PgReadings) -> None:
        import threading

        self.pgr, self.stop_flag = pgr, threading.Event()
        self.events: dict[str, int] = {}
        self.tables: dict[str, int] = {}
        self.samples = 0
        self.thread = threading.Thread(target=self._run, name="pg-waits", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psycopg

        db = self.pgr.database
        with psycopg.connect(self.pgr.cluster.url(), autocommit=True) as conn:  # not the measured database
            while not self.stop_flag.wait(0.02):
                rows = conn.execute(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'running') FROM pg_stat_activity"
                    " WHERE datname = %s AND state = 'active' AND query NOT LIKE 'LISTEN%%'",
                    (db,),
                ).fetchall()
                locks = conn.execute(
                    "SELECT l.relation FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                    " WHERE NOT l.granted AND l.relation IS NOT NULL AND d.datname = %s",
                    (db,),
                ).fetchall()
                self.samples += 1
                for (ev,) in rows:
                    self.events[ev] = self.events.get(ev, 0) + 1
                for (rel,) in locks:
                    self.tables[rel] = self.tables.get(rel, 0) + 1

    def finish(self) -> dict[str, Any]:
        self.stop_flag.set()
        self.thread.join(5)
        n = max(self.samples, 1)
        if self.tables:  # relation oids of the measured database: their names from there
            names = dict(
                self.pgr._query_in(
                    "SELECT oid::bigint, relname FROM pg_class WHERE oid = ANY(%s)", ([int(k) for k in self.tables],)
                )
            )
            self.tables = {names.get(int(k), str(k)): v for k, v in self.tables.items()}
        top = sorted(self.events.items(), key=lambda kv: -kv[1])[:6]
        return {
            "samples": self.samples,
            "events": [(k, v / n) for k, v in top],
            "tables": [(k, v / n) for k, v in sorted(self.tables.items(), key=lambda kv: -kv[1])[:3]],
        }


def db_window(mesh: Mesh, pgr: PgReadings | None, before: dict[str, Any] | None, tasks: int) -> dict[str, Any]:
    """Readings at a window's start (`before` None: returns them) or the work per task since `before`."""
    now: dict[str, Any] = {
        "mcs_write_bytes": write_bytes(list(mesh.pids.values())),
        "log_bytes": mesh.log_bytes(),
        "round_trips": mesh.metric("mcs_db_round_trips_total"),
        "retries": mesh.metric("mcs_db_retries_total"),
        "write_tx": mesh.metric("mcs_write_lock_acquisitions_total"),
        "lock_hold": mesh.metric("mcs_write_lock_hold_seconds_sum"),
        "wal_file": mesh.db.with_name("mcs.db-wal").stat().st_size if pgr is None and mesh.db.exists() else 0,
    }
    if pgr is not None:
        now["pg"] = pgr.snapshot()
    if before is None:
        if pgr is not None:
            pgr.reset()
        return now
    per = max(tasks, 1)
    out: dict[str, Any] = {
        "mcs_write_kb": (now["mcs_write_bytes"] - before["mcs_write_bytes"]) / per / 1024,
        "log_kb": (now["log_bytes"] - before["log_bytes"]) / per / 1024,
        "round_trips": (now["round_trips"] - before["round_trips"]) / per,
        "retries": now["retries"] - before["retries"],
        "write_tx": (now["write_tx"] - before["write_tx"]) / per,
        "lock_hold_ms": (now["lock_hold"] - before["lock_hold"]) / per * 1000,
        "wal_file_mb": now["wal_file"] / 2**20,
    }
    if pgr is not None:
        a, b = now["pg"], before["pg"]
        stmts = pgr.statements()
        begins = sum(c for q, c, _ in stmts if q.upper().startswith(("BEGIN", "START TRANSACTION")))
        commits = sum(c for q, c, _ in stmts if q.upper().startswith(("COMMIT", "END")))
        other = [(q, c, t) for q, c, t in stmts if not q.upper().startswith(("BEGIN", "START", "COMMIT", "END"))]
        out |= {
            "pg_cpu": a["cpu"] - b["cpu"],
            "pg_write_kb": (a["write_bytes"] - b["write_bytes"]) / per / 1024,
            "wal_bytes": (a["lsn"] - b["lsn"]) / per,
            "stat_wal_bytes": (a["stat_wal_bytes"] - b["stat_wal_bytes"]) / per,
            "xact_commit": (a["xact_commit"] - b["xact_commit"]) / per,
            "xids": (a["xid"] - b["xid"]) / per,
            "statements": sum(c for _, c, _ in other) / per,
            "commits": commits / per,
            "begins": begins / per,
            "exec_ms": sum(t for _, _, t in stmts) / per,
            "top": [(" ".join(q.split())[:90], c / per, t / per) for q, c, t in other[:6]],
            "top_time": [
                (" ".join(q.split())[:90], c / per, t / per) for q, c, t in sorted(stmts, key=lambda x: -x[2])[:4]
            ],
            "writers_kb": {
                k: (v - b["writers"].get(k, 0)) / per / 1024
                for k, v in a["writers"].items()
                if v > b["writers"].get(k, 0)
            },
        }
    return out


# ---------------------------------------------------------------- one setup


def one_setup(
    engine: str,
    replicas: int,
    args: argparse.Namespace,
    cluster: pg.PgCluster | None,
    pull: bool,
    *,
    without_counts: bool = False,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"mcs-engines-{engine}-"))
    url = cluster.create_database() if cluster is not None else None
    roles = ROLES if not pull or not args.skip_notifier else ROLES[:3]
    mesh = Mesh(workdir, replicas, url, roles)
    pgr = PgReadings(cluster, url.rsplit("/", 1)[1]) if cluster is not None and url else None
    helpers: list[tuple[Helper, Any]] = []
    res: dict[str, Any] = {"engine": engine, "replicas": replicas, "mode": "pull" if pull else "push-claim"}
    try:
        say(f"{engine}, {replicas} replica(s) of each process: starting in {workdir}")
        mesh.start()
        if pgr is not None and without_counts:
            # a diagnosis, not a configuration: the per-state counts go wrong, nothing reads them in this bench
            pgr._query_in(
                "ALTER TABLE tasks DISABLE TRIGGER task_counts_insert, DISABLE TRIGGER task_counts_delete,"
                " DISABLE TRIGGER task_counts_update"
            )
            res["mode"] += ", task_counts triggers off"
            say("task_counts triggers disabled (diagnosis)")
        urls = mesh.api_urls
        creds = run.create_agents(urls[0], mesh.token, args.agents)
        agents = Helper(
            agentsim.main,
            {
                "api_url": urls[0],
                "api_urls": urls,
                "agents": creds,
                "concurrency": 4,
                "capacity": 8,
                "push_claim": not pull,
                "pull": pull,
            },
            "bench-agents",
        )
        helpers.append((agents, "stop"))
        gen = Helper(
            loadgen.main,
            {"api_url": urls[0], "api_urls": urls, "admin_token": mesh.token, "concurrency": 16, "client": "raw"},
            "bench-loadgen",
        )
        helpers.append((gen, {"mode": "stop"}))
        run.run_load(gen, agents, {"mode": "paced", "n": 30, "rate": 30, "tag": "warm"}, 30, "warm-up")
        res["latency"] = run.latency_phase(mesh, gen, agents, args.latency_tasks, args.rate, stamps=False)
        before = db_window(mesh, pgr, None, 0)
        sampler = WaitSampler(pgr) if pgr is not None else None
        tp = run.throughput_phase(mesh, gen, agents, args.tasks, 16, args.timeout)
        waits = sampler.finish() if sampler is not None else None
        res["throughput"] = tp
        res["db"] = db_window(mesh, pgr, before, tp["completed"])
        if waits is not None:
            res["db"]["waits"] = waits
        lat = res["latency"]
        bench_cpu = (tp["gen_cpu"] - lat["gen_cpu"]) + (tp["agents_cpu"] - lat["agents_cpu"])
        mcs_cores = sum(tp["cpu"].values()) / tp["wall"]
        pg_cores = res["db"].get("pg_cpu", 0.0) / tp["wall"]
        res["bench_cores"] = bench_cpu / tp["wall"]
        busy = tp["machine_busy"] * (os.cpu_count() or 1)
        res["other_cores"] = max(0.0, busy - mcs_cores - pg_cores - res["bench_cores"])
        report(res)
    finally:
        for helper, msg in helpers:
            helper.stop(msg)
        mesh.stop()
        if cluster is not None and url:
            cluster.drop_database(url)
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return res


def label(r: dict[str, Any]) -> str:
    return r["engine"] + (" (task_counts triggers off)" if "triggers off" in r["mode"] else "")


def per_task_ms(res: dict[str, Any], role: str | None = None) -> float:
    tp = res["throughput"]
    cpu = sum(v for k, v in tp["cpu"].items() if role is None or k.startswith(role + "-"))
    return cpu / max(tp["completed"], 1) * 1000


def report(res: dict[str, Any]) -> None:
    tp, db = res["throughput"], res["db"]
    n = max(tp["completed"], 1)
    say(
        f"== {res['engine']} x{res['replicas']}: latency p50 {ms(res['latency']['p50'])} p99"
        f" {ms(res['latency']['p99'])}; throughput {tp['throughput']:.0f} tasks/s;"
        f" MCS CPU {per_task_ms(res):.2f} ms/task ("
        + ", ".join(f"{r} {per_task_ms(res, r):.2f}" for r in ROLES)
        + ")"
        + (f"; PostgreSQL CPU {db['pg_cpu'] / n * 1000:.2f} ms/task" if "pg_cpu" in db else "")
    )
    if "pg_cpu" in db:
        say(
            f"   per task: {db['statements']:.1f} statements, {db['round_trips']:.1f} round trips (client),"
            f" {db['commits']:.1f} commits ({db['xact_commit']:.1f} in pg_stat_database, {db['xids']:.1f} writing),"
            f" {db['wal_bytes'] / 1024:.1f} KiB WAL (pg_stat_wal so far: {db['stat_wal_bytes'] / 1024:.1f}),"
            f" server execution {db['exec_ms']:.2f} ms; storage writes: postgres {db['pg_write_kb']:.1f} KiB,"
            f" MCS {db['mcs_write_kb']:.1f} KiB; retries {db['retries']:.0f}"
        )
        for q, c, t in db["top"]:
            say(f"     {c:5.2f}/task {t:6.3f} ms/task  {q}")
        say("   longest in total (lock waits count as execution):")
        for q, c, t in db["top_time"]:
            say(f"     {c:5.2f}/task {t:6.3f} ms/task  {q}")
        w = db.get("waits") or {"samples": 0, "events": [], "tables": []}
        say(
            f"   active backends, mean per sample ({w['samples']} samples): "
            + ", ".join(f"{k} {v:.2f}" for k, v in w["events"])
            + "; lock waits on tables: "
            + (", ".join(f"{k} {v:.2f}" for k, v in w["tables"]) or "none seen")
        )
        say(
            "   storage writes by PostgreSQL process, KiB/task: "
            + ", ".join(f"{k} {v:.1f}" for k, v in db["writers_kb"].items())
        )
    else:
        say(
            f"   per task: {db['write_tx']:.1f} write transactions (commits), write lock held"
            f" {db['lock_hold_ms']:.2f} ms; storage writes by MCS's processes {db['mcs_write_kb']:.1f} KiB"
            f" (of which logs {db['log_kb']:.2f} KiB); WAL file at the end {db['wal_file_mb']:.1f} MiB"
        )
    say(f"   cores meanwhile: bench processes {res['bench_cores']:.2f}, other processes {res['other_cores']:.2f}")


# ---------------------------------------------------------------- RESULTS.md


def section(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    pull = results[0]["mode"].startswith("pull")
    arrive = "claim answered" if pull else "webhook"
    lines = [
        START,
        "## SQLite and PostgreSQL side by side (`bench/engines.py`)",
        "",
        f"{meta['date']}, `{meta['command']}`, {meta['code']}. {meta['machine']}",
        "",
        f"Each engine with 1 and with 2 replicas of every process ({', '.join(meta['roles'])}; two apis on two ports,"
        " submitter and agents split across them), 4 agents"
        + (
            " pulling (long-poll `POST /v1/tasks/claim`, 4 waiting per agent)"
            if pull
            else " with `claim_on_push` (submit and complete per task)"
        )
        + f"; latency: {meta['latency_tasks']} tasks at {meta['rate']:g}/s, submit -> {arrive};"
        f" throughput: {meta['tasks']} tasks from 16 submitters, first submit -> last completion. SQLite"
        " `synchronous=FULL`; PostgreSQL 15 (a cluster the bench starts, same disk) with `synchronous_commit=on`:"
        " every commit waits for its WAL flush, the same durability.",
        "",
    ]
    if meta.get("missing"):
        lines += [f"**Not measured:** {meta['missing']}", ""]
    lines += [
        f"| engine | replicas | submit -> {arrive} p50 | p99 | tasks/s | MCS CPU ms/task | PostgreSQL CPU ms/task"
        " | cores used by others |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tp, db = r["throughput"], r["db"]
        pgcpu = f"{db['pg_cpu'] / max(tp['completed'], 1) * 1000:.2f}" if "pg_cpu" in db else "-"
        lines.append(
            f"| {label(r)} | {r['replicas']} | {ms(r['latency']['p50'])} | {ms(r['latency']['p99'])} |"
            f" {tp['throughput']:.0f} ({tp['completed']}/{tp['n']}) | {per_task_ms(r):.2f}"
            f" ({', '.join(f'{x[0]} {per_task_ms(r, x):.2f}' for x in ROLES)}) | {pgcpu} |"
            f" {r['bench_cores']:.2f} bench + {r['other_cores']:.2f} other |"
        )
    lines += [
        "",
        "Database work per task (throughput run):",
        "",
        "| engine | replicas | statements | round trips | commits | WAL bytes | statement time (lock waits too)"
        " | storage writes | conflict retries |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        db = r["db"]
        if "pg_cpu" in db:
            lines.append(
                f"| {label(r)} | {r['replicas']} | {db['statements']:.1f} | {db['round_trips']:.1f} |"
                f" {db['commits']:.1f} ({db['xids']:.1f} writing) | {db['wal_bytes'] / 1024:.1f} KiB |"
                f" {db['exec_ms']:.2f} ms | {db['pg_write_kb']:.0f} KiB | {db['retries']:.0f} |"
            )
        else:
            lines.append(
                f"| sqlite | {r['replicas']} | not counted | none (in-process) | {db['write_tx']:.1f} (write"
                f" transactions) | see storage writes | write lock held {db['lock_hold_ms']:.2f} ms |"
                f" {db['mcs_write_kb']:.0f} KiB | - |"
            )
    pgs = [r for r in results if "pg_cpu" in r["db"]]
    for r in pgs:
        db = r["db"]
        w = db.get("waits") or {"samples": 0, "events": [], "tables": []}
        lines += [
            "",
            f"PostgreSQL, {r['replicas']} replica(s): most frequent statements per task: "
            + "; ".join(f"{c:.2f} x `{q}` ({t:.3f} ms)" for q, c, t in db["top"])
            + ". Longest in total per task (time waiting for locks counts): "
            + "; ".join(f"{c:.2f} x `{q}` ({t:.1f} ms)" for q, c, t in db["top_time"][:3])
            + f". Its backends of this database, sampled every 20 ms ({w['samples']} samples), mean number per"
            " sample: "
            + ", ".join(f"{k} {v:.2f}" for k, v in w["events"])
            + "; tables whose locks were waited for: "
            + (", ".join(f"{k} {v:.2f}" for k, v in w["tables"]) or "none seen")
            + ".",
        ]
    lines += [
        "",
        "How: statements and server execution time from `pg_stat_statements` (reset at the window's start;"
        " BEGIN/COMMIT not counted as statements); round trips from `mcs_db_round_trips_total` summed over every"
        " process's /metrics (statements of committed transactions plus BEGIN and COMMIT); commits from the"
        " COMMIT count in `pg_stat_statements`, and how many of them wrote from the transaction-id counter"
        " (`pg_current_snapshot()`'s xmax); WAL bytes from `pg_current_wal_insert_lsn()`. `pg_stat_database."
        "xact_commit` and `pg_stat_wal.wal_bytes` are printed too but lag: PostgreSQL 15's backends report them"
        " at most once a second and up to 10 s late when idle. CPU: utime+stime from /proc over the window (MCS's"
        " processes; PostgreSQL's postmaster and all its children, exited backends included through cutime)."
        " Storage writes: `write_bytes` of /proc/<pid>/io (4 KiB pages dirtied: WAL, and for SQLite the"
        " checkpoints into mcs.db; PostgreSQL's checkpointer may write data pages after the window). PostgreSQL's"
        " client backends show about 100 times the WAL bytes in storage writes; what they write beyond the WAL is"
        " not established here (not data pages: the database fits in shared_buffers), so take the WAL bytes as"
        " the figure for PostgreSQL and the storage writes as SQLite's. SQLite has no"
        " statement counter and no WAL-bytes counter: its WAL is reused after each checkpoint, so the file's size"
        " says nothing about bytes written; its commits are `mcs_write_lock_acquisitions_total` (a group commit"
        " counts once) and its writes are the processes' storage writes.",
        "",
        notes(results, meta),
        END,
    ]
    return "\n".join(lines)


def notes(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The reading of this run's numbers (written from them, so a new run keeps it true)."""
    cores = os.cpu_count() or 1
    by = {(r["engine"], r["replicas"]): r for r in results if "triggers off" not in r["mode"]}
    diag = next((r for r in results if "triggers off" in r["mode"]), None)
    parts = [
        f"Notes. On this {cores}-core machine, shared with other work ({meta['note']}), replicas cannot show"
        " scale: two of each process only divide the same cores, so the 2-replica rows measure what replicas cost"
        " (more processes, more polling), not what they gain."
    ]
    p1, s1 = by.get(("postgres", 1)), by.get(("sqlite", 1))
    if p1 and s1:
        n = max(p1["throughput"]["completed"], 1)
        mcs_pg, mcs_sq = per_task_ms(p1), per_task_ms(s1)
        pg_cpu = p1["db"]["pg_cpu"] / n * 1000
        db = p1["db"]
        parts.append(
            f"Per task, MCS's processes took {mcs_pg:.2f} ms of CPU on PostgreSQL against {mcs_sq:.2f} ms on SQLite,"
            f" and PostgreSQL's own processes {pg_cpu:.2f} ms more: {mcs_pg + pg_cpu:.2f} ms a task in all, so"
            f" these {cores} cores top out near {cores / (mcs_pg + pg_cpu) * 1000:.0f} tasks/s on PostgreSQL and"
            f" {cores / mcs_sq * 1000:.0f} on SQLite (measured: {p1['throughput']['throughput']:.0f} and"
            f" {s1['throughput']['throughput']:.0f} with the bench's own processes on the same cores)."
        )
        w = db.get("waits") or {"events": [], "tables": []}
        lockwait = sum(v for k, v in w["events"] if k.startswith("Lock:"))
        busy = sum(v for k, v in w["events"] if not k.startswith("Client:"))
        parts.append(
            f"PostgreSQL's backends mostly wait on row locks: of {busy:.1f} busy on average, {lockwait:.1f} waited"
            " for a lock (Lock:transactionid: a row another transaction has changed and not yet committed, so the"
            " wait lasts until that commit's WAL flush), and the only table whose row locks showed in pg_locks was"
            f" {', '.join(k for k, _ in w['tables']) or 'none'} (a row's first waiter shows only as a transactionid"
            " wait, those queued behind it as a tuple lock on the table). Inside the writing transaction, every"
            " INSERT of a task and every state change updates one `task_counts` row per (state, priority,"
            " capabilities, route) (the triggers of migration 0017), so the writes that move tasks of one kind"
            " queue on the same few rows, each held until its transaction's commit is on disk (the INSERT and the"
            " assigning UPDATE spend tens of ms a task waiting; a statement's own work is under 0.5 ms)."
        )
        if diag is not None:
            dd, dw = diag["db"], diag["db"].get("waits") or {"events": []}
            parts.append(
                f"The diagnosis row (same setup, those triggers disabled) shows what they cost: statement time"
                f" {db['exec_ms']:.1f} -> {dd['exec_ms']:.1f} ms a task, PostgreSQL CPU {pg_cpu:.2f} ->"
                f" {dd['pg_cpu'] / max(diag['throughput']['completed'], 1) * 1000:.2f} ms a task, waits now "
                + ", ".join(f"{k} {v:.2f}" for k, v in dw["events"][:3])
                + f"; throughput {p1['throughput']['throughput']:.0f} -> {diag['throughput']['throughput']:.0f}"
                f" tasks/s, because on these {cores} saturated cores CPU, not the lock, sets the pace (PostgreSQL's"
                " processes and MCS's api take the most). On a machine with cores to spare the hot rows are the"
                " first ceiling; with"
                " them gone the next one shows as Lock:object: PostgreSQL serialises the commits of transactions"
                " that NOTIFY (one lock on the notification queue, held through the commit), and every writing"
                f" transaction here notifies ({db['xids']:.1f} a task)."
            )
        parts.append(
            f"Past those serial points the MCS part spreads over replicas (the api, the notifier and the dispatcher"
            f" carry most of it) and the limit becomes the PostgreSQL server: {db['statements']:.0f} statements in"
            f" {db['round_trips']:.0f} round trips and {db['commits']:.1f} commits a task"
            f" ({db['xids']:.1f} of them writing, each waiting for its WAL flush),"
            f" {db['wal_bytes'] / 1024:.1f} KiB of WAL and"
            + (
                f" {diag['db']['exec_ms']:.2f} ms of statement time (without the lock waits: the diagnosis row)"
                if diag is not None
                else f" {db['exec_ms']:.2f} ms of statement time (lock waits included)"
            )
            + f" a task: a server with C cores for PostgreSQL serves about C / {pg_cpu / 1000:.4f} s ="
            f" {1000 / pg_cpu:.0f} x C tasks/s before its CPU is the limit, and at"
            f" {db['wal_bytes'] / 1024:.1f} KiB a task 10,000 tasks/s would write"
            f" {db['wal_bytes'] * 10000 / 2**20:.0f} MiB/s of WAL."
        )
        parts.append(
            f"SQLite cannot spread that way: every write transaction takes the one write lock, held"
            f" {s1['db']['lock_hold_ms']:.2f} ms a task here ({s1['db']['write_tx']:.1f} write transactions a task),"
            f" so however many cores, one SQLite file stops near {1000 / max(s1['db']['lock_hold_ms'], 1e-9):.0f}"
            " tasks/s of this kind (faster disks shorten the fsync inside that hold, more cores do not)."
        )
    parts.append(
        "Figures from one noisy run on a shared machine: compare the rows of this run as ratios; the lead's full run"
        " replaces them."
    )
    return "\n".join(parts)


def machine_line(load1: float) -> str:
    m = run.machine()
    return (
        f"{m['nproc']} cores ({m['cpu']}), Python {m['python']}, SQLite {m['sqlite']}, {m['os']}, temp dirs on"
        f" {m['tmpfs']}; load average {load1:.1f} at the start."
    )


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        new = old[: old.index(START)] + text + old[old.index(END) + len(END) :]
    elif run.NOTES_END in old:  # inside the notes, which run.py keeps when it rewrites the file
        new = old.replace(run.NOTES_END, f"{text}\n{run.NOTES_END}", 1)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (about 2 minutes)")
    ap.add_argument("--engines", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--replicas", default="1,2", help="comma-separated replica counts to run")
    ap.add_argument("--mode", choices=["auto", "push", "pull"], default="auto", help="agents: push-claim or pull")
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--latency-tasks", type=int)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--tasks", type=int)
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="one more PostgreSQL setup (1 replica) with its task_counts triggers disabled (counts go wrong"
        " there): what the hot counter rows cost",
    )
    ap.add_argument("--note", default="", help="the machine's state, for the notes (e.g. 'load average 6')")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep each setup's folder (logs, SQLite file)")
    args = ap.parse_args()
    args.latency_tasks = args.latency_tasks or (60 if args.quick else 200)
    args.tasks = args.tasks or (300 if args.quick else 1000)
    args.timeout = 60.0 if args.quick else 120.0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    replicas = [int(x) for x in args.replicas.split(",")]
    on_engine = notifier_on_engine()
    pull = args.mode == "pull" or (args.mode == "auto" and "postgres" in engines and not on_engine)
    args.skip_notifier = pull and not on_engine
    missing = ""
    if pull and args.mode == "auto":
        missing = (
            "this build's `mcs notifier` does not open MCS_DATABASE_URL's engine, so no webhook reaches an agent on"
            " PostgreSQL: submit -> webhook and push-claim throughput cannot be measured there. Both engines ran with"
            " pull agents instead (submit -> claim answered; submit, claim, complete per task), without notifiers"
            " (nothing to deliver)."
        )
        say("NOTE: " + missing)
    if "postgres" in engines and pg.missing():
        say(f"cannot start PostgreSQL: {pg.missing()}")
        return 2
    load1 = os.getloadavg()[0]
    _, code = run.code_version(dict(os.environ))
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/engines.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "code": code,
        "machine": machine_line(load1),
        "latency_tasks": args.latency_tasks,
        "rate": args.rate,
        "tasks": args.tasks,
        "missing": missing,
        "roles": list(ROLES if not args.skip_notifier else ROLES[:3]),
        "note": args.note or f"load average {load1:.1f} at the start",
    }
    cluster = None
    results: list[dict[str, Any]] = []
    try:
        if "postgres" in engines:
            cluster = pg.PgCluster(synchronous_commit="on", settings=PG_SETTINGS).start()
            import psycopg

            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            say(f"PostgreSQL 15 on port {cluster.port} (synchronous_commit=on) in {cluster.root}")
        for n in replicas:
            for engine in engines:
                results.append(one_setup(engine, n, args, cluster if engine == "postgres" else None, pull))
        if args.diagnose and cluster is not None:
            results.append(one_setup("postgres", 1, args, cluster, pull, without_counts=True))
    except Exception as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        say(f"bench failed: {exc!r}")
        return 1
    finally:
        if cluster is not None:
            if args.keep:
                kept = Path(tempfile.mkdtemp(prefix="mcs-engines-pglog-")) / "postgresql.log"
                shutil.copy(cluster.root / "log", kept)
                say(f"kept PostgreSQL's log in {kept}")
            cluster.stop()
    write_section(args.output, section(results, meta))
    say(f"wrote the engines-bench section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
