"""SQL of the events area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

from mcs.engines.sql.base import SqlTx
from mcs.models import Event

_BETWEEN = """
SELECT l.id, l.stream, e.at, e.kind, e.actor, e.detail, e.subject, e.type, e.state, e.owner, e.submitter,
       e.workflow_id
FROM event_log l
JOIN (
    SELECT 'task' AS stream, te.id AS ref, te.at, te.kind, te.actor, te.detail, te.task_id AS subject,
           t.type, t.state, t.assigned_to AS owner, t.submitted_by AS submitter, t.workflow_id
    FROM task_events te LEFT JOIN tasks t ON t.id = te.task_id
    WHERE te.id IN (SELECT ref FROM event_log WHERE id > ? AND id <= ? AND stream = 'task')
    UNION ALL
    SELECT 'workflow', we.id, we.at, we.kind, we.actor, we.detail, we.workflow_id, w.name, w.state, NULL,
           w.submitted_by, we.workflow_id
    FROM workflow_events we LEFT JOIN workflows w ON w.id = we.workflow_id
    WHERE we.id IN (SELECT ref FROM event_log WHERE id > ? AND id <= ? AND stream = 'workflow')
    UNION ALL
    SELECT 'agent', ae.id, ae.at, ae.kind, ae.actor, ae.detail, ae.agent, NULL, NULL, ae.agent, NULL, NULL
    FROM agent_events ae
    WHERE ae.id IN (SELECT ref FROM event_log WHERE id > ? AND id <= ? AND stream = 'agent')
) e ON e.stream = l.stream AND e.ref = l.ref
WHERE l.id > ? AND l.id <= ?
ORDER BY l.id
"""


class EventSql(SqlTx):
    """Implements mcs.engines.areas.events.EventTx; dialect-specific methods are overridden per engine."""

    def events_last(self) -> int:
        return int(self.value("SELECT max(id) FROM event_log") or 0)

    def events_bound(self, after: int, limit: int) -> int | None:
        found = self.value("SELECT id FROM event_log WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?", (after, limit - 1))
        return None if found is None else int(found)

    def events_between(self, after: int, upto: int) -> list[Event]:
        rows = self.rows(_BETWEEN, (after, upto) * 4)
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
