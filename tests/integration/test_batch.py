"""POST /v1/tasks/batch on the app and a real SQLite file: many tasks, one transaction, a result per item."""

from __future__ import annotations

from typing import Any

import pytest

from mcs.config import Settings
from mcs.models import SUBMIT_BATCH_MAX
from tests.integration.conftest import ADMIN_TOKEN


@pytest.fixture
def settings(tmp_path: Any, request: Any, database_url: str | None) -> Settings:
    """The usual test settings, plus what a test names (parametrize "settings" indirectly)."""
    extra = getattr(request, "param", {})
    return Settings.from_env(
        {}, db=tmp_path / "mcs.db", admin_token=ADMIN_TOKEN, synchronous="NORMAL", database_url=database_url, **extra
    )


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def batch(mesh: Any, tasks: list[dict[str, Any]], who: Any = "admin", status: int = 200) -> Any:
    return await mesh.ok("POST", "/v1/tasks/batch", who=who, json={"tasks": tasks}, status=status)


async def test_a_full_batch_is_stored_in_one_transaction_each_task_submitted_and_audited(mesh):
    locks = sample("mcs_write_lock_acquisitions_total")
    submitted = sample("mcs_tasks_submitted_total", type="bulk", priority="normal")
    body = await batch(mesh, [{"type": "bulk", "payload": {"n": i}} for i in range(SUBMIT_BATCH_MAX)])
    # One write took them all, at one moment. On SQLite, one take of the writer lock proves one transaction
    # (the test's other connection wrote nothing meanwhile); PostgreSQL has no such lock, and each item's
    # savepoint gives its rows their own xmin, so there the single write is seen only in the one created_at.
    if mesh.db.kind == "sqlite":
        assert sample("mcs_write_lock_acquisitions_total") - locks == 1
    assert mesh.db.value("SELECT count(DISTINCT created_at) FROM tasks WHERE type = 'bulk'") == 1
    results = body["results"]
    assert [r["index"] for r in results] == list(range(SUBMIT_BATCH_MAX))
    assert {r["status"] for r in results} == {201}
    assert [r["task"]["payload"]["n"] for r in results] == list(range(SUBMIT_BATCH_MAX))
    assert {r["task"]["state"] for r in results} == {"queued"}
    ids = [r["task"]["id"] for r in results]
    assert len(set(ids)) == SUBMIT_BATCH_MAX
    count = mesh.db.sql("SELECT count(*) FROM tasks WHERE type = 'bulk'").fetchone()[0]
    assert count == SUBMIT_BATCH_MAX
    events = mesh.db.sql(
        "SELECT count(*) FROM task_events WHERE kind = 'submitted'"
        " AND task_id IN (SELECT id FROM tasks WHERE type = 'bulk')"
    ).fetchone()[0]
    assert events == SUBMIT_BATCH_MAX  # one audit event per task
    assert sample("mcs_tasks_submitted_total", type="bulk", priority="normal") - submitted == SUBMIT_BATCH_MAX
    assert (await mesh.kinds(ids[-1])) == ["submitted"]


async def test_one_more_than_the_maximum_is_refused_and_nothing_stored(mesh):
    response = await mesh.call(
        "POST", "/v1/tasks/batch", who="admin", json={"tasks": [{"type": "big"}] * (SUBMIT_BATCH_MAX + 1)}
    )
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == "validation_error"
    assert f"at most {SUBMIT_BATCH_MAX} items" in error["message"]
    assert mesh.db.sql("SELECT count(*) FROM tasks").fetchone()[0] == 0


async def test_an_item_breaking_the_schema_refuses_the_whole_batch_naming_it(mesh):
    response = await mesh.call(
        "POST", "/v1/tasks/batch", who="admin", json={"tasks": [{"type": "ok"}, {"payload": 1}, {"type": "ok"}]}
    )
    assert response.status_code == 422
    assert "tasks.1.type" in (await response.get_json())["error"]["message"]
    assert mesh.db.sql("SELECT count(*) FROM tasks").fetchone()[0] == 0


async def test_refused_items_get_their_own_error_and_the_valid_ones_are_stored(mesh):
    await mesh.agent("solo", ["x"])
    dep = await mesh.submit(type="x")
    submitted = sample("mcs_tasks_submitted_total", type="x", priority="normal")
    refused = sample("mcs_batch_items_total", outcome="refused")
    body = await batch(
        mesh,
        [
            {"type": "x", "payload": "first"},
            {"type": "x", "depends_on": ["no-such-task"]},
            {"type": "x", "route": "nobody"},
            {"type": "x", "aggregate": "consensus"},
            {"type": "x", "run_at": "2030-01-01T00:00:00Z", "delay": 5},
            {"type": "x", "depends_on": [dep["id"]], "payload": "after"},
            {"type": "x", "route": "solo"},
        ],
    )
    results = body["results"]
    assert [r["status"] for r in results] == [201, 422, 422, 422, 422, 201, 201]
    assert [r.get("error", {}).get("code") for r in results] == [
        None,
        "unknown_dependency",
        "unknown_agent",
        "invalid_aggregate",
        "invalid_run_at",
        None,
        None,
    ]
    assert all(set(r["error"]) == {"code", "message"} and "task" not in r for r in results if r["status"] == 422)
    after = results[5]["task"]
    assert after["state"] == "blocked" and after["depends_on"] == [dep["id"]]
    stored = mesh.db.sql("SELECT count(*) FROM tasks").fetchone()[0]
    assert stored == 1 + 3  # the dependency and the three accepted items: a refused one left no row
    assert sample("mcs_tasks_submitted_total", type="x", priority="normal") - submitted == 3
    assert sample("mcs_batch_items_total", outcome="refused") - refused == 4


async def test_idempotency_keys_per_item_replay_like_single_submit(mesh):
    first = await batch(mesh, [{"type": "k", "idempotency_key": "a"}, {"type": "k", "idempotency_key": "b"}])
    ids = [r["task"]["id"] for r in first["results"]]
    # The same batch again: both replayed (200), the same tasks, nothing new stored.
    again = await batch(mesh, [{"type": "k", "idempotency_key": "a"}, {"type": "k", "idempotency_key": "b"}])
    assert [(r["status"], r["task"]["id"]) for r in again["results"]] == [(200, ids[0]), (200, ids[1])]
    # A key given to POST /v1/tasks as its header is the same key in a batch, and the other way round.
    response = await mesh.call("POST", "/v1/tasks", who="admin", json={"type": "k"}, headers={"Idempotency-Key": "c"})
    assert response.status_code == 201
    single = await response.get_json()
    mixed = await batch(
        mesh,
        [
            {"type": "k", "idempotency_key": "c"},  # replays the single submit
            {"type": "k", "payload": 2, "idempotency_key": "a"},  # same key, another body: refused
            {"type": "k", "idempotency_key": "d"},  # new
            {"type": "k", "idempotency_key": "d"},  # seen earlier in this very batch: replayed
        ],
    )
    got = mixed["results"]
    assert (got[0]["status"], got[0]["task"]["id"]) == (200, single["id"])
    assert (got[1]["status"], got[1]["error"]["code"]) == (422, "idempotency_key_reused")
    assert got[2]["status"] == 201 and (got[3]["status"], got[3]["task"]["id"]) == (200, got[2]["task"]["id"])
    replay = await mesh.call("POST", "/v1/tasks", who="admin", json={"type": "k"}, headers={"Idempotency-Key": "d"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.get_json())["id"] == got[2]["task"]["id"]
    assert mesh.db.sql("SELECT count(*) FROM tasks WHERE type = 'k'").fetchone()[0] == 4


async def test_each_task_spends_one_submit_token_and_the_rest_are_rate_limited(mesh):
    agent = await mesh.agent("submitter", ["r"])
    burst = mesh.settings.rate_submits_burst
    body = await batch(mesh, [{"type": "r", "payload": i} for i in range(burst + 5)], who=agent)
    statuses = [r["status"] for r in body["results"]]
    assert statuses[:burst] == [201] * burst
    assert statuses[burst:] == [429] * 5
    assert {r["error"]["code"] for r in body["results"][burst:]} == {"rate_limited"}
    count = mesh.db.sql("SELECT count(*) FROM tasks WHERE submitted_by = 'submitter'").fetchone()[0]
    assert count == burst


async def test_a_wrong_secret_is_a_401_for_the_whole_batch(mesh):
    response = await mesh.call(
        "POST",
        "/v1/tasks/batch",
        who={"X-Agent-ID": "nobody", "X-Agent-Secret": "wrong"},
        json={"tasks": [{"type": "x"}]},
    )
    assert response.status_code == 401
    assert mesh.db.sql("SELECT count(*) FROM tasks").fetchone()[0] == 0


@pytest.mark.parametrize("settings", [dict(quota_queued_tasks=5, rate_submits=0.0)], indirect=True)
async def test_the_queued_tasks_quota_counts_each_task_of_the_batch(mesh):
    agent = await mesh.agent("busy", ["q"])
    for _ in range(2):
        await mesh.submit(who=agent, type="q")
    body = await batch(mesh, [{"type": "q", "idempotency_key": f"k{i}"} for i in range(5)], who=agent)
    assert [r["status"] for r in body["results"]] == [201, 201, 201, 429, 429]
    assert {r["error"]["code"] for r in body["results"][3:]} == {"too_many_queued_tasks"}
    # At the quota, a replay still answers (it adds nothing); a new task does not.
    again = await batch(mesh, [{"type": "q", "idempotency_key": "k0"}, {"type": "q"}], who=agent)
    assert [r["status"] for r in again["results"]] == [200, 429]
    assert again["results"][0]["task"]["id"] == body["results"][0]["task"]["id"]
