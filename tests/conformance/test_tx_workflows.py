"""WorkflowTx on both engines: each method's contract (models back, guarded updates report
whether they changed the row), and the workflow state the steps settle it into (site 7's lock in place)."""

from __future__ import annotations

import threading
from typing import Any

from mcs.models import ADMIN, TaskEvent, TaskState, Workflow
from mcs.state import workflows as workflows_state


def insert(engine: Any, workflow_id: str, *, name: str = "wf", inputs: Any = None, now: float = 1.0) -> None:
    engine.write(
        lambda tx: tx.workflow_insert(workflow_id=workflow_id, name=name, inputs=inputs, submitted_by="admin", now=now)
    )


def submit(engine: Any, steps: list[dict[str, Any]], now: float = 1.0) -> str:
    view = engine.write(
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


def test_insert_then_get_and_lock_return_the_workflow_running(engine: Any) -> None:
    insert(engine, "w1", inputs={"a": [1, 2]}, now=5.0)
    got = engine.read(lambda tx: tx.workflow_get("w1"))
    assert isinstance(got, Workflow)
    assert (got.id, got.name, got.state, got.inputs, got.submitted_by) == (
        "w1",
        "wf",
        "running",
        {"a": [1, 2]},
        "admin",
    )
    assert (got.created_at, got.updated_at, got.finished_at) == (5.0, 5.0, None) and got.seq >= 1
    assert engine.write(lambda tx: tx.workflow_lock("w1")) == got
    assert engine.read(lambda tx: tx.workflow_get("nope")) is None
    assert engine.write(lambda tx: tx.workflow_lock("nope")) is None


def test_inputs_none_stay_none(engine: Any) -> None:
    insert(engine, "w1", inputs=None)
    got = engine.read(lambda tx: tx.workflow_get("w1"))
    assert got is not None and got.inputs is None


def test_finish_ends_a_running_workflow_once(engine: Any) -> None:
    insert(engine, "w1")
    assert engine.write(lambda tx: tx.workflow_finish("w1", "failed", 9.0)) is True
    assert engine.write(lambda tx: tx.workflow_finish("w1", "completed", 10.0)) is False
    got = engine.read(lambda tx: tx.workflow_get("w1"))
    assert got is not None and (got.state, got.updated_at, got.finished_at) == ("failed", 9.0, 9.0)
    assert engine.write(lambda tx: tx.workflow_finish("nope", "failed", 9.0)) is False


def test_reopen_runs_a_failed_workflow_again_and_nothing_else(engine: Any) -> None:
    insert(engine, "w1")
    assert engine.write(lambda tx: tx.workflow_reopen("w1", 2.0)) is False  # running: nothing to reopen
    engine.write(lambda tx: tx.workflow_finish("w1", "canceled", 3.0))
    assert engine.write(lambda tx: tx.workflow_reopen("w1", 4.0)) is False  # canceled stays canceled
    insert(engine, "w2")
    engine.write(lambda tx: tx.workflow_finish("w2", "failed", 3.0))
    assert engine.write(lambda tx: tx.workflow_reopen("w2", 4.0)) is True
    got = engine.read(lambda tx: tx.workflow_get("w2"))
    assert got is not None and (got.state, got.updated_at, got.finished_at) == ("running", 4.0, None)


def test_events_come_back_in_order_with_their_detail(engine: Any) -> None:
    insert(engine, "w1")
    engine.write(lambda tx: tx.workflow_event_add("w1", "submitted", "admin", 1.0, {"steps": 2}))
    engine.write(lambda tx: tx.workflow_event_add("w1", "completed", "mcs", 2.0))
    engine.write(lambda tx: tx.workflow_event_add("w2", "submitted", "admin", 1.5))
    events = engine.read(lambda tx: tx.workflow_events("w1"))
    assert events == [
        TaskEvent(at=1.0, kind="submitted", actor="admin", detail={"steps": 2}),
        TaskEvent(at=2.0, kind="completed", actor="mcs", detail=None),
    ]
    assert engine.read(lambda tx: tx.workflow_events("nope")) == []


def test_steps_are_the_workflows_own_tasks_in_submission_order(engine: Any) -> None:
    first = submit(engine, [{"id": "b", "type": "t", "depends_on": ["a"]}, {"id": "a", "type": "t"}])
    submit(engine, [{"id": "x", "type": "t"}])
    steps = engine.read(lambda tx: tx.workflow_steps(first))
    assert [s.step_id for s in steps] == ["a", "b"]  # dependencies first, as submitted
    assert all(s.workflow_id == first for s in steps) and steps[0].seq < steps[1].seq
    assert engine.read(lambda tx: tx.workflow_steps("nope")) == []


def test_page_is_newest_first_filtered_by_state_and_continues_before_a_seq(engine: Any) -> None:
    for i in range(5):
        insert(engine, f"w{i}", now=float(i))
    engine.write(lambda tx: tx.workflow_finish("w3", "completed", 9.0))
    page = engine.read(lambda tx: tx.workflows_page(state=None, before_seq=None, limit=2))
    assert [w.id for w in page] == ["w4", "w3"]
    rest = engine.read(lambda tx: tx.workflows_page(state=None, before_seq=page[-1].seq, limit=10))
    assert [w.id for w in rest] == ["w2", "w1", "w0"]
    running = engine.read(lambda tx: tx.workflows_page(state="running", before_seq=None, limit=10))
    assert [w.id for w in running] == ["w4", "w2", "w1", "w0"]
    assert engine.read(lambda tx: tx.workflows_page(state="failed", before_seq=None, limit=10)) == []


def test_settle_ends_the_workflow_once_when_every_step_ended(engine: Any) -> None:
    wf = submit(engine, [{"id": "a", "type": "t"}, {"id": "b", "type": "t"}])
    engine.write(
        lambda tx: tx.run("UPDATE tasks SET state = 'completed' WHERE workflow_id = ? AND step_id = 'a'", (wf,))
    )
    engine.write(workflows_state.settle, wf, 5.0)
    assert engine.read(workflows_state.show, wf).workflow.state == "running"  # b has not ended
    engine.write(lambda tx: tx.run("UPDATE tasks SET state = 'failed' WHERE workflow_id = ? AND step_id = 'b'", (wf,)))
    engine.write(workflows_state.settle, wf, 6.0)
    engine.write(workflows_state.settle, wf, 7.0)  # a second settle finds it ended: no second event
    view = engine.read(workflows_state.show, wf)
    assert view.workflow.state == "failed" and view.workflow.finished_at == 6.0
    assert view.steps["b"]["state"] == TaskState.FAILED.value
    kinds = [(e.kind, e.detail) for e in engine.read(workflows_state.events, wf)]
    assert kinds == [("submitted", {"steps": 2}), ("failed", {"steps": ["b"]})]


def test_last_two_steps_ending_together_settle_the_workflow_once(engine: Any, engine_factory: Any) -> None:
    """Site 7: two writers (two engines, as two processes) each end one of the last two steps and settle."""
    wf = submit(engine, [{"id": "a", "type": "t"}, {"id": "b", "type": "t"}])
    start = threading.Barrier(2)

    def end(step: str) -> None:
        writer = engine_factory()
        start.wait()

        def job(tx: Any) -> None:
            tx.run("UPDATE tasks SET state = 'completed' WHERE workflow_id = ? AND step_id = ?", (wf, step))
            workflows_state.settle(tx, wf, 5.0)

        writer.write(job)

    threads = [threading.Thread(target=end, args=(s,)) for s in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert engine.read(workflows_state.show, wf).workflow.state == "completed"
    kinds = [e.kind for e in engine.read(workflows_state.events, wf)]
    assert kinds == ["submitted", "completed"]
