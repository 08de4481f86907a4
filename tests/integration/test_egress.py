"""The egress policy where it bites: registration answers 422 naming the setting, the notifier refuses at
connect time (a loopback receiver gets nothing), the alert senders refuse link-local URLs, and the admin
pins an agent's notify host."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from ipaddress import ip_address

import pytest
from prometheus_client import REGISTRY

from mcs import egress
from mcs.api import create_app
from mcs.engines import open_engine
from mcs.notifier import Notifier
from tests.integration.test_alerts import fail_for_good
from tests.integration.test_notifier import Receiver, until

pytestmark = pytest.mark.asyncio


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


async def new_agent(mesh, name="a", **create):
    created = await mesh.ok("POST", "/v1/agents", who="admin", json={"name": name, **create}, status=201)
    return {"X-Agent-ID": name, "X-Agent-Secret": created["secret"]}


async def register(client_or_mesh, who, url):
    body = {"capabilities": ["x"], "notify_url": url}
    response = await client_or_mesh.call("POST", "/v1/agents/register", who=who, json=body)
    return response.status_code, await response.get_json()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://169.254.169.254/latest/meta-data", "notify_url host 169.254.169.254 is a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest", "notify_url host fd00:ec2::254 is a cloud metadata address"),
        ("http://100.100.100.200/latest", "notify_url host 100.100.100.200 is a cloud metadata address"),
        ("http://169.254.10.1:8000/hook", "notify_url host 169.254.10.1 is a link-local address: refused always"),
        ("http://[fe80::1]/hook", "notify_url host fe80::1 is a link-local address: refused always"),
        ("http://0.0.0.0:9000/hook", "notify_url host 0.0.0.0 is an unspecified address: refused always"),
    ],
)
async def test_registration_refuses_link_local_and_metadata_with_422(mesh, url, message):
    who = await new_agent(mesh)
    before = refusals()
    status, body = await register(mesh, who, url)
    assert status == 422, body
    assert body["error"]["code"] == "egress_refused" and body["error"]["message"].startswith(message)
    assert (await mesh.ok("GET", "/v1/agents/a", who="admin"))["notify_url"] is None  # nothing stored
    assert refusals() == before + 1


def refusals() -> float:
    return REGISTRY.get_sample_value("mcs_egress_refusals_total", {"what": "notify_url"}) or 0.0


async def test_registration_refuses_the_api_own_port_on_loopback(mesh):
    who = await new_agent(mesh)
    for url in [f"http://127.0.0.1:{mesh.settings.port}/v1/tasks", f"http://localhost:{mesh.settings.port}/x"]:
        status, body = await register(mesh, who, url)
        assert status == 422, body
        assert "is the port of an MCS process on this machine: refused always" in body["error"]["message"]
    port = mesh.settings.notifier_metrics_port
    status, body = await register(mesh, who, f"http://127.0.0.1:{port}/metrics")
    assert status == 422 and "MCS process" in body["error"]["message"]
    # Loopback on another port is the laptop set-up: allowed by default.
    status, body = await register(mesh, who, "http://127.0.0.1:9/hook")
    assert status == 200 and body["notify_url"] == "http://127.0.0.1:9/hook"


@pytest.fixture
async def narrowed(mesh):
    """A second api on the same database with MCS_NOTIFY_ALLOW=100.64.0.0/10,hooks.example.org."""
    settings = replace(mesh.settings, notify_allow=egress.parse_rules("100.64.0.0/10,hooks.example.org"))
    store = open_engine(settings)
    app = create_app(settings, store)
    async with app.test_app() as test_app:
        yield replace(mesh, client=test_app.test_client(), settings=settings)
    store.close()


async def test_a_host_outside_mcs_notify_allow_is_refused_and_the_message_names_the_setting(narrowed):
    who = await new_agent(narrowed)
    status, body = await register(narrowed, who, "http://10.1.2.3:9000/hook")
    assert status == 422, body
    assert body["error"]["message"] == "notify_url host 10.1.2.3 is a private address, not allowed by MCS_NOTIFY_ALLOW"
    # A name is looked up for real; the answer says what kind of address, not which one.
    status, body = await register(narrowed, who, "http://localhost:9000/hook")
    assert status == 422
    assert body["error"]["message"] == (
        "notify_url host localhost resolves to a loopback address, not allowed by MCS_NOTIFY_ALLOW"
    )
    status, body = await register(narrowed, who, "http://100.101.102.103:9000/hook")
    assert status == 200, body
    status, body = await register(narrowed, who, "http://no-such-host.invalid/hook")
    assert status == 422 and "does not resolve" in body["error"]["message"]


async def test_a_name_that_resolves_to_a_refused_address_is_refused(mesh, monkeypatch):
    async def resolver(host, port):
        return [ip_address("93.184.215.14"), ip_address("169.254.169.254")]  # one bad answer is enough

    monkeypatch.setattr(egress, "resolve", resolver)
    who = await new_agent(mesh)
    status, body = await register(mesh, who, "https://hooks.example.org/hook")
    assert status == 422
    assert body["error"]["message"] == (
        "notify_url host hooks.example.org resolves to a cloud metadata address: refused always"
    )
    assert "169.254.169.254" not in body["error"]["message"]


async def test_a_lookup_that_fails_for_now_is_503_not_422(mesh, monkeypatch):
    async def resolver(host, port):
        raise egress.Unresolvable(f"looking up {host} timed out", permanent=False)

    monkeypatch.setattr(egress, "resolve", resolver)
    who = await new_agent(mesh)
    response = await mesh.call("POST", "/v1/agents/register", who=who, json={"notify_url": "http://hooks.lan/h"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "looking up hooks.lan timed out; try again" in (await response.get_json())["error"]["message"]


async def test_only_the_agent_itself_learns_what_the_policy_says(mesh):
    await new_agent(mesh)
    wrong = {"X-Agent-ID": "a", "X-Agent-Secret": "not-the-secret"}
    status, body = await register(mesh, wrong, "http://169.254.169.254/")
    assert status == 401, body  # credentials first: no answer about addresses to strangers


# ------------------------------------------------------------------ connect time


async def run_notifier(settings):
    store = open_engine(settings)
    settings = replace(settings, webhook_timeout=0.5, webhook_attempts=3, webhook_retry_base=0.05)
    notifier = Notifier(store, settings)
    return notifier, asyncio.create_task(notifier.run()), store


async def stop(running):
    notifier, task, store = running
    notifier.stop()
    await asyncio.wait_for(task, 10)
    store.close()


async def dead_webhook(mesh, task_id):
    async def dead():
        row = mesh.db.sql(
            "SELECT state, attempts, last_error FROM outbox WHERE task_id = ? AND kind = 'webhook'", (task_id,)
        ).fetchone()
        return row is not None and row[0] == "dead"

    assert await until(dead)
    row = mesh.db.sql(
        "SELECT attempts, last_error FROM outbox WHERE task_id = ? AND kind = 'webhook'", (task_id,)
    ).fetchone()
    events = (await mesh.ok("GET", f"/v1/tasks/{task_id}/events", who="admin"))["events"]
    (failed,) = [e for e in events if e["kind"] == "webhook_failed"]
    return row[0], row[1], failed["detail"]["error"]


async def test_the_notifier_checks_again_at_connect_time_and_the_receiver_gets_nothing(mesh, receiver):
    who = await new_agent(mesh)
    assert (await register(mesh, who, receiver.url))[0] == 200  # loopback: allowed when it registered
    task = await mesh.submit(type="x", route="a")
    mesh.dispatch()
    # The operator narrows the policy and restarts the notifier: the registered URL is no longer allowed.
    running = await run_notifier(replace(mesh.settings, notify_allow=egress.parse_rules("100.64.0.0/10")))
    try:
        attempts, last_error, event_error = await dead_webhook(mesh, task["id"])
    finally:
        await stop(running)
    assert receiver.calls == []
    assert attempts == 1  # refused is final, not retried as transient
    expected = "refused by the egress policy: notify_url host 127.0.0.1 is a loopback address, not allowed by"
    assert event_error.startswith(expected) and last_error.startswith(expected)


async def test_a_name_that_resolves_elsewhere_after_registration_is_refused_at_connect_time(
    mesh, receiver, monkeypatch
):
    answers = {"hooks.example.org": "127.0.0.1"}

    async def resolver(host, port):
        return [ip_address(answers[host])]

    monkeypatch.setattr(egress, "resolve", resolver)
    port = receiver.server.server_port
    url = f"http://hooks.example.org:{port}/hook"
    for name in ("a", "b"):  # both checked and registered while the name points at loopback
        assert (await register(mesh, await new_agent(mesh, name), url))[0] == 200
    running = await run_notifier(mesh.settings)
    try:
        await mesh.submit(type="x", route="a")
        mesh.dispatch()
        assert await until(lambda: asyncio.sleep(0, bool(receiver.calls)))
        # Delivered to the address checked, with the Host header of the URL the agent gave.
        assert receiver.calls[0][1]["Host"] == f"hooks.example.org:{port}"
        answers["hooks.example.org"] = "169.254.169.254"  # DNS changed: now the metadata address
        second = await mesh.submit(type="x", route="b")  # b's first delivery: a new connection
        mesh.dispatch()
        attempts, _, event_error = await dead_webhook(mesh, second["id"])
    finally:
        await stop(running)
    assert len(receiver.calls) == 1 and attempts == 1
    assert event_error == (
        "refused by the egress policy: notify_url host hooks.example.org resolves to a cloud metadata address:"
        " refused always"
    )


async def test_delivery_errors_in_task_events_do_not_say_what_answered(mesh, receiver):
    """An agent may point its notify_url anywhere the policy allows and read the task's events: they must
    not tell an HTTP server from a closed port."""
    receiver.script = [404]
    closed = Receiver()
    closed_url = closed.url
    closed.close()
    errors = []
    running = await run_notifier(mesh.settings)
    try:
        for name, url in [("http", receiver.url), ("closed", closed_url)]:
            who = await new_agent(mesh, name)
            assert (await register(mesh, who, url))[0] == 200
            task = await mesh.submit(type="x", route=name)
            mesh.dispatch()
            errors.append(await dead_webhook(mesh, task["id"]))
    finally:
        await stop(running)
    (_, http_reason, http_event), (_, closed_reason, closed_event) = errors
    assert "HTTP 404" in http_reason and "connection failed" in closed_reason  # the operator's copy
    assert http_event == closed_event  # what anyone signed in can read


async def test_alert_senders_refuse_link_local_urls(mesh):
    running = await run_notifier(
        replace(
            mesh.settings,
            alert_webhook_url="http://169.254.169.254/latest/meta-data/iam",
            telegram_bot_token="123:abc",
            telegram_chat_id="42",
            telegram_api="http://169.254.10.10",
        )
    )
    try:
        await fail_for_good(mesh)

        def alert_row():
            query = "SELECT state, attempts, last_error FROM outbox WHERE kind = 'alert'"
            return mesh.db.sql(query).fetchone()

        assert await until(lambda: asyncio.sleep(0, alert_row() is not None and alert_row()[0] == "dead"))
    finally:
        await stop(running)
    state, attempts, error = alert_row()
    assert attempts == 1  # refused, not retried
    assert "webhook: refused by the egress policy: alert URL host 169.254.169.254 is a cloud metadata" in error
    assert "telegram: refused by the egress policy: alert URL host 169.254.10.10 is a link-local address" in error
    assert "123:abc" not in error


# ------------------------------------------------------------------ pinning


async def test_the_admin_pins_an_agent_notify_host(mesh, receiver):
    who = await new_agent(mesh, "pinned", capabilities=["x"], notify_host="127.0.0.1")
    shown = await mesh.ok("GET", "/v1/agents/pinned", who="admin")
    assert shown["notify_host"] == "127.0.0.1"
    assert "notify_host" not in await mesh.ok("GET", "/v1/agents/pinned", who=who)  # the admin's business

    status, body = await register(mesh, who, "http://localhost:9000/hook")
    assert status == 422 and body["error"]["code"] == "notify_host_pinned"
    assert body["error"]["message"].startswith(
        "agent pinned is pinned to notify host 127.0.0.1: notify_url host localhost is refused"
    )
    assert (await register(mesh, who, receiver.url))[0] == 200

    # Pinned elsewhere: the current URL is dropped at once, and the agent cannot register it again.
    updated = await mesh.ok("PATCH", "/v1/agents/pinned", who="admin", json={"notify_host": "Hooks.Example.org."})
    assert updated["notify_host"] == "hooks.example.org" and updated["notify_url"] is None
    assert (await register(mesh, who, receiver.url))[0] == 422
    unpinned = await mesh.ok("PATCH", "/v1/agents/pinned", who="admin", json={"notify_host": None})
    assert unpinned["notify_host"] is None
    assert (await register(mesh, who, receiver.url))[0] == 200


async def test_pinning_is_for_the_admin_and_takes_only_a_host(mesh):
    who = await new_agent(mesh)
    response = await mesh.call("PATCH", "/v1/agents/a", who=who, json={"notify_host": "127.0.0.1"})
    assert response.status_code == 403
    for bad in ["http://x.org/", "x.org:80", "two words", ""]:
        response = await mesh.call("PATCH", "/v1/agents/a", who="admin", json={"notify_host": bad})
        assert response.status_code == 422, bad
        response = await mesh.call("POST", "/v1/agents", who="admin", json={"name": "b", "notify_host": bad})
        assert response.status_code == 422, bad
    response = await mesh.call("PATCH", "/v1/agents/nobody", who="admin", json={"notify_host": "x.org"})
    assert response.status_code == 404
    response = await mesh.call("PATCH", "/v1/agents/a", who="admin", json={})
    assert response.status_code == 422
