"""ScheduleTx: the schedules area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol

from mcs.models import Schedule, ScheduleRun


class ScheduleTx(Protocol):
    """The `schedules` and `schedule_runs` rows (docs/design/engines.md, 2.3 and 4.1 sites 10, 11)."""

    def schedule_insert(self, schedule: Schedule) -> None:
        """A new schedule; raises `Duplicate` when one has its name."""
        ...

    def schedule_get(self, name: str) -> Schedule | None:
        """The schedule, or None."""
        ...

    def schedules_all(self) -> list[Schedule]:
        """Every schedule, by name."""
        ...

    def schedule_delete(self, name: str) -> bool:
        """The schedule and its runs gone; False when there was none."""
        ...

    def schedule_set_paused(self, name: str, *, paused: bool, next_run_at: float, now: float) -> None:
        """Pause or resume, with the next tick to fire."""
        ...

    def schedule_take_due(self, now: float) -> Schedule | None:
        """The most overdue running schedule, its row locked; one another transaction holds is skipped."""
        ...

    def schedule_run_insert(self, run: ScheduleRun) -> bool:
        """Record what a tick did; False when that tick already has a record (it was handled)."""
        ...

    def schedule_run_set_task(self, name: str, tick_at: float, task_id: str) -> None:
        """The task (or workflow) a recorded tick submitted."""
        ...

    def schedule_advance(
        self, name: str, *, expect_next: float, next_run_at: float, tick_at: float, task_id: str | None, now: float
    ) -> bool:
        """Move a schedule past a handled tick, if its next tick is still `expect_next`."""
        ...

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        """The schedule's latest runs, newest first."""
        ...

    def schedule_next_due(self) -> float | None:
        """When the next tick of any running schedule falls."""
        ...
