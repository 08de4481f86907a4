"""Alerts to people: what an alert says on each channel. Pure: no I/O, so the wording and the escaping
are tested directly; the notifier does the sending.

An alert row's body is `{"type": "task.failed" | "agent.offline" | "approval.waiting", "timestamp",
"data": {...}}` with ids, names and an error summary only, never a task's payload or result (an approval
shows its payload's `title` and `summary`, written for people to read).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

ERROR_SUMMARY_CHARS = 300  # of an error shown in an alert
CODE_LABELS = ("task", "type", "agent", "step", "approve", "deny")  # facts Telegram shows as code (ids, commands)


@dataclass(frozen=True)
class Alert:
    event: str
    timestamp: str | None
    data: dict[str, Any]

    @classmethod
    def from_body(cls, body: str) -> Alert:
        parsed = json.loads(body)
        data = parsed.get("data")
        return cls(event=str(parsed.get("type", "alert")), timestamp=parsed.get("timestamp"), data=data or {})

    @property
    def title(self) -> str:
        if self.event == "task.failed":
            return f"MCS: {self.data.get('task_type', 'a')} task failed"
        if self.event == "agent.offline":
            return f"MCS: agent {self.data.get('agent')} is offline"
        if self.event == "approval.waiting":
            what = self.data.get("title") or self.data.get("step") or self.data.get("task_id", "")
            where = f" (workflow {self.data['workflow']})" if self.data.get("workflow") else ""
            return f"MCS: approval waiting: {summary(what)}{where}"
        return f"MCS: {self.event}"

    def fields(self) -> list[tuple[str, str]]:
        """The alert's facts as (label, value) pairs, in the order people read them."""
        d = self.data
        if self.event == "task.failed":
            return [
                ("task", str(d.get("task_id", ""))),
                ("type", str(d.get("task_type", ""))),
                ("agent", str(d.get("agent") or "none")),
                ("attempts", str(d.get("attempts", ""))),
                ("error", summary(d.get("error"))),
            ]
        if self.event == "agent.offline":
            return [("agent", str(d.get("agent", ""))), ("last seen", str(d.get("last_seen") or "never"))]
        if self.event == "approval.waiting":
            facts = [("task", str(d.get("task_id", ""))), ("submitted by", str(d.get("submitted_by", "")))]
            if d.get("workflow_id"):  # a workflow step: which workflow (its name and id) and which step
                facts += [("workflow", f"{summary(d.get('workflow') or '')} ({d['workflow_id']})".strip())]
                facts += [("step", summary(d.get("step") or ""))]
            facts += [(k, summary(d[k])) for k in ("summary",) if d.get(k)]
            return facts + [("approve", str(d.get("approve", ""))), ("deny", str(d.get("deny", "")))]
        return [(k, summary(v)) for k, v in d.items()]

    def text(self) -> str:
        """Plain text: the title, then one `label: value` line per fact."""
        return "\n".join([self.title, *(f"{label}: {value}" for label, value in self.fields())])

    def telegram_html(self) -> str:
        """Telegram's HTML parse mode: everything that came from outside is escaped."""
        icon = {"task.failed": "\u274c", "approval.waiting": "\u270b"}.get(self.event, "\u26a0\ufe0f")
        lines = [f"{icon} <b>{_esc(self.title)}</b>"]
        for label, value in self.fields():
            shown = f"<code>{_esc(value)}</code>" if label in CODE_LABELS else _esc(value)
            lines.append(f"<b>{_esc(label)}</b>: {shown}")
        return "\n".join(lines)

    def webhook_json(self, body: str) -> dict[str, Any]:
        """The generic webhook's JSON: the alert row as stored, plus a human title and text."""
        stored: dict[str, Any] = json.loads(body)
        return stored | {"title": self.title, "text": self.text()}


def summary(value: Any) -> str:
    """An error of any JSON shape as one line of at most ERROR_SUMMARY_CHARS characters."""
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(str(text).split())
    return text if len(text) <= ERROR_SUMMARY_CHARS else text[: ERROR_SUMMARY_CHARS - 1] + "\u2026"


def _esc(value: str) -> str:
    return html.escape(value, quote=False)
