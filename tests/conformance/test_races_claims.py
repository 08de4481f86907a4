"""Serialisation site 3 (docs/design/engines.md 4.1) on PostgreSQL, two engines on one database as two
replicas: while a dispatcher pass holds an agent's load lock (exclusive) and counts its load, the agent's
own claim (`claim`, `claim_next`, `complete_and_next`) waits for the pass's commit instead of raising the
load under it. On SQLite the lock is a no-op: its write transaction holds the whole database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mcs.config import Settings
from mcs.engines import open_engine
from mcs.engines.base import Tx
from mcs.models import Agent
from mcs.state import tasks as tasks_state
from tests.polling import wait_until

NOW = 1_000_000.0
WAIT = 30  # seconds a thread waits for the other before the test fails


@pytest.fixture
def engines(tmp_path: Path, pg_database: str) -> Iterator[tuple[Any, Any, str]]:
    settings = Settings(db=tmp_path / "unused.db", database_url=pg_database, pg_pool_size=2)
    first = open_engine(settings, process="dispatcher")
    first.migrate()
    second = open_engine(settings, process="api")
    yield first, second, pg_database
    first.close()
    second.close()


def _seed(tx: Tx) -> None:
    tx.run(
        "INSERT INTO agents (name, secret_hash, webhook_secret, status, created_at)"
        " VALUES ('a', 'h', 's', 'online', ?)",
        (NOW,),
    )
    for task_id, state, token in (("done", "claimed", "tok"), ("next", "queued", None)):
        tx.run(
            "INSERT INTO tasks (id, type, payload, priority, capabilities, route, state, assigned_to, claim_token,"
            " max_retries, claim_ttl, submitted_by, created_at, updated_at)"
            " VALUES (?, 't', '{}', 1, '[]', 'any', ?, ?, ?, 3, 60, 'alice', ?, ?)",
            (task_id, state, "a" if token else None, token, NOW, NOW),
        )


def _agent(tx: Tx) -> Agent:
    agent = tx.agent_get("a")
    assert agent is not None
    return agent


CLAIMS: dict[str, Callable[[Tx], str | None]] = {
    "claim": lambda tx: tasks_state.claim(tx, task_id="next", agent=_agent(tx), now=NOW).task.id,
    "claim_next": lambda tx: (lambda v: v.task.id if v else None)(
        tasks_state.claim_next(tx, agent=_agent(tx), now=NOW)
    ),
    "complete_and_next": lambda tx: (lambda r: r[1].task.id if r[1] else None)(
        tasks_state.complete_and_next(tx, task_id="done", agent=_agent(tx), token="tok", result=None, now=NOW)
    ),
}


def _waiting_for_advisory_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("path", sorted(CLAIMS))
def test_a_claim_waits_for_the_pass_that_counts_the_agents_load(engines: Any, path: str) -> None:
    dispatcher, api, url = engines
    dispatcher.write(_seed)
    pass_holds, claim_waits = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def pass_(tx: Tx) -> int:
        tx.agent_lock("a", share=False)
        load = tx.agent_load("a")
        pass_holds.set()
        assert claim_waits.wait(WAIT)
        return load

    def run(name: str, job: Callable[[], Any]) -> None:
        try:
            results[name] = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[name] = exc

    def claimant() -> str | None:
        assert pass_holds.wait(WAIT)
        return api.write(CLAIMS[path])

    def watch() -> None:
        try:
            wait_until(lambda: _waiting_for_advisory_lock(url), timeout=WAIT, what="the claim waiting for the pass")
        finally:
            claim_waits.set()

    threads = [
        threading.Thread(target=run, args=("pass", lambda: dispatcher.write(pass_))),
        threading.Thread(target=run, args=("claim", claimant)),
        threading.Thread(target=run, args=("watch", watch)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 3)
    assert results["watch"] is None, results["watch"]  # the claim waited on the agent's lock
    assert results["pass"] == 1  # the load the pass counted ("done", claimed) held until it committed
    assert results["claim"] == "next"
