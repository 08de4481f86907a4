"""/proc readings: the supervisor's children by name, their CPU time and memory, and the machine's CPU."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
NAMES = ("api", "dispatcher", "watchdog", "notifier")


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on; the name may hold spaces


def children(ppid: int) -> dict[str, int]:
    """{'api': pid, ...} for the `mcs <name>` children of `ppid`, found by each process's ppid."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if int(_stat_fields(pid)[1]) != ppid:
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        args = [a.decode() for a in argv if a]
        for i, a in enumerate(args[:-2]):
            if a == "-m" and args[i + 1] == "mcs" and args[i + 2] in NAMES:
                found[args[i + 2]] = pid
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), in seconds."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / TICK  # fields 14 and 15 of /proc/<pid>/stat


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies summed over all CPUs, from the first line of /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (found by ppid), e.g. a Celery worker's pool children."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent_of[int(entry)] = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found += kids
        todo += kids
    return found


def tree_cpu_seconds(pids: list[int]) -> float:
    """utime + stime + cutime + cstime over these processes and their live descendants. The difference of two
    readings also counts a child that exited in between (once reaped, its time moves to its parent's cutime)."""
    total = 0.0
    for top in pids:
        for pid in descendants(top):
            try:
                f = _stat_fields(pid)
            except OSError:
                continue
            total += sum(int(x) for x in f[11:15]) / TICK  # fields 14-17 of /proc/<pid>/stat
    return total


def tree_memory_kib(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over these processes and their live descendants; PSS splits pages that forked
    processes share, which RSS counts once per process."""
    rss = pss = 0
    for top in pids:
        for pid in descendants(top):
            try:
                rss += status_kib(pid, "VmRSS")
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                continue
    return rss, pss
