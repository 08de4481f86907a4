"""bench/peers.py's submitter for huey, RQ and Celery: its own OS process, the peer's own client API, threads.

The counterpart of bench/loadgen.py, driven over a pipe the same way (run.Helper):
- `paced`: open loop at a fixed rate (each enqueue starts on schedule on one of `concurrency` threads, even if
  earlier ones are still open),
- `flood`: `concurrency` threads enqueueing back to back.
For each task it records the time just before the enqueue call and when it returned.
"""

from __future__ import annotations

import itertools
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any


def client(system: str) -> Callable[[str, int], None]:
    import peertasks

    if system == "huey":
        return peertasks.huey_noop  # type: ignore[no-any-return]  # calling a huey task enqueues it
    if system == "rq":
        from redis import Redis
        from rq import Queue

        queue = Queue("peers", connection=Redis.from_url(os.environ["PEERS_BENCH_REDIS_URL"]))
        return lambda tag, i: queue.enqueue("peertasks.noop", tag, i)
    if system == "celery":
        return peertasks.celery_noop.delay  # type: ignore[no-any-return]
    raise ValueError(f"unknown peer {system!r}")


def run(submit: Callable[[str, int], None], cmd: dict[str, Any]) -> list[tuple[int, float, float, bool]]:
    """One paced or flood load; returns (i, sent, returned, ok) per task."""
    records: list[tuple[int, float, float, bool]] = []
    lock = threading.Lock()
    tag, n = cmd["tag"], cmd["n"]

    def one(i: int) -> None:
        sent = time.time()
        try:
            submit(tag, i)
            ok = True
        except Exception as exc:  # noqa: BLE001 - counted and reported by the bench
            ok = False
            print(f"peerload: submit {i} failed: {exc!r}", flush=True)
        with lock:
            records.append((i, sent, time.time(), ok))

    if cmd["mode"] == "paced":
        start = time.monotonic() + 0.05
        with ThreadPoolExecutor(cmd.get("concurrency", 16)) as pool:
            for i in range(n):
                delay = start + i / cmd["rate"] - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(one, i)
        return records
    counter = itertools.count()

    def worker() -> None:
        while (i := next(counter)) < n:
            one(i)

    threads = [threading.Thread(target=worker) for _ in range(cmd["concurrency"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def main(pipe: Connection, cfg: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: peers.py stops us
    os.environ.update(cfg["env"])
    submit = client(cfg["env"]["PEERS_BENCH_SYSTEM"])
    submit("warm", -1)  # opens the connection; its run tells the bench that the workers consume
    pipe.send({"ready": True})
    while True:
        cmd = pipe.recv()
        if cmd["mode"] == "stop":
            break
        started = time.time()
        records = run(submit, cmd)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        pipe.send({"records": records, "started": started, "ended": time.time(), "cpu_s": ru.ru_utime + ru.ru_stime})
