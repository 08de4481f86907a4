"""The live event log: task, workflow and agent audit rows in one id space (table event_log, filled by
triggers on the three audit tables), read in id order for GET /v1/events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mcs.models import iso
from mcs.store.connection import Connection

PAGE = 500  # events one read returns at most

_SQL = """
SELECT l.id, l.stream, e.at, e.kind, e.actor, e.detail, e.subject, e.type, e.state, e.owner, e.submitter,
       e.workflow_id
FROM event_log l
JOIN (
    SELECT 'task' AS stream, te.id AS ref, te.at, te.kind, te.actor, te.detail, te.task_id AS subject,
           t.type, t.state, t.assigned_to AS owner, t.submitted_by AS submitter, t.workflow_id
    FROM task_events te LEFT JOIN tasks t ON t.id = te.task_id
    WHERE te.id IN (SELECT ref FROM event_log WHERE id > :after AND id <= :upto AND stream = 'task')
    UNION ALL
    SELECT 'workflow', we.id, we.at, we.kind, we.actor, we.detail, we.workflow_id, w.name, w.state, NULL,
           w.submitted_by, we.workflow_id
    FROM workflow_events we LEFT JOIN workflows w ON w.id = we.workflow_id
    WHERE we.id IN (SELECT ref FROM event_log WHERE id > :after AND id <= :upto AND stream = 'workflow')
    UNION ALL
    SELECT 'agent', ae.id, ae.at, ae.kind, ae.actor, ae.detail, ae.agent, NULL, NULL, ae.agent, NULL, NULL
    FROM agent_events ae
    WHERE ae.id IN (SELECT ref FROM event_log WHERE id > :after AND id <= :upto AND stream = 'agent')
) e ON e.stream = l.stream AND e.ref = l.ref
WHERE l.id > :after AND l.id <= :upto
ORDER BY l.id
"""


@dataclass(frozen=True)
class Event:
    """One audit row as the stream sends it. `owner`/`submitter` decide which agents may see it."""

    id: int
    stream: str  # task | workflow | agent
    at: float
    kind: str
    actor: str
    raw_detail: str | None  # the row's detail as stored (JSON text): the frame sends it as it is
    subject: str  # the task id, workflow id or agent name
    type: str | None  # a task's type; a workflow's name
    state: str | None  # the task's or workflow's state when read
    owner: str | None
    submitter: str | None
    workflow_id: str | None = None

    @cached_property
    def detail(self) -> Any:
        return None if self.raw_detail is None else json.loads(self.raw_detail)

    def as_json(self) -> dict[str, Any]:
        body = self.as_json_without_detail()
        body["detail"] = self.detail
        return body

    def as_json_without_detail(self) -> dict[str, Any]:
        key = {"task": "task_id", "workflow": "workflow_id", "agent": "agent"}[self.stream]
        body: dict[str, Any] = {"id": self.id, "at": iso(self.at), "kind": self.kind, "actor": self.actor}
        body[key] = self.subject
        if self.type is not None:
            body["type"] = self.type
        if self.state is not None:
            body["state"] = self.state
        return body

    @cached_property
    def frame(self) -> bytes:
        """The event as one Server-Sent Event, rendered once however many streams send it. The detail goes
        out as stored (written by json.dumps: one line), not decoded only to be encoded again."""
        raw = self.raw_detail
        if raw is None or "\n" in raw or "\r" in raw:
            data = json.dumps(self.as_json())
        else:
            body = self.as_json_without_detail()
            data = f'{json.dumps(body)[:-1]}, "detail": {raw}}}'
        return f"id: {self.id}\nevent: {self.stream}\ndata: {data}\n\n".encode()

    def visible_to(self, agent: str | None) -> bool:
        """Admins (None) see all; an agent its own tasks' and workflows' events and every agent change."""
        if agent is None or self.stream == "agent":
            return True
        return agent in (self.owner, self.submitter) or self.actor == agent


def last_id(conn: Connection) -> int:
    row = conn.execute("SELECT max(id) FROM event_log").fetchone()
    return int(row[0] or 0)


def after(conn: Connection, after: int, *, upto: int | None = None, limit: int = PAGE) -> list[Event]:
    """Events with after < id <= upto (any when upto is None), oldest first, at most `limit`. An event
    whose audit row retention already removed is skipped."""
    bound = conn.execute(
        "SELECT id FROM event_log WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?", (after, limit - 1)
    ).fetchone()
    upto_id = min(upto if upto is not None else 2**62, bound[0] if bound else 2**62)
    rows = conn.execute(_SQL, {"after": after, "upto": upto_id}).fetchall()
    return [
        Event(
            id=r[0],
            stream=r[1],
            at=r[2],
            kind=r[3],
            actor=r[4],
            raw_detail=r[5],
            subject=r[6],
            type=r[7],
            state=r[8],
            owner=r[9],
            submitter=r[10],
            workflow_id=r[11],
        )
        for r in rows
    ]
