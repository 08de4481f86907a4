"""What an alert says on each channel: facts only, escaped for Telegram's HTML mode."""

from __future__ import annotations

import json
import re

from mcs.alerts import ERROR_SUMMARY_CHARS, Alert


def _failed(error: str = "boom", **data: object) -> Alert:
    body = {
        "type": "task.failed",
        "timestamp": "2026-11-30T00:00:00.000Z",
        "data": {"task_id": "t-1", "task_type": "review", "agent": "claude", "attempts": 4, "error": error} | data,
    }
    return Alert.from_body(json.dumps(body))


def test_telegram_text_escapes_everything_from_outside():
    alert = _failed(error="<script>alert(1)</script> & 'x' > y", task_type="a<b>&c")
    text = alert.telegram_html()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; 'x' &gt; y" in text
    assert "<code>a&lt;b&gt;&amp;c</code>" in text
    assert "<script>" not in text and "a<b>" not in text
    # Only our own tags are left: every '<' opens b or code, or closes one.
    assert set(re.findall(r"</?([a-z]+)>", text)) <= {"b", "code"}
    assert len(re.findall(r"<", text)) == len(re.findall(r"</?(?:b|code)>", text))


def test_the_alert_names_task_type_agent_and_error_only():
    alert = _failed()
    assert alert.title == "MCS: review task failed"
    assert alert.text().splitlines() == [
        "MCS: review task failed",
        "task: t-1",
        "type: review",
        "agent: claude",
        "attempts: 4",
        "error: boom",
    ]


def test_a_long_or_structured_error_is_summarised_on_one_line():
    alert = _failed(error="line one\nline two  " + "x" * 1000)
    error = dict(alert.fields())["error"]
    assert "\n" not in error and len(error) == ERROR_SUMMARY_CHARS and error.endswith("\u2026")
    structured = Alert.from_body(json.dumps({"type": "task.failed", "data": {"error": {"code": 7, "why": "no"}}}))
    assert dict(structured.fields())["error"] == '{"code": 7, "why": "no"}'


def test_agent_offline_alert():
    alert = Alert.from_body(
        json.dumps({"type": "agent.offline", "data": {"agent": "gpt<4>", "last_seen": "2026-11-30T00:00:00.000Z"}})
    )
    assert alert.title == "MCS: agent gpt<4> is offline"
    assert "<b>MCS: agent gpt&lt;4&gt; is offline</b>" in alert.telegram_html()
    assert "last seen: 2026-11-30T00:00:00.000Z" in alert.text()


def test_webhook_json_keeps_the_stored_alert_and_adds_title_and_text():
    body = json.dumps({"type": "task.failed", "timestamp": "t", "data": {"task_id": "t-1", "error": "e"}})
    sent = Alert.from_body(body).webhook_json(body)
    assert sent["type"] == "task.failed" and sent["data"]["task_id"] == "t-1"
    assert sent["title"].startswith("MCS:") and "task: t-1" in sent["text"]


def test_an_approval_alert_says_what_waits_who_asked_and_how_to_decide():
    data = {
        "task_id": "t-9",
        "submitted_by": "ci<bot>",
        "title": "deploy <api> & web",
        "summary": "v2 to prod",
        "approve": "mcs task approve t-9",
        "deny": "mcs task deny t-9 --reason ...",
    }
    alert = Alert.from_body(json.dumps({"type": "approval.waiting", "timestamp": None, "data": data}))
    assert alert.text().splitlines() == [
        "MCS: approval waiting: deploy <api> & web",
        "task: t-9",
        "submitted by: ci<bot>",
        "summary: v2 to prod",
        "approve: mcs task approve t-9",
        "deny: mcs task deny t-9 --reason ...",
    ]
    html = alert.telegram_html()
    assert "deploy &lt;api&gt; &amp; web" in html and "ci&lt;bot&gt;" in html
    assert "<code>mcs task approve t-9</code>" in html
    assert len(re.findall(r"<", html)) == len(re.findall(r"</?(?:b|code)>", html))


def test_an_approval_step_names_its_workflow_and_step_escaped_on_telegram():
    data = {
        "task_id": "t-9",
        "submitted_by": "ci",
        "workflow_id": "w-1",
        "workflow": "deploy<prod>",
        "step": "go-live",
        "approve": "mcs task approve t-9",
        "deny": "mcs task deny t-9 --reason ...",
    }
    alert = Alert.from_body(json.dumps({"type": "approval.waiting", "timestamp": None, "data": data}))
    lines = alert.text().splitlines()
    assert lines[0] == "MCS: approval waiting: go-live (workflow deploy<prod>)"
    assert lines[1:5] == ["task: t-9", "submitted by: ci", "workflow: deploy<prod> (w-1)", "step: go-live"]
    html = alert.telegram_html()
    assert "deploy&lt;prod&gt; (w-1)" in html and "<b>step</b>: <code>go-live</code>" in html
