"""Serialisation sites 2, 4, 5, 6 and 8 (docs/design/engines.md 4.1) with two engines on one database, as
two replicas: both transactions read what they decide on, then both go on (tests/conformance/races.py).
On SQLite the second simply waits for the first's commit; on PostgreSQL the site's lock must make it wait
and then see the first's rows. Each test asserts what a user would notice if the lock were missing."""

from __future__ import annotations

from typing import Any

import pytest

from mcs.errors import Conflict
from mcs.models import Agent, AgentStatus, Caller, Priority, TaskState, TaskView
from mcs.state import agents as agents_state
from mcs.state import dispatch as dispatch_state
from mcs.state import tasks as tasks_state
from mcs.state.routing_view import RoutingView
from tests.conformance.races import race
from tests.conformance.test_tx_tasks import spec

ADMIN = Caller(name="admin", is_admin=True)


@pytest.fixture
def engines(engine: Any, engine_factory: Any) -> tuple[Any, Any]:
    return engine, engine_factory()


def agent(name: str) -> Agent:
    return Agent(
        name=name, capabilities=("t",), granted=None, notify_url=None, concurrency=4, status=AgentStatus.ONLINE,
        expires_at=None, last_seen=1.0, created_at=1.0,
    )  # fmt: skip


def add(engine: Any, task_id: str, *, state: TaskState = TaskState.QUEUED, **kw: Any) -> None:
    engine.write(
        lambda tx: tx.task_insert(task_id=task_id, spec=spec(**kw), state=state, submitted_by="alice", now=1.0)
    )


def count(engine: Any, where: str = "1 = 1", params: tuple[Any, ...] = ()) -> int:
    return int(engine.read(lambda tx: tx.value(f"SELECT count(*) FROM tasks WHERE {where}", params)))


def test_site2_two_agents_claiming_the_one_queued_task_one_gets_it_the_other_nothing_never_409(
    engines: tuple[Any, Any],
) -> None:
    add(engines[0], "only")
    outcomes = race(
        engines,
        (
            lambda tx: tasks_state.claim_next(tx, agent=agent("a"), now=2.0),
            lambda tx: tasks_state.claim_next(tx, agent=agent("b"), now=2.0),
        ),
        before="task_take",
    )
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes  # without SKIP LOCKED: 409 task_changed
    claimed = [o for o in outcomes if o is not None]
    assert len(claimed) == 1 and claimed[0].id == "only"
    task = engines[0].read(lambda tx: tx.task_get("only"))
    assert task.state is TaskState.CLAIMED and task.attempts == 1


def test_site4_two_claims_of_a_key_with_room_for_one_one_runs(engines: tuple[Any, Any]) -> None:
    add(engines[0], "k1", concurrency_key="k", max_concurrency=1)
    add(engines[0], "k2", concurrency_key="k", max_concurrency=1)
    outcomes = race(
        engines,
        (
            lambda tx: tasks_state.claim_next(tx, agent=agent("a"), now=2.0),
            lambda tx: tasks_state.claim_next(tx, agent=agent("b"), now=2.0),
        ),
        before="key_running",
    )
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    assert sorted(o is None for o in outcomes) == [False, True]
    assert count(engines[0], "state = 'claimed'") == 1  # without the key lock: both run
    assert count(engines[0], "state = 'queued'") == 1


def test_site5_complete_and_cancel_of_one_task_together_one_wins_the_other_is_told_why(
    engines: tuple[Any, Any],
) -> None:
    add(engines[0], "t")
    claimed: TaskView = engines[0].write(tasks_state.claim, task_id="t", agent=agent("a"), now=2.0)
    token = claimed.claim_token
    assert token is not None
    outcomes = race(
        engines,
        (
            lambda tx: tasks_state.complete(tx, task_id="t", agent=agent("a"), token=token, result={"ok": 1}, now=3.0),
            lambda tx: tasks_state.cancel(tx, task_id="t", caller=ADMIN, now=3.0),
        ),
        after="task_lock",
    )
    won = [o for o in outcomes if not isinstance(o, Exception)]
    lost = [o for o in outcomes if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    # The loser hears what happened (already ended, claim gone), not "changed under us; try again".
    assert isinstance(lost[0], Conflict) and lost[0].code != "task_changed", lost[0]
    ended = engines[0].read(lambda tx: [e.kind for e in tx.task_events("t")])
    assert len([k for k in ended if k in ("completed", "canceled")]) == 1


def test_site6_two_dependencies_finishing_together_release_the_dependent(engines: tuple[Any, Any]) -> None:
    tokens = {}
    # Priorities differ: on PostgreSQL two state changes of tasks alike (state, priority, capabilities,
    # route) queue on one task_counts row (migration 0017's trigger), which would serialise them anyway.
    for dep, name, priority in (("a", "x", "normal"), ("b", "y", "low")):
        add(engines[0], dep, priority=Priority.parse(priority))
        tokens[dep] = engines[0].write(tasks_state.claim, task_id=dep, agent=agent(name), now=2.0).claim_token
    add(engines[0], "c", state=TaskState.BLOCKED)
    engines[0].write(lambda tx: tx.deps_add("c", ("a", "b")))

    def finish(dep: str, name: str) -> Any:
        return lambda tx: tasks_state.complete(
            tx, task_id=dep, agent=agent(name), token=tokens[dep], result={"dep": dep}, now=3.0
        )

    outcomes = race(engines, (finish("a", "x"), finish("b", "y")), before="dependents_blocked")
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    c = engines[0].read(lambda tx: tx.task_get("c"))
    assert c.state is TaskState.QUEUED  # without the dependent's lock each saw the other unfinished: blocked
    assert [e.kind for e in engines[0].read(lambda tx: tx.task_events("c"))].count("unblocked") == 1


def test_site8_one_idempotency_key_submitted_twice_together_makes_one_task(engines: tuple[Any, Any]) -> None:
    def submit(tx: Any) -> Any:
        return tasks_state.submit(
            tx, caller=Caller(name="alice"), spec=spec(), idempotency_key="once", body_hash="h",
            idempotency_ttl=3600.0, now=1.0,
        )  # fmt: skip

    outcomes = race(engines, (submit, submit), before="idem_get")
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    (first, first_replay), (second, second_replay) = outcomes
    assert first.id == second.id  # without the key's lock: two tasks, two ids
    assert sorted([first_replay, second_replay]) == [False, True]
    assert count(engines[0]) == 1


def test_site1_two_dispatch_passes_together_fill_an_agent_only_to_its_capacity(engines: tuple[Any, Any]) -> None:
    engines[0].write(agents_state.create, name="x", capabilities=["t"], actor="admin", now=1.0)
    engines[0].write(
        lambda tx: tx.agent_register(
            "x", capabilities=("t",), notify_url="http://127.0.0.1:9/h", ttl=100.0, concurrency=1,
            claim_on_push=False, now=1.0,
        )
    )  # fmt: skip
    add(engines[0], "t1")
    add(engines[0], "t2")

    def dispatch(tx: Any) -> Any:
        return dispatch_state.dispatch(tx, now=2.0, view=RoutingView(), unparked_at=0, limit=100)

    outcomes = race(engines, (dispatch, dispatch), before="queue_page")
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    assert count(engines[0], "state = 'assigned' AND assigned_to = 'x'") == 1  # concurrency 1
    assert count(engines[0], "state = 'queued'") == 1
    webhooks = engines[0].read(lambda tx: tx.value("SELECT count(*) FROM outbox WHERE agent = 'x'"))
    assert webhooks == 1
