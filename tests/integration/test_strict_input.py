"""Numbers in request bodies: never a non-finite one stored, never a type guessed (issue 10, item 6)."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_api import error_of

pytestmark = pytest.mark.asyncio


async def raw(mesh, method, path, body: bytes, who="admin"):
    return await mesh.call(method, path, who=who, data=body, headers={"Content-Type": "application/json"})


async def listing_is_json(mesh) -> list:
    """Every list page must stay valid JSON whatever was submitted before (strict parse: no Infinity)."""
    response = await mesh.call("GET", "/v1/tasks", who="admin")
    text = (await response.get_data()).decode()
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a list page"))["tasks"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "x", "payload": 1e999}',
        b'{"type": "x", "payload": -1e999}',
        b'{"type": "x", "payload": {"deep": [1, {"n": 2.5e400}]}}',
        b'{"type": "x", "claim_ttl": 1e999}',
        b'{"type": "x", "payload": 1' + b"0" * 5000 + b"}",  # past Python's 4300-digit integer limit
    ],
)
async def test_numbers_that_cannot_be_json_again_are_400(mesh, body):
    assert await error_of(await raw(mesh, "POST", "/v1/tasks", body)) == (400, "bad_json")
    assert await listing_is_json(mesh) == []


async def test_non_finite_numbers_are_400_on_every_body(mesh):
    a = await mesh.agent("a", ["x"])
    cases = [
        ("PUT", "/v1/memory/mesh/k", b'{"value": {"n": 1e999}}'),
        ("PUT", "/v1/memory/mesh/k", b'{"value": 1, "ttl": 1e999}'),
        ("POST", "/v1/memory/mesh/_bulk", b'{"put": [{"key": "k", "value": [-1e999]}]}'),
        ("POST", "/v1/agents/register", b'{"capabilities": ["x"], "ttl": 1e999}'),
        ("POST", "/v1/tasks/claim", b'{"wait": 1e999}'),
    ]
    for method, path, body in cases:
        assert await error_of(await raw(mesh, method, path, body, who=a)) == (400, "bad_json"), body
    assert (await mesh.ok("GET", "/v1/memory/mesh", who=a))["items"] == []


async def test_big_and_small_finite_numbers_are_kept_exactly(mesh):
    big = int("9" * 300)
    numbers = b'"tiny": 5e-324, "max": 1.7976931348623157e308'
    body = b'{"type": "x", "payload": {"big": ' + str(big).encode() + b", " + numbers + b"}}"
    response = await raw(mesh, "POST", "/v1/tasks", body)
    assert response.status_code == 201, await response.get_data()
    [task] = await listing_is_json(mesh)
    assert task["payload"] == {"big": big, "tiny": 5e-324, "max": 1.7976931348623157e308}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "x", "claim_ttl": True},
        {"type": "x", "claim_ttl": "10"},
        {"type": "x", "max_retries": "3"},
        {"type": "x", "max_retries": 3.0},
        {"type": "x", "max_retries": False},
        {"type": "x", "priority": 1},
        {"type": "x", "capabilities": "x"},
        {"type": "x", "route": 5},
        {"type": 5},
    ],
)
async def test_submit_numbers_and_choices_are_not_coerced(mesh, body):
    assert await error_of(await mesh.call("POST", "/v1/tasks", who="admin", json=body)) == (422, "validation_error")
    assert await listing_is_json(mesh) == []


async def test_whole_numbers_are_still_valid_where_a_float_goes(mesh):
    a = await mesh.agent("a", ["x"], ttl=60)
    task = await mesh.submit(type="x", claim_ttl=10, max_retries=2)
    assert (task["claim_ttl"], task["max_retries"]) == (10.0, 2)
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=a, json={"wait": 0})
    extend = {"claim_token": claimed["claim_token"], "ttl": 30}
    extended = await mesh.ok("POST", f"/v1/tasks/{task['id']}/extend", who=a, json=extend)
    assert extended["lease_expires_at"]
    await mesh.ok("PUT", "/v1/memory/mesh/k", who=a, json={"value": 1, "ttl": 60})


async def test_agent_and_memory_bodies_are_strict(mesh):
    a = await mesh.agent("a", ["x"])
    task = await mesh.submit(type="x")
    claimed = await mesh.ok("POST", "/v1/tasks/claim", who=a, json={})
    token = claimed["claim_token"]
    cases = [
        ("POST", "/v1/agents", "admin", {"name": 5}),
        ("POST", "/v1/agents", "admin", {"name": "b", "capabilities": "x"}),
        ("POST", "/v1/agents/register", a, {"capabilities": ["x"], "ttl": True}),
        ("POST", "/v1/agents/register", a, {"capabilities": ["x"], "ttl": "60"}),
        ("POST", "/v1/agents/register", a, {"capabilities": ["x"], "concurrency": "2"}),
        ("POST", "/v1/agents/register", a, {"capabilities": ["x"], "concurrency": 2.0}),
        ("POST", "/v1/tasks/claim", a, {"wait": True}),
        ("POST", "/v1/tasks/claim", a, {"wait": "5"}),
        ("POST", f"/v1/tasks/{task['id']}/extend", a, {"claim_token": token, "ttl": "30"}),
        ("POST", f"/v1/tasks/{task['id']}/extend", a, {"claim_token": 5}),
        ("POST", f"/v1/tasks/{task['id']}/fail", a, {"claim_token": token, "error": "x", "retryable": "false"}),
        ("POST", f"/v1/tasks/{task['id']}/fail", a, {"claim_token": token, "error": "x", "retryable": 0}),
        ("POST", f"/v1/tasks/{task['id']}/reject", a, {"claim_token": token, "reason": 5}),
        ("PUT", "/v1/memory/mesh/k", a, {"value": 1, "ttl": True}),
        ("PUT", "/v1/memory/mesh/k", a, {"value": 1, "ttl": "60"}),
        ("PUT", "/v1/memory/mesh/k", a, {"value": 1, "tags": [1]}),
        ("POST", "/v1/memory/mesh/_bulk", a, {"put": [{"key": "k", "value": 1, "if_match": "1"}]}),
        ("POST", "/v1/memory/mesh/_bulk", a, {"put": [{"key": "k", "value": 1, "ttl": True}]}),
        ("POST", "/v1/memory/mesh/_bulk", a, {"get": [1]}),
    ]
    for method, path, who, body in cases:
        response = await mesh.call(method, path, who=who, json=body)
        assert await error_of(response) == (422, "validation_error"), body
    # nothing changed: the claim holds, no key was written, the agent kept its registration
    assert (await mesh.task(task["id"]))["state"] == "claimed"
    assert (await mesh.ok("GET", "/v1/memory/mesh", who=a))["items"] == []
    assert [x["name"] for x in (await mesh.ok("GET", "/v1/agents", who=a))["agents"]] == ["a"]


async def test_query_strings_are_still_parsed(mesh):
    for _ in range(3):
        await mesh.submit(type="x")
    page = await mesh.ok("GET", "/v1/tasks?limit=2", who="admin")
    assert len(page["tasks"]) == 2 and page["next_cursor"]
    for key in ("a", "b"):
        await mesh.ok("PUT", f"/v1/memory/mesh/{key}", who="admin", json={"value": 1})
    assert len((await mesh.ok("GET", "/v1/memory/mesh?limit=1", who="admin"))["items"]) == 1
    for name in ("a", "b"):
        await mesh.ok("POST", "/v1/agents", who="admin", json={"name": name}, status=201)
    agents = await mesh.ok("GET", "/v1/agents?limit=1", who="admin")
    assert len(agents["agents"]) == 1 and agents["next_cursor"]
    bad = await mesh.call("GET", "/v1/tasks?limit=two", who="admin")
    assert await error_of(bad) == (422, "validation_error")
