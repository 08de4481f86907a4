"""A2aTx on both engines: each method's contract (origins, push configs, the A2A task list, the
signing key, the agents the agent card names)."""

from __future__ import annotations

import json
from typing import Any

from mcs.models import ADMIN, APPROVAL, Origin, PushConfig, TaskSpec
from mcs.state import a2a as a2a_state
from mcs.state import agents as agents_store
from mcs.state import tasks as tasks_store


def task(engine: Any, type_: str = "echo", now: float = 1.0) -> str:
    spec = TaskSpec.from_body({"type": type_, "payload": 1}, max_retries=0, claim_ttl=60.0)
    body, _ = engine.write(
        tasks_store.submit, caller=ADMIN, spec=spec, idempotency_key=None, body_hash="", idempotency_ttl=0, now=now
    )
    return body.id


def config(task_id: str, config_id: str = "c1", **kw: Any) -> PushConfig:
    fields: dict[str, Any] = {"task_id": task_id, "id": config_id, "url": "http://127.0.0.1:9/hook", "token": "t"}
    fields |= {"auth_scheme": "Bearer", "auth_credentials": "secret", "owner": "admin"}
    return PushConfig(**(fields | kw))


def test_origin_round_trips_and_a_task_without_one_has_none(engine: Any) -> None:
    t = task(engine)
    message = {"messageId": "m1", "parts": [{"text": "hi"}]}
    engine.write(lambda tx: tx.a2a_origin_insert(t, context_id="ctx", message=message, now=2.0))
    assert engine.read(lambda tx: tx.a2a_origin_get(t)) == Origin(context_id="ctx", message=message)
    bare = task(engine)
    assert engine.read(lambda tx: tx.a2a_origin_get(bare)) is None


def test_push_upsert_creates_then_replaces_one_config(engine: Any) -> None:
    t = task(engine)
    engine.write(lambda tx: tx.push_upsert(config(t), 2.0))
    assert engine.read(lambda tx: tx.push_get(t, "c1")) == config(t)
    engine.write(lambda tx: tx.push_upsert(config(t, url="http://127.0.0.1:9/new", token=None, owner="bob"), 3.0))
    assert engine.read(lambda tx: tx.push_get(t, "c1")) == config(
        t, url="http://127.0.0.1:9/new", token=None, owner="bob"
    )
    assert engine.read(lambda tx: tx.push_list(t)) == [config(t, url="http://127.0.0.1:9/new", token=None, owner="bob")]
    assert engine.read(lambda tx: tx.push_get(t, "c2")) is None
    assert engine.read(lambda tx: tx.push_get("nope", "c1")) is None


def test_push_list_is_oldest_first_and_per_task(engine: Any) -> None:
    t, other = task(engine), task(engine)
    engine.write(lambda tx: tx.push_upsert(config(t, "late"), 5.0))
    engine.write(lambda tx: tx.push_upsert(config(t, "early"), 4.0))
    engine.write(lambda tx: tx.push_upsert(config(other, "x"), 1.0))
    assert [c.id for c in engine.read(lambda tx: tx.push_list(t))] == ["early", "late"]
    assert engine.read(lambda tx: tx.push_list("nope")) == []


def test_push_delete_reports_whether_there_was_one(engine: Any) -> None:
    t = task(engine)
    engine.write(lambda tx: tx.push_upsert(config(t), 2.0))
    assert engine.write(lambda tx: tx.push_delete(t, "c1")) is True
    assert engine.write(lambda tx: tx.push_delete(t, "c1")) is False
    assert engine.read(lambda tx: tx.push_list(t)) == []


def test_signing_key_is_the_agents_webhook_secret(engine: Any) -> None:
    created = engine.write(agents_store.create, name="bot", capabilities=[], actor="admin", now=1.0)
    assert engine.read(a2a_state.signing_key, "bot") == created.webhook_secret
    assert engine.read(a2a_state.signing_key, "admin") is None


def test_online_agents_are_those_online_and_unexpired_by_name(engine: Any) -> None:
    for name in ("zed", "amy", "old", "off"):
        engine.write(agents_store.create, name=name, capabilities=[], actor="admin", now=1.0)
    engine.write(
        lambda tx: tx.run(
            "UPDATE agents SET status = 'online', expires_at = CASE name WHEN 'old' THEN 5.0 ELSE 100.0 END,"
            " capabilities = ? WHERE name != 'off'",
            (json.dumps(["echo"]),),
        )
    )
    online = engine.read(lambda tx: tx.a2a_online_agents(10.0))
    assert [a.name for a in online] == ["amy", "zed"] and online[0].capabilities == ("echo",)


def test_task_page_filters_by_state_approval_and_context_newest_first(engine: Any) -> None:
    a, b, gate, d = task(engine), task(engine), task(engine, APPROVAL), task(engine)
    engine.write(lambda tx: tx.run("UPDATE tasks SET state = 'waiting' WHERE id = ?", (gate,)))
    engine.write(lambda tx: tx.run("UPDATE tasks SET state = 'waiting' WHERE id = ?", (d,)))
    for t, ctx in ((a, "c1"), (b, "c2"), (d, "c1")):
        engine.write(lambda tx, t=t, ctx=ctx: tx.a2a_origin_insert(t, context_id=ctx, message={}, now=1.0))

    def page(**kw: Any) -> tuple[list[str], int]:
        args: dict[str, Any] = {"states": [], "context_id": None} | kw
        limit, before = args.pop("limit", 10), args.pop("before_seq", None)
        found = engine.read(lambda tx: tx.a2a_tasks_page(**args, before_seq=before, limit=limit))
        return [t.id for t in found], engine.read(lambda tx: tx.a2a_tasks_count(**args))

    assert page() == ([d, gate, b, a], 4)
    assert page(states=[("queued", None)]) == ([b, a], 2)
    assert page(states=[("waiting", True)]) == ([gate], 1)
    assert page(states=[("waiting", False)]) == ([d], 1)
    assert page(states=[("waiting", False), ("queued", None)]) == ([d, b, a], 3)
    assert page(context_id="c1") == ([d, a], 2)
    assert page(context_id="c1", states=[("queued", None)]) == ([a], 1)
    assert page(limit=2) == ([d, gate], 4)
    seq_of_gate = engine.read(lambda tx: tx.value("SELECT seq FROM tasks WHERE id = ?", (gate,)))
    assert page(before_seq=seq_of_gate) == ([b, a], 4)  # the total counts every match, not the rest
