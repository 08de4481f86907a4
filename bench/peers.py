"""MCS next to the Python queues people would pick instead: the same no-op workload, one run, one machine.

    python bench/peers.py            # MCS, huey, RQ twice, Celery: about 4 minutes
    python bench/peers.py --quick    # fewer tasks: about 2 minutes
    python bench/peers.py --systems mcs,huey --quick
    python bench/peers.py --rounds 3 # every system three times, in turn: medians (about 12 minutes)

First MCS, measured with bench/run.py's pieces (a real `mcs up`, 4 agents from bench/agentsim.py, the submitter
from bench/loadgen.py), then each peer in turn, each with its own fresh server and workers, all started by this
script on loopback in a temp dir and stopped at the end (also on error or Ctrl-C):

- huey: SqliteHuey on a file, `huey_consumer -k thread -w N` in its own process;
- RQ on Debian's `redis-server` with `appendonly yes` + `appendfsync always` (MCS commits each task with
  `synchronous=FULL`), and again with Redis's default persistence (RDB snapshots, no AOF); `rq worker`
  processes (SimpleWorker: no fork per job);
- Celery with the Redis broker (`appendfsync always`), `celery worker` with its default prefork pool.

The peers' submitter is bench/peerload.py (threads, each peer's own client API), their task bench/peertasks.py.
For every system: submit -> start latency at 20/s open loop (start = MCS: the agent's webhook handler begins;
peers: the task function's first line), throughput with 2,000 tasks (16 concurrent submitters; first submit to
last completion), CPU per task over all the system's processes (utime+stime from /proc over the throughput
run, server and workers/agents), RSS after it. Writes its section inside the notes markers of bench/RESULTS.md
(bench/run.py keeps them). Nothing is asserted on timing; the shared machine makes ratios within one run the
figures to read.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import peerload
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
    free_ports,
    latency_phase,
    machine,
    ms,
    pct,
    run_load,
    say,
    start_load,
    throughput_phase,
)

HERE = Path(__file__).resolve().parent
SECTION_START, SECTION_END = "<!-- peers-bench:start -->", "<!-- peers-bench:end -->"
SYSTEMS = ("mcs", "huey", "rq-always", "rq-default", "celery")
BIN = Path(sys.executable).parent

# What a crash costs each system, as configured here (checked against each project's source and docs; see
# bench/README.md). Printed next to its figures.
DURABILITY = {
    "mcs": "SQLite `synchronous=FULL`, one commit per submit, claim and complete (a 2xx is durable); a claim is "
    "a lease: if its agent dies the lease expires and the watchdog (every 30 s) retries the task, or fails it "
    "when its retries are spent (at-least-once)",
    "huey": "SQLite (WAL, the library's default `synchronous`: FULL here); the consumer's dequeue deletes the "
    "row, so a task in flight when the consumer dies is lost",
    "rq-always": "Redis AOF `appendfsync always`: each write fsynced before Redis answers; a started job sits in "
    "the started registry, and if its worker dies it ends as failed (AbandonedJobError) once the entry "
    "has expired (job monitoring interval + 60 s = 90 s), at a worker's next maintenance pass (every 10 min), "
    "unless enqueued with `Retry`",
    "rq-default": "Redis's default persistence: RDB snapshots (`save 3600 1 300 100 60 10000`), no AOF: an "
    "acknowledged enqueue can be lost with the server (up to a minute's writes); worker death as above",
    "celery": "Redis AOF `appendfsync always`; `acks_late` off (Celery's default): the message is acked when a "
    "pool process accepts it, just before the task runs, so a task running when its worker dies is lost; "
    "prefetched, not yet started messages come back after the broker's `visibility_timeout` (1 h)",
}


def python_deps_missing() -> str | None:
    missing = [m for m in ("huey", "rq", "celery", "redis") if importlib.util.find_spec(m) is None]
    if missing:
        return f"missing Python packages {', '.join(missing)}: pip install -e '.[bench]'"
    return None


# ---------------------------------------------------------------- processes this script starts


class Procs:
    """The peer's server and workers: each in its own session (so its children can be found and stopped with
    it), output to a log file in the temp dir. `stop_all` ends every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                cmd, env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.items.append((name, proc))
        return proc

    def pids(self) -> list[int]:
        return [p.pid for _, p in self.items]

    def check(self) -> None:
        for name, proc in self.items:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, n: int = 20) -> str:
        try:
            return "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop_all(self) -> None:
        """Workers first, the server last: SIGTERM, up to 10 s, then SIGKILL to the whole session."""
        for _, proc in reversed(self.items):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.items):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its process group: leftovers such as pool children
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        self.items = []


def start_redis(procs: Procs, name: str, persistence: str) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not found: install Debian's package (apt-get install redis-server)")
    port = free_ports(1)[0]
    data = procs.workdir / name
    data.mkdir()
    cmd = [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--daemonize", "no"]
    if persistence == "always":
        cmd += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    # "default": no persistence options at all, i.e. Redis's own defaults (RDB snapshot rules, no AOF)
    procs.start(name, cmd, dict(os.environ))
    from redis import Redis

    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        procs.check()
        try:
            client.ping()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering on :{port}:\n{procs.tail(name)}") from None
            time.sleep(0.05)
    client.close()
    return url


# ---------------------------------------------------------------- reading the tasks' marks


class Marks:
    """The lines the peers' task writes (`tag i started finished`), read as they grow."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rows: dict[str, dict[int, tuple[float, float]]] = {}
        self.duplicates = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode().splitlines():
            tag, i, started, finished = line.split()
            rows = self.rows.setdefault(tag, {})
            if int(i) in rows:
                self.duplicates += 1
            else:
                rows[int(i)] = (float(started), float(finished))

    def count(self, tag: str) -> int:
        return len(self.rows.get(tag, {}))

    def wait(self, tag: str, n: int, timeout: float, label: str, check: Callable[[], None]) -> None:
        deadline = time.monotonic() + timeout
        last_print = time.monotonic()
        while True:
            self.poll()
            if self.count(tag) >= n:
                return
            check()
            if time.monotonic() > deadline:
                say(f"  {label}: timed out with {self.count(tag)}/{n} tasks run")
                return
            if time.monotonic() - last_print >= 2:
                say(f"  {label}: {self.count(tag)}/{n} tasks run")
                last_print = time.monotonic()
            time.sleep(0.02)


# ---------------------------------------------------------------- one peer


def peer_workers(system: str, procs: Procs, env: dict[str, str], args: argparse.Namespace) -> str:
    """Start the peer's workers; returns what was started, for the results."""
    if system == "huey":
        exe = BIN / "huey_consumer"
        d = str(args.huey_delay)
        cmd = [str(exe), "peertasks.huey", "-w", str(args.huey_workers), "-k", "thread", "-d", d, "-m", d]
        procs.start("huey-consumer", [*cmd, "-b", "1", "--no-periodic", "-q"], env)
        return (
            f"1 `huey_consumer` process, {args.huey_workers} worker threads (`-k thread`), polling every "
            f"{args.huey_delay * 1000:g} ms (`-d {d} -m {d} -b 1`; huey's default starts at 100 ms and backs off to "
            "10 s)"
        )
    if system.startswith("rq"):
        for k in range(args.rq_workers):
            cmd = [str(BIN / "rq"), "worker", "-u", env["PEERS_BENCH_REDIS_URL"], "-w", args.rq_worker_class]
            procs.start(f"rq-worker-{k}", [*cmd, "-q", "--disable-job-desc-logging", "peers"], env)
        kind = args.rq_worker_class.rsplit(".", 1)[-1]
        return f"{args.rq_workers} `rq worker` processes (`{kind}`), 1 `redis-server`"
    if system == "celery":
        cmd = [str(BIN / "celery"), "-A", "peertasks", "worker", "-P", args.celery_pool, "-c", str(args.celery_workers)]
        cmd += ["-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        procs.start("celery-worker", cmd, env)
        return (
            f"1 `celery worker`, `-P {args.celery_pool} -c {args.celery_workers}` (prefetch multiplier 4, Celery's "
            "default), 1 `redis-server`"
        )
    raise ValueError(system)


def run_peer(system: str, workdir: Path, args: argparse.Namespace, lat_n: int, tp_n: int) -> dict[str, Any]:
    pdir = workdir / system
    pdir.mkdir()
    marks = Marks(pdir / "marks.txt")
    lib = "rq" if system.startswith("rq") else system
    env = {"PEERS_BENCH_SYSTEM": lib, "PEERS_BENCH_MARKS": str(marks.path)}
    procs = Procs(pdir)
    gen: Helper | None = None
    res: dict[str, Any] = {"system": system}
    try:
        server_pids: list[int] = []
        if lib == "huey":
            env["PEERS_BENCH_HUEY_DB"] = str(pdir / "huey.db")
        else:
            persistence = "default" if system == "rq-default" else "always"
            env["PEERS_BENCH_REDIS_URL"] = start_redis(procs, "redis-server", persistence)
            server_pids = procs.pids()
            res["redis_set"] = redis_round_trip(env["PEERS_BENCH_REDIS_URL"])
        worker_env = dict(os.environ) | env
        worker_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        res["processes"] = peer_workers(lib, procs, worker_env, args)
        if "PEERS_BENCH_REDIS_URL" in env:
            res["processes"] += f" ({redis_persistence(env['PEERS_BENCH_REDIS_URL'])})"
        say(f"{system}: started {', '.join(f'{n} pid {p.pid}' for n, p in procs.items)}")
        gen = Helper(peerload.main, {"env": env}, f"peers-{system}-submitter")
        # the submitter enqueued one task ("warm") on start: when it has run, the workers are consuming
        marks.wait("warm", 1, 60, f"{system} start-up", procs.check)
        if marks.count("warm") < 1:
            raise RuntimeError(f"{system}: no task ran within 60 s")
        if lib == "rq":  # one task ran: wait for every worker to have registered too
            wait_rq_workers(env["PEERS_BENCH_REDIS_URL"], args.rq_workers, procs.check)

        def load(cmd: dict[str, Any], timeout: float, label: str) -> dict[str, Any]:
            assert gen is not None
            gen.pipe.send(cmd | {"concurrency": args.concurrency})
            sent: dict[str, Any] = gen.recv(cmd["n"] / cmd.get("rate", 50) + 120)
            failed = sum(1 for r in sent["records"] if not r[3])
            marks.wait(cmd["tag"], cmd["n"] - failed, timeout, label, procs.check)
            sent["failed"] = failed
            return sent

        load({"mode": "paced", "n": 50, "rate": 50, "tag": "warmup"}, 30, f"{system} warm-up")

        say(f"{system} latency: {lat_n} tasks at {args.rate:g}/s")
        sent = load({"mode": "paced", "n": lat_n, "rate": args.rate, "tag": "lat"}, 30, f"{system} latency")
        runs = marks.rows.get("lat", {})
        lat = [runs[i][0] - t for i, t, _, ok in sent["records"] if ok and i in runs]
        res |= {
            "lat_n": lat_n,
            "received": len(lat),
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
        }
        res["lat_submit_failed"] = sent["failed"]
        last = max(sent["records"], key=lambda rec: rec[1])
        res["behind"] = runs[last[0]][0] - last[1] if last[0] in runs else float("nan")
        submitter_cpu = sent["cpu_s"]
        enqueue = [a - t for _, t, a, ok in sent["records"] if ok]
        res["enqueue_p50"], res["enqueue_p99"] = pct(enqueue, 50), pct(enqueue, 99)
        say(f"{system} latency: p50 {ms(res['p50'])} p99 {ms(res['p99'])} ({len(lat)}/{lat_n} ran)")

        say(f"{system} throughput: {tp_n} tasks, {args.concurrency} submitting threads")
        pids = procs.pids()
        commands = redis_commands(env.get("PEERS_BENCH_REDIS_URL"))
        before = (procinfo.tree_cpu_seconds(pids), procinfo.tree_cpu_seconds(server_pids), procinfo.machine_cpu())
        wall = time.monotonic()
        sent = load({"mode": "flood", "n": tp_n, "tag": "tp"}, args.timeout, f"{system} throughput")
        wall = time.monotonic() - wall
        after = (procinfo.tree_cpu_seconds(pids), procinfo.tree_cpu_seconds(server_pids), procinfo.machine_cpu())
        commands = redis_commands(env.get("PEERS_BENCH_REDIS_URL")) - commands
        runs = marks.rows.get("tp", {})
        first = min(t for _, t, _, _ in sent["records"])
        elapsed = max((f for _, f in runs.values()), default=first) - first
        done = len(runs)
        res |= {
            "tp_n": tp_n,
            "completed": done,
            "elapsed": elapsed,
            "throughput": done / elapsed if elapsed > 0 else 0.0,
            "submit_rate": tp_n / (sent["ended"] - sent["started"]),
            "tp_submit_failed": sent["failed"],
            "cpu_ms": (after[0] - before[0]) / max(done, 1) * 1000,
            "server_cpu_ms": (after[1] - before[1]) / max(done, 1) * 1000 if server_pids else None,
            "machine_cores": (after[2][0] - before[2][0]) / (after[2][1] - before[2][1]) * (os.cpu_count() or 1),
            "own_cores": (after[0] - before[0] + sent["cpu_s"] - submitter_cpu) / wall,
            "duplicates": marks.duplicates,
            "submitter_cpu_ms": (sent["cpu_s"] - submitter_cpu) / max(done, 1) * 1000,
        }
        if commands:
            res["redis_commands"] = commands / max(done, 1)
        res["rss_kib"], res["pss_kib"] = procinfo.tree_memory_kib(pids)
        res["check"] = verify(system, env)
        say(
            f"{system} throughput: {done}/{tp_n} in {elapsed:.2f} s = {res['throughput']:.0f} tasks/s (submitting "
            f"alone {res['submit_rate']:.0f}/s); CPU {res['cpu_ms']:.2f} ms/task; RSS {res['rss_kib'] / 1024:.0f} "
            f"MiB (PSS {res['pss_kib'] / 1024:.0f}); {res['check']}"
        )
    finally:
        if gen is not None:
            gen.stop({"mode": "stop"})
        procs.stop_all()
        say(f"{system}: stopped")
    return res


def redis_persistence(url: str) -> str:
    """The running server's own persistence settings, as CONFIG GET reports them."""
    from redis import Redis

    with Redis.from_url(url) as conn:
        got = {k: conn.config_get(k)[k] for k in ("appendonly", "appendfsync", "save")}
    return ", ".join(f"{k} `{v}`" for k, v in got.items())


def redis_commands(url: str | None) -> int:
    """Commands Redis has processed so far (0 without Redis)."""
    if not url:
        return 0
    from redis import Redis

    with Redis.from_url(url) as conn:
        return int(conn.info("stats")["total_commands_processed"])


def redis_round_trip(url: str, n: int = 200) -> tuple[float, float]:
    """p50 and p99 of one SET's round trip from a single client: what each of a worker's separate writes
    waits for (with `appendfsync always`, Redis answers after its fsync)."""
    from redis import Redis

    times = []
    with Redis.from_url(url) as conn:
        for i in range(n):
            t = time.perf_counter()
            conn.set("peers-bench-probe", i)
            times.append(time.perf_counter() - t)
        conn.delete("peers-bench-probe")
    return pct(times, 50), pct(times, 99)


def wait_rq_workers(url: str, n: int, check: Callable[[], None], timeout: float = 60) -> None:
    from redis import Redis
    from rq import Worker

    deadline = time.monotonic() + timeout
    with Redis.from_url(url) as conn:
        while Worker.count(connection=conn) < n:
            check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {Worker.count(connection=conn)} of {n} rq workers registered")
            time.sleep(0.1)


def verify(system: str, env: dict[str, str]) -> str:
    """What the peer itself says about the jobs after the runs."""
    try:
        if system.startswith("rq"):
            from redis import Redis
            from rq import Queue

            with Redis.from_url(env["PEERS_BENCH_REDIS_URL"]) as conn:
                q = Queue("peers", connection=conn)
                return (
                    f"RQ: {q.finished_job_registry.count} finished, {q.failed_job_registry.count} failed, "
                    f"{len(q)} queued"
                )
        if system == "celery":
            from redis import Redis

            with Redis.from_url(env["PEERS_BENCH_REDIS_URL"]) as conn:
                return f"Redis: {conn.llen('celery')} messages queued, {conn.hlen('unacked')} unacked"
        if system == "huey":
            from huey import SqliteHuey

            return f"huey: {len(SqliteHuey('peers', filename=env['PEERS_BENCH_HUEY_DB']))} tasks queued"
    except Exception as exc:  # noqa: BLE001 - a note in the results, not a failure
        return f"could not check: {exc!r}"
    return ""


# ---------------------------------------------------------------- MCS


def run_mcs(workdir: Path, args: argparse.Namespace, lat_n: int, tp_n: int) -> dict[str, Any]:
    mdir = workdir / "mcs"
    mdir.mkdir()
    server = Server(mdir, "FULL")
    _, code = code_version(server.env)
    say(f"mcs: {code}")
    helpers: list[tuple[Helper, Any]] = []
    res: dict[str, Any] = {"system": "mcs", "code": code}
    try:
        server.start()
        agents, gen, helpers = start_load(server, agents=4, submitters=args.concurrency, push_claim=args.push_claim)
        run_load(gen, agents, {"mode": "paced", "n": 50, "rate": 50, "tag": "warm"}, 20, "mcs warm-up")
        lat = latency_phase(server, gen, agents, lat_n, args.rate)
        before = (procinfo.cpu_seconds(agents.proc.pid), procinfo.machine_cpu())
        tp = throughput_phase(server, gen, agents, tp_n, args.concurrency, args.timeout)
        after = (procinfo.cpu_seconds(agents.proc.pid), procinfo.machine_cpu())
        done = max(tp["completed"], 1)
        server_cpu = sum(tp["cpu"].values())
        rss = sum(procinfo.status_kib(pid, "VmRSS") for pid in server.pids.values())
        pss = procinfo.tree_memory_kib(list(server.pids.values()))[1]
        agents_mem = procinfo.tree_memory_kib([agents.proc.pid])
        res |= {
            "lat_n": lat_n,
            "received": lat["received"],
            "p50": lat["p50"],
            "p99": lat["p99"],
            "max": lat["max"],
            "lat_submit_failed": lat["submit_failed"],
            "enqueue_p50": lat["stages"]["submit POST answered (201)"][0],
            "enqueue_p99": lat["stages"]["submit POST answered (201)"][1],
            "tp_n": tp_n,
            "completed": tp["completed"],
            "elapsed": tp["elapsed"],
            "throughput": tp["throughput"],
            "submit_rate": tp["submit_rate"],
            "tp_submit_failed": tp["submit_failed"],
            "cpu_ms": (server_cpu + after[0] - before[0]) / done * 1000,
            "server_cpu_ms": server_cpu / done * 1000,
            "api_cpu_ms": tp["cpu"].get("api", 0.0) / done * 1000,
            "agents_cpu_ms": (after[0] - before[0]) / done * 1000,
            "machine_cores": (after[1][0] - before[1][0]) / (after[1][1] - before[1][1]) * (os.cpu_count() or 1),
            "own_cores": (server_cpu + after[0] - before[0] + tp["gen_cpu"] - lat["gen_cpu"]) / tp["wall"],
            "duplicates": tp["duplicates"],
            "submitter_cpu_ms": (tp["gen_cpu"] - lat["gen_cpu"]) / done * 1000,
            "rss_kib": rss + agents_mem[0],
            "pss_kib": pss + agents_mem[1],
            "server_rss_kib": rss,
            "check": f"webhooks {tp['webhooks']} ({tp['pushed']} carrying their claim), claims refused "
            f"{tp['claim_refused']}, agent errors {tp['errors']}",
            "processes": "`mcs up` (api, dispatcher, watchdog, notifier), `MCS_SYNCHRONOUS=FULL`; 4 agents in 1 "
            f"process (bench/agentsim.py: webhook receivers, {agents_claim(args.push_claim)}, that complete over "
            "raw keep-alive HTTP, 8 tasks each at once)",
            "requests": 2 if args.push_claim else 3,
        }
        say(
            f"mcs: CPU {res['cpu_ms']:.2f} ms/task (server {res['server_cpu_ms']:.2f}, agents "
            f"{res['agents_cpu_ms']:.2f}); RSS {res['rss_kib'] / 1024:.0f} MiB (server {rss / 1024:.0f})"
        )
    finally:
        for helper, msg in helpers:
            helper.stop(msg)
        code_ = server.stop()
        say(f"mcs up stopped (exit code {code_})")
    return res


# ---------------------------------------------------------------- report


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's rounds as one: the median of each figure, the rest from the last round."""
    out = dict(runs[-1])
    for key, value in runs[-1].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
    out["rounds"] = [r["throughput"] for r in runs]
    return out


NAMES = {
    "mcs": "MCS",
    "huey": "huey (SqliteHuey)",
    "rq-always": "RQ, Redis `appendfsync always`",
    "rq-default": "RQ, Redis default persistence",
    "celery": "Celery, Redis broker (`appendfsync always`)",
}


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or a != a or b != b or b == 0:
        return float("nan")
    return a / b


def x(r: float) -> str:
    if r != r:
        return "n/a"
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, started: str, load: str) -> str:
    m = machine()
    cores = int(m["nproc"])
    mcs = results.get("mcs")
    lines = [
        f"### Peers side by side (`{args.command}`, {started})",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['os']}, Python {m['python']}; shared with other work "
        f"({load}), so read the ratios within this run rather than the absolute figures. "
        + (f"MCS: {mcs['code']}. " if mcs else "")
        + f"One workload for all: a no-op task; latency = {results[next(iter(results))]['lat_n']} tasks at "
        f"{args.rate:g}/s open loop, submit -> start (MCS: the agent's webhook handler begins; peers: the task "
        f"function's first line); throughput = {results[next(iter(results))]['tp_n']} tasks from "
        f"{args.concurrency} concurrent submitters, first submit -> last completion (MCS: the agent's `complete` "
        "call answered; peers: the task function's last line, before the library's own bookkeeping of that last "
        "task); CPU = utime+stime of every process of the system (server and workers/agents, pool children "
        "included) over the throughput run; RSS (PSS) summed over them after it. Each peer ran on a fresh server "
        "with its workers in their own processes; the submitters (bench/loadgen.py, bench/peerload.py) are not "
        "counted: their CPU per task is shown apart (huey has no server: its enqueue, the SQLite insert and commit, "
        "runs in the submitting process, where MCS's runs in its api).",
        "",
        "| system | submit -> start p50 | p99 | submit call returned p50 / p99 | throughput | CPU per task "
        "| RSS (PSS) | submitter's CPU per task "
        "(not counted) | machine busy during the throughput run | durability as configured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        cpu = f"{r['cpu_ms']:.2f} ms"
        if name == "mcs":
            cpu += f" (server {r['server_cpu_ms']:.2f}, agents {r['agents_cpu_ms']:.2f})"
        elif r.get("server_cpu_ms") is not None:
            cpu += f" (redis-server {r['server_cpu_ms']:.2f})"
        done = "" if r["completed"] == r["tp_n"] else f" ({r['completed']}/{r['tp_n']} ran)"
        lines.append(
            f"| {NAMES[name]} | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['enqueue_p50'])} / {ms(r['enqueue_p99'])} | "
            f"{r['throughput']:.0f} tasks/s{done} | {cpu} | "
            f"{r['rss_kib'] / 1024:.0f} MiB ({r['pss_kib'] / 1024:.0f}) | {r['submitter_cpu_ms']:.2f} ms | "
            f"{r['machine_cores']:.2f} of {m['nproc']} cores, {max(0.0, r['machine_cores'] - r['own_cores']):.2f} by "
            f"other work | {DURABILITY[name]} |"
        )
    for name, r in results.items():
        if r.get("behind", 0) > 1.0:
            lines += [
                "",
                f"{NAMES[name]} did not keep up with {args.rate:g} tasks/s here: its backlog grew through the latency "
                f"run (the last task started {r['behind']:.1f} s after it was submitted), so its latency is mostly "
                "queueing.",
            ]
    if args.rounds > 1:
        lines += [
            "",
            f"Figures are medians of {args.rounds} rounds (every system once per round, in turn). Throughput per "
            "round: "
            + "; ".join(f"{NAMES[n]} " + ", ".join(f"{t:.0f}" for t in r["rounds"]) for n, r in results.items())
            + " tasks/s.",
        ]
    lines += ["", "Processes: " + "; ".join(f"{NAMES[n]}: {r['processes']}" for n, r in results.items()) + "."]
    probes = [
        f"{NAMES[n]}: {ms(r['redis_set'][0])} / {ms(r['redis_set'][1])}, {r.get('redis_commands', 0):.1f} commands"
        for n, r in results.items()
        if "redis_set" in r
    ]
    if probes:
        lines += [
            "",
            "Redis: one write's round trip (200 SETs from one client before the runs, p50 / p99) and the commands "
            "Redis processed per task in the throughput run (submitter and workers; each command a worker sends "
            "outside a pipeline is one round trip, and with `appendfsync always` each write waits for an fsync): "
            + "; ".join(probes)
            + ".",
        ]
    ceilings = []
    for n, r in results.items():
        per_task = r["cpu_ms"] + r["submitter_cpu_ms"]
        if per_task > 0:
            ceilings.append(f"{NAMES[n]} {per_task:.2f} ms -> {cores * 1000 / per_task:.0f}/s")
    lines += [
        "",
        f"CPU ceiling: alone on the {cores} cores, a system could not go beyond cores / (its CPU per task + its "
        "submitter's): " + "; ".join(ceilings) + ".",
    ]
    lines += ["", "Checks after the runs: " + "; ".join(f"{NAMES[n]}: {r['check']}" for n, r in results.items()) + "."]
    peers = [n for n in results if n != "mcs"]
    if mcs and peers:
        lines += [
            "",
            "MCS's figures as ratios to each peer's in this run (latency and CPU: below 1 means MCS is lower; "
            "throughput: above 1 means MCS is faster):",
            "",
            "| MCS / | p50 | p99 | throughput | CPU per task | RSS |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for n in peers:
            r = results[n]
            lines.append(
                f"| {NAMES[n]} | {x(ratio(mcs['p50'], r['p50']))} | {x(ratio(mcs['p99'], r['p99']))} | "
                f"{x(ratio(mcs['throughput'], r['throughput']))} | {x(ratio(mcs['cpu_ms'], r['cpu_ms']))} | "
                f"{x(ratio(mcs['rss_kib'], r['rss_kib']))} |"
            )
        lines += ["", *verdicts(results)]
    return "\n".join(lines)


def verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    mcs = results["mcs"]
    out = []
    rq = results.get("rq-always")
    if rq:
        checks = [
            ("p50", ratio(mcs["p50"], rq["p50"]) < 1, ratio(mcs["p50"], rq["p50"])),
            ("p99", ratio(mcs["p99"], rq["p99"]) < 1, ratio(mcs["p99"], rq["p99"])),
            ("throughput", ratio(mcs["throughput"], rq["throughput"]) > 1, ratio(mcs["throughput"], rq["throughput"])),
        ]
        ok = all(c[1] for c in checks)
        lines = ", ".join(f"{k} {x(r)} ({'better' if good else 'worse'})" for k, good, r in checks)
        out.append(
            f"- Target *faster than RQ with `appendfsync always` on latency and throughput*: "
            f"**{'meets' if ok else 'misses'}** (MCS / RQ: {lines})."
        )
    huey = results.get("huey")
    if huey:
        r = ratio(mcs["throughput"], huey["throughput"])
        out.append(
            f"- Target *within 2x of huey's throughput*: **{'meets' if r >= 0.5 else 'misses'}** (MCS "
            f"{mcs['throughput']:.0f} tasks/s = {x(r)} huey's {huey['throughput']:.0f}; the target is ≥ 0.50x)."
        )
        if r < 0.5:
            mcs_task = mcs["cpu_ms"] + mcs["submitter_cpu_ms"]
            cores = os.cpu_count() or 1
            ceiling = cores * 1000 / mcs_task
            budget = cores * 1000 / (huey["throughput"] / 2)
            if ceiling < huey["throughput"] / 2:
                then = (
                    f"below half of huey's {huey['throughput']:.0f}: at this CPU per task the target cannot be met on "
                    f"{cores} cores even with nothing else running; it needs MCS (submitter included) under "
                    f"{budget:.2f} ms per task"
                )
            else:
                then = (
                    f"above half of huey's {huey['throughput']:.0f}, so here the other work on the cores made the "
                    "difference"
                )
            out.append(
                f"  What limits it in this run: CPU. MCS spent {mcs['cpu_ms']:.2f} ms per task over its processes "
                f"(api {mcs['api_cpu_ms']:.2f}: {mcs.get('requests', 3)} HTTP requests per task, and a webhook), huey "
                f"{huey['cpu_ms'] + huey['submitter_cpu_ms']:.2f} ms (consumer and submitter: SQLite, no HTTP). "
                f"The {cores} cores alone would allow MCS {ceiling:.0f} tasks/s, {then}. During the throughput runs "
                f"MCS's processes and submitter got {mcs['own_cores']:.2f} cores (other work "
                f"{max(0.0, mcs['machine_cores'] - mcs['own_cores']):.2f}), huey's {huey['own_cores']:.2f} (other "
                f"work {max(0.0, huey['machine_cores'] - huey['own_cores']):.2f})."
            )
    return out


def write(path: Path, section: str) -> None:
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


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer tasks (100 for latency, 500 for throughput)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    ap.add_argument("--latency-tasks", type=int)
    ap.add_argument("--tasks", type=int, help="tasks in the throughput run (default 2000)")
    ap.add_argument("--rate", type=float, default=20.0, help="tasks/s in the latency run")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent submitters in the throughput run")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a throughput run")
    add_push_claim_flag(ap)
    ap.add_argument("--huey-workers", type=int, default=4, help="worker threads in the huey consumer")
    ap.add_argument("--huey-delay", type=float, default=0.005, help="huey's polling interval, seconds")
    ap.add_argument("--rq-workers", type=int, default=4, help="`rq worker` processes (default 4, as MCS's 4 agents)")
    ap.add_argument("--rq-worker-class", default="rq.SimpleWorker", help="rq.SimpleWorker, or rq.Worker (fork per job)")
    ap.add_argument("--celery-pool", default="prefork", choices=["prefork", "threads"])
    ap.add_argument("--celery-workers", type=int, default=2, help="Celery's pool size (-c)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every system this many times, in turn, and report each figure's median (default 1)",
    )
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    args = ap.parse_args()
    args.command = "python bench/peers.py" + "".join(f" {a}" for a in sys.argv[1:])
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        print(f"unknown systems: {', '.join(sorted(unknown))} (choose from {', '.join(SYSTEMS)})", file=sys.stderr)
        return 2
    if any(s != "mcs" for s in systems):
        problem = python_deps_missing()
        needs_redis = any(s.startswith(("rq", "celery")) for s in systems)
        if problem is None and needs_redis and not shutil.which("redis-server"):
            problem = "redis-server not found: install Debian's package (apt-get install redis-server)"
        if problem:
            print(f"peers.py: {problem}", file=sys.stderr)
            return 2
    lat_n = args.latency_tasks or (100 if args.quick else 400)
    tp_n = args.tasks or (500 if args.quick else 2000)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the finally blocks stop every process started

    signal.signal(signal.SIGTERM, on_term)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    workdir = Path(tempfile.mkdtemp(prefix="mcs-peers-bench-"))
    say(f"temp dir {workdir}; load average {load}")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    code = 0
    try:
        for k in range(args.rounds):
            if args.rounds > 1:
                say(f"round {k + 1} of {args.rounds}")
            for system in systems:
                rdir = workdir / f"round{k}"
                rdir.mkdir(exist_ok=True)
                run = run_mcs if system == "mcs" else partial(run_peer, system)
                runs[system].append(run(rdir, args, lat_n, tp_n))
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    except (RuntimeError, TimeoutError, OSError, httpx.HTTPError) as exc:
        say(f"bench failed: {exc}")
        code = 1
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if code:
        return code
    results = {system: median(r) for system, r in runs.items()}
    section = report(results, args, started, f"load average {load} at the start")
    print(section)
    if not args.no_write:
        write(args.output, section)
        say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
