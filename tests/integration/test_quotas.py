"""Per-caller rate limits and quotas (issue 10, item 7): 429 with Retry-After, the admin exempt, counted."""

from __future__ import annotations

import re
import time

import pytest
from sqlite_utils import Database

from mcs.config import Settings
from mcs.engines.sql import tasks as tasks_store
from mcs.engines.sqlite import migrations
from mcs.engines.sqlite.engine import Store
from mcs.state import memory as memory_store
from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.test_api import error_of

LIMITS = {"rate_submits": 0.0, "quota_queued_tasks": 0, "quota_memory_bytes": 0}


@pytest.fixture
def settings(tmp_path, request, database_url):
    """Every limit off unless the test names some (parametrize "settings" indirectly), or "defaults"."""
    return Settings.from_env(
        {},
        db=tmp_path / "mcs.db",
        admin_token=ADMIN_TOKEN,
        synchronous="NORMAL",
        database_url=database_url,
        **({} if getattr(request, "param", None) == "defaults" else LIMITS | getattr(request, "param", {})),
    )


async def refused(response, code):
    assert await error_of(response) == (429, code)
    assert int(response.headers["Retry-After"]) >= 1


async def refusals(mesh) -> dict[str, float]:
    text = (await (await mesh.client.get("/metrics")).get_data()).decode()
    found = re.findall(r'^mcs_quota_refusals_total\{quota="(\w+)"\} (\S+)$', text, re.M)
    return {quota: float(value) for quota, value in found}


async def submit(mesh, who, **body):
    return await mesh.call("POST", "/v1/tasks", who=who, json={"type": "x"} | body)


# ---------------------------------------------------------------- submit rate


@pytest.mark.parametrize("settings", [dict(rate_submits=0.001, rate_submits_burst=3)], indirect=True)
@pytest.mark.asyncio
async def test_submits_past_the_burst_are_429_per_agent_and_the_admin_is_exempt(mesh):
    before = await refusals(mesh)  # the counters are the process's: count this test's own
    a = await mesh.agent("a", ["x"])
    b = await mesh.agent("b", ["x"])
    # someone sending a's name with a wrong secret spends none of a's allowance
    for _ in range(5):
        forged = await submit(mesh, {"X-Agent-ID": "a", "X-Agent-Secret": "guess"})
        assert forged.status_code == 401
    for _ in range(3):
        assert (await submit(mesh, a)).status_code == 201
    await refused(await submit(mesh, a), "rate_limited")
    assert (await submit(mesh, b)).status_code == 201
    for _ in range(10):
        assert (await submit(mesh, "admin")).status_code == 201
    assert (await refusals(mesh))["submit_rate"] - before["submit_rate"] == 1
    listed = await mesh.ok("GET", "/v1/tasks?limit=500", who="admin")
    assert len(listed["tasks"]) == 3 + 1 + 10


# ---------------------------------------------------------------- queued tasks


@pytest.mark.parametrize("settings", [dict(quota_queued_tasks=2)], indirect=True)
@pytest.mark.asyncio
async def test_unfinished_tasks_per_submitter_are_capped_until_some_finish(mesh):
    before = await refusals(mesh)  # the counters are the process's: count this test's own
    a = await mesh.agent("a", ["x"])
    first = await submit(mesh, a, payload=1)
    assert first.status_code == 201
    assert (await submit(mesh, a, payload=2)).status_code == 201
    await refused(await submit(mesh, a, payload=3), "too_many_queued_tasks")
    assert (await submit(mesh, "admin")).status_code == 201  # exempt
    key = {"Idempotency-Key": "k1"}
    again = await mesh.call("POST", "/v1/tasks", who=a, json={"type": "x", "payload": 1}, headers=key)
    await refused(again, "too_many_queued_tasks")  # a key never accepted is a new task like any other
    # finish one: room for one more
    task = await first.get_json()
    claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=a)
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/complete", who=a, json={"claim_token": claimed["claim_token"]})
    accepted = await mesh.call("POST", "/v1/tasks", who=a, json={"type": "x", "payload": 1}, headers=key)
    assert accepted.status_code == 201
    await refused(await submit(mesh, a, payload=4), "too_many_queued_tasks")
    # a retried submit of an accepted task replays, over quota or not
    replay = await mesh.call("POST", "/v1/tasks", who=a, json={"type": "x", "payload": 1}, headers=key)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert (await refusals(mesh))["queued_tasks"] - before["queued_tasks"] == 3


@pytest.mark.parametrize("settings", [dict(quota_queued_tasks=2)], indirect=True)
@pytest.mark.asyncio
async def test_a_fanout_counts_once_whatever_its_children(mesh):
    a = await mesh.agent("a", ["x"])
    for name in ("r1", "r2", "r3"):
        await mesh.agent(name, ["review"])
    parent = await mesh.ok("POST", "/v1/tasks", who=a, json={"type": "review", "route": "all"}, status=201)
    mesh.dispatch()
    assert len((await mesh.task(parent["id"]))["children"]) == 3
    assert (await submit(mesh, a)).status_code == 201
    await refused(await submit(mesh, a), "too_many_queued_tasks")


@pytest.mark.sqlite_only  # EXPLAIN QUERY PLAN
@pytest.mark.asyncio
async def test_the_queued_count_uses_its_index(mesh):
    sql = "EXPLAIN QUERY PLAN " + tasks_store.UNFINISHED_SQL
    plan = mesh.db.sql(sql, ("a", *tasks_store.NON_TERMINAL)).fetchall()
    assert any("USING INDEX tasks_submitter" in row[3] for row in plan), [tuple(r) for r in plan]


# ---------------------------------------------------------------- memory bytes


@pytest.mark.parametrize("settings", [dict(quota_memory_bytes=1000)], indirect=True)
@pytest.mark.asyncio
async def test_memory_namespace_bytes_are_capped_and_shrinking_is_always_allowed(mesh):
    before = await refusals(mesh)  # the counters are the process's: count this test's own
    a = await mesh.agent("a", ["x"])
    big = "v" * 600
    await mesh.ok("PUT", "/v1/memory/mesh/one", who=a, json={"value": big})
    await refused(await mesh.call("PUT", "/v1/memory/mesh/two", who=a, json={"value": big}), "memory_quota_exceeded")
    assert (await mesh.call("GET", "/v1/memory/mesh/two", who=a)).status_code == 404
    # another namespace has its own quota; the admin is exempt
    await mesh.ok("PUT", "/v1/memory/agent:a/two", who=a, json={"value": big})
    await mesh.ok("PUT", "/v1/memory/mesh/admin", who="admin", json={"value": big})
    # over the quota now (the admin's key): a write that grows it is refused, one that shrinks it passes
    await refused(await mesh.call("PUT", "/v1/memory/mesh/x", who=a, json={"value": 1}), "memory_quota_exceeded")
    await mesh.ok("PUT", "/v1/memory/mesh/one", who=a, json={"value": "short"})
    bulk = {"put": [{"key": "k1", "value": 1}, {"key": "k2", "value": big}]}
    await refused(await mesh.call("POST", "/v1/memory/mesh/_bulk", who=a, json=bulk), "memory_quota_exceeded")
    assert (await mesh.call("GET", "/v1/memory/mesh/k1", who=a)).status_code == 404  # the whole bulk is undone
    assert (await mesh.call("DELETE", "/v1/memory/mesh/admin", who="admin")).status_code == 204
    await mesh.ok("POST", "/v1/memory/mesh/_bulk", who=a, json=bulk)
    assert (await refusals(mesh))["memory_bytes"] - before["memory_bytes"] == 3


@pytest.mark.parametrize("settings", [dict(quota_memory_bytes=1000)], indirect=True)
@pytest.mark.asyncio
async def test_expired_keys_give_their_bytes_back_when_purged(mesh):
    a = await mesh.agent("a", ["x"])
    await mesh.ok("PUT", "/v1/memory/mesh/temp", who=a, json={"value": "v" * 900, "ttl": 0.05})
    more = {"value": "v" * 200}
    # expired or not, its bytes stay on disk until purged
    await refused(await mesh.call("PUT", "/v1/memory/mesh/k", who=a, json=more), "memory_quota_exceeded")
    mesh.store.write(memory_store.purge_expired, now=time.time() + 1)  # the watchdog's sweep, one pass
    await mesh.ok("PUT", "/v1/memory/mesh/k", who=a, json=more)


@pytest.mark.sqlite_only  # SQLite's migration 0008 on an old file
def test_an_existing_memory_table_is_counted_when_0008_applies(tmp_path):
    store = Store(tmp_path / "old.db")
    db = Database(store.conn, recursive_triggers=False, execute_plugins=False)
    migrations.migrations.apply(db, stop_before="0008_quotas")
    for ns, key, value in [("mesh", "a", '"xyz"'), ("mesh", "bb", "1"), ("agent:x", "k", '"é"')]:
        store.conn.execute(
            "INSERT INTO memory (ns, key, value, version, updated_by, updated_at) VALUES (?, ?, ?, 1, 'x', 0)",
            (ns, key, value),
        )
    assert "0008_quotas" in store.migrate()
    used = dict(store.conn.execute("SELECT ns, bytes FROM memory_usage").fetchall())
    assert used == {"mesh": 1 + 5 + 2 + 1, "agent:x": 1 + 4}
    store.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("settings", ["defaults"], indirect=True)
async def test_the_issue_attack_with_default_settings(mesh):
    """One agent sending 150 tasks of 100 KB as fast as it can: the burst goes through, the rest is 429."""
    a = await mesh.agent("a", ["x"])
    defaults = Settings()
    payload = "p" * 100_000
    started = time.monotonic()
    statuses = [(await submit(mesh, a, payload=payload)).status_code for _ in range(150)]
    elapsed = time.monotonic() - started
    accepted = statuses.count(201)
    assert set(statuses) <= {201, 429}
    # the burst, then what the rate refilled while the loop ran (on a normal machine far below 150)
    assert defaults.rate_submits_burst <= accepted <= defaults.rate_submits_burst + defaults.rate_submits * elapsed + 1
