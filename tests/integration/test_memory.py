"""Shared memory through the app on a real SQLite file: validation, TTL, tags, cursor, conditions, sizes."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.asyncio


async def error(response):
    body = await response.get_json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]["code"]


@pytest.mark.parametrize(
    "ns",
    [
        "Private:a",
        "agent:",
        "private:",
        "agent:..",
        "agent:../x",
        "agent:a:b",
        "shared",
        "MESH",
        "agent:-a",
        "agent%3A..%2Fx",
        "private:%2E%2E",
        "mesh%00",
    ],
)
async def test_malformed_namespaces_are_400(mesh, ns):
    await mesh.agent("a", [])
    for method, path, body in (
        ("GET", f"/v1/memory/{ns}/k", None),
        ("PUT", f"/v1/memory/{ns}/k", {"value": 1}),
        ("GET", f"/v1/memory/{ns}", None),
        ("POST", f"/v1/memory/{ns}/_bulk", {}),
    ):
        response = await mesh.call(method, path, who="admin", json=body)
        assert await error(response) == (400, "bad_namespace"), (method, path)


async def test_namespaces_of_agents_that_do_not_exist_are_400_for_writes(mesh):
    for ns in ("agent:ghost", "private:ghost"):
        response = await mesh.call("PUT", f"/v1/memory/{ns}/k", who="admin", json={"value": 1})
        assert await error(response) == (400, "bad_namespace")


async def test_keys(mesh):
    ok = await mesh.ok("PUT", "/v1/memory/mesh/reviews/cf-cli/2026-11.json", who="admin", json={"value": [1]})
    assert ok["key"] == "reviews/cf-cli/2026-11.json"
    got = await mesh.ok("GET", "/v1/memory/mesh/reviews/cf-cli/2026-11.json", who="admin")
    assert got["value"] == [1]
    unicode = await mesh.ok("PUT", "/v1/memory/mesh/caf%C3%A9%20%E2%9C%93", who="admin", json={"value": 1})
    assert unicode["key"] == "café ✓"
    for bad in ("a%0Ab", "tab%09", "x" * 513):
        response = await mesh.call("PUT", f"/v1/memory/mesh/{bad}", who="admin", json={"value": 1})
        assert await error(response) == (400, "bad_key")
    assert (await mesh.ok("PUT", f"/v1/memory/mesh/{'y' * 512}", who="admin", json={"value": 1}))["version"] == 1


async def test_values_of_any_json_type_up_to_the_limit(mesh):
    for value in (None, 0, 1.5, "s", [1, {"a": None}], {"nested": {"deep": [True]}}):
        await mesh.ok("PUT", "/v1/memory/mesh/v", who="admin", json={"value": value})
        assert (await mesh.ok("GET", "/v1/memory/mesh/v", who="admin"))["value"] == value
    big = "a" * (256 * 1024)
    response = await mesh.call("PUT", "/v1/memory/mesh/big", who="admin", json={"value": big})
    assert await error(response) == (413, "value_too_large")
    missing = await mesh.call("PUT", "/v1/memory/mesh/nothing", who="admin", json={"ttl": 5})
    assert await error(missing) == (422, "validation_error")


async def test_versions_conditions_and_audit(mesh):
    a = await mesh.agent("a", [])
    first = await mesh.ok("PUT", "/v1/memory/mesh/lock", who=a, json={"value": "mine"})
    assert (first["version"], first["updated_by"]) == (1, "a")
    taken = await mesh.call(
        "PUT", "/v1/memory/mesh/lock", who="admin", json={"value": "x"}, headers={"If-None-Match": "*"}
    )
    assert await error(taken) == (412, "key_exists")
    stale = await mesh.call("PUT", "/v1/memory/mesh/lock", who="admin", json={"value": "x"}, headers={"If-Match": "7"})
    assert await error(stale) == (412, "version_mismatch")
    second = await mesh.call(
        "PUT", "/v1/memory/mesh/lock", who="admin", json={"value": "x"}, headers={"If-Match": '"1"'}
    )
    assert second.status_code == 200 and second.headers["ETag"] == '"2"'
    body = await second.get_json()
    assert (body["version"], body["updated_by"]) == (2, "admin") and body["updated_at"]
    bad = await mesh.call("PUT", "/v1/memory/mesh/lock", who="admin", json={"value": 1}, headers={"If-Match": "soon"})
    assert await error(bad) == (400, "bad_if_match")
    wrong_delete = await mesh.call("DELETE", "/v1/memory/mesh/lock", who="admin", headers={"If-Match": "1"})
    assert wrong_delete.status_code == 412
    assert (
        await mesh.call("DELETE", "/v1/memory/mesh/lock", who="admin", headers={"If-Match": "2"})
    ).status_code == 204
    gone = await mesh.call("GET", "/v1/memory/mesh/lock", who="admin")
    assert await error(gone) == (404, "no_such_key")
    assert (await mesh.call("DELETE", "/v1/memory/mesh/lock", who="admin")).status_code == 404


async def test_ttl_expires_at_once_and_the_watchdog_purges(mesh):
    await mesh.ok("PUT", "/v1/memory/mesh/short", who="admin", json={"value": 1, "ttl": 0.1})
    await mesh.ok("PUT", "/v1/memory/mesh/long", who="admin", json={"value": 2, "ttl": 3600})
    assert (await mesh.ok("GET", "/v1/memory/mesh/short", who="admin"))["expires_at"]
    await asyncio.sleep(0.15)
    assert (await mesh.call("GET", "/v1/memory/mesh/short", who="admin")).status_code == 404  # before any purge
    listed = await mesh.ok("GET", "/v1/memory/mesh", who="admin")
    assert [i["key"] for i in listed["items"]] == ["long"]
    again = await mesh.call(
        "PUT", "/v1/memory/mesh/short", who="admin", json={"value": 3}, headers={"If-None-Match": "*"}
    )
    assert again.status_code == 200 and (await again.get_json())["version"] == 1  # an expired key is absent
    await mesh.ok("PUT", "/v1/memory/mesh/gone", who="admin", json={"value": 1, "ttl": 0.05})
    await asyncio.sleep(0.1)
    assert mesh.sweep().purged_memory == 1
    assert mesh.db.sql("SELECT count(*) FROM memory WHERE key = 'gone'").fetchone()[0] == 0


async def test_list_by_prefix_and_tag_with_a_stable_cursor(mesh):
    for i in range(7):
        tags = ["even"] if i % 2 == 0 else ["odd"]
        await mesh.ok("PUT", f"/v1/memory/mesh/jobs/{i}", who="admin", json={"value": i, "tags": tags})
    await mesh.ok("PUT", "/v1/memory/mesh/other", who="admin", json={"value": 0, "tags": ["even"]})
    seen, cursor = [], None
    while True:
        page = await mesh.ok(
            "GET", "/v1/memory/mesh?prefix=jobs/&limit=3" + (f"&cursor={cursor}" if cursor else ""), who="admin"
        )
        assert all("value" not in i for i in page["items"])
        seen += [i["key"] for i in page["items"]]
        if page["items"] and cursor is None:  # a key written mid-listing before the cursor does not shift pages
            await mesh.ok("PUT", "/v1/memory/mesh/jobs/00", who="admin", json={"value": 0})
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"jobs/{i}" for i in range(7)]
    even = await mesh.ok("GET", "/v1/memory/mesh?tag=even", who="admin")
    assert [i["key"] for i in even["items"]] == ["jobs/0", "jobs/2", "jobs/4", "jobs/6", "other"]
    bad = await mesh.call("GET", "/v1/memory/mesh?cursor=%%%", who="admin")
    assert bad.status_code in (400, 422)


async def test_bulk_reads_before_writes_in_one_transaction(mesh):
    await mesh.ok("PUT", "/v1/memory/mesh/a", who="admin", json={"value": "old"})
    result = await mesh.ok(
        "POST",
        "/v1/memory/mesh/_bulk",
        who="admin",
        json={
            "get": ["a", "missing"],
            "put": [{"key": "a", "value": "new", "tags": ["t"]}, {"key": "b", "value": 2, "if_none_match": "*"}],
            "delete": ["nothing-here"],
        },
    )
    assert [g["found"] for g in result["get"]] == [True, False] and result["get"][0]["value"] == "old"
    assert [p["version"] for p in result["put"]] == [2, 1]
    assert result["delete"] == [{"key": "nothing-here", "deleted": False}]
    refused = await mesh.call(
        "POST",
        "/v1/memory/mesh/_bulk",
        who="admin",
        json={
            "put": [{"key": "c", "value": 1}, {"key": "b", "value": 3, "if_none_match": "*"}],
        },
    )
    assert refused.status_code == 412
    assert (await mesh.call("GET", "/v1/memory/mesh/c", who="admin")).status_code == 404
    bad_key = await mesh.call(
        "POST", "/v1/memory/mesh/_bulk", who="admin", json={"put": [{"key": "ok", "value": 1}], "delete": ["bad\nkey"]}
    )
    assert await error(bad_key) == (400, "bad_key")
    assert (await mesh.call("GET", "/v1/memory/mesh/ok", who="admin")).status_code == 404
