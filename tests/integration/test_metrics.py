"""/metrics as Prometheus reads it: the mesh state from the database, and task counters that count
what committed, whichever process made the change."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mcs import effects
from mcs.engines import open_engine
from mcs.engines.sqlite.engine import Store
from mcs.state_metrics import MeshStateCollector, state_registry

pytestmark = pytest.mark.asyncio


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def scrape(mesh) -> str:
    response = await mesh.client.get("/metrics")
    assert response.status_code == 200
    return (await response.get_data()).decode()


async def test_metrics_show_the_queue_agents_and_memory_from_the_database(mesh):
    await mesh.agent("idle", ["nothing-matches"])
    submitted = [await mesh.submit(type="x", priority="urgent")]
    submitted += [await mesh.submit(type="x"), await mesh.submit(type="x")]
    await mesh.ok("PUT", "/v1/memory/mesh/a", who="admin", json={"value": 1})
    await mesh.ok("PUT", "/v1/memory/private:idle/b", who=mesh.last_agent, json={"value": 2})
    time.sleep(0.05)
    text = await scrape(mesh)
    assert value(text, "mcs_state_up") == 1
    assert value(text, "mcs_queue_depth", state="queued", priority="urgent") == 1
    assert value(text, "mcs_queue_depth", state="queued", priority="normal") == 2
    assert value(text, "mcs_queue_depth", state="claimed", priority="low") == 0  # every pair is there
    assert value(text, "mcs_queue_oldest_age_seconds", priority="normal") >= 0.05
    assert value(text, "mcs_queue_oldest_age_seconds", priority="low") == 0
    assert value(text, "mcs_agents", status="online") == 1
    assert value(text, "mcs_agent_online", agent="idle") == 1
    assert 0 <= value(text, "mcs_agent_last_seen_seconds", agent="idle") < 60
    assert value(text, "mcs_memory_keys", namespace="mesh") == 1
    assert value(text, "mcs_memory_keys", namespace="private:idle") == 1
    if mesh.db.kind == "sqlite":  # the file's size: PostgreSQL's disk is the server's
        assert value(text, "mcs_database_size_bytes", file="db") > 0
    else:
        assert value(text, "mcs_database_size_bytes", file="db") is None
    assert value(text, "mcs_tasks_submitted_total", type="x", priority="normal") >= 2
    # No task ids (or other unbounded values) in any label.
    assert not any(t["id"] in text for t in submitted)


async def test_the_state_is_cached_briefly(settings):
    store = open_engine(settings)
    store.migrate()
    collector = MeshStateCollector(store, cache_seconds=0.5)
    first = {m.name: m for m in collector.collect()}
    store.write(
        lambda c: c.execute(
            "INSERT INTO memory (ns, key, value, version, tags, updated_by, updated_at)"
            " VALUES ('mesh', 'k', '1', 1, '[]', 'admin', 0)"
        )
    )
    cached = {m.name: m for m in collector.collect()}
    assert cached["mcs_memory_keys"].samples == first["mcs_memory_keys"].samples
    time.sleep(0.6)
    fresh = {m.name: m for m in collector.collect()}
    assert [s.value for s in fresh["mcs_memory_keys"].samples] == [1]
    store.close()


@pytest.mark.sqlite_only  # a file that is not a SQLite database
async def test_an_unreadable_database_gives_state_up_0_not_a_failed_scrape(tmp_path):
    broken = tmp_path / "mcs.db"
    broken.write_bytes(b"this is not a SQLite database" * 100)
    store = Store(broken)
    text = generate_latest(state_registry(store)).decode()
    assert value(text, "mcs_state_up") == 0
    assert value(text, "mcs_database_size_bytes", file="db") == len(b"this is not a SQLite database" * 100)
    assert "mcs_queue_depth" not in text
    store.close()


def counted(event: str, task_type: str) -> float:
    return REGISTRY.get_sample_value(f"mcs_tasks_{event}_total", {"type": task_type, "priority": "normal"}) or 0.0


async def test_a_change_that_rolls_back_counts_nothing(settings):
    store = open_engine(settings)
    store.migrate()
    kind = f"rollback-{time.monotonic_ns()}"

    def fine(conn):
        effects.note("completed", kind, "normal")

    def broken(conn):
        effects.note("completed", kind, "normal")
        raise RuntimeError("this job's changes roll back")

    outcomes = store.write_batch([fine, broken, fine])
    assert isinstance(outcomes[1], RuntimeError)
    assert counted("completed", kind) == 2

    with pytest.raises(RuntimeError):
        store.write(broken)
    assert counted("completed", kind) == 2
    store.close()


async def test_a_lease_expired_by_the_watchdog_counts_as_retried_then_failed(mesh):
    who = await mesh.agent("sleepy", ["lease-count"])
    task = await mesh.submit(type="lease-count", claim_ttl=0.01, max_retries=1)
    retried, failed = counted("retried", "lease-count"), counted("failed", "lease-count")
    for attempt in (1, 2):
        await until_state(mesh, task["id"], "assigned")
        await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=who)
        time.sleep(0.05)
        assert task["id"] in mesh.sweep().expired_leases
        assert counted("retried", "lease-count") == retried + 1  # the first expiry only
        assert counted("failed", "lease-count") == failed + (attempt - 1)
    text = await scrape(mesh)
    assert value(text, "mcs_tasks_failed_recently", type="lease-count", priority="normal") == 1


async def until_state(mesh, task_id, state, timeout=5.0):
    deadline = time.monotonic() + timeout
    while (await mesh.task(task_id))["state"] != state:
        assert time.monotonic() < deadline, f"task never became {state}"
        mesh.dispatch()  # moves a retry whose backoff ran out back to the queue
        time.sleep(0.02)


async def test_fanout_children_count_as_tasks_so_completed_never_exceeds_submitted(mesh):
    kind = f"fan-{time.monotonic_ns()}"
    agents = [await mesh.agent(f"fan-{i}", [kind]) for i in range(2)]
    parent = await mesh.submit(type=kind, route="all")
    mesh.dispatch()
    for who in agents:
        claimed = await mesh.ok("POST", "/v1/tasks/claim", who=who, json={})
        token = claimed["claim_token"]
        await mesh.ok("POST", f"/v1/tasks/{claimed['id']}/complete", who=who, json={"claim_token": token, "result": 1})
    assert (await mesh.task(parent["id"]))["state"] == "completed"
    assert counted("submitted", kind) == 3 and counted("completed", kind) == 3
