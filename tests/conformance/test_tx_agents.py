"""The AgentTx contract (mcs.engines.areas.agents) on both engines: each method's
answer, and what the agents state (mcs.state.agents) builds on it."""

from __future__ import annotations

from typing import Any

import pytest

from mcs.engines.base import Duplicate
from mcs.errors import Conflict
from mcs.models import Agent, AgentStatus, NewAgent, RoutableAgent
from mcs.state import agents as agents_state


def new(name: str, *, caps: tuple[str, ...] = (), granted: tuple[str, ...] | None = None, **kw: Any) -> NewAgent:
    return NewAgent(
        name=name, secret_hash=f"hash-{name}", webhook_secret=f"whsec-{name}", capabilities=caps, granted=granted,
        created_at=1.0, **kw,
    )  # fmt: skip


def add(engine: Any, *names: str) -> None:
    for name in names:
        engine.write(lambda tx, n=name: tx.agent_insert(new(n)))


def register(engine: Any, name: str, *, now: float, ttl: float = 10.0, caps: tuple[str, ...] = ("x",)) -> Agent:
    return engine.write(
        lambda tx: tx.agent_register(
            name, capabilities=caps, notify_url="http://127.0.0.1:9/h", ttl=ttl, concurrency=2,
            claim_on_push=False, now=now,
        )
    )  # fmt: skip


def add_task(engine: Any, task_id: str, *, state: str, assigned_to: str | None = None, attempts: int = 0) -> None:
    engine.write(
        lambda tx: tx.execute(
            "INSERT INTO tasks (id, type, priority, capabilities, route, state, assigned_to, attempts, max_retries,"
            " claim_ttl, claim_token, submitted_by, created_at, updated_at)"
            " VALUES (?, 't', 1, '[]', 'any', ?, ?, ?, 3, 60, ?, 'admin', 1, 1)",
            (task_id, state, assigned_to, attempts, "tok" if state == "claimed" else None),
        )
    )


def test_insert_then_get_returns_the_offline_agent_and_a_taken_name_raises_duplicate(engine: Any) -> None:
    created = engine.write(lambda tx: tx.agent_insert(new("a", caps=("x", "y"), granted=("x", "y"), notify_host="h")))
    assert isinstance(created, Agent)
    assert (created.name, created.capabilities, created.granted) == ("a", ("x", "y"), ("x", "y"))
    assert (created.status, created.notify_host, created.notify_url) == (AgentStatus.OFFLINE, "h", None)
    assert engine.read(lambda tx: tx.agent_get("a")) == created
    assert engine.read(lambda tx: tx.agent_get("nobody")) is None
    with pytest.raises(Duplicate):
        engine.write(lambda tx: tx.agent_insert(new("a", caps=("z",))))
    assert engine.read(lambda tx: tx.agent_get("a")) == created  # the first one stands


def test_create_answers_409_when_the_name_is_taken_and_writes_nothing(engine: Any) -> None:
    first = engine.write(agents_state.create, name="a", capabilities=[], actor="admin", now=1.0)
    with pytest.raises(Conflict) as refused:
        engine.write(agents_state.create, name="a", capabilities=["x"], actor="admin", now=2.0)
    assert refused.value.code == "agent_exists"
    events = engine.read(lambda tx: tx.execute("SELECT kind FROM agent_events WHERE agent = 'a'").fetchall())
    assert [e[0] for e in events] == ["created"]
    _, stored = engine.read(lambda tx: tx.agent_with_secret("a"))
    assert stored is not None and first.secret not in stored  # only its hash is kept


def test_for_update_returns_the_agent_or_none(engine: Any) -> None:
    add(engine, "a")
    assert engine.write(lambda tx: tx.agent_for_update("a")) == engine.read(lambda tx: tx.agent_get("a"))
    assert engine.write(lambda tx: tx.agent_for_update("b")) is None


def test_with_secret_returns_the_agent_and_its_hash(engine: Any) -> None:
    add(engine, "a")
    agent, secret_hash = engine.read(lambda tx: tx.agent_with_secret("a"))
    assert agent is not None and agent.name == "a" and secret_hash == "hash-a"
    assert engine.read(lambda tx: tx.agent_with_secret("b")) == (None, None)


def test_page_is_by_name_after_a_name(engine: Any) -> None:
    add(engine, "c", "a", "b", "d")
    assert [a.name for a in engine.read(lambda tx: tx.agents_page(after="", limit=3))] == ["a", "b", "c"]
    assert [a.name for a in engine.read(lambda tx: tx.agents_page(after="b", limit=5))] == ["c", "d"]


def test_set_notify_host_can_drop_the_notify_url(engine: Any) -> None:
    add(engine, "a")
    register(engine, "a", now=1.0)
    assert engine.write(lambda tx: tx.agent_set_notify_host("a", "h1", drop_notify_url=False))
    agent = engine.read(lambda tx: tx.agent_get("a"))
    assert (agent.notify_host, agent.notify_url) == ("h1", "http://127.0.0.1:9/h")
    assert engine.write(lambda tx: tx.agent_set_notify_host("a", None, drop_notify_url=True))
    agent = engine.read(lambda tx: tx.agent_get("a"))
    assert (agent.notify_host, agent.notify_url) == (None, None)
    assert not engine.write(lambda tx: tx.agent_set_notify_host("b", "h", drop_notify_url=False))


def test_set_claim_on_push_and_secrets(engine: Any) -> None:
    add(engine, "a")
    assert engine.write(lambda tx: tx.agent_set_claim_on_push("a", True))
    assert engine.read(lambda tx: tx.agent_get("a")).claim_on_push is True
    assert engine.write(lambda tx: tx.agent_set_secrets("a", secret_hash="new", webhook_secret="whsec-new"))
    assert engine.read(lambda tx: tx.agent_with_secret("a"))[1] == "new"
    assert engine.read(lambda tx: tx.webhook_target("a")) == (None, "whsec-new")
    assert not engine.write(lambda tx: tx.agent_set_claim_on_push("b", True))
    assert not engine.write(lambda tx: tx.agent_set_secrets("b", secret_hash="x", webhook_secret="y"))


def test_register_sets_it_online_until_now_plus_ttl(engine: Any) -> None:
    add(engine, "a")
    agent = register(engine, "a", now=5.0, ttl=10.0, caps=("y", "x"))
    assert (agent.status, agent.expires_at, agent.last_seen) == (AgentStatus.ONLINE, 15.0, 5.0)
    assert (agent.capabilities, agent.concurrency) == (("y", "x"), 2)
    assert agent.effective_status(14.0) is AgentStatus.ONLINE and agent.effective_status(15.0) is AgentStatus.OFFLINE
    assert register(engine, "nobody", now=5.0) is None


def test_delete_says_whether_there_was_an_agent(engine: Any) -> None:
    add(engine, "a")
    assert engine.write(lambda tx: tx.agent_delete("a")) is True
    assert engine.write(lambda tx: tx.agent_delete("a")) is False
    assert engine.read(lambda tx: tx.agent_get("a")) is None


def test_tasks_requeue_gives_back_a_claims_attempt_and_revokes_its_token(engine: Any) -> None:
    add(engine, "a")
    add_task(engine, "t1", state="assigned", assigned_to="a", attempts=0)
    add_task(engine, "t2", state="claimed", assigned_to="a", attempts=2)
    add_task(engine, "t3", state="claimed", assigned_to="other", attempts=1)
    add_task(engine, "t4", state="completed", assigned_to="a", attempts=1)
    held = engine.write(lambda tx: tx.agent_tasks_requeue("a", 9.0))
    assert sorted(held) == [("t1", "assigned"), ("t2", "claimed")]
    rows = engine.read(
        lambda tx: tx.execute("SELECT id, state, assigned_to, attempts, claim_token FROM tasks ORDER BY id").fetchall()
    )
    assert [tuple(r) for r in rows] == [
        ("t1", "queued", None, 0, None),
        ("t2", "queued", None, 1, None),
        ("t3", "claimed", "other", 1, "tok"),
        ("t4", "completed", "a", 1, None),
    ]
    assert engine.write(lambda tx: tx.agent_tasks_requeue("a", 10.0)) == []


def test_events_and_changes_name_the_agents_written_after_an_id(engine: Any) -> None:
    # On PostgreSQL the ids are event_log's, numbered after commit: the sequencer runs after each write.
    def add_event(*args: Any) -> None:
        engine.write(lambda tx: tx.agent_event_add(*args))
        getattr(engine, "sequence_events", lambda: 0)()  # SQLite's ids already commit in order

    assert engine.read(lambda tx: tx.agent_changes(None)) == (set(), 0)
    add_event("a", "created", "admin", 1.0, {"granted": None})
    _, first = engine.read(lambda tx: tx.agent_changes(None))
    add_event("b", "online", "b", 2.0)
    add_event("b", "changed", "b", 3.0)
    names, latest = engine.read(lambda tx: tx.agent_changes(first))
    assert names == {"b"} and latest > first
    assert engine.read(lambda tx: tx.agent_changes(latest)) == (set(), latest)
    assert engine.read(lambda tx: tx.agent_changes(0)) == ({"a", "b"}, latest)
    detail = engine.read(lambda tx: tx.execute("SELECT detail FROM agent_events ORDER BY id").fetchall())
    assert [d[0] for d in detail] == ['{"granted": null}', None, None]


def test_expire_sets_offline_those_past_their_ttl_once(engine: Any) -> None:
    add(engine, "a", "b", "c")
    register(engine, "a", now=1.0, ttl=5.0)
    register(engine, "b", now=1.0, ttl=50.0)
    assert engine.write(lambda tx: tx.agents_expire(6.0)) == [("a", 1.0)]
    assert engine.write(lambda tx: tx.agents_expire(6.0)) == []
    assert engine.read(lambda tx: tx.agent_get("a")).status is AgentStatus.OFFLINE


def test_routable_reads_the_online_agents_or_those_named(engine: Any) -> None:
    engine.write(lambda tx: tx.agent_insert(new("a", granted=("x",))))
    add(engine, "b", "c")
    register(engine, "a", now=1.0, ttl=5.0)
    register(engine, "b", now=1.0, ttl=50.0)
    every = engine.read(lambda tx: tx.agents_routable(2.0))
    assert sorted(a.name for a in every) == ["a", "b"] and all(isinstance(a, RoutableAgent) for a in every)
    a = next(r for r in every if r.name == "a")
    assert (a.capabilities, a.granted, a.expires_at, a.concurrency) == (("x",), ("x",), 6.0, 2)
    assert [r.name for r in engine.read(lambda tx: tx.agents_routable(10.0))] == ["b"]
    assert [r.name for r in engine.read(lambda tx: tx.agents_routable(2.0, ["a", "c"]))] == ["a"]
    assert engine.read(lambda tx: tx.agents_routable(2.0, [])) == []


def test_webhook_target_is_the_url_and_secret_or_none(engine: Any) -> None:
    add(engine, "a")
    register(engine, "a", now=1.0)
    assert engine.read(lambda tx: tx.webhook_target("a")) == ("http://127.0.0.1:9/h", "whsec-a")
    assert engine.read(lambda tx: tx.webhook_target("b")) is None


def test_state_delete_requeues_fails_and_drops_memory_in_one_transaction(engine: Any) -> None:
    engine.write(agents_state.create, name="a", capabilities=[], actor="admin", now=1.0)
    add_task(engine, "held", state="claimed", assigned_to="a", attempts=1)
    engine.write(lambda tx: tx.execute("UPDATE tasks SET route = 'a' WHERE id = 'held'"))
    add_task(engine, "routed", state="queued")
    engine.write(lambda tx: tx.execute("UPDATE tasks SET route = 'a' WHERE id = 'routed'"))
    for ns in ("private:a", "agent:a", "mesh"):
        engine.write(lambda tx, n=ns: tx.execute(
            "INSERT INTO memory (ns, key, value, version, updated_by, updated_at) VALUES (?, 'k', '1', 1, 'a', 1)", (n,)
        ))  # fmt: skip
    removed = engine.write(agents_state.delete, name="a", actor="admin", now=5.0)
    assert removed.to_api() == {
        "deleted": "a",
        "memory_keys": {"private:a": 1, "agent:a": 1},
        "tasks_requeued": 1,
        "tasks_failed": 2,  # routed to it by name: the requeued one too, as nobody else may take it
    }
    kinds = engine.read(
        lambda tx: tx.execute("SELECT kind FROM task_events WHERE task_id = 'held' ORDER BY id").fetchall()
    )
    assert [k[0] for k in kinds] == ["requeued", "failed"]
    assert engine.read(lambda tx: tx.execute("SELECT ns FROM memory").fetchall())[0][0] == "mesh"


def test_sessions_live_until_they_expire_or_are_dropped(engine: Any) -> None:
    engine.write(lambda tx: tx.session_insert("h1", csrf="c1", created_at=1.0, expires_at=10.0))
    assert engine.read(lambda tx: tx.session_csrf("h1", 9.0)) == "c1"
    assert engine.read(lambda tx: tx.session_csrf("h1", 10.0)) is None
    assert engine.read(lambda tx: tx.session_csrf("nope", 1.0)) is None
    engine.write(lambda tx: tx.session_drop("h1"))
    assert engine.read(lambda tx: tx.session_csrf("h1", 2.0)) is None


def test_sessions_prune_drops_expired_ones_and_keeps_the_newest(engine: Any) -> None:
    for i in range(5):
        engine.write(lambda tx, i=i: tx.session_insert(f"h{i}", csrf="c", created_at=float(i), expires_at=100.0 + i))
    engine.write(lambda tx: tx.session_insert("old", csrf="c", created_at=9.0, expires_at=20.0))
    engine.write(lambda tx: tx.sessions_prune(50.0, keep=3))
    live = [h for h in ("h0", "h1", "h2", "h3", "h4", "old") if engine.read(lambda tx, h=h: tx.session_csrf(h, 0.0))]
    assert live == ["h2", "h3", "h4"]
