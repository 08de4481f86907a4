"""How long the notifier's event loop stalls while a backlog waits: a real Notifier (in this process) over a
real SQLite file holding `--rows` pending webhooks for an agent nobody can reach, for `--seconds`. A ticker
task on the same loop sleeps 1 ms at a time and records how late it wakes: every webhook under way waits
that long too. Also reports the passes' outbox reads (`outbox.due`, timed wherever they run).

    python bench/notifier_stall.py                   # 20,000 rows, 8 s
    python bench/notifier_stall.py --rows 50000
    PYTHONPATH=/path/to/other/build/services python bench/notifier_stall.py --label before

Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcs.config import Settings
from mcs.engines.sqlite.engine import Store
from mcs.notifier import Notifier
from mcs.state import outbox as outbox_store


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now: connections are refused at once
    return port


def fill(store: Store, rows: int, url: str) -> None:
    now = time.time()

    def write(conn: Any) -> None:
        conn.execute(
            "INSERT INTO agents (name, secret_hash, webhook_secret, notify_url, created_at)"
            " VALUES ('dead', 'x', ?, ?, ?)",
            ("whsec_" + base64.b64encode(b"k" * 24).decode(), url, now),
        )
        conn.executemany(
            "INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)"
            " VALUES ('webhook', ?, 'dead', NULL, '{}', ?, ?, ?)",
            [(f"msg_stall_{i}", now, now, now) for i in range(rows)],
        )

    store.write(write)


async def measure(notifier: Notifier, seconds: float) -> tuple[list[float], list[float]]:
    """Lateness of each 1 ms tick: over the whole run, and from the first second on (past start-up: the
    first pass opens the connections and the first webhook client builds its TLS context)."""
    lags: list[float] = []
    settled: list[float] = []
    runner = asyncio.create_task(notifier.run())
    begun = time.perf_counter()
    deadline = begun + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(max(0.0, time.perf_counter() - started - 0.001))
        if started - begun > 1.0:
            settled.append(lags[-1])
    notifier.stop()
    await asyncio.wait_for(runner, 30)
    return lags, settled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--label", default="this build")
    args = parser.parse_args()
    import mcs

    with tempfile.TemporaryDirectory(prefix="mcs-stall-") as tmp:
        settings = Settings.from_env(
            {},
            db=Path(tmp) / "mcs.db",
            synchronous="NORMAL",
            webhook_timeout=1.0,
            webhook_attempts=2,
            webhook_retry_base=0.05,
            webhook_retry_max=0.1,
        )
        setup = Store(settings.db, synchronous="NORMAL")
        setup.migrate()
        fill(setup, args.rows, f"http://127.0.0.1:{closed_port()}/hook")
        setup.close()
        reads: list[float] = []
        real_due = outbox_store.due

        def timed_due(conn: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return real_due(conn, **kwargs)
            finally:
                reads.append(time.perf_counter() - started)

        outbox_store.due = timed_due  # type: ignore[assignment]
        store = Store(settings.db, synchronous="NORMAL")
        lags, settled = asyncio.run(measure(Notifier(store, settings), args.seconds))
        left = store.read(lambda c: c.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0])
        store.close()
    lags.sort()
    settled.sort()
    print(f"{args.label}: mcs from {Path(mcs.__file__).parent}, {args.rows} pending rows, {args.seconds:g} s")
    print(
        f"  loop lag (1 ms ticker): p50 {statistics.median(lags) * 1000:.1f} ms,"
        f" p99 {lags[int(len(lags) * 0.99)] * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms;"
        f" ticks {len(lags)}, of which late by more than 20 ms: {sum(1 for x in lags if x > 0.02)}"
    )
    print(
        f"  after the first second: p99 {settled[int(len(settled) * 0.99)] * 1000:.1f} ms,"
        f" max {settled[-1] * 1000:.1f} ms"
    )
    print(
        f"  outbox reads: {len(reads)} passes, median {statistics.median(reads) * 1000:.1f} ms,"
        f" max {max(reads) * 1000:.1f} ms; rows still pending at the end: {left} of {args.rows}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
