"""The TaskTx contract (mcs.engines.areas.tasks), one test per method, on both engines.

Each test states what the state layer relies on from the method; the PostgreSQL engine must pass the same.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcs.engines.areas.tasks import TaskFilter
from mcs.models import IdemRecord, Priority, TaskSpec, TaskState


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


def add(engine: Any, task_id: str, *, state: TaskState = TaskState.QUEUED, now: float = 1.0, **kw: Any) -> None:
    submitted_by = kw.pop("submitted_by", "alice")
    workflow_id = kw.pop("workflow_id", None)
    engine.write(
        lambda tx: tx.task_insert(
            task_id=task_id, spec=spec(**kw), state=state, submitted_by=submitted_by, now=now, workflow_id=workflow_id
        )
    )


def sql(engine: Any, query: str, params: tuple[Any, ...] = ()) -> None:
    engine.write(lambda tx: tx.execute(query, params))


def test_task_get_returns_the_task_or_none(engine: Any) -> None:
    add(engine, "a")
    got = engine.read(lambda tx: tx.task_get("a"))
    assert got is not None and got.id == "a" and got.state is TaskState.QUEUED and got.payload == {"n": 1}
    assert engine.read(lambda tx: tx.task_get("missing")) is None


def test_task_lock_returns_the_task_or_none(engine: Any) -> None:
    add(engine, "a")
    assert engine.write(lambda tx: tx.task_lock("a")).id == "a"
    assert engine.write(lambda tx: tx.task_lock("missing")) is None


def test_task_take_returns_the_task_only_in_the_state_asked(engine: Any) -> None:
    add(engine, "a")
    assert engine.write(lambda tx: tx.task_take("a", TaskState.QUEUED)).id == "a"
    assert engine.write(lambda tx: tx.task_take("a", TaskState.ASSIGNED)) is None


def test_task_insert_stores_every_field_of_the_spec(engine: Any) -> None:
    add(engine, "a", state=TaskState.BLOCKED, now=5.0, concurrency_key="k", max_concurrency=2, not_before=9.0)
    t = engine.read(lambda tx: tx.task_get("a"))
    assert (t.state, t.created_at, t.updated_at, t.concurrency_key, t.max_concurrency, t.not_before) == (
        TaskState.BLOCKED,
        5.0,
        5.0,
        "k",
        2,
        9.0,
    )
    assert (t.capabilities, t.route, t.max_retries, t.claim_ttl, t.submitted_by) == (("t",), "any", 2, 60.0, "alice")


def test_task_update_is_guarded_by_the_expected_state_and_encodes_json(engine: Any) -> None:
    add(engine, "a")
    changed = engine.write(
        lambda tx: tx.task_update("a", TaskState.QUEUED, {"state": TaskState.COMPLETED, "result": {"x": [1]}}, 7.0)
    )
    assert changed
    t = engine.read(lambda tx: tx.task_get("a"))
    assert (t.state, t.result, t.updated_at) == (TaskState.COMPLETED, {"x": [1]}, 7.0)
    # The state moved on: a second update from the old state changes nothing.
    assert not engine.write(lambda tx: tx.task_update("a", TaskState.QUEUED, {"state": TaskState.FAILED}, 8.0))
    assert engine.read(lambda tx: tx.task_get("a")).state is TaskState.COMPLETED
    with pytest.raises(ValueError):
        engine.write(lambda tx: tx.task_update("a", TaskState.COMPLETED, {"id; DROP TABLE tasks": 1}, 9.0))


def test_task_children_and_children_of_and_unfinished_children(engine: Any) -> None:
    add(engine, "p")
    for kid, agent, state in (("k2", "b", TaskState.COMPLETED), ("k1", "a", TaskState.QUEUED)):
        add(engine, kid, state=state)
        sql(engine, "UPDATE tasks SET parent_id = 'p', assigned_to = ? WHERE id = ?", (agent, kid))
    assert engine.read(lambda tx: tx.task_children("p")) == ["k2", "k1"]  # oldest first
    assert [t.id for t in engine.read(lambda tx: tx.children_of("p"))] == ["k1", "k2"]  # by agent
    assert [t.id for t in engine.read(lambda tx: tx.unfinished_children("p"))] == ["k1"]
    assert engine.read(lambda tx: tx.task_children("k1")) == []


def test_task_event_add_and_task_events_keep_order_and_detail(engine: Any) -> None:
    add(engine, "a")
    engine.write(lambda tx: tx.task_event_add("a", "submitted", "alice", 1.0, {"route": "any"}))
    engine.write(lambda tx: tx.task_event_add("a", "canceled", "bob", 2.0))
    events = engine.read(lambda tx: tx.task_events("a"))
    assert [(e.kind, e.actor, e.at, e.detail) for e in events] == [
        ("submitted", "alice", 1.0, {"route": "any"}),
        ("canceled", "bob", 2.0, None),
    ]


def test_last_claim_detail_is_the_latest_claimed_event(engine: Any) -> None:
    add(engine, "a")
    assert engine.read(lambda tx: tx.last_claim_detail("a")) is None
    engine.write(lambda tx: tx.task_event_add("a", "claimed", "x", 1.0, {"attempt": 1}))
    engine.write(lambda tx: tx.task_event_add("a", "claimed", "x", 2.0, {"attempt": 2, "after": "z"}))
    engine.write(lambda tx: tx.task_event_add("a", "progress", "x", 3.0, {"percent": 5}))
    assert engine.read(lambda tx: tx.last_claim_detail("a")) == {"attempt": 2, "after": "z"}


def test_deps_add_keeps_a_dependency_once_and_deps_of_lists_them_oldest_first(engine: Any) -> None:
    add(engine, "d1")
    add(engine, "d2")
    add(engine, "c", state=TaskState.BLOCKED)
    engine.write(lambda tx: tx.deps_add("c", ("d2", "d1", "d2")))
    assert [t.id for t in engine.read(lambda tx: tx.deps_of("c"))] == ["d1", "d2"]
    engine.write(lambda tx: tx.deps_add("c", ()))  # nothing to add: no error


def test_dependents_blocked_lists_only_blocked_dependents(engine: Any) -> None:
    add(engine, "d")
    add(engine, "c1", state=TaskState.BLOCKED)
    add(engine, "c2", state=TaskState.QUEUED)
    for c in ("c1", "c2"):
        engine.write(lambda tx, c=c: tx.deps_add(c, ("d",)))
    assert engine.read(lambda tx: tx.dependents_blocked("d")) == ["c1"]


def test_dependents_canceled_matches_the_error_it_was_canceled_with(engine: Any) -> None:
    add(engine, "d")
    add(engine, "c1", state=TaskState.CANCELED)
    add(engine, "c2", state=TaskState.CANCELED)
    for c, error in (("c1", "upstream d failed"), ("c2", "by hand")):
        engine.write(lambda tx, c=c: tx.deps_add(c, ("d",)))
        sql(engine, "UPDATE tasks SET error = ? WHERE id = ?", (json.dumps(error), c))
    assert [t.id for t in engine.read(lambda tx: tx.dependents_canceled("d", "upstream d failed"))] == ["c1"]


def test_task_release_due_queues_due_blocked_tasks_whose_dependencies_ended(engine: Any) -> None:
    add(engine, "done", state=TaskState.COMPLETED)
    add(engine, "open")
    add(engine, "due", state=TaskState.BLOCKED, not_before=5.0)
    add(engine, "later", state=TaskState.BLOCKED, not_before=50.0)
    add(engine, "waits", state=TaskState.BLOCKED, not_before=5.0)
    engine.write(lambda tx: tx.deps_add("due", ("done",)))
    engine.write(lambda tx: tx.deps_add("waits", ("open",)))
    assert engine.write(lambda tx: tx.task_release_due(10.0)) == ["due"]
    due = engine.read(lambda tx: tx.task_get("due"))
    assert (due.state, due.updated_at) == (TaskState.QUEUED, 10.0)
    assert engine.read(lambda tx: tx.task_get("waits")).state is TaskState.BLOCKED


def test_unfinished_submitted_counts_own_unfinished_top_level_tasks(engine: Any) -> None:
    add(engine, "a")
    add(engine, "b", state=TaskState.COMPLETED)
    add(engine, "c", submitted_by="bob")
    add(engine, "kid")
    sql(engine, "UPDATE tasks SET parent_id = 'a' WHERE id = 'kid'")
    assert engine.read(lambda tx: tx.unfinished_submitted("alice")) == 1


def test_idem_put_replaces_and_idem_get_ignores_expired_records(engine: Any) -> None:
    rec = IdemRecord(caller="alice", key="k", body_hash="h1", response='{"id": "a"}', expires_at=100.0)
    engine.write(lambda tx: tx.idem_put(rec))
    got = engine.read(lambda tx: tx.idem_get("alice", "k", 50.0))
    assert got == rec
    assert engine.read(lambda tx: tx.idem_get("alice", "k", 100.0)) is None  # expired
    assert engine.read(lambda tx: tx.idem_get("bob", "k", 50.0)) is None
    engine.write(
        lambda tx: tx.idem_put(IdemRecord(caller="alice", key="k", body_hash="h2", response="{}", expires_at=200.0))
    )
    assert engine.read(lambda tx: tx.idem_get("alice", "k", 150.0)).body_hash == "h2"


def test_avoid_add_hard_overrides_soft_and_soft_never_weakens_hard(engine: Any) -> None:
    add(engine, "a")
    engine.write(lambda tx: tx.avoid_add("a", "x", hard=False))
    assert not engine.read(lambda tx: tx.avoid_is_hard("a", "x"))
    engine.write(lambda tx: tx.avoid_add("a", "x", hard=True))
    assert engine.read(lambda tx: tx.avoid_is_hard("a", "x"))
    engine.write(lambda tx: tx.avoid_add("a", "x", hard=False))
    assert engine.read(lambda tx: tx.avoid_is_hard("a", "x"))


def test_avoid_is_hard_is_per_task_and_agent(engine: Any) -> None:
    add(engine, "a")
    engine.write(lambda tx: tx.avoid_add("a", "x", hard=True))
    assert not engine.read(lambda tx: tx.avoid_is_hard("a", "y"))
    assert not engine.read(lambda tx: tx.avoid_is_hard("b", "x"))


def test_avoid_clear_forgets_every_agent(engine: Any) -> None:
    add(engine, "a")
    engine.write(lambda tx: tx.avoid_add("a", "x", hard=True))
    engine.write(lambda tx: tx.avoid_clear("a"))
    assert not engine.read(lambda tx: tx.avoid_is_hard("a", "x"))


def test_key_running_counts_assigned_and_claimed_only(engine: Any) -> None:
    for tid, state in (("a", TaskState.ASSIGNED), ("b", TaskState.CLAIMED), ("c", TaskState.QUEUED)):
        add(engine, tid, state=state, concurrency_key="k", max_concurrency=1)
    add(engine, "d", state=TaskState.CLAIMED, concurrency_key="other", max_concurrency=1)
    assert engine.read(lambda tx: tx.key_running("k")) == 2


def test_assigned_next_is_the_most_urgent_then_oldest_assigned_to_the_agent(engine: Any) -> None:
    add(engine, "low", state=TaskState.ASSIGNED, priority=Priority.parse("low"))
    add(engine, "high", state=TaskState.ASSIGNED, priority=Priority.parse("normal"))
    add(engine, "other", state=TaskState.ASSIGNED, priority=Priority.parse("urgent"))
    sql(engine, "UPDATE tasks SET assigned_to = 'x' WHERE id IN ('low', 'high')")
    sql(engine, "UPDATE tasks SET assigned_to = 'y' WHERE id = 'other'")
    assert engine.read(lambda tx: tx.assigned_next("x")).id == "high"
    assert engine.read(lambda tx: tx.assigned_next("z")) is None


def test_claimable_matches_route_capabilities_and_rejections_in_queue_order(engine: Any) -> None:
    add(engine, "ok1", capabilities=("a",))
    add(engine, "needs_b", capabilities=("a", "b"))
    add(engine, "named", capabilities=("a",), route="x")
    add(engine, "elsewhere", capabilities=("a",), route="y")
    add(engine, "fanout", capabilities=("a",), route="all")
    add(engine, "gate", type="approval", capabilities=())
    add(engine, "rejected", capabilities=("a",))
    add(engine, "urgent", capabilities=(), priority=Priority.parse("urgent"))
    add(engine, "taken", state=TaskState.CLAIMED, capabilities=("a",))
    engine.write(lambda tx: tx.avoid_add("rejected", "x", hard=True))
    rows = engine.read(lambda tx: list(tx.claimable("x", ("a", "c"))))
    assert [r.id for r in rows] == ["urgent", "ok1", "named"]
    assert rows[1].capabilities == ("a",) and rows[1].concurrency_key is None
    with_b = engine.read(lambda tx: [r.id for r in tx.claimable("x", ("a", "b"))])
    assert "needs_b" in with_b


def test_task_held_needs_claimed_agent_and_token(engine: Any) -> None:
    add(engine, "a", state=TaskState.CLAIMED)
    sql(engine, "UPDATE tasks SET assigned_to = 'x', claim_token = 'tok' WHERE id = 'a'")
    assert engine.read(lambda tx: tx.task_held("a", "x", "tok"))
    assert not engine.read(lambda tx: tx.task_held("a", "y", "tok"))
    assert not engine.read(lambda tx: tx.task_held("a", "x", "old"))
    sql(engine, "UPDATE tasks SET state = 'completed' WHERE id = 'a'")
    assert not engine.read(lambda tx: tx.task_held("a", "x", "tok"))


def test_claimed_by_lists_the_agents_claimed_tasks(engine: Any) -> None:
    add(engine, "a", state=TaskState.CLAIMED)
    add(engine, "b", state=TaskState.ASSIGNED)
    sql(engine, "UPDATE tasks SET assigned_to = 'x'")
    assert [t.id for t in engine.read(lambda tx: tx.claimed_by("x"))] == ["a"]


def test_tasks_routed_to_lists_unfinished_tasks_routed_by_name(engine: Any) -> None:
    add(engine, "a", route="x")
    add(engine, "b", route="x", state=TaskState.FAILED)
    add(engine, "c", route="any")
    assert [t.id for t in engine.read(lambda tx: tx.tasks_routed_to("x"))] == ["a"]


def test_tasks_page_filters_newest_first_and_pages_by_seq(engine: Any) -> None:
    add(engine, "a1", payload={"text": "Hello World"})
    add(engine, "a2", state=TaskState.COMPLETED, now=10.0)
    add(engine, "b1", type="other")
    page = engine.read(lambda tx: tx.tasks_page(TaskFilter(), before_seq=None, limit=2))
    assert [t.id for t in page] == ["b1", "a2"]
    rest = engine.read(lambda tx: tx.tasks_page(TaskFilter(), before_seq=page[-1].seq, limit=2))
    assert [t.id for t in rest] == ["a1"]
    assert [t.id for t in engine.read(lambda tx: tx.tasks_page(TaskFilter(type="t"), before_seq=None, limit=9))] == [
        "a2",
        "a1",
    ]
    assert [
        t.id for t in engine.read(lambda tx: tx.tasks_page(TaskFilter(id_prefix="a"), before_seq=None, limit=9))
    ] == [
        "a2",
        "a1",
    ]
    ended = TaskFilter(state="completed", updated_after=5.0)
    assert [t.id for t in engine.read(lambda tx: tx.tasks_page(ended, before_seq=None, limit=9))] == ["a2"]
    # q: case-insensitive (ASCII), and % and _ are plain characters
    assert [t.id for t in engine.read(lambda tx: tx.tasks_page(TaskFilter(q="hello w"), before_seq=None, limit=9))] == [
        "a1"
    ]
    assert engine.read(lambda tx: tx.tasks_page(TaskFilter(q="hello_w"), before_seq=None, limit=9)) == []
    assert engine.read(lambda tx: tx.tasks_page(TaskFilter(q="%"), before_seq=None, limit=9)) == []


def test_task_workflow_name_and_inputs(engine: Any) -> None:
    sql(
        engine,
        "INSERT INTO workflows (id, name, state, inputs, submitted_by, created_at, updated_at)"
        " VALUES ('w', 'nightly', 'running', ?, 'alice', 1, 1)",
        (json.dumps({"day": 3}),),
    )
    assert engine.read(lambda tx: tx.task_workflow_name("w")) == "nightly"
    assert engine.read(lambda tx: tx.task_workflow_name("gone")) is None
    assert engine.read(lambda tx: tx.task_workflow_inputs("w")) == (True, {"day": 3})
    assert engine.read(lambda tx: tx.task_workflow_inputs("gone")) == (False, None)


def test_savepoint_rollback_undoes_only_what_came_after_it(engine: Any) -> None:
    def job(tx: Any) -> None:
        tx.task_insert(task_id="kept", spec=spec(), state=TaskState.QUEUED, submitted_by="a", now=1.0)
        tx.savepoint("item")
        tx.task_insert(task_id="undone", spec=spec(), state=TaskState.QUEUED, submitted_by="a", now=1.0)
        tx.savepoint_rollback("item")
        tx.savepoint("item")
        tx.task_insert(task_id="released", spec=spec(), state=TaskState.QUEUED, submitted_by="a", now=1.0)
        tx.savepoint_release("item")

    engine.write(job)
    assert [engine.read(lambda tx, i=i: tx.task_get(i)) is not None for i in ("kept", "undone", "released")] == [
        True,
        False,
        True,
    ]
    with pytest.raises(ValueError):
        engine.write(lambda tx: tx.savepoint("x; DROP TABLE tasks"))
