"""The bench's agents: one OS process, one asyncio loop, one webhook server (own port) per agent.

Each webhook is timestamped the moment its body has been read, answered 204 at once, and then (as a real
agent would) the task is claimed and completed over kept-alive loopback connections. Registered with
`claim_on_push` (cfg "push_claim", or the `register` command's), a webhook carries the claim and the agent
only completes: one request a task instead of two. With cfg "pull" the agents register no webhook and
instead keep `concurrency` long-poll claims (`POST /v1/tasks/claim` with `wait`) open each, completing each
task they get; its arrival is when the claim answered. With cfg "api_urls" (several api replicas) agent i
talks to api i mod n. The parent process drives it over a multiprocessing pipe: `reset`, `status`,
`report`, `stop`.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import rawhttp


class Agent:
    def __init__(self, name: str, secret: str, api: tuple[str, int], concurrency: int) -> None:
        self.name = name
        self.pool = rawhttp.Pool(
            *api,
            size=concurrency,
            headers={"x-agent-id": name, "x-agent-secret": secret, "content-type": "application/json"},
        )
        self.port = 0


class Sim:
    def __init__(self, cfg: dict[str, Any]) -> None:
        apis = []
        for url in cfg.get("api_urls") or [cfg["api_url"]]:
            u = urlsplit(url)
            apis.append((u.hostname or "127.0.0.1", u.port or 80))
        self.agents = [
            Agent(a["name"], a["secret"], apis[i % len(apis)], cfg.get("concurrency", 4))
            for i, a in enumerate(cfg["agents"])
        ]
        self.pull = bool(cfg.get("pull", False))
        self.concurrency = cfg.get("concurrency", 4)
        self.work = cfg.get("work", True)
        self.push_claim = bool(cfg.get("push_claim", False))
        self.tasks: set[asyncio.Task[None]] = set()
        self.reset()

    def reset(self) -> None:
        self.arrivals: dict[str, float] = {}  # task id -> first webhook arrival (time.time())
        self.webhooks = 0
        self.duplicates = 0
        self.claimed = 0
        self.pushed = 0  # claims a webhook brought (claim_on_push)
        self.claim_refused: dict[int, int] = {}
        self.completed: dict[str, float] = {}  # task id -> when the complete call returned 200
        self.errors: list[str] = []
        self.by_agent: dict[str, int] = {}
        self.in_flight = getattr(self, "in_flight", 0)

    def on_webhook(self, agent: Agent, line: bytes, body: bytes) -> None:
        now = time.time()
        self.webhooks += 1
        try:
            task = json.loads(body)["data"]["task"]
            task_id = task["id"]
            token = task.get("claim_token")
        except (ValueError, KeyError, TypeError) as exc:
            self.errors.append(f"bad webhook body: {exc!r}")
            return
        if task_id in self.arrivals:
            self.duplicates += 1
            return
        self.arrivals[task_id] = now
        self.by_agent[agent.name] = self.by_agent.get(agent.name, 0) + 1
        if self.work:
            job = asyncio.get_running_loop().create_task(self.claim_and_complete(agent, task_id, token))
            self.tasks.add(job)  # a task nobody references can be garbage-collected mid-flight
            job.add_done_callback(self.tasks.discard)

    async def claim_and_complete(
        self, agent: Agent, task_id: str, token: str | None = None, *, pushed: bool = True
    ) -> None:
        """Claim (unless the webhook brought the claim: claim_on_push), then complete."""
        self.in_flight += 1
        try:
            if token is None:
                status, data = await agent.pool.request("POST", f"/v1/tasks/{task_id}/claim")
                if status != 200:
                    self.claim_refused[status] = self.claim_refused.get(status, 0) + 1
                    return
                token = json.loads(data)["claim_token"]
            elif pushed:
                self.pushed += 1
            self.claimed += 1
            body = json.dumps({"claim_token": token, "result": {"ok": True}}).encode()
            status, data = await agent.pool.request("POST", f"/v1/tasks/{task_id}/complete", body)
            if status == 200:
                self.completed[task_id] = time.time()
            else:
                self.errors.append(f"complete {task_id}: HTTP {status} {data[:200]!r}")
        except Exception as exc:  # noqa: BLE001 - recorded and reported, the run goes on
            self.errors.append(f"{task_id}: {exc!r}")
        finally:
            self.in_flight -= 1

    async def pull_loop(self, agent: Agent) -> None:
        """Pull mode: claim the next task with a long poll, complete it, again (until cancelled)."""
        claim = json.dumps({"wait": 5}).encode()
        while True:
            try:
                status, data = await agent.pool.request("POST", "/v1/tasks/claim", claim)
            except Exception as exc:  # noqa: BLE001 - recorded and reported, the run goes on
                self.errors.append(f"claim: {exc!r}")
                await asyncio.sleep(0.1)
                continue
            if status == 204:
                continue
            now = time.time()
            if status != 200:
                self.claim_refused[status] = self.claim_refused.get(status, 0) + 1
                await asyncio.sleep(0.1)
                continue
            task = json.loads(data)
            self.webhooks += 1
            if task["id"] in self.arrivals:
                self.duplicates += 1
                continue
            self.arrivals[task["id"]] = now
            self.by_agent[agent.name] = self.by_agent.get(agent.name, 0) + 1
            await self.claim_and_complete(agent, task["id"], task["claim_token"], pushed=False)

    async def register(self, notify_host: str, capacity: int | None, push_claim: bool | None = None) -> None:
        """Register (or re-register) every agent; `capacity` is the concurrency it declares (None: the
        server's default); `push_claim` turns claim_on_push on or off (None: as before)."""
        if push_claim is not None:
            self.push_claim = push_claim
        for agent in self.agents:
            fields: dict[str, Any] = {"capabilities": ["bench"], "ttl": 3600}
            if not self.pull:
                fields["notify_url"] = f"http://{notify_host}:{agent.port}/{agent.name}"
            # (never sent otherwise: older builds refuse it)
            if (self.push_claim or push_claim is not None) and not self.pull:
                fields["claim_on_push"] = self.push_claim
            if capacity is not None:
                fields["concurrency"] = capacity
            body = json.dumps(fields).encode()
            status, data = await agent.pool.request("POST", "/v1/agents/register", body)
            if status != 200:
                raise RuntimeError(f"register {agent.name}: HTTP {status} {data[:300]!r}")

    def status(self) -> dict[str, Any]:
        return {
            "webhooks": self.webhooks,
            "unique": len(self.arrivals),
            "completed": len(self.completed),
            "errors": len(self.errors),
            "in_flight": self.in_flight,
        }

    def report(self) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return self.status() | {
            "arrivals": self.arrivals,
            "completed_at": self.completed,
            "duplicates": self.duplicates,
            "claimed": self.claimed,
            "pushed": self.pushed,
            "claim_refused": self.claim_refused,
            "error_samples": self.errors[:5],
            "by_agent": self.by_agent,
            "cpu_s": ru.ru_utime + ru.ru_stime,
        }


async def amain(pipe: Connection, cfg: dict[str, Any]) -> None:
    sim = Sim(cfg)
    host = cfg.get("host", "127.0.0.1")
    for agent in sim.agents:
        server = await rawhttp.serve(host, 0, lambda line, body, a=agent: sim.on_webhook(a, line, body))
        agent.port = server.sockets[0].getsockname()[1]
    await sim.register(host, cfg.get("capacity"))
    if sim.pull:
        for agent in sim.agents:
            for _ in range(sim.concurrency):
                sim.tasks.add(asyncio.get_running_loop().create_task(sim.pull_loop(agent)))
    pipe.send({"ready": True, "ports": {a.name: a.port for a in sim.agents}})

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_command() -> None:
        while pipe.poll():
            cmd = pipe.recv()
            if cmd == "reset":
                sim.reset()
                pipe.send(True)
            elif cmd == "status":
                pipe.send(sim.status())
            elif cmd == "report":
                pipe.send(sim.report())
            elif cmd == "stop":
                stop.set()
            elif isinstance(cmd, dict) and cmd.get("cmd") == "register":

                async def reregister(
                    capacity: int | None = cmd.get("capacity"), push: bool | None = cmd.get("push_claim")
                ) -> None:
                    try:
                        await sim.register(host, capacity, push)
                        pipe.send(True)
                    except Exception as exc:  # noqa: BLE001 - the parent reports it
                        pipe.send(repr(exc))

                sim.tasks.add(loop.create_task(reregister()))

    loop.add_reader(pipe.fileno(), on_command)
    await stop.wait()
    for job in list(sim.tasks):
        job.cancel()
    await asyncio.gather(*sim.tasks, return_exceptions=True)
    for agent in sim.agents:
        agent.pool.close()
    pipe.send(True)


def main(pipe: Connection, cfg: dict[str, Any]) -> None:
    try:
        import uvloop

        uvloop.run(amain(pipe, cfg))
    except ImportError:
        asyncio.run(amain(pipe, cfg))
