"""How long a writer waits for SQLite's write lock while other processes write: SQLite's own busy handler
(`busy_timeout`, which sleeps 1, 2, 5, 10, 15, 20, 25, ... 100 ms between tries) against `busy_timeout=0`
and retrying BEGIN IMMEDIATE every 0.2 ms in Python.

    python bench/lockwait.py

Two "hammer" processes commit one row per transaction (holding the lock ~0.5 ms plus the fsync) at a
given rate; a probe process times its BEGIN IMMEDIATE 300 times. No MCS code involved: it isolates one
cause of MCS's latency tails. Takes about 20 s.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from sqlite_utils.utils import sqlite3


def connect(db: str, timeout_ms: int) -> sqlite3.Connection:
    c = sqlite3.connect(db, isolation_level=None, timeout=timeout_ms / 1000)
    c.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = FULL")
    return c


def hammer(db: str, stop_at: float, rate: float) -> None:
    c = connect(db, 5000)
    i = 0
    while time.time() < stop_at:
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO t VALUES (?)", (i,))
        time.sleep(0.0005)  # some work inside the transaction
        c.execute("COMMIT")
        i += 1
        time.sleep(1 / rate)


def probe(db: str, mode: str, n: int) -> list[float]:
    c = connect(db, 5000 if mode == "busy_timeout" else 0)
    waits = []
    for _ in range(n):
        t = time.perf_counter()
        if mode == "busy_timeout":
            c.execute("BEGIN IMMEDIATE")
        else:
            while True:
                try:
                    c.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:
                    time.sleep(0.0002)
        waits.append(time.perf_counter() - t)
        c.execute("INSERT INTO t VALUES (-1)")
        c.execute("COMMIT")
        time.sleep(0.003)
    return sorted(waits)


def main() -> None:
    db = str(Path(tempfile.mkdtemp(prefix="mcs-lockwait-")) / "t.db")
    c = connect(db, 5000)
    c.execute("CREATE TABLE t (x)")
    c.close()
    ctx = mp.get_context("spawn")
    for rate in (200, 1000):
        for mode in ("busy_timeout", "fast_retry"):
            stop_at = time.time() + 4
            hammers = [ctx.Process(target=hammer, args=(db, stop_at, rate)) for _ in range(2)]
            for h in hammers:
                h.start()
            time.sleep(0.5)
            w = probe(db, mode, 300)
            for h in hammers:
                h.join()

            def p(q: float, w: list[float] = w) -> float:
                return w[int(q * (len(w) - 1))] * 1000

            print(
                f"2 writers at up to {rate}/s each; probe with {mode:<12}: wait for the write lock "
                f"p50 {p(0.5):.2f} ms, p90 {p(0.9):.2f} ms, p99 {p(0.99):.2f} ms, max {w[-1] * 1000:.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
