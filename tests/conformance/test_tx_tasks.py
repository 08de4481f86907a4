"""The TaskTx contract (mcs.engines.areas.tasks), one test per method, on a real SQLite file through `Store`.

Each test states what the state layer relies on from the method; the PostgreSQL engine must pass the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcs.engines.areas.tasks import TaskFilter
from mcs.models import IdemRecord, Priority, TaskSpec, TaskState
from mcs.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "mcs.db")
    s.migrate()
    yield s
    s.close()


def spec(type: str = "t", **kw: Any) -> TaskSpec:
    base: dict[str, Any] = dict(
        type=type,
        payload={"n": 1},
        priority=Priority.parse("normal"),
        capabilities=(type,),
        route="any",
        max_retries=2,
        claim_ttl=60.0,
        aggregate=None,
    )
    return TaskSpec(**(base | kw))


def add(store: Store, task_id: str, *, state: TaskState = TaskState.QUEUED, now: float = 1.0, **kw: Any) -> None:
    submitted_by = kw.pop("submitted_by", "alice")
    workflow_id = kw.pop("workflow_id", None)
    store.write(
        lambda tx: tx.task_insert(
            task_id=task_id, spec=spec(**kw), state=state, submitted_by=submitted_by, now=now, workflow_id=workflow_id
        )
    )


def sql(store: Store, query: str, params: tuple[Any, ...] = ()) -> None:
    store.write(lambda tx: tx.execute(query, params))


def test_task_get_returns_the_task_or_none(store: Store) -> None:
    add(store, "a")
    got = store.read(lambda tx: tx.task_get("a"))
    assert got is not None and got.id == "a" and got.state is TaskState.QUEUED and got.payload == {"n": 1}
    assert store.read(lambda tx: tx.task_get("missing")) is None


def test_task_lock_returns_the_task_or_none(store: Store) -> None:
    add(store, "a")
    assert store.write(lambda tx: tx.task_lock("a")).id == "a"
    assert store.write(lambda tx: tx.task_lock("missing")) is None


def test_task_take_returns_the_task_only_in_the_state_asked(store: Store) -> None:
    add(store, "a")
    assert store.write(lambda tx: tx.task_take("a", TaskState.QUEUED)).id == "a"
    assert store.write(lambda tx: tx.task_take("a", TaskState.ASSIGNED)) is None


def test_task_insert_stores_every_field_of_the_spec(store: Store) -> None:
    add(store, "a", state=TaskState.BLOCKED, now=5.0, concurrency_key="k", max_concurrency=2, not_before=9.0)
    t = store.read(lambda tx: tx.task_get("a"))
    assert (t.state, t.created_at, t.updated_at, t.concurrency_key, t.max_concurrency, t.not_before) == (
        TaskState.BLOCKED,
        5.0,
        5.0,
        "k",
        2,
        9.0,
    )
    assert (t.capabilities, t.route, t.max_retries, t.claim_ttl, t.submitted_by) == (("t",), "any", 2, 60.0, "alice")


def test_task_update_is_guarded_by_the_expected_state_and_encodes_json(store: Store) -> None:
    add(store, "a")
    changed = store.write(
        lambda tx: tx.task_update("a", TaskState.QUEUED, {"state": TaskState.COMPLETED, "result": {"x": [1]}}, 7.0)
    )
    assert changed
    t = store.read(lambda tx: tx.task_get("a"))
    assert (t.state, t.result, t.updated_at) == (TaskState.COMPLETED, {"x": [1]}, 7.0)
    # The state moved on: a second update from the old state changes nothing.
    assert not store.write(lambda tx: tx.task_update("a", TaskState.QUEUED, {"state": TaskState.FAILED}, 8.0))
    assert store.read(lambda tx: tx.task_get("a")).state is TaskState.COMPLETED
    with pytest.raises(ValueError):
        store.write(lambda tx: tx.task_update("a", TaskState.COMPLETED, {"id; DROP TABLE tasks": 1}, 9.0))


def test_task_children_and_children_of_and_unfinished_children(store: Store) -> None:
    add(store, "p")
    for kid, agent, state in (("k2", "b", TaskState.COMPLETED), ("k1", "a", TaskState.QUEUED)):
        add(store, kid, state=state)
        sql(store, "UPDATE tasks SET parent_id = 'p', assigned_to = ? WHERE id = ?", (agent, kid))
    assert store.read(lambda tx: tx.task_children("p")) == ["k2", "k1"]  # oldest first
    assert [t.id for t in store.read(lambda tx: tx.children_of("p"))] == ["k1", "k2"]  # by agent
    assert [t.id for t in store.read(lambda tx: tx.unfinished_children("p"))] == ["k1"]
    assert store.read(lambda tx: tx.task_children("k1")) == []


def test_task_event_add_and_task_events_keep_order_and_detail(store: Store) -> None:
    add(store, "a")
    store.write(lambda tx: tx.task_event_add("a", "submitted", "alice", 1.0, {"route": "any"}))
    store.write(lambda tx: tx.task_event_add("a", "canceled", "bob", 2.0))
    events = store.read(lambda tx: tx.task_events("a"))
    assert [(e.kind, e.actor, e.at, e.detail) for e in events] == [
        ("submitted", "alice", 1.0, {"route": "any"}),
        ("canceled", "bob", 2.0, None),
    ]


def test_last_claim_detail_is_the_latest_claimed_event(store: Store) -> None:
    add(store, "a")
    assert store.read(lambda tx: tx.last_claim_detail("a")) is None
    store.write(lambda tx: tx.task_event_add("a", "claimed", "x", 1.0, {"attempt": 1}))
    store.write(lambda tx: tx.task_event_add("a", "claimed", "x", 2.0, {"attempt": 2, "after": "z"}))
    store.write(lambda tx: tx.task_event_add("a", "progress", "x", 3.0, {"percent": 5}))
    assert store.read(lambda tx: tx.last_claim_detail("a")) == {"attempt": 2, "after": "z"}


def test_deps_add_keeps_a_dependency_once_and_deps_of_lists_them_oldest_first(store: Store) -> None:
    add(store, "d1")
    add(store, "d2")
    add(store, "c", state=TaskState.BLOCKED)
    store.write(lambda tx: tx.deps_add("c", ("d2", "d1", "d2")))
    assert [t.id for t in store.read(lambda tx: tx.deps_of("c"))] == ["d1", "d2"]
    store.write(lambda tx: tx.deps_add("c", ()))  # nothing to add: no error


def test_dependents_blocked_lists_only_blocked_dependents(store: Store) -> None:
    add(store, "d")
    add(store, "c1", state=TaskState.BLOCKED)
    add(store, "c2", state=TaskState.QUEUED)
    for c in ("c1", "c2"):
        store.write(lambda tx, c=c: tx.deps_add(c, ("d",)))
    assert store.read(lambda tx: tx.dependents_blocked("d")) == ["c1"]


def test_dependents_canceled_matches_the_error_it_was_canceled_with(store: Store) -> None:
    add(store, "d")
    add(store, "c1", state=TaskState.CANCELED)
    add(store, "c2", state=TaskState.CANCELED)
    for c, error in (("c1", "upstream d failed"), ("c2", "by hand")):
        store.write(lambda tx, c=c: tx.deps_add(c, ("d",)))
        sql(store, "UPDATE tasks SET error = ? WHERE id = ?", (json.dumps(error), c))
    assert [t.id for t in store.read(lambda tx: tx.dependents_canceled("d", "upstream d failed"))] == ["c1"]


def test_task_release_due_queues_due_blocked_tasks_whose_dependencies_ended(store: Store) -> None:
    add(store, "done", state=TaskState.COMPLETED)
    add(store, "open")
    add(store, "due", state=TaskState.BLOCKED, not_before=5.0)
    add(store, "later", state=TaskState.BLOCKED, not_before=50.0)
    add(store, "waits", state=TaskState.BLOCKED, not_before=5.0)
    store.write(lambda tx: tx.deps_add("due", ("done",)))
    store.write(lambda tx: tx.deps_add("waits", ("open",)))
    assert store.write(lambda tx: tx.task_release_due(10.0)) == ["due"]
    due = store.read(lambda tx: tx.task_get("due"))
    assert (due.state, due.updated_at) == (TaskState.QUEUED, 10.0)
    assert store.read(lambda tx: tx.task_get("waits")).state is TaskState.BLOCKED


def test_unfinished_submitted_counts_own_unfinished_top_level_tasks(store: Store) -> None:
    add(store, "a")
    add(store, "b", state=TaskState.COMPLETED)
    add(store, "c", submitted_by="bob")
    add(store, "kid")
    sql(store, "UPDATE tasks SET parent_id = 'a' WHERE id = 'kid'")
    assert store.read(lambda tx: tx.unfinished_submitted("alice")) == 1


def test_idem_put_replaces_and_idem_get_ignores_expired_records(store: Store) -> None:
    rec = IdemRecord(caller="alice", key="k", body_hash="h1", response='{"id": "a"}', expires_at=100.0)
    store.write(lambda tx: tx.idem_put(rec))
    got = store.read(lambda tx: tx.idem_get("alice", "k", 50.0))
    assert got == rec
    assert store.read(lambda tx: tx.idem_get("alice", "k", 100.0)) is None  # expired
    assert store.read(lambda tx: tx.idem_get("bob", "k", 50.0)) is None
    store.write(
        lambda tx: tx.idem_put(IdemRecord(caller="alice", key="k", body_hash="h2", response="{}", expires_at=200.0))
    )
    assert store.read(lambda tx: tx.idem_get("alice", "k", 150.0)).body_hash == "h2"


def test_avoid_add_hard_overrides_soft_and_soft_never_weakens_hard(store: Store) -> None:
    add(store, "a")
    store.write(lambda tx: tx.avoid_add("a", "x", hard=False))
    assert not store.read(lambda tx: tx.avoid_is_hard("a", "x"))
    store.write(lambda tx: tx.avoid_add("a", "x", hard=True))
    assert store.read(lambda tx: tx.avoid_is_hard("a", "x"))
    store.write(lambda tx: tx.avoid_add("a", "x", hard=False))
    assert store.read(lambda tx: tx.avoid_is_hard("a", "x"))


def test_avoid_is_hard_is_per_task_and_agent(store: Store) -> None:
    add(store, "a")
    store.write(lambda tx: tx.avoid_add("a", "x", hard=True))
    assert not store.read(lambda tx: tx.avoid_is_hard("a", "y"))
    assert not store.read(lambda tx: tx.avoid_is_hard("b", "x"))


def test_avoid_clear_forgets_every_agent(store: Store) -> None:
    add(store, "a")
    store.write(lambda tx: tx.avoid_add("a", "x", hard=True))
    store.write(lambda tx: tx.avoid_clear("a"))
    assert not store.read(lambda tx: tx.avoid_is_hard("a", "x"))


def test_key_running_counts_assigned_and_claimed_only(store: Store) -> None:
    for tid, state in (("a", TaskState.ASSIGNED), ("b", TaskState.CLAIMED), ("c", TaskState.QUEUED)):
        add(store, tid, state=state, concurrency_key="k", max_concurrency=1)
    add(store, "d", state=TaskState.CLAIMED, concurrency_key="other", max_concurrency=1)
    assert store.read(lambda tx: tx.key_running("k")) == 2


def test_assigned_next_is_the_most_urgent_then_oldest_assigned_to_the_agent(store: Store) -> None:
    add(store, "low", state=TaskState.ASSIGNED, priority=Priority.parse("low"))
    add(store, "high", state=TaskState.ASSIGNED, priority=Priority.parse("normal"))
    add(store, "other", state=TaskState.ASSIGNED, priority=Priority.parse("urgent"))
    sql(store, "UPDATE tasks SET assigned_to = 'x' WHERE id IN ('low', 'high')")
    sql(store, "UPDATE tasks SET assigned_to = 'y' WHERE id = 'other'")
    assert store.read(lambda tx: tx.assigned_next("x")).id == "high"
    assert store.read(lambda tx: tx.assigned_next("z")) is None


def test_claimable_matches_route_capabilities_and_rejections_in_queue_order(store: Store) -> None:
    add(store, "ok1", capabilities=("a",))
    add(store, "needs_b", capabilities=("a", "b"))
    add(store, "named", capabilities=("a",), route="x")
    add(store, "elsewhere", capabilities=("a",), route="y")
    add(store, "fanout", capabilities=("a",), route="all")
    add(store, "gate", type="approval", capabilities=())
    add(store, "rejected", capabilities=("a",))
    add(store, "urgent", capabilities=(), priority=Priority.parse("urgent"))
    add(store, "taken", state=TaskState.CLAIMED, capabilities=("a",))
    store.write(lambda tx: tx.avoid_add("rejected", "x", hard=True))
    rows = store.read(lambda tx: list(tx.claimable("x", ("a", "c"))))
    assert [r.id for r in rows] == ["urgent", "ok1", "named"]
    assert rows[1].capabilities == ("a",) and rows[1].concurrency_key is None
    with_b = store.read(lambda tx: [r.id for r in tx.claimable("x", ("a", "b"))])
    assert "needs_b" in with_b


def test_task_held_needs_claimed_agent_and_token(store: Store) -> None:
    add(store, "a", state=TaskState.CLAIMED)
    sql(store, "UPDATE tasks SET assigned_to = 'x', claim_token = 'tok' WHERE id = 'a'")
    assert store.read(lambda tx: tx.task_held("a", "x", "tok"))
    assert not store.read(lambda tx: tx.task_held("a", "y", "tok"))
    assert not store.read(lambda tx: tx.task_held("a", "x", "old"))
    sql(store, "UPDATE tasks SET state = 'completed' WHERE id = 'a'")
    assert not store.read(lambda tx: tx.task_held("a", "x", "tok"))


def test_claimed_by_lists_the_agents_claimed_tasks(store: Store) -> None:
    add(store, "a", state=TaskState.CLAIMED)
    add(store, "b", state=TaskState.ASSIGNED)
    sql(store, "UPDATE tasks SET assigned_to = 'x'")
    assert [t.id for t in store.read(lambda tx: tx.claimed_by("x"))] == ["a"]


def test_tasks_routed_to_lists_unfinished_tasks_routed_by_name(store: Store) -> None:
    add(store, "a", route="x")
    add(store, "b", route="x", state=TaskState.FAILED)
    add(store, "c", route="any")
    assert [t.id for t in store.read(lambda tx: tx.tasks_routed_to("x"))] == ["a"]


def test_tasks_page_filters_newest_first_and_pages_by_seq(store: Store) -> None:
    add(store, "a1", payload={"text": "Hello World"})
    add(store, "a2", state=TaskState.COMPLETED, now=10.0)
    add(store, "b1", type="other")
    page = store.read(lambda tx: tx.tasks_page(TaskFilter(), before_seq=None, limit=2))
    assert [t.id for t in page] == ["b1", "a2"]
    rest = store.read(lambda tx: tx.tasks_page(TaskFilter(), before_seq=page[-1].seq, limit=2))
    assert [t.id for t in rest] == ["a1"]
    assert [t.id for t in store.read(lambda tx: tx.tasks_page(TaskFilter(type="t"), before_seq=None, limit=9))] == [
        "a2",
        "a1",
    ]
    assert [
        t.id for t in store.read(lambda tx: tx.tasks_page(TaskFilter(id_prefix="a"), before_seq=None, limit=9))
    ] == [
        "a2",
        "a1",
    ]
    ended = TaskFilter(state="completed", updated_after=5.0)
    assert [t.id for t in store.read(lambda tx: tx.tasks_page(ended, before_seq=None, limit=9))] == ["a2"]
    # q: case-insensitive (ASCII), and % and _ are plain characters
    assert [t.id for t in store.read(lambda tx: tx.tasks_page(TaskFilter(q="hello w"), before_seq=None, limit=9))] == [
        "a1"
    ]
    assert store.read(lambda tx: tx.tasks_page(TaskFilter(q="hello_w"), before_seq=None, limit=9)) == []
    assert store.read(lambda tx: tx.tasks_page(TaskFilter(q="%"), before_seq=None, limit=9)) == []


def test_task_workflow_name_and_inputs(store: Store) -> None:
    sql(
        store,
        "INSERT INTO workflows (id, name, state, inputs, submitted_by, created_at, updated_at)"
        " VALUES ('w', 'nightly', 'running', ?, 'alice', 1, 1)",
        (json.dumps({"day": 3}),),
    )
    assert store.read(lambda tx: tx.task_workflow_name("w")) == "nightly"
    assert store.read(lambda tx: tx.task_workflow_name("gone")) is None
    assert store.read(lambda tx: tx.task_workflow_inputs("w")) == (True, {"day": 3})
    assert store.read(lambda tx: tx.task_workflow_inputs("gone")) == (False, None)


def test_savepoint_rollback_undoes_only_what_came_after_it(store: Store) -> None:
    def job(tx: Any) -> None:
        tx.task_insert(task_id="kept", spec=spec(), state=TaskState.QUEUED, submitted_by="a", now=1.0)
        tx.savepoint("item")
        tx.task_insert(task_id="undone", spec=spec(), state=TaskState.QUEUED, submitted_by="a", now=1.0)
        tx.savepoint_rollback("item")
        tx.savepoint("item")
        tx.task_insert(task_id="released", spec=spec(), state=TaskState.QUEUED, submitted_by="a", now=1.0)
        tx.savepoint_release("item")

    store.write(job)
    assert [store.read(lambda tx, i=i: tx.task_get(i)) is not None for i in ("kept", "undone", "released")] == [
        True,
        False,
        True,
    ]
    with pytest.raises(ValueError):
        store.write(lambda tx: tx.savepoint("x; DROP TABLE tasks"))
