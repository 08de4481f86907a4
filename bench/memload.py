"""Shared-memory throughput over HTTP, against the same run's plain GET /healthz as the yardstick.

    python bench/memload.py '{"api_url": ..., "agent": "name", "secret": "...", "n": 2000, "concurrency": 8}'

Runs as its own process (the server's cores are what is measured); prints one JSON line: requests per
second for healthz, put (PUT /v1/memory/mesh/{key}, one of 100 keys, as an agent) and get, each as `n`
requests from `concurrency` kept-alive connections (the bench's raw client), and their ratios.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlparse

from rawhttp import Pool

KEYS = 100


async def _phase(pool: Pool, n: int, concurrency: int, request: Any) -> float:
    """Requests per second for `n` requests from `concurrency` workers; any non-2xx answer is an error."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            status, body = await request(pool, i)
            if not 200 <= status < 300:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def measure(cfg: dict[str, Any]) -> dict[str, float]:
    url = urlparse(cfg["api_url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    n, concurrency = cfg["n"], cfg["concurrency"]
    plain = Pool(host, port, size=concurrency, headers={})
    agent = Pool(
        host,
        port,
        size=concurrency,
        headers={"x-agent-id": cfg["agent"], "x-agent-secret": cfg["secret"], "content-type": "application/json"},
    )
    value = json.dumps({"value": {"status": "reviewing", "progress": 0.5, "notes": ["a", "b", "c"]}}).encode()

    async def healthz(pool: Pool, i: int) -> tuple[int, bytes]:
        return await pool.request("GET", "/healthz")

    async def put(pool: Pool, i: int) -> tuple[int, bytes]:
        return await pool.request("PUT", f"/v1/memory/mesh/bench/{i % KEYS}", value)

    async def get(pool: Pool, i: int) -> tuple[int, bytes]:
        return await pool.request("GET", f"/v1/memory/mesh/bench/{i % KEYS}")

    await _phase(plain, min(n, 200), concurrency, healthz)  # warm-up: connections, caches
    rates = {
        "healthz": await _phase(plain, n, concurrency, healthz),
        "put": await _phase(agent, n, concurrency, put),
        "get": await _phase(agent, n, concurrency, get),
    }
    plain.close()
    agent.close()
    rates["put_ratio"] = rates["put"] / rates["healthz"]
    rates["get_ratio"] = rates["get"] / rates["healthz"]
    return rates


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(json.loads(sys.argv[1])))))
