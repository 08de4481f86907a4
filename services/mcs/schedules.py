"""Cron schedules: when each tick falls, in a named time zone. Pure: no I/O, the time is a parameter.

Expressions are standard five-field cron (`minute hour day-of-month month day-of-week`, as croniter reads
them), with an optional sixth field for seconds. Daylight saving time follows cron's habit:

- a local time that does not exist (the hour skipped in spring) runs at the first instant after the gap;
- a local time that happens twice (the hour repeated in autumn) runs once, at its first occurrence, for an
  expression with fixed hours (`30 2 * * *`); an expression whose hour field is a wildcard or a step
  (`0 * * * *`, `*/15 */2 * * *`) keeps every tick, since those are a fixed interval of real time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from mcs.errors import Unprocessable

MAX_TICKS_SCANNED = 10_000  # ticks looked through for the next one that is not a repeated wall-clock time


@dataclass(frozen=True)
class Cron:
    """A validated cron expression in a time zone."""

    expression: str
    timezone: str = "UTC"

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """A Cron, or 422 saying what is wrong with the expression or the time zone."""
        text = " ".join(expression.split())
        fields = text.split(" ")
        if len(fields) not in (5, 6) or not croniter.is_valid(text):
            raise Unprocessable(
                f"cron {expression!r} is not a valid expression: five fields (minute hour day-of-month month "
                "day-of-week, e.g. '0 3 * * *'), or six with seconds last",
                code="invalid_cron",
            )
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise Unprocessable(
                f"timezone {timezone!r} is not a known IANA time zone (e.g. 'UTC', 'Europe/Berlin')",
                code="invalid_timezone",
            ) from exc
        return cls(text, timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def fixed_hours(self) -> bool:
        """Whether the hour field names hours (then a repeated wall-clock hour runs once)."""
        hour = self.expression.split(" ")[1]
        return not hour.startswith("*")

    def next_after(self, after: float) -> float:
        """The first tick strictly after `after` (a Unix time)."""
        zone = self.zone
        ticks = croniter(self.expression, datetime.fromtimestamp(after, zone))
        for _ in range(MAX_TICKS_SCANNED):
            tick = float(ticks.get_next(float))
            local = datetime.fromtimestamp(tick, zone)
            if self.fixed_hours and local.fold == 1 and _ambiguous(local):
                continue  # the second occurrence of a wall-clock time: it ran at the first
            return tick
        raise Unprocessable(f"cron {self.expression!r} has no tick in sight", code="invalid_cron")

    def ticks_between(self, after: float, until: float, *, limit: int) -> list[float]:
        """The ticks in (after, until], at most `limit` of them, oldest first."""
        out: list[float] = []
        tick = self.next_after(after)
        while tick <= until and len(out) < limit:
            out.append(tick)
            tick = self.next_after(tick)
        return out


def _ambiguous(local: datetime) -> bool:
    """Whether this wall-clock time happens twice in its zone (the two folds have different offsets)."""
    return local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()


def iso_local(ts: float, timezone: str) -> str:
    """A tick as the operator thinks of it: local time with its offset."""
    return datetime.fromtimestamp(ts, ZoneInfo(timezone)).isoformat(timespec="seconds")
