"""Migration 0018 on a real SQLite file: a task's state changes turn into one push row per A2A push config
(whoever makes the change), and the A2A rows go with their task."""

from __future__ import annotations

import json

import pytest

from mcs.engines.sqlite.engine import Store
from mcs.errors import Forbidden
from mcs.models import ADMIN, Caller, PushConfig, TaskSpec
from mcs.state import a2a as a2a_state
from mcs.state import tasks as tasks_store


def push(task_id: str = "", config_id: str = "c1") -> PushConfig:
    return PushConfig(
        task_id=task_id,
        id=config_id,
        url="http://127.0.0.1:9/x",
        token="t",
        auth_scheme=None,
        auth_credentials=None,
        owner="",
    )


def test_state_changes_become_push_rows_and_the_rows_follow_their_task(tmp_path):
    store = Store(tmp_path / "x.db")
    store.migrate()
    spec = TaskSpec.from_body({"type": "echo", "payload": "hi"}, max_retries=3, claim_ttl=300)
    task, origin = store.write(
        a2a_state.submit,
        caller=ADMIN,
        spec=spec,
        context_id="ctx",
        message={"messageId": "m", "parts": [{"text": "hi"}]},
        push=push(),
        now=1.0,
        max_queued=0,
    )
    assert origin.context_id == "ctx" and store.read(a2a_state.origin, task.id) == origin
    store.write(a2a_state.set_push, caller=ADMIN, config=push(task.id, "c2"), now=2.0)
    with pytest.raises(Forbidden):
        store.write(a2a_state.set_push, caller=Caller(name="mallory"), config=push(task.id, "c3"), now=2.0)
    assert store.read(lambda c: c.execute("SELECT count(*) FROM outbox WHERE kind = 'a2a_push'").fetchone()[0]) == 0

    store.write(tasks_store.cancel, task_id=task.id, caller=ADMIN, now=3.0)
    rows = store.read(lambda c: c.execute("SELECT agent, task_id, body FROM outbox WHERE kind = 'a2a_push'").fetchall())
    bodies = sorted((r[0], r[1], json.loads(r[2])["config_id"], json.loads(r[2])["state"]) for r in rows)
    assert bodies == [("a2a:admin", task.id, "c1", "canceled"), ("a2a:admin", task.id, "c2", "canceled")]
    kinds = [e.kind for e in store.read(tasks_store.events, task.id)]
    assert kinds.count("push_config_set") == 2

    store.write(lambda c: c.execute("DELETE FROM tasks WHERE id = ?", (task.id,)))
    left = store.read(
        lambda c: c.execute(
            "SELECT (SELECT count(*) FROM a2a_tasks), (SELECT count(*) FROM a2a_push_configs)"
        ).fetchone()
    )
    assert tuple(left) == (0, 0)
