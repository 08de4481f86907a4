"""WorkflowTx on SQLite through `Store`: each method's contract (models back, guarded updates report
whether they changed the row), and the workflow state the steps settle it into (site 7's lock in place)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mcs.engines.sqlite.engine import Store
from mcs.models import ADMIN, TaskEvent, TaskState, Workflow
from mcs.state import workflows as workflows_state


@pytest.fixture
def store(tmp_path: Any) -> Store:
    s = Store(tmp_path / "mcs.db")
    s.migrate()
    return s


def insert(store: Store, workflow_id: str, *, name: str = "wf", inputs: Any = None, now: float = 1.0) -> None:
    store.write(
        lambda tx: tx.workflow_insert(workflow_id=workflow_id, name=name, inputs=inputs, submitted_by="admin", now=now)
    )


def submit(store: Store, steps: list[dict[str, Any]], now: float = 1.0) -> str:
    view = store.write(
        workflows_state.submit,
        caller=ADMIN,
        name="build",
        steps=steps,
        inputs={"repo": "x"},
        max_retries=0,
        claim_ttl=60.0,
        now=now,
    )
    return view.workflow.id


def test_insert_then_get_and_lock_return_the_workflow_running(store: Store) -> None:
    insert(store, "w1", inputs={"a": [1, 2]}, now=5.0)
    got = store.read(lambda tx: tx.workflow_get("w1"))
    assert isinstance(got, Workflow)
    assert (got.id, got.name, got.state, got.inputs, got.submitted_by) == (
        "w1",
        "wf",
        "running",
        {"a": [1, 2]},
        "admin",
    )
    assert (got.created_at, got.updated_at, got.finished_at) == (5.0, 5.0, None) and got.seq >= 1
    assert store.write(lambda tx: tx.workflow_lock("w1")) == got
    assert store.read(lambda tx: tx.workflow_get("nope")) is None
    assert store.write(lambda tx: tx.workflow_lock("nope")) is None


def test_inputs_none_stay_none(store: Store) -> None:
    insert(store, "w1", inputs=None)
    got = store.read(lambda tx: tx.workflow_get("w1"))
    assert got is not None and got.inputs is None


def test_finish_ends_a_running_workflow_once(store: Store) -> None:
    insert(store, "w1")
    assert store.write(lambda tx: tx.workflow_finish("w1", "failed", 9.0)) is True
    assert store.write(lambda tx: tx.workflow_finish("w1", "completed", 10.0)) is False
    got = store.read(lambda tx: tx.workflow_get("w1"))
    assert got is not None and (got.state, got.updated_at, got.finished_at) == ("failed", 9.0, 9.0)
    assert store.write(lambda tx: tx.workflow_finish("nope", "failed", 9.0)) is False


def test_reopen_runs_a_failed_workflow_again_and_nothing_else(store: Store) -> None:
    insert(store, "w1")
    assert store.write(lambda tx: tx.workflow_reopen("w1", 2.0)) is False  # running: nothing to reopen
    store.write(lambda tx: tx.workflow_finish("w1", "canceled", 3.0))
    assert store.write(lambda tx: tx.workflow_reopen("w1", 4.0)) is False  # canceled stays canceled
    insert(store, "w2")
    store.write(lambda tx: tx.workflow_finish("w2", "failed", 3.0))
    assert store.write(lambda tx: tx.workflow_reopen("w2", 4.0)) is True
    got = store.read(lambda tx: tx.workflow_get("w2"))
    assert got is not None and (got.state, got.updated_at, got.finished_at) == ("running", 4.0, None)


def test_events_come_back_in_order_with_their_detail(store: Store) -> None:
    insert(store, "w1")
    store.write(lambda tx: tx.workflow_event_add("w1", "submitted", "admin", 1.0, {"steps": 2}))
    store.write(lambda tx: tx.workflow_event_add("w1", "completed", "mcs", 2.0))
    store.write(lambda tx: tx.workflow_event_add("w2", "submitted", "admin", 1.5))
    events = store.read(lambda tx: tx.workflow_events("w1"))
    assert events == [
        TaskEvent(at=1.0, kind="submitted", actor="admin", detail={"steps": 2}),
        TaskEvent(at=2.0, kind="completed", actor="mcs", detail=None),
    ]
    assert store.read(lambda tx: tx.workflow_events("nope")) == []


def test_steps_are_the_workflows_own_tasks_in_submission_order(store: Store) -> None:
    first = submit(store, [{"id": "b", "type": "t", "depends_on": ["a"]}, {"id": "a", "type": "t"}])
    submit(store, [{"id": "x", "type": "t"}])
    steps = store.read(lambda tx: tx.workflow_steps(first))
    assert [s.step_id for s in steps] == ["a", "b"]  # dependencies first, as submitted
    assert all(s.workflow_id == first for s in steps) and steps[0].seq < steps[1].seq
    assert store.read(lambda tx: tx.workflow_steps("nope")) == []


def test_page_is_newest_first_filtered_by_state_and_continues_before_a_seq(store: Store) -> None:
    for i in range(5):
        insert(store, f"w{i}", now=float(i))
    store.write(lambda tx: tx.workflow_finish("w3", "completed", 9.0))
    page = store.read(lambda tx: tx.workflows_page(state=None, before_seq=None, limit=2))
    assert [w.id for w in page] == ["w4", "w3"]
    rest = store.read(lambda tx: tx.workflows_page(state=None, before_seq=page[-1].seq, limit=10))
    assert [w.id for w in rest] == ["w2", "w1", "w0"]
    running = store.read(lambda tx: tx.workflows_page(state="running", before_seq=None, limit=10))
    assert [w.id for w in running] == ["w4", "w2", "w1", "w0"]
    assert store.read(lambda tx: tx.workflows_page(state="failed", before_seq=None, limit=10)) == []


def test_settle_ends_the_workflow_once_when_every_step_ended(store: Store) -> None:
    wf = submit(store, [{"id": "a", "type": "t"}, {"id": "b", "type": "t"}])
    store.write(
        lambda tx: tx.run("UPDATE tasks SET state = 'completed' WHERE workflow_id = ? AND step_id = 'a'", (wf,))
    )
    store.write(workflows_state.settle, wf, 5.0)
    assert store.read(workflows_state.show, wf).workflow.state == "running"  # b has not ended
    store.write(lambda tx: tx.run("UPDATE tasks SET state = 'failed' WHERE workflow_id = ? AND step_id = 'b'", (wf,)))
    store.write(workflows_state.settle, wf, 6.0)
    store.write(workflows_state.settle, wf, 7.0)  # a second settle finds it ended: no second event
    view = store.read(workflows_state.show, wf)
    assert view.workflow.state == "failed" and view.workflow.finished_at == 6.0
    assert view.steps["b"]["state"] == TaskState.FAILED.value
    kinds = [(e.kind, e.detail) for e in store.read(workflows_state.events, wf)]
    assert kinds == [("submitted", {"steps": 2}), ("failed", {"steps": ["b"]})]


def test_last_two_steps_ending_together_settle_the_workflow_once(store: Store, tmp_path: Any) -> None:
    """Site 7: two writers (two Stores, as two processes) each end one of the last two steps and settle."""
    wf = submit(store, [{"id": "a", "type": "t"}, {"id": "b", "type": "t"}])
    start = threading.Barrier(2)

    def end(step: str) -> None:
        writer = Store(tmp_path / "mcs.db")
        start.wait()

        def job(tx: Any) -> None:
            tx.run("UPDATE tasks SET state = 'completed' WHERE workflow_id = ? AND step_id = ?", (wf, step))
            workflows_state.settle(tx, wf, 5.0)

        writer.write(job)
        writer.close()

    threads = [threading.Thread(target=end, args=(s,)) for s in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert store.read(workflows_state.show, wf).workflow.state == "completed"
    kinds = [e.kind for e in store.read(workflows_state.events, wf)]
    assert kinds == ["submitted", "completed"]
