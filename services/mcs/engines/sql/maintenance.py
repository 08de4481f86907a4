"""SQL of the maintenance area (retention's bounded deletes, the status reads) shared by both engines.

The retention statements are built once from `retention_sql`, each engine filling in what its dialect says
differently: SQLite pins each plan with INDEXED BY and unpacks an id list with json_each; PostgreSQL has
no index hints and unpacks it with jsonb_array_elements_text. An id list is always one JSON text parameter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import ClassVar

from mcs.engines.sql.base import SqlTx
from mcs.models import Agent, Unreachable

# Repeated verbatim from the partial index tasks_finished: SQLite uses it only for a query that implies it.
_FINISHED = "state IN ('completed', 'failed', 'canceled') AND parent_id IS NULL"


def retention_sql(*, ix: Callable[[str], str], ids: str, idem_pick: str) -> dict[str, str]:
    """Every statement a retention batch runs, by name. `ix(index)` pins an index (or says nothing),
    `ids` unpacks one JSON array parameter into a set of values, `idem_pick` selects up to `limit` expired
    idempotency keys as the row identity the DELETE matches on."""
    return {
        "finished_roots": f"SELECT id, seq, updated_at, workflow_id FROM tasks{ix('tasks_finished')} WHERE {_FINISHED}"
        " AND updated_at < ? AND (updated_at, seq) > (?, ?) ORDER BY updated_at, seq LIMIT ?",
        "children": f"SELECT id, parent_id, state, updated_at FROM tasks{ix('tasks_parent')} WHERE parent_id IN {ids}",
        "undelivered": f"SELECT DISTINCT task_id FROM outbox{ix('outbox_task')} WHERE task_id IN {ids}"
        " AND state = 'pending'",
        "depended_on": f"SELECT DISTINCT d.dep_id FROM task_deps d{ix('task_deps_dep')}"
        f" JOIN tasks t ON t.id = d.task_id WHERE d.dep_id IN {ids}"
        " AND t.state NOT IN ('completed', 'failed', 'canceled')",
        "running_workflows": f"SELECT id FROM workflows WHERE id IN {ids} AND state = 'running'",
        "delete_task_deps": f"DELETE FROM task_deps WHERE task_id IN {ids}",
        "delete_task_deps_up": f"DELETE FROM task_deps WHERE dep_id IN {ids}",
        "delete_task_events": f"DELETE FROM task_events WHERE task_id IN {ids}",
        "delete_task_avoid": f"DELETE FROM task_avoid WHERE task_id IN {ids}",
        "delete_task_outbox": f"DELETE FROM outbox WHERE task_id IN {ids}",
        "delete_tasks": f"DELETE FROM tasks WHERE id IN {ids}",
        "outbox": f"DELETE FROM outbox WHERE id IN (SELECT id FROM outbox{ix('outbox_done')}"
        " WHERE state != 'pending' AND updated_at < ? LIMIT ?)",
        "idempotency_keys": idem_pick,
        "agent_events": f"DELETE FROM agent_events WHERE id IN (SELECT id FROM agent_events{ix('agent_events_at')}"
        " WHERE at < ? LIMIT ?)",
        "finished_workflows": f"SELECT id, seq, finished_at FROM workflows{ix('workflows_finished')}"
        " WHERE finished_at IS NOT NULL AND finished_at < ? AND (finished_at, seq) > (?, ?)"
        " ORDER BY finished_at, seq LIMIT ?",
        "workflows_with_steps": f"SELECT DISTINCT workflow_id FROM tasks{ix('tasks_workflow')}"
        f" WHERE workflow_id IN {ids}",
        "delete_workflow_events": f"DELETE FROM workflow_events WHERE workflow_id IN {ids}",
        "delete_workflows": f"DELETE FROM workflows WHERE id IN {ids}",
        "schedule_runs": "DELETE FROM schedule_runs WHERE (schedule, tick_at) IN (SELECT schedule, tick_at"
        f" FROM schedule_runs{ix('schedule_runs_at')} WHERE at < ? LIMIT ?)",
    }


# The form both dialects accept: no index hints, an id list through jsonb (PostgreSQL's; SQLite overrides).
SHARED_RETENTION_SQL = retention_sql(
    ix=lambda index: "",
    ids="(SELECT jsonb_array_elements_text(CAST(? AS jsonb)))",
    idem_pick="DELETE FROM idempotency_keys WHERE (caller, key) IN (SELECT caller, key FROM idempotency_keys"
    " WHERE expires_at <= ? LIMIT ?)",
)


class MaintenanceSql(SqlTx):
    """Implements mcs.engines.areas.maintenance.MaintenanceTx; dialect-specific methods are overridden per engine."""

    RETENTION_SQL: ClassVar[dict[str, str]] = SHARED_RETENTION_SQL

    def _r(self, name: str) -> str:
        return self.RETENTION_SQL[name]

    def retention_finished_roots(
        self, *, before: float, after: tuple[float, int], limit: int
    ) -> list[tuple[str, int, float, str | None]]:
        rows = self.rows(self._r("finished_roots"), (before, *after, limit))
        return [(r[0], int(r[1]), float(r[2]), r[3]) for r in rows]

    def retention_children(self, parents: list[str]) -> list[tuple[str, str, str, float]]:
        rows = self.rows(self._r("children"), (json.dumps(parents),))
        return [(r[0], r[1], r[2], float(r[3])) for r in rows]

    def retention_undelivered(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self.rows(self._r("undelivered"), (json.dumps(ids),))}

    def retention_depended_on(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self.rows(self._r("depended_on"), (json.dumps(ids),))}

    def retention_running_workflows(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self.rows(self._r("running_workflows"), (json.dumps(ids),))}

    def retention_delete_task_rows(self, ids: list[str]) -> tuple[int, int]:
        param = (json.dumps(ids),)
        events = self.run(self._r("delete_task_events"), param)
        self.run(self._r("delete_task_avoid"), param)
        self.run(self._r("delete_task_deps"), param)
        self.run(self._r("delete_task_deps_up"), param)
        outbox = self.run(self._r("delete_task_outbox"), param)
        return events, outbox

    def retention_delete_tasks(self, ids: list[str]) -> int:
        return self.run(self._r("delete_tasks"), (json.dumps(ids),))

    def retention_finished_workflows(
        self, *, before: float, after: tuple[float, int], limit: int
    ) -> list[tuple[str, int, float]]:
        rows = self.rows(self._r("finished_workflows"), (before, *after, limit))
        return [(r[0], int(r[1]), float(r[2])) for r in rows]

    def retention_workflows_with_steps(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self.rows(self._r("workflows_with_steps"), (json.dumps(ids),))}

    def retention_delete_workflows(self, ids: list[str]) -> tuple[int, int]:
        param = (json.dumps(ids),)
        events = self.run(self._r("delete_workflow_events"), param)
        return self.run(self._r("delete_workflows"), param), events

    def prune_outbox(self, *, before: float, limit: int) -> int:
        return self.run(self._r("outbox"), (before, limit))

    def prune_idempotency_keys(self, *, now: float, limit: int) -> int:
        return self.run(self._r("idempotency_keys"), (now, limit))

    def prune_agent_events(self, *, before: float, limit: int) -> int:
        return self.run(self._r("agent_events"), (before, limit))

    def prune_schedule_runs(self, *, before: float, limit: int) -> int:
        return self.run(self._r("schedule_runs"), (before, limit))

    def prune_heartbeats(self, *, before: float) -> int:
        return self.run(
            "DELETE FROM heartbeats WHERE beat_at < ? AND EXISTS (SELECT 1 FROM heartbeats h"
            " WHERE h.process = heartbeats.process AND h.beat_at > heartbeats.beat_at)",
            (before,),
        )

    def retention_query_plans(self) -> dict[str, list[str]]:
        raise NotImplementedError  # each engine explains in its own way

    def status_agents(self) -> list[Agent]:
        return [Agent.from_row(r) for r in self.rows("SELECT * FROM agents ORDER BY name")]

    def status_unserved(self) -> list[tuple[tuple[str, ...], str, int]]:
        rows = self.rows(
            "SELECT capabilities, route, sum(n) FROM task_counts WHERE state = 'queued' GROUP BY capabilities, route"
            " HAVING sum(n) > 0 ORDER BY sum(n) DESC"
        )
        return [(tuple(json.loads(r[0])), r[1], int(r[2])) for r in rows]

    def status_unreachable(self, since: float) -> list[Unreachable]:
        rows = self.rows(
            # each agent's latest webhook, one step down outbox_agent per agent (not a pass over every row)
            "SELECT o.agent, a.notify_url, o.last_error, o.attempts, o.state, o.updated_at, o.task_id FROM agents a"
            " JOIN outbox o ON o.id = (SELECT max(id) FROM outbox WHERE agent = a.name AND kind = 'webhook')"
            " WHERE o.state NOT IN ('delivered', 'superseded') AND o.attempts > 0 AND o.last_error IS NOT NULL"
            " AND o.updated_at > ?"
            " ORDER BY o.agent",
            (since,),
        )
        return [
            Unreachable(
                agent=r[0],
                notify_url=r[1],
                error=r[2],
                attempts=r[3],
                gave_up=r[4] == "dead",
                at=r[5],
                task_id=r[6],
            )
            for r in rows
        ]
