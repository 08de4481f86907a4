"""The QueueTx contract (mcs.engines.areas.queue): each method, on a real migrated SQLite file through
`Store`, as the dispatcher's pass and the watchdog's sweeps rely on it. The PostgreSQL engine runs the same
file once it lands (docs/design/engines.md 6.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcs.engines.sqlite.engine import Store
from mcs.models import QueueGroup, Task, TaskState

NOW = 1_000_000.0


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "mcs.db")
    store.migrate()
    yield store
    store.close()


def add_task(store: Store, task_id: str, **cols: Any) -> None:
    row = {
        "id": task_id,
        "type": "t",
        "payload": "{}",
        "priority": 1,
        "capabilities": "[]",
        "route": "any",
        "state": "queued",
        "max_retries": 3,
        "claim_ttl": 60.0,
        "submitted_by": "alice",
        "created_at": NOW - 100,
        "updated_at": NOW - 100,
    } | cols
    if isinstance(row["capabilities"], list):
        row["capabilities"] = json.dumps(row["capabilities"])
    names = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    store.write(lambda tx: tx.execute(f"INSERT INTO tasks ({names}) VALUES ({marks})", tuple(row.values())))


def add_agent(store: Store, name: str) -> None:
    store.write(
        lambda tx: tx.execute(
            "INSERT INTO agents (name, secret_hash, webhook_secret, status, created_at)"
            " VALUES (?, 'h', 's', 'online', ?)",
            (name, NOW),
        )
    )


def add_webhook(store: Store, task_id: str, agent: str, *, state: str, at: float, token: str | None = None) -> None:
    body = {"type": "task.assigned", "data": {"task": {"id": task_id, "claim_token": token}}}
    store.write(
        lambda tx: tx.execute(
            "INSERT INTO outbox (kind, message_id, agent, task_id, body, state, next_attempt_at, created_at,"
            " updated_at) VALUES ('webhook', ?, ?, ?, ?, ?, ?, ?, ?)",
            (f"msg_{task_id}_{at}", agent, task_id, json.dumps(body), state, at, at, at),
        )
    )


def column(store: Store, task_id: str, name: str) -> Any:
    return store.read(lambda tx: tx.execute(f"SELECT {name} FROM tasks WHERE id = ?", (task_id,)).fetchone()[0])


# ---------------------------------------------------------------- is there work


def test_work_due_is_a_retry_whose_time_came_or_a_blocked_task_ready_to_run(store):
    assert store.read(lambda tx: tx.work_due(NOW)) is False
    add_task(store, "later", state="retrying", not_before=NOW + 5)
    assert store.read(lambda tx: tx.work_due(NOW)) is False
    assert store.read(lambda tx: tx.work_due(NOW + 5)) is True
    add_task(store, "dep", state="claimed", assigned_to="a")
    add_task(store, "blocked", state="blocked", not_before=NOW - 1)
    store.write(lambda tx: tx.execute("INSERT INTO task_deps (task_id, dep_id) VALUES ('blocked', 'dep')"))
    assert store.read(lambda tx: tx.work_due(NOW)) is False  # its dependency has not ended
    store.write(lambda tx: tx.execute("UPDATE tasks SET state = 'completed' WHERE id = 'dep'"))
    assert store.read(lambda tx: tx.work_due(NOW)) is True


def test_queued_any_tells_parked_and_agentless_work_apart(store):
    assert store.read(lambda tx: tx.queued_any()) is False
    add_task(store, "parked", parked=1)
    assert store.read(lambda tx: tx.queued_any()) is True
    assert store.read(lambda tx: tx.queued_any(unparked=True)) is False
    add_task(store, "plain")
    assert store.read(lambda tx: tx.queued_any(unparked=True)) is True
    assert store.read(lambda tx: tx.queued_any(unparked=True, needs_no_agent=True)) is False
    add_task(store, "fanout", route="all")
    assert store.read(lambda tx: tx.queued_any(unparked=True, needs_no_agent=True)) is True


def test_next_due_is_the_soonest_retry_or_ready_blocked_run_at(store):
    assert store.read(lambda tx: tx.next_due()) is None
    add_task(store, "retry", state="retrying", not_before=NOW + 30)
    add_task(store, "run-at", state="blocked", not_before=NOW + 10)
    add_task(store, "dep", state="queued")
    add_task(store, "waits", state="blocked", not_before=NOW + 1)  # earlier, but its dependency is unfinished
    store.write(lambda tx: tx.execute("INSERT INTO task_deps (task_id, dep_id) VALUES ('waits', 'dep')"))
    assert store.read(lambda tx: tx.next_due()) == NOW + 10


# ---------------------------------------------------------------- a dispatch pass


def test_requeue_due_retries_queues_only_the_due_ones_unassigned(store):
    add_task(store, "due", state="retrying", not_before=NOW, assigned_to="a", claim_token="tok", parked=1)
    add_task(store, "later", state="retrying", not_before=NOW + 1)
    assert store.write(lambda tx: tx.requeue_due_retries(NOW)) == ["due"]
    assert [column(store, "due", c) for c in ("state", "assigned_to", "claim_token", "parked", "updated_at")] == [
        "queued",
        None,
        None,
        0,
        NOW,
    ]
    assert column(store, "later", "state") == "retrying"


def test_queued_groups_and_unpark_work_by_capabilities_and_route(store):
    add_task(store, "x1", capabilities=["x"], parked=1)
    add_task(store, "x2", capabilities=["x"], parked=1)
    add_task(store, "x-to-b", capabilities=["x"], route="b", parked=1)
    add_task(store, "y", capabilities=["y", "z"], parked=1)
    add_task(store, "done", capabilities=["w"], state="completed")
    groups = store.read(lambda tx: tx.queued_groups())
    assert sorted((g.capabilities, g.route) for g in groups) == [(("x",), "any"), (("x",), "b"), (("y", "z"), "any")]
    x_any = next(g for g in groups if g.capabilities == ("x",) and g.route == "any")
    assert store.write(lambda tx: tx.unpark(x_any)) == 2
    assert [column(store, i, "parked") for i in ("x1", "x2", "x-to-b", "y")] == [0, 0, 1, 1]
    assert store.write(lambda tx: tx.unpark(QueueGroup(capabilities=("q",), route="any", key='["q"]'))) == 0


def test_queue_page_reads_unparked_queued_rows_in_priority_then_submission_order(store):
    add_task(store, "normal-1")
    add_task(store, "urgent", priority=0, capabilities=["gpu"])
    add_task(store, "normal-2", concurrency_key="k", max_concurrency=1)
    add_task(store, "parked", parked=1)
    add_task(store, "claimed", state="claimed")
    add_task(store, "approval", type="approval", priority=2)
    page = store.read(lambda tx: tx.queue_page(after=None, needs_no_agent=False, skip_keys=[], limit=10))
    assert [r.id for r in page] == ["urgent", "normal-1", "normal-2", "approval"]
    assert page[0].capabilities == ("gpu",) and page[0].route == "any" and page[0].priority == 0
    assert (page[2].concurrency_key, page[2].max_concurrency) == ("k", 1)
    after = (page[0].priority, page[0].seq)
    rest = store.read(lambda tx: tx.queue_page(after=after, needs_no_agent=False, skip_keys=[], limit=2))
    assert [r.id for r in rest] == ["normal-1", "normal-2"]
    agentless = store.read(lambda tx: tx.queue_page(after=None, needs_no_agent=True, skip_keys=[], limit=10))
    assert [r.id for r in agentless] == ["approval"]
    skipped = store.read(lambda tx: tx.queue_page(after=None, needs_no_agent=False, skip_keys=[("k", 1)], limit=10))
    assert [r.id for r in skipped] == ["urgent", "normal-1", "approval"]  # tasks without a key stay
    other_limit = store.read(lambda tx: tx.queue_page(after=None, needs_no_agent=False, skip_keys=[("k", 2)], limit=10))
    assert "normal-2" in [r.id for r in other_limit]  # a key is skipped with the limit it was found full at


def test_next_for_agent_matches_route_capabilities_and_rejections(store):
    add_task(store, "needs-gpu", capabilities=["gpu"], priority=0)
    add_task(store, "plain")
    add_task(store, "needs-both", capabilities=["gpu", "py"])
    add_task(store, "for-b", route="b")
    add_task(store, "for-a", route="a")
    add_task(store, "fanout", route="all")
    add_task(store, "approval", type="approval")
    add_task(store, "rejected")
    add_task(store, "soft-avoided")
    store.write(lambda tx: tx.avoid_add("rejected", "a", hard=True))
    store.write(lambda tx: tx.avoid_add("soft-avoided", "a", hard=False))
    mine = store.read(lambda tx: tx.next_for_agent("a", ("py",), limit=10))
    assert [r.id for r in mine] == ["plain", "for-a", "soft-avoided"]
    both = store.read(lambda tx: tx.next_for_agent("a", ("py", "gpu"), limit=10))
    assert [r.id for r in both] == ["needs-gpu", "plain", "needs-both", "for-a", "soft-avoided"]
    first = both[0]
    page = store.read(lambda tx: tx.next_for_agent("a", ("py", "gpu"), after=(first.priority, first.seq), limit=2))
    assert [r.id for r in page] == ["plain", "needs-both"]


def test_queued_take_returns_a_task_only_while_it_is_queued(store):
    add_task(store, "q", capabilities=["x"])
    add_task(store, "assigned", state="assigned", assigned_to="a")
    task = store.write(lambda tx: tx.queued_take("q"))
    assert isinstance(task, Task) and task.state is TaskState.QUEUED and task.capabilities == ("x",)
    assert store.write(lambda tx: tx.queued_take("assigned")) is None
    assert store.write(lambda tx: tx.queued_take("missing")) is None


def test_park_marks_only_a_queued_task(store):
    add_task(store, "q")
    add_task(store, "assigned", state="assigned", assigned_to="a")
    assert store.write(lambda tx: tx.park("q")) is True
    assert store.write(lambda tx: tx.park("assigned")) is False
    assert [column(store, i, "parked") for i in ("q", "assigned")] == [1, 0]
    assert store.read(lambda tx: tx.queue_page(after=None, needs_no_agent=False, skip_keys=[], limit=10)) == []


def test_avoid_add_keeps_one_mark_per_agent_and_never_softens_a_rejection(store):
    add_task(store, "t")
    assert store.read(lambda tx: tx.avoid_get("t")) == {}
    store.write(lambda tx: tx.avoid_add("t", "a", hard=False))
    store.write(lambda tx: tx.avoid_add("t", "a", hard=False))
    store.write(lambda tx: tx.avoid_add("t", "b", hard=True))
    store.write(lambda tx: tx.avoid_add("t", "b", hard=False))  # a lapse after a rejection: still hard
    assert store.read(lambda tx: tx.avoid_get("t")) == {"a": False, "b": True}
    store.write(lambda tx: tx.avoid_add("t", "a", hard=True))  # a rejection after a lapse: hard
    assert store.read(lambda tx: tx.avoid_get("t")) == {"a": True, "b": True}


def test_task_insert_child_copies_the_parents_spec_routed_to_one_agent(store):
    add_task(
        store,
        "parent",
        route="all",
        type="vote",
        payload='{"q": 1}',
        priority=0,
        capabilities=["judge"],
        max_retries=5,
        claim_ttl=30.0,
        concurrency_key="k",
        max_concurrency=2,
    )
    parent = store.read(lambda tx: Task.from_row(tx.execute("SELECT * FROM tasks WHERE id = 'parent'").fetchone()))
    kid = store.write(lambda tx: tx.task_insert_child(parent, kid_id="kid-1", route="a", now=NOW))
    assert isinstance(kid, Task)
    assert (kid.id, kid.parent_id, kid.route, kid.state) == ("kid-1", "parent", "a", TaskState.QUEUED)
    assert (kid.type, kid.payload, kid.priority, kid.capabilities) == ("vote", {"q": 1}, 0, ("judge",))
    assert (kid.max_retries, kid.claim_ttl, kid.concurrency_key, kid.max_concurrency) == (5, 30.0, "k", 2)
    assert (kid.submitted_by, kid.created_at, kid.updated_at, kid.attempts) == ("alice", NOW - 100, NOW, 0)


def test_loads_count_assigned_and_claimed_tasks_per_agent(store):
    add_task(store, "1", state="assigned", assigned_to="a")
    add_task(store, "2", state="claimed", assigned_to="a")
    add_task(store, "3", state="claimed", assigned_to="b")
    add_task(store, "4", state="completed", assigned_to="a")
    add_task(store, "5", state="retrying", assigned_to="b")
    assert store.read(lambda tx: tx.loads()) == {"a": 2, "b": 1}
    assert [store.read(lambda tx, n=n: tx.agent_load(n)) for n in ("a", "b", "nobody")] == [2, 1, 0]


def test_agent_lock_changes_nothing_and_the_load_reads_the_same_after_it(store):
    add_task(store, "1", state="assigned", assigned_to="a")

    def locked(tx: Any) -> int:
        # True where other writers may have moved the load since this transaction read it (PostgreSQL);
        # False where the transaction holds the whole database (SQLite)
        concurrent = tx.dialect == "postgres"
        assert tx.agent_lock("a", share=False) is concurrent
        assert tx.agent_lock("a", share=True) is concurrent  # taken again in one transaction: no deadlock
        return tx.agent_load("a")

    assert store.write(locked) == 1


def test_agent_mark_assigned_records_when(store):
    add_agent(store, "a")
    store.write(lambda tx: tx.agent_mark_assigned("a", NOW))
    at = store.read(lambda tx: tx.execute("SELECT last_assigned_at FROM agents WHERE name = 'a'").fetchone()[0])
    assert at == NOW


# ---------------------------------------------------------------- the watchdog's sweeps


def test_expired_leases_are_claimed_tasks_past_their_lease_soonest_first(store):
    add_task(store, "late", state="claimed", assigned_to="a", lease_expires_at=NOW - 1)
    add_task(store, "later", state="claimed", assigned_to="a", lease_expires_at=NOW)
    add_task(store, "earliest", state="claimed", assigned_to="a", lease_expires_at=NOW - 9)
    add_task(store, "live", state="claimed", assigned_to="a", lease_expires_at=NOW + 1)
    add_task(store, "assigned", state="assigned", assigned_to="a", lease_expires_at=NOW - 9)
    tasks = store.write(lambda tx: tx.expired_leases(NOW, 10))
    assert [t.id for t in tasks] == ["earliest", "late", "later"]
    assert all(isinstance(t, Task) and t.state is TaskState.CLAIMED for t in tasks)
    assert [t.id for t in store.write(lambda tx: tx.expired_leases(NOW, 2))] == ["earliest", "late"]


def test_unclaimed_are_assignments_past_their_claim_ttl_or_whose_webhook_died(store):
    add_task(store, "ttl-over", state="assigned", assigned_to="a", assigned_at=NOW - 60, claim_ttl=60.0)
    add_task(store, "ttl-left", state="assigned", assigned_to="a", assigned_at=NOW - 59, claim_ttl=60.0)
    add_task(store, "dead-hook", state="assigned", assigned_to="a", assigned_at=NOW - 5)
    add_webhook(store, "dead-hook", "a", state="dead", at=NOW - 4)
    add_task(store, "old-dead-hook", state="assigned", assigned_to="b", assigned_at=NOW - 5)
    add_webhook(store, "old-dead-hook", "b", state="dead", at=NOW - 6)  # an earlier assignment's webhook
    add_task(store, "other-agents-hook", state="assigned", assigned_to="b", assigned_at=NOW - 5)
    add_webhook(store, "other-agents-hook", "a", state="dead", at=NOW - 4)
    add_task(store, "delivered", state="assigned", assigned_to="a", assigned_at=NOW - 5)
    add_webhook(store, "delivered", "a", state="delivered", at=NOW - 4)
    add_task(store, "claimed", state="claimed", assigned_to="a", assigned_at=NOW - 600)
    tasks = store.write(lambda tx: tx.unclaimed(NOW, 10))
    assert [t.id for t in tasks] == ["ttl-over", "dead-hook"]
    assert [t.id for t in store.write(lambda tx: tx.unclaimed(NOW, 1))] == ["ttl-over"]


def test_undelivered_claims_are_push_claims_whose_webhook_with_that_token_died(store):
    add_task(store, "lost", state="claimed", assigned_to="a", assigned_at=NOW - 5, claim_token="tok-1")
    add_webhook(store, "lost", "a", state="dead", at=NOW - 5, token="tok-1")
    add_task(store, "reclaimed", state="claimed", assigned_to="a", assigned_at=NOW - 5, claim_token="tok-2")
    add_webhook(store, "reclaimed", "a", state="dead", at=NOW - 5, token="tok-old")  # a claim since then
    add_task(store, "pending", state="claimed", assigned_to="a", assigned_at=NOW - 5, claim_token="tok-3")
    add_webhook(store, "pending", "a", state="pending", at=NOW - 5, token="tok-3")
    add_task(store, "queued-again", state="queued")
    add_webhook(store, "queued-again", "a", state="dead", at=NOW - 5, token=None)
    tasks = store.write(lambda tx: tx.undelivered_claims(10))
    assert [(t.id, t.claim_token) for t in tasks] == [("lost", "tok-1")]
    assert store.write(lambda tx: tx.undelivered_claims(0)) == []
