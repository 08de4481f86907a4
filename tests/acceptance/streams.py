"""Streams of tasks through a running mesh, and the end-state checks that prove nothing was lost or completed
twice while processes were killed, frozen or out of disk (test_resilience.py, test_chaos.py).

    stream = TaskStream(mesh, kind, total=1000, every=0.01)
    stream.start()
    stream.wait_acked(300)            # ... break something ...
    stream.join()
    tasks = wait_all_terminal(mesh, kind, set(stream.acked.values()), timeout=60)
    assert_completed_exactly_once(mesh, agents, tasks)

`RetryingClient` is the client of a well-behaved caller of a flaky server: it retries connection errors
(the api being killed mid-request) and 429/503/507 answers (after their Retry-After) until a deadline.
That is safe only for requests whose repetition is harmless by contract: a submit under an
`Idempotency-Key` (the same key and body replays the first answer), a complete with the same claim token
(a 200 no-op), a claim (a repeated claim is a 409 and the lease runs out). `mcs.client.Client` on purpose
never retries a POST whose connection died, since it cannot know which of these it is.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from mcs.client import Client, McsUnavailable, _decode
from tests.polling import wait_until

if TYPE_CHECKING:
    from .conftest import FakeAgent, Mesh

TERMINAL = ("completed", "failed", "canceled")
RETRY_STATUSES = frozenset({429, 503, 507})
GIVE_UP_AFTER = 60.0  # seconds one request may keep failing before the caller gives up
RETRY_AFTER_CAP = 3.0  # seconds: the longest Retry-After a test client waits out
NO_RETRY_AFTER_WAIT = 0.25  # seconds before retrying an answer that named no Retry-After
TRANSPORT_WAIT = (0.05, 1.0)  # seconds: first and longest wait after a connection error (doubling)
PAGE = 500  # tasks per list page (the API's maximum)
LIST_EVERY = 3.0  # seconds between full task listings while the agents are still completing
EVENT_READERS = 4  # threads reading audit trails at the end


class RetryingClient(Client):
    """A `Client` that retries connection errors and 429/503/507 answers until `give_up_after` seconds
    (see the module docstring for when that is safe). It counts what it retried in `retried`, keyed
    `"transport"` (split again into `"connect refused"` and `"died mid-request"`) or `"<status> <code>"`,
    and each 429 or 503 that came without Retry-After in `missing_retry_after`."""

    def __init__(self, url: str, *, give_up_after: float = GIVE_UP_AFTER, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.give_up_after = give_up_after
        self.retried: Counter[str] = Counter()
        self.missing_retry_after: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.closed = threading.Event()

    def close(self) -> None:
        """Close, and make any request still retrying give up at once (a test that failed moves on)."""
        self.closed.set()
        super().close()

    def _pause(self, seconds: float, what: str) -> None:
        if self.closed.wait(seconds):
            raise McsUnavailable(f"{what}: the client was closed while retrying")

    def _note(self, what: str, *, missing_retry_after: bool = False) -> None:
        with self.lock:
            self.retried[what] += 1
            if missing_retry_after:
                self.missing_retry_after[what] += 1

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The first answer that is not a connection error nor a 429/503/507."""
        deadline = time.monotonic() + self.give_up_after
        wait, longest = TRANSPORT_WAIT
        while True:
            try:
                response = self.http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                # A connect error means the request never arrived; any other means it died on the way
                # (sent, then the server vanished): whether it was stored, only a retry can tell.
                self._note("transport")
                self._note("connect refused" if isinstance(exc, httpx.ConnectError) else "died mid-request")
                if time.monotonic() > deadline or self.closed.is_set():
                    raise McsUnavailable(f"{method} {path}: still failing after {self.give_up_after} s: {exc}") from exc
                self._pause(wait, f"{method} {path}")
                wait = min(longest, wait * 2)
                continue
            if response.status_code not in RETRY_STATUSES:
                return response
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
            header = response.headers.get("retry-after")
            # 429 and 503 promise a Retry-After; a full disk (507) has no such promise: the caller waits.
            promised = response.status_code != 507
            self._note(f"{response.status_code} {code}", missing_retry_after=promised and header is None)
            if time.monotonic() > deadline:
                return response
            self._pause(min(RETRY_AFTER_CAP, float(header)) if header else NO_RETRY_AFTER_WAIT, f"{method} {path}")

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return _decode(self.send(method, path, json=json, params=params, headers=headers))


class TaskStream:
    """Submits `total` tasks of type `kind` as admin from `threads` threads, one every `every` seconds
    overall, each under its own Idempotency-Key and retried with it until it gets an answer.

    `acked` maps each key to the task id of its 201 (several answers for one key must name one task);
    `replayed` counts 201s that said `Idempotent-Replayed: true` (the first attempt had been stored);
    `errors` holds any answer that is not a 201."""

    def __init__(
        self, mesh: Mesh, kind: str, *, total: int, every: float, threads: int = 4, run: str | None = None
    ) -> None:
        self.mesh, self.kind, self.total, self.every = mesh, kind, total, every
        self.run = run or kind
        self.acked: dict[str, str] = {}
        self.answers: dict[str, set[str]] = {}  # key -> every task id any 201 for it named
        self.replayed = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.clients = [
            RetryingClient(mesh.url, admin_token=mesh.admin_token, timeout=15, retries=0) for _ in range(threads)
        ]
        self._next = itertools.count()
        self._next_due = 0.0
        self._in_flight: dict[str, float] = {}  # key -> when its submit began
        self._allowed = total
        self._gate = threading.Condition(self.lock)
        self._threads = [
            threading.Thread(target=self._submit_loop, args=(c,), name=f"submitter-{i}", daemon=True)
            for i, c in enumerate(self.clients)
        ]

    def key(self, i: int) -> str:
        return f"{self.run}-{i}"

    def start(self) -> TaskStream:
        for t in self._threads:
            t.start()
        return self

    def allow(self, n: int) -> None:
        """Submit only the first `n` tasks until allowed more, so a fault still finds the stream running
        however slowly the mesh recovered from the previous one."""
        with self._gate:
            self._allowed = min(n, self.total)
            self._gate.notify_all()

    def _take(self, client: RetryingClient) -> int | None:
        """The next task number to submit, once the gate allows it and its turn in the pace has come."""
        with self._gate:
            i = next(self._next)
            if i >= self.total:
                return None
            while i >= self._allowed and not client.closed.is_set():
                self._gate.wait(0.1)
            now = time.monotonic()
            due = max(now, self._next_due)
            self._next_due = due + self.every
        return None if client.closed.wait(due - now) else i

    def _submit_loop(self, client: RetryingClient) -> None:
        while (i := self._take(client)) is not None:
            key = self.key(i)
            with self.lock:
                self._in_flight[key] = time.monotonic()
            try:
                response = client.send(
                    "POST",
                    "/v1/tasks",
                    json={"type": self.kind, "payload": {"i": i}},
                    headers={"Idempotency-Key": key},
                )
            except McsUnavailable as exc:
                with self.lock:
                    self.errors.append(f"{key}: {exc}")
                continue
            finally:
                with self.lock:
                    del self._in_flight[key]
            with self.lock:
                if response.status_code != 201:
                    self.errors.append(f"{key}: HTTP {response.status_code} {response.text[:200]}")
                    continue
                task_id = response.json()["id"]
                self.acked.setdefault(key, task_id)
                self.answers.setdefault(key, set()).add(task_id)
                self.replayed += response.headers.get("idempotent-replayed") == "true"

    def oldest_in_flight(self) -> float:
        """Seconds the oldest submit still waiting for its answer has waited (0 when none waits)."""
        with self.lock:
            return time.monotonic() - min(self._in_flight.values()) if self._in_flight else 0.0

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def wait_acked(self, n: int, *, timeout: float = 30.0) -> int:
        """Wait until at least `n` submits have been acknowledged."""
        reached = wait_until(lambda: self.acked_count() >= n and self.acked_count(), timeout=timeout, what=f"{n} acks")
        return int(reached)

    def retried(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for c in self.clients:
            with c.lock:
                total.update(c.retried)
        return total

    def missing_retry_after(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for c in self.clients:
            with c.lock:
                total.update(c.missing_retry_after)
        return total

    def stop(self) -> None:
        """Abandon what is left (after a failure): every submitter gives up at once."""
        for c in self.clients:
            c.close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)

    def join(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"submitters still running after {timeout} s: {alive}"
        for c in self.clients:
            c.close()

    def check_acknowledged(self) -> set[str]:
        """Every submit was acknowledged, each key named exactly one task: the ids of the acked tasks."""
        assert not self.errors, f"{len(self.errors)} submits failed: {self.errors[:5]}"
        assert len(self.acked) == self.total, f"{len(self.acked)} of {self.total} submits acknowledged"
        split = {k: v for k, v in self.answers.items() if len(v) > 1}
        assert not split, f"one Idempotency-Key answered with several tasks: {list(split.items())[:3]}"
        ids = set(self.acked.values())
        assert len(ids) == self.total, f"{self.total} keys but {len(ids)} distinct task ids"
        return ids

    def check_replays(self, n: int) -> None:
        """Submitting the first `n` keys again with the same bodies answers each with its first task
        (`Idempotent-Replayed: true`), however many processes were killed since."""
        with RetryingClient(self.mesh.url, admin_token=self.mesh.admin_token, timeout=15, retries=0) as client:
            for i in range(n):
                key = self.key(i)
                response = client.send(
                    "POST", "/v1/tasks", json={"type": self.kind, "payload": {"i": i}}, headers={"Idempotency-Key": key}
                )
                assert response.status_code == 201, (key, response.status_code, response.text)
                assert response.headers.get("idempotent-replayed") == "true", (key, dict(response.headers))
                assert response.json()["id"] == self.acked[key], (key, response.json()["id"], self.acked[key])


def list_all_tasks(client: Client, **filters: Any) -> list[dict[str, Any]]:
    """Every task matching `filters`, across pages."""
    tasks: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.list_tasks(limit=PAGE, cursor=cursor, **filters)
        tasks += page["tasks"]
        cursor = page.get("next_cursor")
        if not cursor:
            return tasks


def wait_all_terminal(
    mesh: Mesh, kind: str, ids: set[str], *, timeout: float, agents: Iterable[FakeAgent] = ()
) -> dict[str, dict[str, Any]]:
    """Wait until every task of type `kind` is terminal; they must be exactly `ids` (nothing lost, nothing
    made up). Returns them by id. While the `agents` have completed fewer than `ids`, the (large) list is
    read only every few seconds: the api's CPU is for the mesh under test."""
    agents = list(agents)
    last_read = 0.0

    def done() -> dict[str, dict[str, Any]] | None:
        nonlocal last_read
        if agents and len(completions(agents)) < len(ids) and time.monotonic() - last_read < LIST_EVERY:
            return None
        last_read = time.monotonic()
        tasks = {t["id"]: t for t in list_all_tasks(mesh.admin, type=kind)}
        return tasks if len(tasks) >= len(ids) and all(t["state"] in TERMINAL for t in tasks.values()) else None

    try:
        tasks: dict[str, dict[str, Any]] = wait_until(
            done, timeout=timeout, what=f"all {len(ids)} tasks to end", interval=0.2
        )
    except AssertionError:
        states = Counter(t["state"] for t in list_all_tasks(mesh.admin, type=kind))
        raise AssertionError(f"not every task ended within {timeout} s: {dict(states)}") from None
    lost = ids - set(tasks)
    assert not lost, f"{len(lost)} acknowledged tasks lost, e.g. {sorted(lost)[:3]}"
    extra = set(tasks) - ids
    assert not extra, f"{len(extra)} tasks nobody was told about (a retried submit stored twice?): {sorted(extra)[:3]}"
    return tasks


def completions(agents: Iterable[FakeAgent]) -> dict[str, list[tuple[str, Any]]]:
    """task id -> (agent, result) for every complete an agent was told succeeded."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for agent in agents:
        with agent.lock:
            for task_id, results in agent.completed.items():
                found.setdefault(task_id, []).extend((agent.name, r) for r in results)
    return found


def assert_completed_exactly_once(
    mesh: Mesh, agents: list[FakeAgent], tasks: Mapping[str, Mapping[str, Any]]
) -> Counter[str]:
    """Every task completed, by exactly one acknowledged complete (at the agents) and exactly one
    `completed` event (in its audit trail), and its stored result is the one that agent sent. A task may
    have been claimed (executed) more than once: at-least-once allows that; returns claims per task."""
    states = Counter(t["state"] for t in tasks.values())
    assert states == Counter({"completed": len(tasks)}), dict(states)
    done = completions(agents)
    twice = {tid: c for tid, c in done.items() if len(c) > 1}
    assert not twice, f"{len(twice)} tasks completed twice at the agents: {list(twice.items())[:2]}"
    missing = set(tasks) - set(done)
    assert not missing, f"{len(missing)} tasks completed with no agent told so: {sorted(missing)[:3]}"
    for task_id, task in tasks.items():
        ((agent, result),) = done[task_id]
        assert task["assigned_to"] == agent and task["result"] == result, (task_id, task, agent, result)
    claims: Counter[str] = Counter()
    with ThreadPoolExecutor(EVENT_READERS) as pool:  # the api batches concurrent reads
        trails = dict(zip(tasks, pool.map(mesh.admin.events, tasks), strict=True))
    for task_id, events in trails.items():
        kinds = [e["kind"] for e in events]
        assert kinds.count("completed") == 1, (task_id, kinds)
        assert sum(k in TERMINAL for k in kinds) == 1, (task_id, kinds)
        claims[task_id] = kinds.count("claimed")
    return claims
