"""API hygiene: every bad input gets the contract's JSON error, never a 500 or a traceback."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio


async def error_of(response):
    body = await response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in body["error"]["message"]
    return response.status_code, body["error"]["code"]


async def test_health_openapi_and_metrics(mesh):
    health = await mesh.ok("GET", "/healthz")
    assert health["status"] == "ok" and health["engine"] == mesh.db.kind
    if mesh.db.kind == "sqlite":
        assert tuple(map(int, health["sqlite_version"].split("."))) >= (3, 51, 3)
        assert health["engine_version"] == health["sqlite_version"]
    else:
        assert int(health["engine_version"].split(".")[0]) >= 15 and "sqlite_version" not in health
    spec = await mesh.ok("GET", "/openapi.json")
    assert "/v1/tasks" in spec["paths"] and "/v1/agents/register" in spec["paths"]
    metrics = await mesh.client.get("/metrics")
    assert b"mcs_http_requests_total" in await metrics.get_data()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "bad_json"),
        (b"\xff\xfe{}", 400, "bad_json"),
        (b'{"type": "x", "payload": NaN}', 400, "bad_json"),
        (b'{"type": "x", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "bad_json"),
        (b'{"type": "x", "payload": ' + b"[" * 70 + b"]" * 70 + b"}", 400, "bad_json"),
        (b'{"type": "x", "max_retries": true}', 422, "validation_error"),
        (b'{"type": 5}', 422, "validation_error"),
        (b'{"type": "x", "priority": "asap"}', 422, "validation_error"),
        (b'{"type": "x", "max_retries": -1}', 422, "validation_error"),
        (b'{"type": "x", "surprise": 1}', 422, "validation_error"),
        (b'{"type": "x", "route": "../etc"}', 422, "validation_error"),
        (b"[1, 2]", 422, "validation_error"),
        (b"", 422, "validation_error"),
    ],
)
async def test_bad_submissions(mesh, body, status, code):
    response = await mesh.call(
        "POST", "/v1/tasks", who="admin", data=body, headers={"Content-Type": "application/json"}
    )
    assert await error_of(response) == (status, code)
    assert (await mesh.ok("GET", "/v1/tasks", who="admin"))["tasks"] == []


async def test_oversized_body_is_413(mesh):
    big = b'{"type": "x", "payload": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    response = await mesh.call("POST", "/v1/tasks", who="admin", data=big, headers={"Content-Type": "application/json"})
    assert await error_of(response) == (413, "payload_too_large")


async def test_unknown_route_and_method(mesh):
    assert await error_of(await mesh.call("GET", "/v2/nothing")) == (404, "not_found")
    assert await error_of(await mesh.call("PUT", "/v1/tasks", who="admin")) == (405, "method_not_allowed")
    assert await error_of(await mesh.call("GET", "/v1/tasks/nope", who="admin")) == (404, "not_found")


async def test_unknown_agent_and_wrong_secret_look_the_same(mesh):
    await mesh.agent("a", ["x"])
    unknown = await mesh.call("GET", "/v1/tasks", who={"X-Agent-ID": "ghost", "X-Agent-Secret": "s"})
    wrong = await mesh.call("GET", "/v1/tasks", who={"X-Agent-ID": "a", "X-Agent-Secret": "s"})
    assert (unknown.status_code, await unknown.get_json()) == (wrong.status_code, await wrong.get_json())
    assert unknown.status_code == 401
    assert await error_of(await mesh.call("GET", "/v1/tasks")) == (401, "unauthorized")
    bad_admin = await mesh.call("GET", "/v1/tasks", headers={"Authorization": "Bearer nope"})
    assert await error_of(bad_admin) == (401, "unauthorized")


async def test_admin_only_and_agent_only_endpoints(mesh):
    a = await mesh.agent("a", ["x"])
    assert await error_of(await mesh.call("POST", "/v1/agents", who=a, json={"name": "b"})) == (403, "admin_only")
    register = await mesh.call("POST", "/v1/agents/register", who="admin", json={"capabilities": []})
    assert await error_of(register) == (403, "agent_only")


async def test_agent_lifecycle_and_secrets_stored_only_as_hashes(mesh):
    created = await mesh.ok(
        "POST", "/v1/agents", who="admin", json={"name": "ocasia", "capabilities": ["review", "shell"]}, status=201
    )
    assert created["secret"] and created["webhook_secret"].startswith("whsec_")
    dup = await mesh.call("POST", "/v1/agents", who="admin", json={"name": "ocasia"})
    assert await error_of(dup) == (409, "agent_exists")
    stored = mesh.db.sql("SELECT secret_hash FROM agents WHERE name = 'ocasia'").fetchone()[0]
    assert created["secret"] not in stored and stored.startswith("sha256:")
    old = {"X-Agent-ID": "ocasia", "X-Agent-Secret": created["secret"]}
    registered = await mesh.ok(
        "POST",
        "/v1/agents/register",
        who=old,
        json={"capabilities": ["review", "shell"], "notify_url": "http://127.0.0.1:1/x"},
    )
    assert registered["status"] == "online" and registered["expires_at"]
    listed = (await mesh.ok("GET", "/v1/agents", who=old))["agents"]
    assert [(a["name"], a["status"], a["capabilities"]) for a in listed] == [("ocasia", "online", ["review", "shell"])]
    assert "secret" not in str(listed)
    rotated = await mesh.ok("POST", "/v1/agents/ocasia/rotate", who="admin")
    assert (await mesh.call("GET", "/v1/agents", who=old)).status_code == 401
    new = {"X-Agent-ID": "ocasia", "X-Agent-Secret": rotated["secret"]}
    await mesh.ok("GET", "/v1/agents", who=new)
    deleted = await mesh.ok("DELETE", "/v1/agents/ocasia", who="admin")
    assert deleted["deleted"] == "ocasia"
    assert (await mesh.call("GET", "/v1/agents", who=new)).status_code == 401
    assert await error_of(await mesh.call("DELETE", "/v1/agents/ocasia", who="admin")) == (404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"capabilities": "review"},
        {"capabilities": [], "notify_url": "ftp://x"},
        {"capabilities": [], "ttl": -5},
        {"capabilities": ["bad cap"]},
    ],
)
async def test_bad_registrations(mesh, body):
    a = await mesh.agent("a", ["x"])
    response = await mesh.call("POST", "/v1/agents/register", who=a, json=body)
    assert await error_of(response) == (422, "validation_error")
    assert (await mesh.ok("GET", "/v1/agents/a", who=a))["capabilities"] == ["x"]


async def test_lone_surrogates_are_stored_and_shown_escaped(mesh):
    task = await mesh.call(
        "POST",
        "/v1/tasks",
        who="admin",
        data=b'{"type": "x", "payload": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert task.status_code == 201
    assert b"\\ud800" in await task.get_data()
    listed = await mesh.ok("GET", "/v1/tasks", who="admin")
    assert listed["tasks"][0]["payload"] == "\ud800"


async def test_cursors_out_of_range_are_400(mesh):
    import base64

    huge = base64.urlsafe_b64encode(b"s" + b"9" * 30).decode().rstrip("=")
    assert await error_of(await mesh.call("GET", f"/v1/tasks?cursor={huge}", who="admin")) == (400, "bad_cursor")


@pytest.mark.parametrize("name", ["admin", "Admin", "any", "all", "dispatcher"])
async def test_reserved_agent_names(mesh, name):
    response = await mesh.call("POST", "/v1/agents", who="admin", json={"name": name})
    assert await error_of(response) == (422, "validation_error")


async def test_admin_routes_answer_a_wrong_agent_secret_with_401_and_a_real_agent_with_403(mesh):
    """As everywhere else: an unknown agent or a wrong secret is a 401; only a verified agent is refused (403)."""
    real = await mesh.agent("worker", ["x"])
    for who in ({"X-Agent-ID": "worker", "X-Agent-Secret": "wrong"}, {"X-Agent-ID": "ghost", "X-Agent-Secret": "x"}):
        for method, path, body in (
            ("POST", "/v1/agents", {"name": "new"}),
            ("POST", "/v1/agents/worker/rotate", None),
            ("DELETE", "/v1/agents/worker", None),
        ):
            response = await mesh.call(method, path, who=who, json=body)
            assert response.status_code == 401, (method, path, await response.get_json())
    response = await mesh.call("DELETE", "/v1/agents/worker", who=real)
    assert response.status_code == 403 and (await response.get_json())["error"]["code"] == "admin_only"
    assert (await mesh.ok("GET", "/v1/agents/worker", who="admin"))["name"] == "worker"
