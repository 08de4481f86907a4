"""The StatsTx contract (mcs.engines.areas.stats) on a real SQLite file through `Store`: the counts the
metrics collector and `mcs status` read, and the snapshot the stats state builds from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcs.engines.sqlite.engine import Store
from mcs.models import APPROVAL
from mcs.state import stats as stats_state


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "stats.db", synchronous="NORMAL")
    s.migrate()
    yield s
    s.close()


def sql(store: Any, query: str, params: tuple[Any, ...] = ()) -> None:
    store.write(lambda tx: tx.execute(query, params))


def task(store: Any, task_id: str, *, type: str = "t", state: str = "queued", priority: int = 1, **kw: Any) -> None:
    cols = {"not_before": None, "created_at": 1.0, "updated_at": 1.0, "concurrency_key": None} | kw
    sql(
        store,
        "INSERT INTO tasks (id, type, priority, capabilities, route, state, max_retries, claim_ttl, submitted_by,"
        " not_before, created_at, updated_at, concurrency_key)"
        " VALUES (?, ?, ?, '[]', 'any', ?, 3, 60, 'admin', ?, ?, ?, ?)",
        (task_id, type, priority, state, *cols.values()),
    )


def test_task_types_are_distinct_in_order_up_to_a_limit(store: Any) -> None:
    for i, t in enumerate(["b", "a", "c", "a"]):
        task(store, f"t{i}", type=t)
    assert store.read(lambda tx: tx.stats_task_types(10)) == ["a", "b", "c"]
    assert store.read(lambda tx: tx.stats_task_types(2)) == ["a", "b"]


def test_queue_counts_claimed_kinds_and_oldest_queued(store: Any) -> None:
    task(store, "q1", priority=0, created_at=5.0)
    task(store, "q2", priority=0, created_at=9.0, not_before=3.0)
    task(store, "q3", priority=2, created_at=7.0)
    task(store, "c1", type="x", state="claimed", priority=2)
    task(store, "c2", type="x", state="claimed", priority=2)
    task(store, "d1", state="completed")
    counts = store.read(lambda tx: tx.stats_queue_counts(("queued", "claimed", "assigned")))
    assert counts == {("queued", 0): 2, ("queued", 2): 1, ("claimed", 2): 2}
    assert store.read(lambda tx: tx.stats_claimed_kinds()) == [("x", 2)]
    assert store.read(lambda tx: tx.stats_oldest_queued(0)) == 3.0
    assert store.read(lambda tx: tx.stats_oldest_queued(1)) is None


def test_failures_approvals_keys_and_workflows(store: Any) -> None:
    task(store, "f1", type="x", state="failed", updated_at=10.0)
    task(store, "f2", type="x", state="failed", updated_at=2.0)
    task(store, "a1", type=APPROVAL, state="waiting", updated_at=4.0)
    task(store, "a2", type=APPROVAL, state="waiting", updated_at=6.0)
    task(store, "k1", concurrency_key="db")
    task(store, "k2", concurrency_key="db", state="claimed")
    sql(store, "INSERT INTO workflows (id, name, state, submitted_by, created_at, updated_at)"
               " VALUES ('w1', 'n', 'running', 'admin', 1, 1)")  # fmt: skip
    assert store.read(lambda tx: tx.stats_failed_since(5.0)) == {("x", 1): 1}
    assert store.read(lambda tx: tx.stats_approvals_waiting(APPROVAL)) == (2, 4.0)
    assert store.read(lambda tx: tx.stats_approvals_waiting("nothing")) == (0, None)
    assert store.read(lambda tx: tx.stats_keyed_queued()) == 1
    assert store.read(lambda tx: tx.stats_workflows()) == {"running": 1}


def test_agents_memory_outbox_and_heartbeats(store: Any) -> None:
    sql(store, "INSERT INTO agents (name, secret_hash, webhook_secret, status, expires_at, last_seen, created_at)"
               " VALUES ('b', 'h', 'w', 'online', 20, 5, 1), ('a', 'h', 'w', 'offline', NULL, NULL, 1)")  # fmt: skip
    sql(store, "INSERT INTO memory (ns, key, value, version, expires_at, updated_by, updated_at) VALUES"
               " ('mesh', 'k1', '1', 1, NULL, 'a', 1), ('mesh', 'k2', '1', 1, 5, 'a', 1)")  # fmt: skip
    assert store.read(lambda tx: tx.stats_agents()) == [("a", "offline", None, None), ("b", "online", 20.0, 5.0)]
    assert store.read(lambda tx: tx.stats_memory_keys(3.0)) == {"mesh": 2}
    assert store.read(lambda tx: tx.stats_memory_keys(6.0)) == {"mesh": 1}
    assert store.read(lambda tx: tx.stats_outbox_pending()) == {}
    assert store.read(lambda tx: tx.stats_heartbeats()) == {}


def test_snapshot_fills_every_state_and_label(store: Any) -> None:
    task(store, "q1", priority=0, created_at=5.0)
    snap = store.read(stats_state.snapshot, now=10.0)
    assert snap.tasks[("queued", "urgent")] == 1 and snap.tasks[("blocked", "low")] == 0
    assert snap.oldest_queued == {"urgent": 5.0}
    assert snap.workflows == {"running": 0, "completed": 0, "failed": 0, "canceled": 0}
