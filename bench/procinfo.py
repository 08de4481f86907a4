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
