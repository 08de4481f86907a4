"""/openapi.json describes the api as it answers: the quick checks here; tests/acceptance/test_openapi_fuzz.py
holds a real api to the whole document with generated requests."""

from __future__ import annotations

from typing import Any


async def document(mesh: Any) -> dict[str, Any]:
    response = await mesh.client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = await response.get_json()
    return body


async def test_paths_keep_every_parameter(mesh):
    paths = (await document(mesh))["paths"]
    assert "/v1/memory/{ns}/{key}" in paths and "/v1/memory/{key}" not in paths
    for path, ops in paths.items():
        for method, op in ops.items():
            names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, (method, path)


async def test_every_operation_documents_its_errors_in_the_one_error_shape_and_who_may_call_it(mesh):
    doc = await document(mesh)
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
    assert set(doc["components"]["securitySchemes"]) == {"admin", "agentId", "agentSecret"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            statuses = {int(s) for s in op["responses"]}
            assert any(s < 400 for s in statuses) or path.endswith("{key}"), (method, path)  # POST .../{key}: 405
            for status in (s for s in statuses if s >= 400 and path != "/healthz"):  # its 503 is a Health
                schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            if path.startswith("/v1/") and not (method == "post" and path.endswith("{key}")):
                assert 401 in statuses and op["security"], (method, path)


async def test_a_documented_error_is_what_the_api_answers(mesh):
    doc = await document(mesh)
    response = await mesh.client.get("/v1/tasks/nope", headers=mesh.admin)
    assert response.status_code == 404 and "404" in doc["paths"]["/v1/tasks/{task_id}"]["get"]["responses"]
    body = await response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert "204" in doc["paths"]["/v1/memory/{ns}/{key}"]["delete"]["responses"]
    assert "content" not in doc["paths"]["/v1/memory/{ns}/{key}"]["delete"]["responses"]["204"]
