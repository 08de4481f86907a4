"""MCS benchmark: starts a real `mcs up` and measures submit -> webhook latency, end-to-end throughput, CPU
per task and memory per process. Writes bench/RESULTS.md.

    python bench/run.py            # 1-1.5 minutes
    python bench/run.py --quick    # under a minute (about 30 s)
    python bench/run.py --profile  # plus two passes under py-spy (CPU, wall clock): about 2 minutes

The server, the agents (bench/agentsim.py, raw asyncio HTTP) and the submitter (bench/loadgen.py, httpx) are
separate OS processes; on a small machine they compete for the same cores, which the results say.
Figures are reported against their targets; nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import socket
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
import pyspy

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
NOTES_START, NOTES_END = "<!-- notes:start -->", "<!-- notes:end -->"
TARGETS = {"p50_ms": 5.0, "p99_ms": 25.0, "throughput": 150.0, "mem_put_ratio": 0.5, "mem_get_ratio": 0.7}
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pct(values: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.1f} ms"


# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, workdir: Path, synchronous: str) -> None:
        self.workdir = workdir
        self.api_port, self.disp_port, self.wd_port, self.notif_port = free_ports(4)
        self.token = "mcsadm_bench_" + secrets.token_urlsafe(16)
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.db = workdir / "mcs.db"
        self.log = workdir / "mcs-up.log"
        self.env = dict(os.environ) | {
            "MCS_DB": str(self.db),
            "MCS_HOST": "127.0.0.1",
            "MCS_PORT": str(self.api_port),
            "MCS_DISPATCHER_METRICS_PORT": str(self.disp_port),
            "MCS_WATCHDOG_METRICS_PORT": str(self.wd_port),
            "MCS_NOTIFIER_METRICS_PORT": str(self.notif_port),
            "MCS_ADMIN_TOKEN": self.token,
            "MCS_SYNCHRONOUS": synchronous,
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: dict[str, int] = {}

    def start(self, timeout: float = 40.0) -> None:
        mcs = Path(sys.executable).parent / "mcs"
        cmd = [str(mcs), "up"] if mcs.exists() else [sys.executable, "-m", "mcs", "up"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        pending = {
            "api": f"{self.url}/healthz",
            "dispatcher": f"http://127.0.0.1:{self.disp_port}/healthz",
            "watchdog": f"http://127.0.0.1:{self.wd_port}/healthz",
            "notifier": f"http://127.0.0.1:{self.notif_port}/healthz",
        }
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mcs up exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {timeout:.0f} s: {sorted(pending)}\n{self.tail()}")
            for name, url in list(pending.items()):
                try:
                    if httpx.get(url, timeout=1.0).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.pids = procinfo.children(self.proc.pid)
        missing = set(procinfo.NAMES) - set(self.pids)
        if missing:
            raise RuntimeError(f"could not find child processes {sorted(missing)} of pid {self.proc.pid}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        from sqlite_utils.utils import sqlite3

        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()


def code_version(env: dict[str, str]) -> tuple[Path, str]:
    """Where the server's `mcs` package comes from, and its git commit (with -dirty for local changes)."""
    out = subprocess.run(
        [sys.executable, "-c", "import mcs, os; print(os.path.dirname(mcs.__file__))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    pkg = Path(out.stdout.strip())
    git = ["git", "-C", str(pkg)]
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if sha.returncode != 0:
        return pkg, f"mcs from {pkg} (not a git checkout)"
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True).stdout.strip()
    return pkg, f"commit {sha.stdout.strip()}{' with uncommitted changes' if dirty else ''} ({pkg})"


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    out = {name: procinfo.cpu_seconds(pid) for name, pid in pids.items()}
    busy, total = procinfo.machine_cpu()
    out["_busy"], out["_total"] = busy, total
    out["_wall"] = time.monotonic()
    return out


# ---------------------------------------------------------------- helper processes


class Helper:
    """A bench process (agents or load generator) driven over a pipe."""

    def __init__(self, target: Any, cfg: dict[str, Any], name: str) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, cfg), name=name, daemon=True)
        self.proc.start()
        self.ready = self.recv(60)

    def call(self, msg: Any, timeout: float = 30) -> Any:
        self.pipe.send(msg)
        return self.recv(timeout)

    def recv(self, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            raise TimeoutError(f"{self.proc.name} did not answer within {timeout:.0f} s")
        return self.pipe.recv()

    def stop(self, msg: Any) -> None:
        try:
            if self.proc.is_alive():
                self.pipe.send(msg)
                self.proc.join(5)
        except (OSError, EOFError):
            pass
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def start_load(
    server: Server, *, agents: int, submitters: int, prefix: str = "bench", push_claim: bool = True
) -> tuple[Helper, Helper, list[tuple[Helper, Any]]]:
    """Create `agents` agents with the capability `bench`, start agentsim (their webhooks) and loadgen (the
    submitter); returns both and the (helper, stop command) pairs to stop them with. The agents register
    with `claim_on_push` (each webhook carries the claim: submit and complete per task) unless `push_claim`
    is False (submit, claim, complete, as before push-claim)."""
    admin = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.token}"}, timeout=10)
    creds = []
    for i in range(agents):
        r = admin.post("/v1/agents", json={"name": f"{prefix}-{i}", "capabilities": ["bench"]})
        r.raise_for_status()
        creds.append({"name": r.json()["name"], "secret": r.json()["secret"]})
    admin.close()
    sim = Helper(
        agentsim.main,
        {"api_url": server.url, "agents": creds, "concurrency": 4, "capacity": 8, "push_claim": push_claim},
        "bench-agents",
    )
    gen = Helper(
        loadgen.main,
        {"api_url": server.url, "admin_token": server.token, "concurrency": submitters, "client": "raw"},
        "bench-loadgen",
    )
    return sim, gen, [(sim, "stop"), (gen, {"mode": "stop"})]


def create_agents(url: str, token: str, count: int) -> list[dict[str, str]]:
    """Create the bench's agents (bench-0, bench-1, ...: capability "bench") as the admin; their credentials."""
    creds = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=10) as admin:
        for i in range(count):
            r = admin.post("/v1/agents", json={"name": f"bench-{i}", "capabilities": ["bench"]})
            r.raise_for_status()
            creds.append({"name": r.json()["name"], "secret": r.json()["secret"]})
    return creds


def add_push_claim_flag(ap: argparse.ArgumentParser) -> None:
    """`--no-push-claim`, the same in every bench that starts agents with `start_load`."""
    ap.add_argument(
        "--no-push-claim",
        dest="push_claim",
        action="store_false",
        help="agents claim each task themselves (no claim_on_push: submit, claim, complete per task)",
    )


def agents_claim(push_claim: bool) -> str:
    """How the bench's agents get their claims, for the reports."""
    return "claim_on_push: each webhook carries the claim" if push_claim else "a claim request per task"


def run_load(gen: Helper, agents: Helper, cmd: dict[str, Any], timeout: float, label: str) -> tuple[dict, dict]:
    """Start a load on the generator, wait for the agents to finish it, return (loadgen result, agent report)."""
    agents.call("reset")
    gen.pipe.send(cmd)
    n = cmd["n"]
    deadline = time.monotonic() + timeout
    last_print = time.monotonic()
    load: dict[str, Any] | None = None
    st = agents.call("status")
    while time.monotonic() < deadline:
        if load is None and gen.pipe.poll(0):
            load = gen.pipe.recv()
            say(f"  {label}: all {n} submitted in {load['ended'] - load['started']:.1f} s")
        st = agents.call("status")
        if load is not None and st["completed"] >= n:
            break
        if time.monotonic() - last_print >= 2:
            say(f"  {label}: {st['webhooks']} webhooks, {st['completed']}/{n} completed")
            last_print = time.monotonic()
        time.sleep(0.05)
    if load is None:
        load = gen.recv(max(1.0, deadline - time.monotonic() + 30))
    if st["completed"] < n:
        say(f"  {label}: timed out with {st['completed']}/{n} completed")
    return load, agents.call("report", timeout=60)


# ---------------------------------------------------------------- phases


def latency_phase(
    server: Any, gen: Helper, agents: Helper, n: int, rate: float, *, stamps: bool = True
) -> dict[str, Any]:
    """Submit -> webhook at a steady rate; with `stamps`, also where the time goes, from the rows the
    processes wrote (SQLite's file: `server.query`). bench/engines.py passes stamps=False."""
    say(f"latency: {n} tasks at {rate:g}/s ({n / rate:.0f} s)")
    # the stage queries below read only this run's tasks: with a million stored (scale.py) a scan takes minutes
    ((floor,),) = server.query("SELECT coalesce(max(seq), 0) FROM tasks") if stamps else ((0,),)
    load, rep = run_load(gen, agents, {"mode": "paced", "n": n, "rate": rate, "tag": "lat"}, n / rate + 30, "latency")
    sent = {tid: t for tid, t, _, status in load["records"] if tid}
    answered = {tid: a - t for tid, t, a, status in load["records"] if tid}
    lat = [rep["arrivals"][tid] - t for tid, t in sent.items() if tid in rep["arrivals"]]
    # where the time goes, from the rows the processes wrote (their own time.time() stamps)
    created = (
        {}
        if not stamps
        else dict(
            server.query(
                "SELECT id, created_at FROM tasks WHERE seq > ? AND json_extract(payload, '$.run') = 'lat'", (floor,)
            )
        )
    )
    assigned = (
        {}
        if not stamps
        else dict(
            server.query(
                "SELECT e.task_id, min(e.at) FROM tasks t CROSS JOIN task_events e ON e.task_id = t.id"
                " WHERE t.seq > ? AND e.kind IN ('assigned', 'claimed') AND e.actor = 'dispatcher'"
                " AND json_extract(t.payload, '$.run') = 'lat' GROUP BY e.task_id",
                (floor,),
            )
        )
    )
    stages: dict[str, list[float]] = {
        "submit POST answered (201)": list(answered.values()),
        "POST sent -> api handler stamps created_at": [],
        "created_at -> dispatcher pass starts": [],
        "dispatcher pass starts -> webhook arrives": [],
    }
    for tid, t in sent.items():
        if tid in created and tid in assigned and tid in rep["arrivals"]:
            stages["POST sent -> api handler stamps created_at"].append(created[tid] - t)
            stages["created_at -> dispatcher pass starts"].append(assigned[tid] - created[tid])
            stages["dispatcher pass starts -> webhook arrives"].append(rep["arrivals"][tid] - assigned[tid])
    failed = sum(1 for r in load["records"] if r[3] != 201)
    res = {
        "n": n,
        "rate": rate,
        "received": len(lat),
        "submit_failed": failed,
        "p50": pct(lat, 50),
        "p90": pct(lat, 90),
        "p99": pct(lat, 99),
        "max": max(lat) if lat else float("nan"),
        "mean": sum(lat) / len(lat) if lat else float("nan"),
        "stages": {k: (pct(v, 50), pct(v, 99)) for k, v in stages.items()},
        "completed": rep["completed"],
        "duplicates": rep["duplicates"],
        "gen_cpu": load["cpu_s"],
        "agents_cpu": rep["cpu_s"],
    }
    say(
        f"latency: p50 {ms(res['p50'])}  p90 {ms(res['p90'])}  p99 {ms(res['p99'])}  max {ms(res['max'])}"
        f"  ({len(lat)}/{n} webhooks matched)"
    )
    for k, (p50, p99) in res["stages"].items() if stamps else ():
        say(f"  {k:<45} p50 {ms(p50):>9}  p99 {ms(p99):>9}")
    return res


def throughput_phase(
    server: Server, gen: Helper, agents: Helper, n: int, concurrency: int, timeout: float, label: str = "throughput"
) -> dict[str, Any]:
    say(f"{label}: {n} tasks, {concurrency} concurrent submitters, {len(agents.ready['ports'])} agents")
    before = cpu_snapshot(server.pids)
    load, rep = run_load(
        gen, agents, {"mode": "flood", "n": n, "concurrency": concurrency, "tag": label}, timeout, label
    )
    after = cpu_snapshot(server.pids)
    recs = load["records"]
    first = min(t for _, t, _, _ in recs)
    done_times = list(rep["completed_at"].values())
    last = max(done_times) if done_times else float("nan")
    elapsed = last - first
    submit_lat = [a - t for _, t, a, s in recs if s == 201]
    sent = {tid: t for tid, t, _, st in recs if tid}
    to_webhook = [rep["arrivals"][tid] - t for tid, t in sent.items() if tid in rep["arrivals"]]
    to_done = [rep["completed_at"][tid] - rep["arrivals"][tid] for tid in rep["completed_at"] if tid in rep["arrivals"]]
    at_end = load["ended"]
    res = {
        "n": n,
        "concurrency": concurrency,
        "completed": rep["completed"],
        "webhooks": rep["webhooks"],
        "unique_webhooks": rep["unique"],
        "duplicates": rep["duplicates"],
        "claim_refused": rep["claim_refused"],
        "pushed": rep["pushed"],  # claims the webhooks brought (claim_on_push)
        "errors": rep["errors"],
        "error_samples": rep["error_samples"],
        "submit_failed": sum(1 for r in recs if r[3] != 201),
        "elapsed": elapsed,
        "throughput": rep["completed"] / elapsed if elapsed > 0 else 0.0,
        "submit_rate": len(recs) / (load["ended"] - load["started"]),
        "submit_p50": pct(submit_lat, 50),
        "submit_p99": pct(submit_lat, 99),
        "by_agent": rep["by_agent"],
        "wall": after["_wall"] - before["_wall"],
        "cpu": {k: after[k] - before[k] for k in server.pids},
        "machine_busy": (after["_busy"] - before["_busy"]) / (after["_total"] - before["_total"]),
        "gen_cpu": load["cpu_s"],
        "agents_cpu": rep["cpu_s"],
        "to_webhook": (pct(to_webhook, 50), pct(to_webhook, 99)),
        "webhook_to_done": (pct(to_done, 50), pct(to_done, 99)),
        "at_submit_end": (
            sum(1 for t in rep["arrivals"].values() if t <= at_end),
            sum(1 for t in rep["completed_at"].values() if t <= at_end),
        ),
    }
    if res["errors"] or res["claim_refused"] or res["submit_failed"] or res["completed"] < n:
        say(
            f"  {label}: claims refused {res['claim_refused']}, agent errors {res['errors']}"
            f" {res['error_samples']}, submit failures {res['submit_failed']}, in flight {rep['in_flight']}"
        )
    say(
        f"{label}: {res['completed']}/{n} completed in {elapsed:.2f} s = {res['throughput']:.0f} tasks/s"
        f"  (submitting alone: {res['submit_rate']:.0f}/s; webhooks {res['webhooks']}, machine CPU"
        f" {res['machine_busy'] * 100:.0f}% busy)"
    )
    say(
        f"  {label}: submit -> webhook p50 {ms(res['to_webhook'][0])} p99 {ms(res['to_webhook'][1])}; webhook ->"
        f" completed p50 {ms(res['webhook_to_done'][0])} p99 {ms(res['webhook_to_done'][1])}; when the last submit"
        f" was answered {res['at_submit_end'][0]} webhooks had arrived, {res['at_submit_end'][1]} completed"
    )
    return res


def _cpu_per_task(run: dict[str, Any]) -> float:
    return sum(run["cpu"].values()) / max(run["completed"], 1)


def compare_push_claim(
    server: Server, gen: Helper, agents: Helper, args: Any, n: int, timeout: float, push: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """The throughput run again with the agents claiming each task themselves (no claim_on_push: submit,
    claim, complete), alternating with push-claim runs `--compare-pairs` times, since the machine's other
    load drifts: returns the first claim-request run and, per pair, (tasks/s ratio, CPU-per-task ratio),
    push-claim over claim request."""
    pairs: list[tuple[float, float]] = []
    first: dict[str, Any] | None = None
    for i in range(max(1, args.compare_pairs)):
        if i > 0:
            say(f"pair {i + 1}: agents register with claim_on_push again")
            _register(agents, args.agent_concurrency, True)
            push = throughput_phase(server, gen, agents, n, args.concurrency, timeout, label=f"push-claim {i + 1}")
        say(f"pair {i + 1}: agents register without claim_on_push: submit, claim, complete (for comparison)")
        _register(agents, args.agent_concurrency, False)
        claim = throughput_phase(
            server, gen, agents, n, args.concurrency, timeout, label=f"throughput, claim request {i + 1}"
        )
        first = first or claim
        ratio = push["throughput"] / max(claim["throughput"], 1e-9), _cpu_per_task(push) / _cpu_per_task(claim)
        pairs.append(ratio)
        say(
            f"push-claim vs claim request, pair {i + 1}: {push['throughput']:.0f} vs {claim['throughput']:.0f}"
            f" tasks/s = {ratio[0]:.2f}x; CPU per task {_cpu_per_task(push) * 1000:.2f} vs"
            f" {_cpu_per_task(claim) * 1000:.2f} ms = {ratio[1]:.2f}x ("
            + ", ".join(
                f"{k} {push['cpu'][k] / max(push['completed'], 1) * 1000:.2f} vs"
                f" {claim['cpu'][k] / max(claim['completed'], 1) * 1000:.2f}"
                for k in push["cpu"]
            )
            + ")"
        )
    _register(agents, args.agent_concurrency, True)
    assert first is not None
    return first, pairs


def _register(agents: Helper, capacity: int | None, push_claim: bool) -> None:
    answer = agents.call({"cmd": "register", "capacity": capacity, "push_claim": push_claim})
    if answer is not True:
        raise RuntimeError(f"re-register failed: {answer}")


def profile_pass(
    server: Server,
    gen: Helper,
    agents: Helper,
    workdir: Path,
    mode: str,
    n: int,
    concurrency: int,
    timeout: float,
) -> tuple[dict[str, Any], list[pyspy.Summary]]:
    """A throughput pass with py-spy on the api, dispatcher and notifier. `cpu`: samples of running threads
    only (where CPU goes); `wall`: every thread, waiting ones too (where time goes: lock waits, fsync, idle);
    `native`: C frames too (pauses the process at each sample, so it slows the run a lot)."""
    exe = pyspy.executable()
    assert exe
    recs = [
        pyspy.start(
            exe,
            name,
            server.pids[name],
            workdir / f"pyspy-{mode}-{name}.txt",
            rate=200,
            native=mode == "native",
            idle=mode == "wall",
        )
        for name in ("api", "dispatcher", "notifier")
    ]
    time.sleep(1.0)  # let py-spy attach
    try:
        run = throughput_phase(server, gen, agents, n, concurrency, timeout, label=f"profiled ({mode})")
    finally:
        for rec in recs:
            pyspy.stop(rec)
    summaries = [pyspy.summarise(rec) for rec in recs]
    for s in summaries:
        say(
            f"profile ({mode}) {s.name}: {s.samples} samples, {s.busy_threads:.2f} threads sampled on average {s.error}"
        )
        if mode == "wall":
            for thread, top in s.per_thread.items():
                n_thread = sum(c for t, c in s.threads if t == thread) or 1
                say(f"    thread {thread}: " + "; ".join(f"{w} {c / n_thread * 100:.0f}%" for w, c in top[:4]))
        else:
            for func, where, c in s.self_top[:6]:
                say(f"    {c / max(s.samples, 1) * 100:5.1f}%  {func}  {where}")
    return run, summaries


def memory_phase(server: Server, agent: dict[str, str], n: int, concurrency: int) -> dict[str, float]:
    """Shared-memory put and get rates over HTTP, as ratios to the same run's GET /healthz rate; the load runs
    in its own process (bench/memload.py)."""
    cfg = {"api_url": server.url, "agent": agent["name"], "secret": agent["secret"], "n": n, "concurrency": concurrency}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("memload.py")), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    rates: dict[str, float] = json.loads(out.stdout)
    return rates


def idle_cpu(server: Server, seconds: float) -> tuple[dict[str, float], float]:
    """Per-process CPU (cores) with no load, and the cores the rest of the machine used meanwhile."""
    before = cpu_snapshot(server.pids)
    time.sleep(seconds)
    after = cpu_snapshot(server.pids)
    wall = after["_wall"] - before["_wall"]
    per = {k: (after[k] - before[k]) / wall for k in server.pids}
    busy = (after["_busy"] - before["_busy"]) / (after["_total"] - before["_total"]) * (os.cpu_count() or 1)
    return per, max(0.0, busy - sum(per.values()))


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    from sqlite_utils.utils import sqlite3

    fs = subprocess.run(["df", "-T", tempfile.gettempdir()], capture_output=True, text=True).stdout.splitlines()
    try:
        cpu_model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu_model = platform.processor() or "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "python": platform.python_version(),
        "sqlite": f"{sqlite3.sqlite_version} ({sqlite3.__name__})",
        "os": f"{platform.system()} {platform.release()}",
        "tmpfs": fs[1].split()[1] if len(fs) > 1 else "?",
    }


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value != value:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    ratio = value / target
    return f"{'meets' if ok else 'misses'} ({ratio:.2f}x target)"


def _lock_wait(where: str) -> bool:
    """Whether a leaf `func (path:line)` is waiting for the database's write lock."""
    func, _, loc = where.rpartition(" (")
    return "BEGIN IMMEDIATE" in pyspy.source_line(loc[:-1]) or func.endswith("Lock.acquire")


def limits_evidence(res: dict[str, Any]) -> list[str]:
    """Bullets for 'what limits it', derived from this run's numbers."""
    out = []
    tp = res["throughput"]
    nproc = int(res["machine"]["nproc"])
    cores_used = {k: v / tp["wall"] for k, v in tp["cpu"].items()}
    server_cores = sum(cores_used.values())
    out.append(
        f"CPU: during the throughput run the machine was {tp['machine_busy'] * 100:.0f}% busy over {nproc} cores; "
        f"the four MCS processes used {server_cores:.2f} cores between them "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cores_used.items(), key=lambda kv: -kv[1]))
        + f"; the bench's own submitter and agents used {res['bench_cpu_cores']:.2f} cores; other processes on the"
        f" machine (not MCS, not the bench) {res['other_cores']:.2f} cores ({res['idle_other_cores']:.2f} while idle"
        " before the runs)."
    )
    top = max(tp["cpu"].items(), key=lambda kv: kv[1])
    total = sum(tp["cpu"].values())
    out.append(
        f"The most expensive process is **{top[0]}**: {top[1] / tp['completed'] * 1000 if tp['completed'] else 0:.2f}"
        f" ms CPU per task, {top[1] / total * 100:.0f}% of the server's CPU. One process with one GIL: at this cost it "
        f"tops out near {tp['completed'] / top[1] if top[1] else 0:.0f} tasks/s however many cores the machine has."
    )
    idle = res["idle_cpu"]
    out.append(
        "Idle cost (no load; asleep on inotify, a `PRAGMA data_version` check every 50 ms): "
        + ", ".join(f"{k} {v * 100:.0f}%" for k, v in idle.items())
        + " of a core."
    )
    lat = res["latency"]
    stages = [(k, v) for k, v in lat["stages"].items() if not k.startswith("submit POST")]
    if stages:
        worst50 = max(stages, key=lambda kv: kv[1][0] if kv[1][0] == kv[1][0] else -1)
        worst99 = max(stages, key=lambda kv: kv[1][1] if kv[1][1] == kv[1][1] else -1)
        out.append(
            f"Latency at {lat['rate']:g}/s: the largest stage at p50 is '{worst50[0]}' ({ms(worst50[1][0])}); at p99 "
            f"'{worst99[0]}' ({ms(worst99[1][1])}). The submit POST itself takes "
            f"{ms(lat['stages']['submit POST answered (201)'][0])} at p50 (it includes a "
            f"{res['settings']['synchronous']} commit)."
        )
    out.append(
        f"Pipeline in the throughput run: submitting {tp['n']} tasks took {tp['n'] / tp['submit_rate']:.1f} s "
        f"({tp['submit_rate']:.0f}/s); by then {tp['at_submit_end'][0]} webhooks had arrived and "
        f"{tp['at_submit_end'][1]} tasks were completed. Submit -> webhook p50 {ms(tp['to_webhook'][0])}, "
        f"webhook -> completed ({'complete' if res['settings'].get('push_claim') else 'claim + complete'} through"
        f" the api) p50 {ms(tp['webhook_to_done'][0])}."
    )
    c1 = res.get("throughput_c1")
    if c1 and c1["throughput"] > 0:
        k = res["settings"]["agents"]
        out.append(
            f"Agent concurrency: registered with the server's default `concurrency=1`, {k} agents hold at most {k} "
            f"tasks at once, so throughput = {k} / (time a task holds its agent's slot). Measured "
            f"{c1['throughput']:.0f} tasks/s: each slot is held {k / c1['throughput'] * 1000:.0f} ms per task, of "
            f"which webhook -> completed is {ms(c1['webhook_to_done'][0])} (p50); the rest is the hop from one "
            f"task's completion to the next one's webhook (commit, dispatcher pass, notifier). "
            f"{TARGETS['throughput']:g} tasks/s with {k} such agents needs the whole cycle under "
            f"{k / TARGETS['throughput'] * 1000:.0f} ms."
        )
    waits = []
    for s in res.get("wall_profile", []):
        for thread, top in s.per_thread.items():
            n_thread = sum(c for t, c in s.threads if t == thread) or 1
            begin = sum(c for w, c in top if _lock_wait(w))
            commit = sum(c for w, c in top if '"COMMIT"' in pyspy.source_line(w.rsplit(" (", 1)[-1][:-1]))
            if begin or commit:
                waits.append(
                    f"{s.name}/{thread} {begin / n_thread * 100:.0f}% waiting for the write lock, "
                    f"{commit / n_thread * 100:.0f}% in COMMIT"
                )
    if waits:
        out.append(
            "Write lock (wall-clock profile): " + "; ".join(waits) + ". Waiting for the write lock means "
            "`BEGIN IMMEDIATE` (SQLite's busy handler sleeps 1, 2, 5, 10 ... ms between tries, so a waiter also "
            "oversleeps a lock that has come free) or an MCS-side lock taken before it."
        )
    for s in res.get("profile", []):
        if s.samples and s.groups:
            g = ", ".join(f"{name} {n / s.samples * 100:.0f}%" for name, n in s.groups[:4])
            out.append(f"Profile, {s.name}: leaf samples by area: {g}.")
    return out


def _code(where: str) -> str:
    text = pyspy.source_line(where)
    return f"`{text[:70]}`" if text else ""


def _agents_do(st: dict[str, Any]) -> str:
    if st.get("push_claim"):
        return "complete each task with the claim its webhook brings, `claim_on_push`"
    return "claim and complete each task"


def write_results(res: dict[str, Any], path: Path) -> None:
    m, st, lat, tp = res["machine"], res["settings"], res["latency"], res["throughput"]
    n = tp["completed"] or 1
    total_cpu = sum(tp["cpu"].values())
    lines = [
        "# MCS benchmark results",
        "",
        f"Written by `{res['command']}` on {res['date']}. Machine: {m['nproc']} cores ({m['cpu']}), {m['os']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}, database on {m['tmpfs']}. Code: {res.get('code', '?')}.",
        "",
        f"Settings: `MCS_SYNCHRONOUS={st['synchronous']}`, other settings default; {st['agents']} agents (one "
        f"process, raw asyncio HTTP: webhook receivers that {_agents_do(st)}), each registered with "
        f"`concurrency={st['agent_concurrency']}` unless said otherwise; one submitter process "
        f"({'httpx AsyncClient' if st['submitter'] == 'httpx' else 'the bench minimal HTTP client'}, keep-alive,"
        f" submitting as the admin). Latency: {lat['n']} tasks at {lat['rate']:g}/s, "
        f"open loop. Throughput: {tp['n']} tasks from {tp['concurrency']} concurrent submitters. Load generator, "
        f"agents and server share the same {m['nproc']} cores, so the server gets less than the whole machine.",
        "",
        "| figure | measured | target | verdict |",
        "| --- | --- | --- | --- |",
        f"| submit -> webhook p50 | {ms(lat['p50'])} | ≤ {TARGETS['p50_ms']:g} ms | "
        f"{verdict(lat['p50'] * 1000, TARGETS['p50_ms'], False)} |",
        f"| submit -> webhook p99 | {ms(lat['p99'])} | ≤ {TARGETS['p99_ms']:g} ms | "
        f"{verdict(lat['p99'] * 1000, TARGETS['p99_ms'], False)} |",
        f"| submit -> webhook p90 / max | {ms(lat['p90'])} / {ms(lat['max'])} | | |",
        f"| end-to-end throughput, 4 agents | {tp['throughput']:.0f} tasks/s | ≥ {TARGETS['throughput']:g} tasks/s | "
        f"{verdict(tp['throughput'], TARGETS['throughput'], True)} |",
        f"| submit rate during that run | {tp['submit_rate']:.0f} /s (POST p50 {ms(tp['submit_p50'])}, "
        f"p99 {ms(tp['submit_p99'])}) | | |",
        f"| in that run: submit -> webhook, webhook -> completed (p50 / p99) | {ms(tp['to_webhook'][0])} / "
        f"{ms(tp['to_webhook'][1])}, {ms(tp['webhook_to_done'][0])} / {ms(tp['webhook_to_done'][1])} | | |",
        f"| tasks completed | {tp['completed']}/{tp['n']} (latency run {lat['completed']}/{lat['n']}) | all | "
        f"{'all' if tp['completed'] == tp['n'] and lat['completed'] == lat['n'] else 'NOT ALL'} |",
        f"| webhooks received (throughput run) | {tp['webhooks']} ({tp['duplicates']} duplicates) | one per task | |",
        f"| CPU per task, all four processes | {total_cpu / n * 1000:.2f} ms | | |",
    ]
    mem = res.get("memory")
    if mem:
        lines += [
            f"| memory put over HTTP, as a share of the same run's GET /healthz rate ({mem['healthz']:.0f}/s) | "
            f"{mem['put']:.0f}/s = {mem['put_ratio']:.0%} | ≥ {TARGETS['mem_put_ratio']:.0%} | "
            f"{verdict(mem['put_ratio'], TARGETS['mem_put_ratio'], True)} |",
            f"| memory get over HTTP, as a share of GET /healthz | {mem['get']:.0f}/s = {mem['get_ratio']:.0%} | "
            f"≥ {TARGETS['mem_get_ratio']:.0%} | {verdict(mem['get_ratio'], TARGETS['mem_get_ratio'], True)} |",
        ]
    cl = res.get("throughput_claim")
    pairs = res.get("push_pairs") or []
    if cl and pairs:
        cl_cpu = sum(cl["cpu"].values()) / (cl["completed"] or 1)
        lines += [
            f"| the same throughput run with a claim request per task (agents without `claim_on_push`: submit, "
            f"claim, complete) | {cl['throughput']:.0f} tasks/s, {cl_cpu * 1000:.2f} ms CPU per task "
            f"({cl['completed']}/{cl['n']} completed) | | |",
            f"| push-claim over claim request, same run, {len(pairs)} alternating pair(s) (tasks/s; CPU per task) | "
            + ", ".join(f"{a:.2f}x; {b:.2f}x" for a, b in pairs)
            + f" (mean {sum(a for a, _ in pairs) / len(pairs):.2f}x; {sum(b for _, b in pairs) / len(pairs):.2f}x)"
            f" | ≥ 1.5x tasks/s | {'meets' if sum(a for a, _ in pairs) / len(pairs) >= 1.5 else 'misses'} |",
        ]
    c1 = res.get("throughput_c1")
    if c1:
        lines.append(
            f"| throughput with agents at the server's default `concurrency=1` ({c1['n']} tasks) | "
            f"{c1['throughput']:.0f} tasks/s ({c1['completed']}/{c1['n']} completed) | ≥ {TARGETS['throughput']:g}"
            f" tasks/s | {verdict(c1['throughput'], TARGETS['throughput'], True)} |"
        )
    lines += [
        "",
        "## CPU and memory per process (throughput run)",
        "",
        "| process | CPU ms/task | cores used during the run | idle CPU (% of a core) | RSS after | peak RSS |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in procinfo.NAMES:
        cpu = tp["cpu"].get(name, 0.0)
        rss = res["rss"].get(name, (0, 0))
        lines.append(
            f"| {name} | {cpu / n * 1000:.2f} | {cpu / tp['wall']:.2f} | {res['idle_cpu'].get(name, 0) * 100:.0f}% | "
            f"{rss[0] / 1024:.0f} MiB | {rss[1] / 1024:.0f} MiB |"
        )
    lines.append(
        f"| **total** | **{total_cpu / n * 1000:.2f}** | {total_cpu / tp['wall']:.2f} | "
        f"{sum(res['idle_cpu'].values()) * 100:.0f}% | {sum(r[0] for r in res['rss'].values()) / 1024:.0f} MiB | |"
    )
    lines += [
        "",
        f"CPU from utime+stime in `/proc/<pid>/stat` (resolution 10 ms) over the throughput window "
        f"({tp['wall']:.1f} s, submit to last completion); the bench's own processes used "
        f"{res['bench_cpu_cores']:.2f} cores meanwhile. Distribution over agents: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tp["by_agent"].items()))
        + ".",
        "",
        "## Where submit -> webhook time goes (latency run)",
        "",
        "From the bench's clock and the stamps the processes wrote (tasks.created_at, the `assigned` event).",
        "",
        "| stage | p50 | p99 |",
        "| --- | --- | --- |",
    ]
    for k, (p50, p99) in lat["stages"].items():
        lines.append(f"| {k} | {ms(p50)} | {ms(p99)} |")
    if res.get("profile"):
        pr = res["profile_run"]
        lines += [
            "",
            f"## Profile (py-spy, a separate {pr['n']}-task throughput pass: {pr['throughput']:.0f} tasks/s under "
            f"the profiler)",
            "",
            "Share of samples of running threads (py-spy's idle detection; `--nonblocking`, "
            f"{res['profile'][0].rate} Hz). 'busy threads' is samples / (rate x seconds): roughly the cores used.",
        ]
        for s in res["profile"]:
            lines += ["", f"### {s.name} — {s.samples} samples, {s.busy_threads:.2f} busy threads"]
            if s.error:
                lines.append(f"py-spy failed: {s.error}")
                continue
            lines.append(
                "Threads: "
                + ", ".join(f"{t} {c / s.samples * 100:.0f}%" for t, c in s.threads[:5])
                + ".  Areas: "
                + ", ".join(f"{g} {c / s.samples * 100:.0f}%" for g, c in s.groups[:6])
                + "."
            )
            lines += ["", "| self (leaf Python frame) | where | code | share |", "| --- | --- | --- | --- |"]
            for func, where, c in s.self_top[:10]:
                lines.append(f"| `{func}` | {where} | {_code(where)} | {c / s.samples * 100:.1f}% |")
            lines += ["", "| function, inclusive (frames under 90% of samples) | share |", "| --- | --- |"]
            for key, c in s.incl_top[:12]:
                lines.append(f"| `{key}` | {c / s.samples * 100:.1f}% |")
    if res.get("wall_profile"):
        wr = res["wall_run"]
        lines += [
            "",
            f"## Where wall-clock time goes, per thread (py-spy `--idle`, a separate {wr['n']}-task pass: "
            f"{wr['throughput']:.0f} tasks/s)",
            "",
            "Every thread sampled whether running or waiting, so the shares are of each thread's wall time: waiting"
            " for SQLite's write lock shows at `BEGIN IMMEDIATE`, fsync at `COMMIT`, idle at queue/selector waits.",
        ]
        for s in res["wall_profile"]:
            if s.error:
                lines += ["", f"### {s.name}: py-spy failed: {s.error}"]
                continue
            lines += ["", f"### {s.name}", "", "| thread | where | code | share of the thread's time |"]
            lines.append("| --- | --- | --- | --- |")
            for thread, top in s.per_thread.items():
                if thread.endswith("-status"):
                    continue  # the /metrics server thread: idle throughout
                n_thread = sum(c for t, c in s.threads if t == thread) or 1
                for where, c in top[:5]:
                    if c / n_thread < 0.02:
                        break
                    loc = where.rsplit(" (", 1)[-1].rstrip(")")
                    lines.append(f"| {thread} | `{where}` | {_code(loc)} | {c / n_thread * 100:.0f}% |")
    lines += ["", "## What limits it", "", "Evidence from this run:", ""]
    lines += [f"- {b}" for b in limits_evidence(res)]
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_START in old and NOTES_END in old:
            notes = old[old.index(NOTES_START) : old.index(NOTES_END) + len(NOTES_END)]
    if not notes:
        notes = f"{NOTES_START}\n(Analysis written by hand is kept here across runs.)\n{NOTES_END}"
    lines += ["", notes, ""]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs (under a minute)")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="add two half-size throughput passes under py-spy: CPU (running threads) and wall clock (all threads)",
    )
    ap.add_argument("--profile-native", action="store_true", help="py-spy --native (pauses the process per sample)")
    ap.add_argument("--profile-idle", action="store_true", help="only the wall-clock pass (py-spy --idle)")
    ap.add_argument("--synchronous", default=os.environ.get("MCS_SYNCHRONOUS", "FULL"), choices=["FULL", "NORMAL"])
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument(
        "--agent-concurrency",
        type=int,
        default=8,
        help="concurrency each agent registers with (tasks it may hold at once); the server's default is 1",
    )
    ap.add_argument(
        "--no-push-claim",
        dest="push_claim",
        action="store_false",
        help="agents claim each task themselves (no claim_on_push) for the main figures too",
    )
    ap.add_argument(
        "--compare-pairs",
        type=int,
        default=2,
        help="push-claim / claim-request throughput pairs, alternating (the first push-claim run is the main one)",
    )
    ap.add_argument("--latency-tasks", type=int)
    ap.add_argument("--rate", type=float, default=20.0, help="tasks/s in the latency run")
    ap.add_argument("--tasks", type=int, help="tasks in the throughput run")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent submitters in the throughput run")
    ap.add_argument(
        "--submitter",
        choices=["httpx", "raw"],
        default="raw",
        help="the submitter's HTTP client: the bench's minimal raw client (default: it costs the server's "
        "cores little), or httpx.AsyncClient (about 0.4 of a core more at this load)",
    )
    ap.add_argument("--output", type=Path, default=RESULTS, help="where to write the results (markdown)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (database, logs, py-spy output)")
    args = ap.parse_args()
    lat_n = args.latency_tasks or (200 if args.quick else 400)
    tp_n = args.tasks or (500 if args.quick else 2000)
    tp_timeout = 25.0 if args.quick else 60.0
    prof_n = tp_n // 2  # each profiled pass
    if args.profile or args.profile_native or args.profile_idle:
        why = pyspy.available()
        if why:
            say(f"cannot profile: {why}")
            return 2

    workdir = Path(tempfile.mkdtemp(prefix="mcs-bench-"))
    server = Server(workdir, args.synchronous)
    helpers: list[tuple[Helper, Any]] = []
    res: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": machine(),
        "settings": {
            "synchronous": args.synchronous,
            "agents": args.agents,
            "agent_concurrency": args.agent_concurrency,
            "submitter": args.submitter,
            "push_claim": args.push_claim,
        },
    }
    exit_code = 0
    try:
        say(f"starting mcs up in {workdir} (api :{server.api_port}, MCS_SYNCHRONOUS={args.synchronous})")
        package_dir, res["code"] = code_version(server.env)
        pyspy.snapshot_sources(package_dir)
        say(f"code: {res['code']}")
        server.start()
        say("healthy: " + ", ".join(f"{k} pid {v}" for k, v in server.pids.items()))
        creds = create_agents(server.url, server.token, args.agents)
        agents = Helper(
            agentsim.main,
            {
                "api_url": server.url,
                "agents": creds,
                "concurrency": 4,
                "capacity": args.agent_concurrency,
                "push_claim": args.push_claim,
            },
            "bench-agents",
        )
        helpers.append((agents, "stop"))
        gen = Helper(
            loadgen.main,
            {
                "api_url": server.url,
                "admin_token": server.token,
                "concurrency": max(args.concurrency, 2),
                "client": args.submitter,
            },
            "bench-loadgen",
        )
        helpers.append((gen, {"mode": "stop"}))
        say(f"{args.agents} agents registered (webhook ports {sorted(agents.ready['ports'].values())})")

        say("idle CPU over 2 s")
        res["idle_cpu"], res["idle_other_cores"] = idle_cpu(server, 2.0)
        say(
            "  " + ", ".join(f"{k} {v * 100:.0f}%" for k, v in res["idle_cpu"].items()) + " of a core; other"
            f" processes on the machine: {res['idle_other_cores']:.2f} cores"
        )

        say("warm-up: 50 tasks")
        run_load(gen, agents, {"mode": "paced", "n": 50, "rate": 50, "tag": "warm"}, 20, "warm-up")

        res["latency"] = latency_phase(server, gen, agents, lat_n, args.rate)

        res["throughput"] = throughput_phase(server, gen, agents, tp_n, args.concurrency, tp_timeout)
        res["rss"] = {
            name: (procinfo.status_kib(pid, "VmRSS"), procinfo.status_kib(pid, "VmHWM"))
            for name, pid in server.pids.items()
        }
        lat, tpr = res["latency"], res["throughput"]
        bench_cpu = (tpr["gen_cpu"] - lat["gen_cpu"]) + (tpr["agents_cpu"] - lat["agents_cpu"])
        res["bench_cpu_cores"] = bench_cpu / tpr["wall"]
        res["other_cores"] = max(
            0.0,
            tpr["machine_busy"] * (os.cpu_count() or 1)
            - sum(tpr["cpu"].values()) / tpr["wall"]
            - res["bench_cpu_cores"],
        )
        say(f"bench processes used {res['bench_cpu_cores']:.2f} cores, other processes {res['other_cores']:.2f} cores")
        tp = res["throughput"]
        say(
            "CPU ms/task: "
            + ", ".join(f"{k} {v / max(tp['completed'], 1) * 1000:.2f}" for k, v in tp["cpu"].items())
            + f"; total {sum(tp['cpu'].values()) / max(tp['completed'], 1) * 1000:.2f}"
        )
        say("RSS: " + ", ".join(f"{k} {v[0] / 1024:.0f} MiB" for k, v in res["rss"].items()))

        if args.profile or args.profile_native:
            mode = "native" if args.profile_native else "cpu"
            res["profile_run"], res["profile"] = profile_pass(
                server, gen, agents, workdir, mode, prof_n, args.concurrency, tp_timeout
            )
        if args.profile or args.profile_idle:
            res["wall_run"], res["wall_profile"] = profile_pass(
                server, gen, agents, workdir, "wall", prof_n, args.concurrency, tp_timeout
            )

        if args.push_claim:
            res["throughput_claim"], res["push_pairs"] = compare_push_claim(
                server, gen, agents, args, tp_n, tp_timeout, res["throughput"]
            )

        if args.agent_concurrency != 1:
            c1_n = max(100, tp_n // 4)
            say("agents register again with the server's default concurrency (1)")
            answer = agents.call({"cmd": "register", "capacity": None})
            if answer is not True:
                raise RuntimeError(f"re-register failed: {answer}")
            res["throughput_c1"] = throughput_phase(
                server, gen, agents, c1_n, args.concurrency, tp_timeout / 2, label="throughput, concurrency 1"
            )

        mem_n = 500 if args.quick else 2000
        say(f"memory: {mem_n} each of GET /healthz, PUT and GET /v1/memory/mesh/..., 8 connections")
        res["memory"] = memory_phase(server, creds[0], mem_n, 8)
        mem = res["memory"]
        say(
            f"memory: healthz {mem['healthz']:.0f}/s, put {mem['put']:.0f}/s ({mem['put_ratio']:.0%}), "
            f"get {mem['get']:.0f}/s ({mem['get_ratio']:.0%})"
        )

        states = server.query("SELECT state, count(*) FROM tasks GROUP BY state")
        outbox = server.query("SELECT state, count(*) FROM outbox GROUP BY state")
        res["db_states"], res["outbox_states"] = dict(states), dict(outbox)
        say(f"database: tasks {dict(states)}, outbox {dict(outbox)}")
    except Exception as exc:  # noqa: BLE001 - report, clean up, exit non-zero
        say(f"bench failed: {exc!r}")
        say("server log tail:\n" + server.tail())
        exit_code = 1
    finally:
        for helper, msg in helpers:
            helper.stop(msg)
        code = server.stop()
        say(f"mcs up stopped (exit code {code})")
        if not args.keep and exit_code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")
    if exit_code == 0:
        write_results(res, args.output)
        say(f"wrote {args.output}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
