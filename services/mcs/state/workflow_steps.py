"""A workflow's state following its steps: the hooks the task state machine calls when a step ends or runs
again (`mcs.state.transitions`), apart from the rest of `mcs.state.workflows` so the imports run one way
(workflows -> tasks -> transitions -> workflow_steps)."""

from __future__ import annotations

from typing import Any

from mcs import effects
from mcs.engines.base import Tx
from mcs.models import TaskState


def add_event(tx: Tx, workflow_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
    tx.workflow_event_add(workflow_id, kind, actor, now, detail)


def _finish(tx: Tx, workflow_id: str, state: str, actor: str, now: float, detail: Any = None) -> None:
    tx.workflow_finish(workflow_id, state, now)
    add_event(tx, workflow_id, state, actor, now, detail)
    effects.note(f"workflow_{state}", "workflow", "normal")


def settle(tx: Tx, workflow_id: str, now: float) -> None:
    """After a step ended: the workflow completes when every step completed, and fails when every step
    ended and some did not complete (a step with run_if "always" still runs before that)."""
    # Locked before counting (docs/design/engines.md 4.1, site 7): the last two steps ending together
    # on two replicas must not each see the other unfinished.
    workflow = tx.workflow_lock(workflow_id)
    if workflow is None or workflow.state != "running":
        return
    steps = tx.workflow_steps(workflow_id)
    if any(not t.state.terminal for t in steps):
        return
    bad = [t.step_id for t in steps if t.state is not TaskState.COMPLETED]
    if not bad:
        _finish(tx, workflow_id, "completed", "mcs", now)
    else:
        _finish(tx, workflow_id, "failed", "mcs", now, {"steps": bad})


def reopen(tx: Tx, workflow_id: str, now: float, *, step: str | None) -> None:
    """A step of a failed workflow runs again (a retry): the workflow is running again."""
    if tx.workflow_reopen(workflow_id, now):
        add_event(tx, workflow_id, "reopened", "mcs", now, {"step": step})
