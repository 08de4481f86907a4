"""SQL of the schedules area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

import json

from mcs.engines.base import Duplicate
from mcs.engines.sql.base import SqlTx
from mcs.models import Schedule, ScheduleRun


class ScheduleSql(SqlTx):
    """Implements mcs.engines.areas.schedules.ScheduleTx; dialect-specific methods are overridden per engine."""

    def schedule_insert(self, schedule: Schedule) -> None:
        s = schedule
        added = self.run(
            "INSERT INTO schedules (name, cron, timezone, kind, body, overlap, catch_up, paused, next_run_at,"
            " last_tick_at, last_task_id, created_by, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (s.name, s.cron, s.timezone, s.kind, json.dumps(s.body), s.overlap, s.catch_up, int(s.paused),
             s.next_run_at, s.last_tick_at, s.last_task_id, s.created_by, s.created_at, s.updated_at),
        )  # fmt: skip
        if added != 1:
            raise Duplicate(f"schedule {s.name!r}")

    def schedule_get(self, name: str) -> Schedule | None:
        row = self.row("SELECT * FROM schedules WHERE name = ?", (name,))
        return Schedule.from_row(row) if row else None

    def schedules_all(self) -> list[Schedule]:
        return [Schedule.from_row(r) for r in self.rows("SELECT * FROM schedules ORDER BY name")]

    def schedule_delete(self, name: str) -> bool:
        self.run("DELETE FROM schedule_runs WHERE schedule = ?", (name,))
        return self.run("DELETE FROM schedules WHERE name = ?", (name,)) == 1

    def schedule_set_paused(self, name: str, *, paused: bool, next_run_at: float, now: float) -> None:
        self.run(
            "UPDATE schedules SET paused = ?, next_run_at = ?, updated_at = ? WHERE name = ?",
            (int(paused), next_run_at, now, name),
        )

    def schedule_take_due(self, now: float) -> Schedule | None:
        row = self.row(
            "SELECT * FROM schedules WHERE paused = 0 AND next_run_at <= ? ORDER BY next_run_at LIMIT 1"
            + self.SKIP_LOCKED,
            (now,),
        )
        return Schedule.from_row(row) if row else None

    def schedule_run_insert(self, run: ScheduleRun) -> bool:
        added = self.run(
            "INSERT INTO schedule_runs (schedule, tick_at, outcome, task_id, at, detail) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (schedule, tick_at) DO NOTHING",
            (run.schedule, run.tick_at, run.outcome, run.task_id, run.at,
             None if run.detail is None else json.dumps(run.detail)),
        )  # fmt: skip
        return added == 1

    def schedule_run_set_task(self, name: str, tick_at: float, task_id: str) -> None:
        self.run("UPDATE schedule_runs SET task_id = ? WHERE schedule = ? AND tick_at = ?", (task_id, name, tick_at))

    def schedule_advance(
        self, name: str, *, expect_next: float, next_run_at: float, tick_at: float, task_id: str | None, now: float
    ) -> bool:
        changed = self.run(
            "UPDATE schedules SET next_run_at = ?, last_tick_at = ?, last_task_id = coalesce(?, last_task_id),"
            " updated_at = ? WHERE name = ? AND next_run_at = ?",
            (next_run_at, tick_at, task_id, now, name, expect_next),
        )
        return changed == 1

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        rows = self.rows("SELECT * FROM schedule_runs WHERE schedule = ? ORDER BY tick_at DESC LIMIT ?", (name, limit))
        return [ScheduleRun.from_row(r) for r in rows]

    def schedule_next_due(self) -> float | None:
        due = self.value("SELECT min(next_run_at) FROM schedules WHERE paused = 0")
        return None if due is None else float(due)
