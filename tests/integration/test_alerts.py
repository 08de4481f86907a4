"""Alerts to people, through the real notifier: Telegram (a fake Bot API on loopback, as
MCS_TELEGRAM_API) and the generic webhook; agent-offline alerts from the watchdog."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace

import pytest
from prometheus_client import generate_latest

from mcs.engines import open_engine
from mcs.notifier import Notifier
from tests.fakes import FakeTelegram, too_many_requests
from tests.integration.test_notifier import Receiver, until

pytestmark = pytest.mark.asyncio

TOKEN = "123456:AAF-sekrit-bot-token"


@pytest.fixture
def telegram():
    fake = FakeTelegram()
    yield fake
    fake.close()


@pytest.fixture
async def start_notifier(mesh):
    running = []

    async def start(**overrides):
        settings = replace(
            mesh.settings,
            webhook_timeout=0.5,
            webhook_attempts=3,
            webhook_retry_base=0.01,
            webhook_retry_max=0.05,
            **overrides,
        )
        store = open_engine(settings)
        n = Notifier(store, settings)
        running.append((n, asyncio.create_task(n.run()), store))
        return n

    yield start
    for n, task, store in running:
        n.stop()
        await asyncio.wait_for(task, 10)
        store.close()


async def fail_for_good(mesh, error="boom"):
    who = await mesh.agent("worker", ["x"])
    task = await mesh.submit(type="x", payload={"secret": "do not leak"}, max_retries=0)
    mesh.dispatch()
    claimed = await mesh.ok("POST", f"/v1/tasks/{task['id']}/claim", who=who)
    token = claimed["claim_token"]
    await mesh.ok("POST", f"/v1/tasks/{task['id']}/fail", who=who, json={"claim_token": token, "error": error})
    return task


def alert_row(mesh):
    return mesh.store.read(lambda c: dict(c.execute("SELECT * FROM outbox WHERE kind = 'alert'").fetchone()))


async def test_a_permanent_failure_reaches_telegram_with_chat_id_and_escaped_text(mesh, telegram, start_notifier):
    await start_notifier(telegram_bot_token=TOKEN, telegram_chat_id="-100777", telegram_api=telegram.url)
    task = await fail_for_good(mesh, error="<b>bad</b> & worse")
    assert await until(lambda: asyncio.sleep(0, bool(telegram.calls)))
    _, token, message = telegram.calls[0]
    assert token == TOKEN and message["chat_id"] == "-100777" and message["parse_mode"] == "HTML"
    assert f"<code>{task['id']}</code>" in message["text"] and "<code>x</code>" in message["text"]
    assert "&lt;b&gt;bad&lt;/b&gt; &amp; worse" in message["text"]
    assert "do not leak" not in message["text"]  # no payloads in alerts
    assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "delivered"))


async def test_telegram_429_retry_after_is_honoured(mesh, telegram, start_notifier):
    telegram.script = [too_many_requests(retry_after=1)]
    await start_notifier(telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api=telegram.url)
    await fail_for_good(mesh)
    assert await until(lambda: asyncio.sleep(0, len(telegram.calls) >= 2), timeout=10)
    waited = telegram.calls[1][0] - telegram.calls[0][0]
    # Our own backoff would have retried after 0.01 s; Telegram asked for 1 s and got it.
    assert waited >= 1.0
    assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "delivered"))
    assert alert_row(mesh)["attempts"] == 2


async def test_the_bot_token_never_shows_in_errors_logs_or_metrics(mesh, telegram, start_notifier, caplog):
    caplog.set_level(logging.DEBUG)
    refusal = (400, {"ok": False, "error_code": 400, "description": f"Bad Request: chat not found for {TOKEN}"})
    telegram.script = [refusal]
    await start_notifier(telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api=telegram.url)
    first = await fail_for_good(mesh)
    assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "dead"))
    row = alert_row(mesh)
    assert "chat not found" in row["last_error"] and TOKEN not in row["last_error"]
    events = await mesh.ok("GET", f"/v1/tasks/{first['id']}/events", who="admin")
    assert any(e["kind"] == "alert_failed" for e in events["events"])
    assert TOKEN not in json.dumps(events)

    assert TOKEN not in caplog.text
    assert TOKEN not in generate_latest().decode()


@pytest.mark.parametrize("api", ["http://127.0.0.1:9", "ftp://telegram.invalid", "http://[::1"])
async def test_an_unreachable_or_malformed_telegram_api_fails_without_showing_the_token(
    mesh, start_notifier, caplog, api
):
    caplog.set_level(logging.DEBUG)
    await start_notifier(telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api=api)
    await fail_for_good(mesh)
    assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "dead"), timeout=10)
    row = alert_row(mesh)
    assert "Telegram" in row["last_error"] and TOKEN not in row["last_error"]
    assert TOKEN not in caplog.text
    assert TOKEN not in generate_latest().decode()


async def test_the_generic_webhook_gets_json_with_a_title_and_telegram_gets_its_message_too(
    mesh, telegram, start_notifier
):
    hook = Receiver()
    try:
        await start_notifier(
            telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api=telegram.url, alert_webhook_url=hook.url
        )
        task = await fail_for_good(mesh)
        assert await until(lambda: asyncio.sleep(0, bool(hook.calls) and bool(telegram.calls)))
        _, headers, body = hook.calls[0]
        sent = json.loads(body)
        assert sent["type"] == "task.failed" and sent["data"]["task_id"] == task["id"]
        assert sent["title"] == "MCS: x task failed" and "error: boom" in sent["text"]
        assert "do not leak" not in body
        assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "delivered"))
    finally:
        hook.close()


async def test_text_format_suits_ntfy(mesh, start_notifier):
    hook = Receiver()
    try:
        await start_notifier(alert_webhook_url=hook.url, alert_webhook_format="text")
        await fail_for_good(mesh)
        assert await until(lambda: asyncio.sleep(0, bool(hook.calls)))
        _, headers, body = hook.calls[0]
        headers = {k.lower(): v for k, v in headers.items()}
        assert headers["content-type"].startswith("text/plain") and headers["title"] == "MCS: x task failed"
        assert body.splitlines()[0] == "MCS: x task failed" and "error: boom" in body
    finally:
        hook.close()


async def test_one_channel_failing_does_not_stop_the_other(mesh, telegram, start_notifier):
    hook = Receiver(script=[400])
    try:
        await start_notifier(
            telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api=telegram.url, alert_webhook_url=hook.url
        )
        task = await fail_for_good(mesh)
        # Telegram told someone: the alert is delivered, and the webhook's refusal is kept as its error.
        assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "delivered"))
        assert len(telegram.calls) == 1 and len(hook.calls) == 1
        assert alert_row(mesh)["last_error"].startswith("webhook: HTTP 400")
        assert "alert_failed" not in await mesh.kinds(task["id"])
    finally:
        hook.close()


async def test_when_every_channel_refuses_the_alert_is_dead_with_each_reason(mesh, telegram, start_notifier):
    telegram.script = [(403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"})]
    hook = Receiver(script=[410])
    try:
        await start_notifier(
            telegram_bot_token=TOKEN, telegram_chat_id="42", telegram_api=telegram.url, alert_webhook_url=hook.url
        )
        task = await fail_for_good(mesh)
        assert await until(lambda: asyncio.sleep(0, alert_row(mesh)["state"] == "dead"))
        error = alert_row(mesh)["last_error"]
        assert "telegram: Telegram refused the message (HTTP 403): Forbidden: bot was blocked" in error
        assert "webhook: HTTP 410" in error
        assert "alert_failed" in await mesh.kinds(task["id"])
    finally:
        hook.close()


async def test_an_agent_going_offline_raises_an_alert_unless_turned_off(mesh, start_notifier):
    await mesh.agent("flaky", ["x"], ttl=0.05)
    await mesh.agent("quiet", ["x"], ttl=0.05)
    time.sleep(0.1)
    mesh.watchdog.alert_offline = True
    swept = mesh.sweep()
    assert sorted(swept.offline) == ["flaky", "quiet"]
    bodies = mesh.store.read(
        lambda c: [json.loads(r[0]) for r in c.execute("SELECT body FROM outbox WHERE kind = 'alert'")]
    )
    assert sorted(b["data"]["agent"] for b in bodies) == ["flaky", "quiet"]
    assert all(b["type"] == "agent.offline" and b["data"]["last_seen"] for b in bodies)
    assert mesh.sweep().offline == []  # already offline: no second alert
    await mesh.agent("flaky2", ["x"], ttl=0.05)
    time.sleep(0.1)
    mesh.watchdog.alert_offline = False
    assert mesh.sweep().offline == ["flaky2"]
    assert mesh.store.read(lambda c: c.execute("SELECT count(*) FROM outbox WHERE kind = 'alert'").fetchone()[0]) == 2
