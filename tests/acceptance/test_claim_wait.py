"""A long-poll claim (`POST /v1/tasks/claim {"wait": N}`) on the real api process: commits that bring it
nothing to do wake it into a read, never into a write transaction, and work that arrives still reaches it
at once. Counted from the api's own /metrics (write-lock acquisitions, wake-ups), never timed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import free_ports, uid
from tests.polling import wait_until

pytestmark = pytest.mark.acceptance

WAITERS = 4
UNRELATED_WRITES = 12


def metric(url: str, name: str, labels: str = "") -> float:
    """The sum of a metric's samples on /metrics (those whose labels contain `labels`)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith(name + "_created") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `mcs api` alone on a fresh database: no dispatcher or watchdog, so every write is the test's."""
    (port,) = free_ports(1)
    token = "admin-" + uid()
    env = dict(os.environ) | {
        "MCS_DB": str(tmp_path / "mcs.db"),
        "MCS_HOST": "127.0.0.1",
        "MCS_PORT": str(port),
        "MCS_ADMIN_TOKEN": token,
        "MCS_SYNCHRONOUS": "NORMAL",
    }
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "mcs", "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (tmp_path / "api.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=30, what="`mcs api` to answer /healthz")
        yield url, {"Authorization": f"Bearer {token}"}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_waiting_claims_take_no_write_lock_on_unrelated_commits_and_still_get_work(
    api: tuple[str, dict[str, str]],
) -> None:
    url, admin = api
    cap = "lp-" + uid()
    agents = []
    with httpx.Client(base_url=url, timeout=10) as c:
        for i in range(WAITERS):
            made = c.post("/v1/agents", json={"name": f"{cap}-{i}", "capabilities": [cap]}, headers=admin).json()
            who = {"X-Agent-ID": f"{cap}-{i}", "X-Agent-Secret": made["secret"]}
            c.post("/v1/agents/register", json={"capabilities": [cap]}, headers=who).raise_for_status()
            agents.append(who)
        # A task for a capability none of them has: queued work that is not theirs must not wake them either.
        c.post("/v1/tasks", json={"type": "other-" + uid()}, headers=admin).raise_for_status()

    answers: list[httpx.Response] = []

    def long_poll(who: dict[str, str]) -> None:
        with httpx.Client(base_url=url, timeout=60) as mine:
            answers.append(mine.post("/v1/tasks/claim", json={"wait": 20}, headers=who))

    threads = [threading.Thread(target=long_poll, args=(who,)) for who in agents]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: metric(url, "mcs_claims_waiting") == WAITERS, timeout=10, what="every claim to wait")
        locks = metric(url, "mcs_write_lock_acquisitions_total")
        idle = metric(url, "mcs_claim_wakeups_total", 'outcome="idle"')
        with httpx.Client(base_url=url, timeout=10) as c:
            for i in range(UNRELATED_WRITES):
                c.put(f"/v1/memory/mesh/{cap}-{i}", json={"value": i}, headers=admin).raise_for_status()
                c.post("/v1/agents/register", json={"capabilities": [cap]}, headers=agents[0]).raise_for_status()
            # Each waiter saw the commits (a wake-up that found nothing for it) ...
            wait_until(
                lambda: metric(url, "mcs_claim_wakeups_total", 'outcome="idle"') >= idle + WAITERS,
                timeout=10,
                what="the waiting claims to wake up and look",
            )
            # ... and none of them took the write lock for it: only the test's own writes did.
            assert metric(url, "mcs_write_lock_acquisitions_total") - locks == 2 * UNRELATED_WRITES
            assert answers == []  # nobody was answered: nothing was theirs
            assert metric(url, "mcs_claims_waiting") == WAITERS

            task = c.post("/v1/tasks", json={"type": cap, "payload": {"n": 1}}, headers=admin).json()
            wait_until(lambda: answers, timeout=10, what="a waiting agent to get the task")
        got: Any = answers[0]
        assert got.status_code == 200, got.text
        assert got.json()["id"] == task["id"] and got.json()["state"] == "claimed"
        assert metric(url, "mcs_claim_wakeups_total", 'outcome="claimed"') == 1
        assert metric(url, "mcs_claims_waiting") == WAITERS - 1
    finally:
        with httpx.Client(base_url=url, timeout=10) as c:  # end the other polls: one task each
            for _ in range(WAITERS):
                c.post("/v1/tasks", json={"type": cap}, headers=admin)
        for t in threads:
            t.join(timeout=30)
    assert sorted(r.status_code for r in answers) == [200] * WAITERS
