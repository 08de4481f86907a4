"""The bench's submitter: its own OS process, one kept-alive httpx.AsyncClient, submitting as the admin.

With `client: raw` it uses the bench's minimal HTTP client instead of httpx (to see what httpx costs), and
with `api_urls` (several api replicas) it sends submission i to api i mod n.
Two modes, driven over a multiprocessing pipe:
- `paced`: open loop at a fixed rate (a submission starts on schedule even if earlier ones are still open),
- `flood`: `concurrency` submitters back to back, as fast as the server answers.
For each task it records the time just before the POST was handed to the client and when the 201 came back.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

import httpx
import rawhttp


class LoadGen:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.client = httpx.AsyncClient(
            base_url=cfg["api_url"],
            headers={"authorization": f"Bearer {cfg['admin_token']}"},
            timeout=30.0,
            limits=httpx.Limits(max_connections=cfg.get("concurrency", 4), max_keepalive_connections=16),
        )
        self.records: list[tuple[str | None, float, float, int]] = []  # (task id, sent, answered, status)
        self.raws: list[rawhttp.Pool] = []
        if cfg.get("client") == "raw":  # the bench's own minimal client: shows what httpx itself costs
            for url in cfg.get("api_urls") or [cfg["api_url"]]:
                u = httpx.URL(url)
                self.raws.append(
                    rawhttp.Pool(
                        u.host,
                        u.port or 80,
                        size=cfg.get("concurrency", 4),
                        headers={"authorization": f"Bearer {cfg['admin_token']}", "content-type": "application/json"},
                    )
                )
        elif cfg.get("api_urls") and len(cfg["api_urls"]) > 1:
            raise ValueError("several api_urls need client: raw")
        self.raw = self.raws[0] if self.raws else None

    async def submit(self, i: int, tag: str) -> None:
        body = {"type": "bench", "payload": {"i": i, "run": tag}}
        if self.raws:
            data = json.dumps(body).encode()
            sent = time.time()
            try:
                status, answer = await self.raws[i % len(self.raws)].request("POST", "/v1/tasks", data)
                task_id = json.loads(answer).get("id") if status == 201 else None
                self.records.append((task_id, sent, time.time(), status))
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                self.records.append((None, sent, time.time(), -1))
                print(f"loadgen: submit {i} failed: {exc!r}", flush=True)
            return
        sent = time.time()
        try:
            r = await self.client.post("/v1/tasks", json=body)
            task_id = r.json().get("id") if r.status_code == 201 else None
            self.records.append((task_id, sent, time.time(), r.status_code))
        except httpx.HTTPError as exc:
            self.records.append((None, sent, time.time(), -1))
            print(f"loadgen: submit {i} failed: {exc!r}", flush=True)

    async def paced(self, n: int, rate: float, tag: str) -> None:
        start = time.monotonic() + 0.05
        pending = set()
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(self.submit(i, tag))
            pending.add(t)
            t.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)

    async def flood(self, n: int, concurrency: int, tag: str) -> None:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                await self.submit(i, tag)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def amain(pipe: Connection, cfg: dict[str, Any]) -> None:
    gen = LoadGen(cfg)
    loop = asyncio.get_running_loop()
    pipe.send({"ready": True})
    try:
        while True:
            cmd = await loop.run_in_executor(None, pipe.recv)
            if cmd["mode"] == "stop":
                break
            gen.records = []
            started = time.time()
            if cmd["mode"] == "paced":
                await gen.paced(cmd["n"], cmd["rate"], cmd["tag"])
            else:
                await gen.flood(cmd["n"], cmd["concurrency"], cmd["tag"])
            ru = resource.getrusage(resource.RUSAGE_SELF)
            pipe.send(
                {"records": gen.records, "started": started, "ended": time.time(), "cpu_s": ru.ru_utime + ru.ru_stime}
            )
    finally:
        await gen.client.aclose()


def main(pipe: Connection, cfg: dict[str, Any]) -> None:
    try:
        import uvloop

        uvloop.run(amain(pipe, cfg))
    except ImportError:
        asyncio.run(amain(pipe, cfg))
