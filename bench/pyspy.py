"""py-spy against the running MCS processes: record raw (collapsed) stacks, then summarise hot spots."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def executable() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    name: str
    pid: int
    out: Path
    proc: subprocess.Popen[bytes]
    rate: int
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0


def start(exe: str, name: str, pid: int, out: Path, *, rate: int, native: bool, idle: bool = False) -> Recording:
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--output", str(out), "--threads"]
    cmd += ["--native"] if native else ["--nonblocking"]
    cmd += ["--idle"] if idle else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(str(out) + ".log", "wb"))  # noqa: SIM115
    return Recording(name, pid, out, proc, rate)


def stop(rec: Recording, timeout: float = 20.0) -> None:
    rec.ended = time.monotonic()
    if rec.proc.poll() is None:
        rec.proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        rec.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rec.proc.kill()
        rec.proc.wait()


def _split(frame: str) -> tuple[str, str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, "", ""
    return m["func"], m["file"], m["line"] or ""


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/services/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


SNAPSHOT: dict[str, list[str]] = {}  # "mcs/..." -> source lines as they were when the server started


def snapshot_sources(package_dir: Path) -> None:
    """Remember MCS's source now, so hot-spot lines are quoted from the code that ran even if it changes."""
    root = package_dir.parent
    for f in package_dir.rglob("*.py"):
        SNAPSHOT[str(f.relative_to(root))] = f.read_text(errors="replace").splitlines()


def source_line(where: str) -> str:
    """The source text at a py-spy `path:line` (paths as `_short` left them), or ''."""
    import linecache
    import sysconfig

    path, _, line = where.rpartition(":")
    if not line.isdigit():
        return ""
    if path in SNAPSHOT:
        lines = SNAPSHOT[path]
        return lines[int(line) - 1].strip() if 0 < int(line) <= len(lines) else ""
    roots = [Path(__file__).resolve().parent.parent / "services", Path(sysconfig.get_paths()["stdlib"])]
    roots.append(Path(sysconfig.get_paths()["purelib"]))
    for root in roots:
        candidate = root / path
        if candidate.exists():
            return linecache.getline(str(candidate), int(line)).strip()
    return ""


def _thread_kind(name: str) -> str:
    name = re.sub(r"_\d+$", "", name.split(":", 1)[-1].strip())
    return name or "?"


@dataclass
class Summary:
    name: str
    samples: int
    seconds: float
    rate: int
    threads: list[tuple[str, int]]
    self_top: list[tuple[str, str, int]]  # (function, file:line most sampled, samples)
    incl_top: list[tuple[str, int]]  # (function (file), samples), frames under 90% of samples
    groups: list[tuple[str, int]]  # where leaf samples fall: sqlite, http, json, ...
    per_thread: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # thread -> top leaf lines
    error: str = ""

    @property
    def busy_threads(self) -> float:
        """Average number of threads found running at a sample: roughly the CPU cores this process used."""
        return self.samples / (self.rate * self.seconds) if self.seconds else 0.0


_LIBS = [
    ("HTTP server (hypercorn, h11)", ("hypercorn/", "h11/", "h2/", "wsproto/")),
    ("web framework (quart, werkzeug, quart_schema)", ("quart/", "werkzeug/", "quart_schema/", "flask/", "blinker/")),
    ("validation (pydantic)", ("pydantic/", "pydantic_core/")),
    ("HTTP client (httpx, httpcore, anyio)", ("httpx/", "httpcore/", "anyio/", "sniffio/")),
    ("retry wrapper (tenacity)", ("tenacity/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("JSON", ("json/",)),
    ("logging", ("logging/",)),
    ("asyncio and thread hand-offs", ("asyncio/", "concurrent/", "threading.py", "queue.py", "selectors.py")),
]


_ROOTS = {
    ("Runner.run", "asyncio/runners.py"),
    ("_WorkItem.run", "concurrent/futures/thread.py"),
    ("Thread.run", "threading.py"),
    ("Dispatcher.run", "mcs/dispatcher.py"),
}


def _group(parsed: list[tuple[str, str, str]]) -> str:
    """Which area a sample belongs to, from its whole stack (leaf first where that decides)."""
    py = [fr for fr in parsed if fr[1].endswith(".py") or fr[1].startswith("<frozen")]
    tail = parsed[len(parsed) - next((i for i, fr in enumerate(reversed(parsed)) if fr in py), 0) :] if py else parsed
    if any("sqlite" in f.lower() or "sqlite" in p for f, p, _ in tail):
        return "SQLite library (C)"
    if any(f.endswith("fsync") or f.endswith("fdatasync") for f, _, _ in tail):
        return "fsync"
    if any(f in {"Dispatcher._wait", "Notifier._wait", "ChangeWatcher._poll"} for f, _, _ in parsed):
        return "wait loop (inotify, PRAGMA data_version)"
    if not py:
        return "native"
    func, path, line = py[-1]
    if path.startswith("mcs/"):
        code = source_line(f"{path}:{line}")
        if func.endswith("Lock.acquire") or "BEGIN IMMEDIATE" in code:
            return "waiting for the write lock (MCS lock or BEGIN IMMEDIATE)"
        if '"COMMIT"' in code:
            return "COMMIT (WAL write + fsync)"
    if path.startswith("mcs/engines/sqlite/"):
        return "other SQL calls in mcs/engines/sqlite (time inside SQLite)"
    if func == "Runner.run" and path.startswith("asyncio/"):
        return "event loop internals (uvloop, C: sockets, callbacks)"
    if path.startswith("h11/"):  # both sides use h11: the stack tells server from client
        client = any(p.startswith(("httpx/", "httpcore/")) for _, p, _ in parsed)
        return "HTTP client (httpx, httpcore, anyio)" if client else "HTTP server (hypercorn, h11)"
    if path.startswith("<frozen importlib"):
        return "imports at run time (importlib)"
    for label, prefixes in _LIBS:
        if path.startswith(prefixes):
            return label
    if path.startswith("mcs/"):
        return "MCS code (Python)"
    return "other"


def summarise(rec: Recording) -> Summary:
    seconds = max(0.001, rec.ended - rec.started)
    if not rec.out.exists():
        log = Path(str(rec.out) + ".log")
        err = log.read_text(errors="replace").strip().splitlines()[:1] if log.exists() else []
        return Summary(rec.name, 0, seconds, rec.rate, [], [], [], [], error=(err or ["no output"])[0])
    threads: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    self_lines: dict[str, Counter[str]] = defaultdict(Counter)
    incl: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    thread_lines: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    for raw in rec.out.read_text(errors="replace").splitlines():
        stack, _, count_s = raw.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith("thread ("):
            thread = _thread_kind(frames.pop(0))
        elif frames and frames[0].startswith("process "):
            frames.pop(0)
        total += count
        threads[thread] += count
        parsed = [(f, _short(p), ln) for f, p, ln in map(_split, frames)]
        # the deepest Python frame is the leaf (native frames from --native have .c/.so files)
        py = [fr for fr in parsed if fr[1].endswith(".py")] or parsed
        if py:
            func, path, line = py[-1]
            key = f"{func} ({path})"
            self_fn[key] += count
            self_lines[key][f"{path}:{line}"] += count
            groups[_group(parsed)] += count
            thread_lines[thread][f"{func} ({path}:{line})"] += count
        # inclusive counts start below the event loop / worker thread entry, so they show the work itself
        roots = [i for i, (f, p, _) in enumerate(parsed) if (f, p) in _ROOTS]
        seen = set()
        for func, path, _line in parsed[roots[-1] + 1 if roots else 0 :]:
            key = f"{func} ({path})"
            if key not in seen:
                seen.add(key)
                incl[key] += count
    self_top = []
    for key, n in self_fn.most_common(12):
        func = key.rsplit(" (", 1)[0]
        self_top.append((func, self_lines[key].most_common(1)[0][0], n))
    return Summary(
        rec.name,
        total,
        seconds,
        rec.rate,
        threads.most_common(),
        self_top,
        [(k, n) for k, n in incl.most_common(60) if n < 0.9 * total][:14],
        groups.most_common(),
        {t: c.most_common(8) for t, c in thread_lines.items()},
    )


def available() -> str:
    """Empty when py-spy can attach here, else why not."""
    exe = executable()
    if exe is None:
        return "py-spy is not installed (pip install py-spy)"
    if os.geteuid() != 0 and Path("/proc/sys/kernel/yama/ptrace_scope").exists():
        if Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip() not in {"0"}:
            return "ptrace is restricted (kernel.yama.ptrace_scope) and we are not root"
    return ""
