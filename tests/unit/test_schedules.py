"""When a cron schedule's ticks fall, daylight saving time included (mcs.schedules: pure, time injected)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mcs.errors import Unprocessable
from mcs.schedules import Cron

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ts(zone: ZoneInfo, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


def local(t: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, zone).isoformat()


def run(cron: Cron, start: float, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = cron.next_after(t)
        out.append(local(t, cron.zone))
    return out


def test_a_daily_job_in_utc():
    cron = Cron.parse("0 3 * * *")
    assert run(cron, ts(ZoneInfo("UTC"), 2026, 12, 1, 3, 0), 2) == [
        "2026-12-02T03:00:00+00:00",
        "2026-12-03T03:00:00+00:00",
    ]


def test_spring_forward_the_skipped_time_runs_once_right_after_the_gap():
    # 2026-03-29 in Berlin: 02:00 jumps to 03:00, so 02:30 does not exist that day.
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    assert run(cron, ts(BERLIN, 2026, 3, 28, 12, 0), 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_fall_back_a_fixed_hour_job_runs_once_at_the_first_occurrence():
    # 2026-10-25 in Berlin: 03:00 falls back to 02:00, so 02:30 happens twice; a daily job runs once.
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    assert run(cron, ts(BERLIN, 2026, 10, 24, 12, 0), 2) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_fall_back_an_hourly_job_keeps_every_real_hour():
    cron = Cron.parse("0 * * * *", "Europe/Berlin")
    ticks = []
    t = ts(BERLIN, 2026, 10, 25, 0, 30)
    for _ in range(4):
        t = cron.next_after(t)
        ticks.append(t)
    assert [local(x, BERLIN) for x in ticks] == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    assert {b - a for a, b in zip(ticks, ticks[1:], strict=False)} == {3600.0}


def test_another_zone_another_date():
    # New York springs forward on 2026-03-08 at 02:00.
    cron = Cron.parse("15 2 * * *", "America/New_York")
    assert run(cron, ts(NEW_YORK, 2026, 3, 7, 12, 0), 2) == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00"]


def test_seconds_as_a_sixth_field():
    cron = Cron.parse("* * * * * */20")
    start = ts(ZoneInfo("UTC"), 2026, 1, 1, 0, 0)
    assert [cron.next_after(start) - start, cron.ticks_between(start, start + 60, limit=10)[-1] - start] == [20, 60]


def test_ticks_between_is_bounded_and_ordered():
    cron = Cron.parse("*/5 * * * *")
    start = ts(ZoneInfo("UTC"), 2026, 1, 1, 0, 0)
    assert cron.ticks_between(start, start + 3600, limit=3) == [start + 300, start + 600, start + 900]
    assert len(cron.ticks_between(start, start + 3600, limit=100)) == 12


@pytest.mark.parametrize(
    ("expression", "zone", "code"),
    [
        ("every night", "UTC", "invalid_cron"),
        ("0 3 * *", "UTC", "invalid_cron"),
        ("61 3 * * *", "UTC", "invalid_cron"),
        ("0 3 * * * * *", "UTC", "invalid_cron"),
        ("0 3 * * *", "Mars/Olympus", "invalid_timezone"),
        ("0 3 * * *", "../../etc/passwd", "invalid_timezone"),
    ],
)
def test_bad_expressions_and_zones_are_422_with_a_reason(expression, zone, code):
    with pytest.raises(Unprocessable) as err:
        Cron.parse(expression, zone)
    assert err.value.code == code and expression in str(err.value) or zone in str(err.value)
