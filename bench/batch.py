"""Submitting many tasks: POST /v1/tasks once per task against POST /v1/tasks/batch, on one real `mcs api`.

    python bench/batch.py               # 2,000 tasks each way: about 15 s
    python bench/batch.py --tasks 5000

The same submitter (httpx, kept-alive connections, admin) sends `--tasks` tasks one request each, first
from one thread and then from 4 threads, and then the same number in batches of up to SUBMIT_BATCH_MAX.
Prints tasks/s for each and the batch's ratio to each; the database runs with MCS_SYNCHRONOUS=FULL as in
production. A loaded machine moves all figures: compare the ratios within one run. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longpoll import start_api  # noqa: E402

from mcs.models import SUBMIT_BATCH_MAX  # noqa: E402


def singles(url: str, admin: dict[str, str], kind: str, n: int, threads: int) -> float:
    """Tasks per second, one POST /v1/tasks each, from `threads` threads with a client each."""

    def run(part: range) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=admin) as c:
            for i in part:
                c.post("/v1/tasks", json={"type": kind, "payload": {"n": i}}).raise_for_status()

    parts = [range(k, n, threads) for k in range(threads)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, parts))
    return n / (time.perf_counter() - started)


def batches(url: str, admin: dict[str, str], kind: str, n: int) -> float:
    with httpx.Client(base_url=url, timeout=120, headers=admin) as c:
        started = time.perf_counter()
        for first in range(0, n, SUBMIT_BATCH_MAX):
            tasks = [{"type": kind, "payload": {"n": i}} for i in range(first, min(n, first + SUBMIT_BATCH_MAX))]
            answer = c.post("/v1/tasks/batch", json={"tasks": tasks})
            answer.raise_for_status()
            assert all(r["status"] == 201 for r in answer.json()["results"])
        return n / (time.perf_counter() - started)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcs-batch-") as tmp:
        proc, url, admin = start_api(Path(tmp))
        try:
            one = singles(url, admin, "single1", args.tasks, 1)
            four = singles(url, admin, "single4", args.tasks, 4)
            batch = batches(url, admin, "batch", args.tasks)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    print(f"{args.tasks} tasks each way, MCS_SYNCHRONOUS=FULL")
    print(f"single submits, 1 thread:   {one:8.0f} tasks/s")
    print(f"single submits, 4 threads:  {four:8.0f} tasks/s")
    print(f"batches of {SUBMIT_BATCH_MAX}:          {batch:8.0f} tasks/s")
    print(f"batch / single: {batch / one:.1f}x (1 thread), {batch / four:.1f}x (4 threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
