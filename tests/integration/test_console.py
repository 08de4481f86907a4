"""The web console's login: the admin token becomes an HttpOnly SameSite=Strict session cookie that the REST
API accepts as the admin, state-changing requests need the session's CSRF token, the console's actions are
audited as the console's, a wrong token is throttled, and logout ends the session."""

from __future__ import annotations

import re
from typing import Any

from mcs.api import console, create_app
from mcs.api.auth import credentials
from mcs.engines import open_engine
from mcs.state import console as console_store

from .conftest import ADMIN_TOKEN, Mesh


async def _login(client: Any) -> tuple[str, str]:
    """Log in; the session cookie and the CSRF token the console page carries."""
    response = await client.post("/ui/login", json={"token": ADMIN_TOKEN})
    assert response.status_code == 200, await response.get_data()
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    cookie = set_cookie.split(";")[0]
    page = await client.get("/ui", headers={"Cookie": cookie})
    assert page.status_code == 200
    html = (await page.get_data()).decode()
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match
    return cookie, match.group(1)


async def test_a_session_cookie_is_the_admin_and_writes_need_its_csrf_token(mesh: Mesh) -> None:
    client = mesh.client.app.test_client()
    cookie, csrf = await _login(client)
    task = await mesh.submit(type="t", payload={"x": 1})

    read = await client.get("/v1/status", headers={"Cookie": cookie})
    assert read.status_code == 200  # a GET needs no CSRF token

    no_csrf = await client.post(f"/v1/tasks/{task['id']}/cancel", headers={"Cookie": cookie})
    assert no_csrf.status_code == 403
    assert (await no_csrf.get_json())["error"]["code"] == "csrf"
    wrong = await client.post(f"/v1/tasks/{task['id']}/cancel", headers={"Cookie": cookie, "X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    assert (await mesh.task(task["id"]))["state"] == "queued"  # nothing changed

    done = await client.post(f"/v1/tasks/{task['id']}/cancel", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert done.status_code == 200, await done.get_json()
    events = (await mesh.ok("GET", f"/v1/tasks/{task['id']}/events", who="admin"))["events"]
    assert events[-1]["kind"] == "canceled" and events[-1]["actor"] == console.CONSOLE_ACTOR


async def test_bearer_and_agent_paths_are_unchanged_by_a_cookie(mesh: Mesh) -> None:
    client = mesh.client.app.test_client()
    cookie, _ = await _login(client)
    bad_bearer = await client.get("/v1/status", headers={"Cookie": cookie, "Authorization": "Bearer wrong"})
    assert bad_bearer.status_code == 401  # a wrong bearer token is not rescued by a cookie
    bob = await mesh.agent("bob", ["t"])
    as_agent = await client.get(
        "/v1/status", headers={"Cookie": cookie, "X-Agent-ID": "bob", "X-Agent-Secret": bob["X-Agent-Secret"]}
    )
    assert as_agent.status_code == 403  # an agent stays an agent
    forged = await client.get("/v1/status", headers={"Cookie": f"{console.SESSION_COOKIE}=made-up"})
    assert forged.status_code == 401
    async with client.app.test_request_context("/v1/status", headers={"Cookie": cookie}):
        assert credentials().is_admin is False  # not before verify() has found the session in the database


async def test_logout_ends_the_session_and_needs_the_csrf_token(mesh: Mesh) -> None:
    client = mesh.client.app.test_client()
    cookie, csrf = await _login(client)
    refused = await client.post("/ui/logout", headers={"Cookie": cookie})
    assert refused.status_code == 403
    out = await client.post("/ui/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert out.status_code == 204
    after = await client.get("/v1/status", headers={"Cookie": cookie})
    assert after.status_code == 401
    page = await client.get("/ui", headers={"Cookie": cookie})
    assert page.status_code == 302 and page.headers["Location"].endswith("/ui/login")


async def test_a_session_is_stored_hashed_survives_an_api_restart_and_expires(mesh: Mesh) -> None:
    client = mesh.client.app.test_client()
    cookie, _ = await _login(client)
    session_id = cookie.split("=", 1)[1]
    rows = mesh.store.read(lambda conn: conn.execute("SELECT id_hash FROM console_sessions").fetchall())
    assert [r["id_hash"] for r in rows] == [console.session_hash(session_id)]  # never the id itself

    store = open_engine(mesh.settings)  # another api process's own connections, on the same database
    try:
        async with create_app(mesh.settings, store).test_app() as restarted:  # another api process, as it were
            again = await restarted.test_client().get("/v1/status", headers={"Cookie": cookie})
            assert again.status_code == 200
    finally:
        store.close()

    found = mesh.store.read(console_store.csrf_of, id_hash=console.session_hash(session_id), now=10**12)
    assert found is None  # long after the TTL


async def test_a_wrong_token_is_throttled_with_retry_after(mesh: Mesh) -> None:
    client = mesh.client.app.test_client()
    first = await client.post("/ui/login", json={"token": "wrong"})
    assert first.status_code == 401
    assert "Set-Cookie" not in first.headers
    again = await client.post("/ui/login", json={"token": ADMIN_TOKEN})  # even the right one, while locked out
    assert again.status_code == 429
    assert int(again.headers["Retry-After"]) >= 1
    assert (await again.get_json())["error"]["code"] == "too_many_attempts"


def test_lockouts_double_up_to_a_cap() -> None:
    sessions = console.Throttle()
    waits = [sessions.failed("10.0.0.1", now=0) for _ in range(12)]
    assert waits[:4] == [1, 2, 4, 8] and waits[-1] == console.LOCKOUT_MAX
    assert sessions.locked_for("10.0.0.2", now=0) == 0  # another client is not affected
    sessions.succeeded("10.0.0.1")
    assert sessions.locked_for("10.0.0.1", now=0) == 0


async def test_the_console_is_self_contained_behind_a_strict_csp(mesh: Mesh) -> None:
    client = mesh.client.app.test_client()
    for path in ("/ui/login", "/ui/app.js", "/ui/app.css"):
        response = await client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "unsafe-eval" not in csp and "unsafe-inline" not in csp
        text = (await response.get_data()).decode().replace("http://www.w3.org/2000/svg", "")  # a name, not a URL
        assert "http://" not in text and "https://" not in text, path  # nothing from another origin
    assert (await client.get("/ui/nothing.js")).status_code == 404
    spec = await mesh.ok("GET", "/openapi.json")
    assert not [p for p in spec["paths"] if p.startswith("/ui")]


async def test_tasks_can_be_searched_by_payload_and_result_text(mesh: Mesh) -> None:
    needle = await mesh.submit(type="t", payload={"text": "the Quick brown fox"})
    await mesh.submit(type="t", payload={"text": "lazy dog"})
    found = await mesh.ok("GET", "/v1/tasks?q=quick", who="admin")
    assert [t["id"] for t in found["tasks"]] == [needle["id"]]
    none = await mesh.ok("GET", "/v1/tasks?q=%25", who="admin")  # a literal %, not a wildcard
    assert none["tasks"] == []
