"""SQL of the tasks area shared by both engines (placeholders `?`; the PostgreSQL engine translates them).

The statements are today's SQLite text, tuned by the scale work (bench/scale.py and
tests/integration/test_scale.py read their query plans): change one only with its plan checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from mcs.engines.areas.tasks import ClaimableRow, TaskFilter
from mcs.engines.sql.base import SqlTx
from mcs.models import APPROVAL, TERMINAL_STATES, UNFINISHED_STATES, IdemRecord, Task, TaskEvent, TaskSpec, TaskState

NON_TERMINAL = UNFINISHED_STATES
RUNNING = ("assigned", "claimed")  # the states a concurrency key's limit counts
# The WHERE of the partial index tasks_ended (0017), repeated verbatim: SQLite uses a partial index only
# for a query that names its condition (`state = 'failed'` alone does not imply this IN list to it).
ENDED = "state IN ('completed', 'failed', 'canceled')"
SEARCH_SCAN_ROWS = 10_000  # a `q=` search looks at this many of the newest tasks at most

# The WHERE fragments below are shared by the tasks and queue areas (one copy each); their text is what the
# query plans were checked with, so keep it verbatim.

# A task (the outer query's `tasks`) with a dependency that has not ended.
UNFINISHED_DEPS = (
    "EXISTS (SELECT 1 FROM task_deps d JOIN tasks u ON u.id = d.dep_id WHERE d.task_id = tasks.id"
    " AND u.state NOT IN ('completed', 'failed', 'canceled'))"
)

# Queued tasks a pass handles with every agent busy: fanout parents and approvals (which go to waiting).
NEEDS_NO_AGENT = f"(route = 'all' OR type = '{APPROVAL}')"

# A queued task one agent may take: neither a fanout parent nor an approval, routed to any agent or to the
# one bound here (`?`: the agent's name).
FOR_AGENT = f"state = 'queued' AND route != 'all' AND type != '{APPROVAL}' AND (route = 'any' OR route = ?)"

# ... that the agent bound here (`?`: its name) has not rejected.
NOT_REJECTED = "NOT EXISTS (SELECT 1 FROM task_avoid v WHERE v.task_id = tasks.id AND v.agent = ? AND v.hard = 1)"

# A submitter's unfinished top-level tasks, on the partial index tasks_submitter (migration 0008): about
# 0.4 us an unfinished task here, so at most the quota's worth (1000: 0.4 ms) per submit; without the
# index SQLite walks every top-level task (24 ms at 20,000 tasks). Fanout children are not counted:
# their parent, unfinished until they are, stands for them.
UNFINISHED_SQL = (
    "SELECT count(*) FROM tasks WHERE submitted_by = ? AND parent_id IS NULL"
    f" AND state IN ({','.join('?' * len(NON_TERMINAL))})"
)

# How many tasks with one concurrency key run now, on the partial index tasks_concurrency (0011).
KEY_RUNNING_SQL = "SELECT count(*) FROM tasks WHERE concurrency_key = ? AND state IN ('assigned', 'claimed')"

# The columns `task_update` may set (names go into the SQL text; values are always bound).
UPDATABLE = frozenset(
    {
        "state",
        "assigned_to",
        "assigned_at",
        "claim_token",
        "lease_expires_at",
        "attempts",
        "parked",
        "result",
        "error",
        "not_before",
    }
)
_JSON_COLUMNS = ("result", "error")
_NON_TERMINAL_IN = f"state IN ({','.join('?' * len(NON_TERMINAL))})"


def _identifier(name: str) -> str:
    """A savepoint name goes into the SQL text: letters, digits and underscores only."""
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a savepoint name: {name!r}")
    return name


def _task(row: Any) -> Task | None:
    return Task.from_row(row) if row is not None else None


class TaskSql(SqlTx):
    """Implements mcs.engines.areas.tasks.TaskTx; dialect-specific methods are overridden per engine."""

    LIKE: ClassVar[str] = "LIKE"  # ASCII case-insensitive on SQLite; ILIKE on PostgreSQL

    def task_get(self, task_id: str) -> Task | None:
        return _task(self.row("SELECT * FROM tasks WHERE id = ?", (task_id,)))

    def task_lock(self, task_id: str) -> Task | None:
        return _task(self.row("SELECT * FROM tasks WHERE id = ?" + self.FOR_UPDATE, (task_id,)))

    def task_take(self, task_id: str, state: TaskState) -> Task | None:
        return _task(
            self.row("SELECT * FROM tasks WHERE id = ? AND state = ?" + self.SKIP_LOCKED, (task_id, state.value))
        )

    def task_insert(
        self,
        *,
        task_id: str,
        spec: TaskSpec,
        state: TaskState,
        submitted_by: str,
        now: float,
        workflow_id: str | None = None,
        step_id: str | None = None,
    ) -> None:
        self.run(
            "INSERT INTO tasks (id, type, payload, priority, capabilities, route, aggregate, state, max_retries,"
            " claim_ttl, submitted_by, created_at, updated_at, not_before, run_if, workflow_id, step_id,"
            " concurrency_key, max_concurrency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                spec.type,
                json.dumps(spec.payload),
                int(spec.priority),
                json.dumps(list(spec.capabilities)),
                spec.route,
                spec.aggregate,
                state.value,
                spec.max_retries,
                spec.claim_ttl,
                submitted_by,
                now,
                now,
                spec.not_before,
                spec.run_if,
                workflow_id,
                step_id,
                spec.concurrency_key,
                spec.max_concurrency,
            ),
        )

    def task_update(self, task_id: str, expect: TaskState, changes: Mapping[str, Any], now: float) -> bool:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"task_update cannot set {sorted(unknown)}")
        encoded = {k: (json.dumps(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in changes.items()}
        encoded = {k: (v.value if isinstance(v, TaskState) else v) for k, v in encoded.items()}
        columns = ", ".join(f"{k} = ?" for k in encoded)
        changed = self.run(
            f"UPDATE tasks SET {columns}, updated_at = ? WHERE id = ? AND state = ?",
            (*encoded.values(), now, task_id, expect.value),
        )
        return changed == 1

    def task_children(self, task_id: str) -> list[str]:
        return [r[0] for r in self.rows("SELECT id FROM tasks WHERE parent_id = ? ORDER BY seq", (task_id,))]

    def children_of(self, parent_id: str) -> list[Task]:
        rows = self.rows("SELECT * FROM tasks WHERE parent_id = ? ORDER BY assigned_to, seq", (parent_id,))
        return [Task.from_row(r) for r in rows]

    def unfinished_children(self, parent_id: str) -> list[Task]:
        rows = self.rows(f"SELECT * FROM tasks WHERE parent_id = ? AND {_NON_TERMINAL_IN}", (parent_id, *NON_TERMINAL))
        return [Task.from_row(r) for r in rows]

    def task_events(self, task_id: str) -> list[TaskEvent]:
        rows = self.rows("SELECT at, kind, actor, detail FROM task_events WHERE task_id = ? ORDER BY id", (task_id,))
        return [TaskEvent.from_row(r) for r in rows]

    def task_event_add(self, task_id: str, kind: str, actor: str, now: float, detail: Any = None) -> None:
        self.run(
            "INSERT INTO task_events (task_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
            (task_id, now, kind, actor, None if detail is None else json.dumps(detail)),
        )

    def last_claim_detail(self, task_id: str) -> Any:
        raw = self.value(
            "SELECT detail FROM task_events WHERE task_id = ? AND kind = 'claimed' ORDER BY id DESC LIMIT 1",
            (task_id,),
        )
        return None if raw is None else json.loads(raw)

    def deps_add(self, task_id: str, dep_ids: tuple[str, ...]) -> None:
        self.run_many(
            "INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(task_id, d) for d in dep_ids],
        )

    def deps_of(self, task_id: str) -> list[Task]:
        rows = self.rows(
            "SELECT u.* FROM task_deps d JOIN tasks u ON u.id = d.dep_id WHERE d.task_id = ? ORDER BY u.seq", (task_id,)
        )
        return [Task.from_row(r) for r in rows]

    def dependents_blocked(self, dep_id: str) -> list[str]:
        rows = self.rows(
            f"SELECT t.* FROM {self.DEPENDENTS} WHERE d.dep_id = ? AND t.state = 'blocked' ORDER BY t.seq",
            (dep_id,),
        )
        return [r["id"] for r in rows]

    def dependents_canceled(self, dep_id: str, error: str) -> list[Task]:
        rows = self.rows(
            f"SELECT t.* FROM {self.DEPENDENTS} WHERE d.dep_id = ?"
            " AND t.state = 'canceled' AND t.error = ? ORDER BY t.seq",
            (dep_id, json.dumps(error)),
        )
        return [Task.from_row(r) for r in rows]

    def task_release_due(self, now: float) -> list[str]:
        rows = self.rows(
            "UPDATE tasks SET state = 'queued', parked = 0, updated_at = ? WHERE state = 'blocked'"
            f" AND not_before <= ? AND NOT {UNFINISHED_DEPS} RETURNING id",
            (now, now),
        )
        return [r[0] for r in rows]

    def unfinished_submitted(self, submitter: str) -> int:
        return int(self.value(UNFINISHED_SQL, (submitter, *NON_TERMINAL)))

    def idem_get(self, caller: str, key: str, now: float) -> IdemRecord | None:
        row = self.row(
            "SELECT caller, key, body_hash, status, response, expires_at FROM idempotency_keys"
            " WHERE caller = ? AND key = ? AND expires_at > ?",
            (caller, key, now),
        )
        if row is None:
            return None
        return IdemRecord(
            caller=row["caller"],
            key=row["key"],
            body_hash=row["body_hash"],
            response=row["response"],
            expires_at=row["expires_at"],
            status=row["status"],
        )

    def idem_put(self, record: IdemRecord) -> None:
        self.run(
            "INSERT INTO idempotency_keys (caller, key, body_hash, status, response, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (caller, key) DO UPDATE SET body_hash = excluded.body_hash,"
            " status = excluded.status, response = excluded.response, expires_at = excluded.expires_at",
            (record.caller, record.key, record.body_hash, record.status, record.response, record.expires_at),
        )

    def avoid_is_hard(self, task_id: str, agent: str) -> bool:
        found = self.row("SELECT 1 FROM task_avoid WHERE task_id = ? AND agent = ? AND hard = 1", (task_id, agent))
        return found is not None

    def avoid_add(self, task_id: str, agent: str, *, hard: bool) -> None:
        if hard:
            self.run(
                "INSERT INTO task_avoid (task_id, agent, hard) VALUES (?, ?, 1)"
                " ON CONFLICT (task_id, agent) DO UPDATE SET hard = excluded.hard",
                (task_id, agent),
            )
        else:
            self.run(
                "INSERT INTO task_avoid (task_id, agent, hard) VALUES (?, ?, 0) ON CONFLICT DO NOTHING",
                (task_id, agent),
            )

    def avoid_clear(self, task_id: str) -> None:
        self.run("DELETE FROM task_avoid WHERE task_id = ?", (task_id,))

    def key_running(self, key: str) -> int:
        return int(self.value(KEY_RUNNING_SQL, (key,)))

    def assigned_next(self, agent: str) -> Task | None:
        return _task(
            self.row(
                "SELECT * FROM tasks WHERE state = 'assigned' AND assigned_to = ? ORDER BY priority, seq LIMIT 1",
                (agent,),
            )
        )

    # A task's dependents `t` joined through task_deps `d`, driven from `d` (set per engine: SQLite needs
    # CROSS JOIN to keep that order; PostgreSQL refuses ON after CROSS JOIN and plans it itself).
    DEPENDENTS: ClassVar[str]

    def claimable(self, agent: str, capabilities: tuple[str, ...]) -> Iterator[ClaimableRow]:
        # Read lazily, only what the match needs; the capability match runs in SQL (`CAPABLE`, per engine):
        # with 100,000 queued tasks nobody serves, 75 ms a scan on SQLite instead of 430 ms decoding each
        # row's JSON in Python, and a waiting long poll scans at each commit.
        rows = self.iter_rows(
            "SELECT id, priority, seq, capabilities, concurrency_key, max_concurrency FROM tasks"
            f" WHERE {FOR_AGENT} AND {self.CAPABLE} AND {NOT_REJECTED} ORDER BY priority, seq",
            (agent, json.dumps(list(capabilities)), agent),
        )
        for row in rows:
            yield ClaimableRow(
                id=row["id"],
                priority=row["priority"],
                seq=row["seq"],
                capabilities=tuple(json.loads(row["capabilities"])),
                concurrency_key=row["concurrency_key"],
                max_concurrency=row["max_concurrency"],
            )

    def task_held(self, task_id: str, agent: str | None, token: str) -> bool:
        found = self.row(
            "SELECT 1 FROM tasks WHERE id = ? AND state = 'claimed' AND assigned_to = ? AND claim_token = ?",
            (task_id, agent, token),
        )
        return found is not None

    def claimed_by(self, agent: str) -> list[Task]:
        rows = self.rows("SELECT * FROM tasks WHERE state = 'claimed' AND assigned_to = ?", (agent,))
        return [Task.from_row(r) for r in rows]

    def tasks_routed_to(self, agent: str) -> list[Task]:
        rows = self.rows(f"SELECT * FROM tasks WHERE route = ? AND {_NON_TERMINAL_IN}", (agent, *NON_TERMINAL))
        return [Task.from_row(r) for r in rows]

    def tasks_page(self, f: TaskFilter, *, before_seq: int | None, limit: int) -> list[Task]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("state", f.state),
            ("type", f.type),
            ("assigned_to", f.agent),
            ("parent_id", f.parent),
            ("workflow_id", f.workflow),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if f.id_prefix:
            where.append("id >= ? AND id < ?")
            args.extend((f.id_prefix, f.id_prefix + "\U0010ffff"))
        if f.updated_after is not None:
            where.append("updated_at >= ?")
            args.append(f.updated_after)
            if f.state in TERMINAL_STATES:
                where.append(ENDED)  # the partial index tasks_ended: only the tasks that ended since then
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        if f.q:
            pattern = "%" + f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("seq > (SELECT coalesce(max(seq), 0) FROM tasks) - ?")
            args.append(SEARCH_SCAN_ROWS)
            like = self.LIKE
            where.append(
                f"(payload {like} ? ESCAPE '\\' OR coalesce(result, '') {like} ? ESCAPE '\\'"
                f" OR coalesce(error, '') {like} ? ESCAPE '\\')"
            )
            args.extend((pattern, pattern, pattern))
        sql = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
        if f.updated_after is not None:
            # The page's seqs first, from the index alone, then their rows: tens of thousands of tasks may
            # have changed since then (a busy 5 minutes), and reading each row only to sort it out costs
            # seconds.
            sql = f"SELECT * FROM tasks WHERE seq IN ({sql.replace('SELECT *', 'SELECT seq', 1)}) ORDER BY seq DESC"
        return [Task.from_row(r) for r in self.rows(sql, (*args, limit))]

    def savepoint(self, name: str) -> None:
        self.run(f"SAVEPOINT {_identifier(name)}")

    def savepoint_rollback(self, name: str) -> None:
        self.run(f"ROLLBACK TO SAVEPOINT {_identifier(name)}")
        self.run(f"RELEASE SAVEPOINT {_identifier(name)}")

    def savepoint_release(self, name: str) -> None:
        self.run(f"RELEASE SAVEPOINT {_identifier(name)}")

    def task_workflow_name(self, workflow_id: str) -> str | None:
        found = self.value("SELECT name FROM workflows WHERE id = ?", (workflow_id,))
        return None if found is None else str(found)

    def task_workflow_inputs(self, workflow_id: str) -> tuple[bool, Any]:
        raw = self.value("SELECT inputs FROM workflows WHERE id = ?", (workflow_id,))
        return (False, None) if raw is None else (True, json.loads(raw))
