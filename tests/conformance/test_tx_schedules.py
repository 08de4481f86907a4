"""ScheduleTx on both engines: each method's contract, and site 10 of docs/design/engines.md 4.1:
a tick handled twice (a second watchdog that read the schedule before the first moved it on) submits
once and counts once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mcs.engines.base import Duplicate
from mcs.errors import Conflict
from mcs.models import ADMIN, Schedule, ScheduleRun
from mcs.schedules import Cron
from mcs.state import schedules as schedules_state

HOUR = 3600.0
DEFAULTS = schedules_state.Defaults(max_retries=0, claim_ttl=60.0, grace=60.0)


def schedule(name: str = "hourly", *, next_run_at: float = HOUR, paused: bool = False, **kw: Any) -> Schedule:
    fields: dict[str, Any] = {
        "name": name,
        "cron": "0 * * * *",
        "timezone": "UTC",
        "kind": "task",
        "body": {"type": "ping", "payload": {"n": 1}},
        "overlap": "allow",
        "catch_up": "one",
        "paused": paused,
        "next_run_at": next_run_at,
        "last_tick_at": None,
        "last_task_id": None,
        "created_by": "admin",
        "created_at": 1.0,
        "updated_at": 1.0,
    }
    return Schedule(**(fields | kw))


def run(name: str = "hourly", tick: float = HOUR, **kw: Any) -> ScheduleRun:
    fields: dict[str, Any] = {"schedule": name, "tick_at": tick, "outcome": "fired", "task_id": None, "at": tick + 1}
    return ScheduleRun(**(fields | kw))


def test_insert_then_get_round_trips_and_a_second_insert_of_the_name_is_a_duplicate(engine: Any) -> None:
    s = schedule()
    engine.write(lambda tx: tx.schedule_insert(s))
    assert engine.read(lambda tx: tx.schedule_get("hourly")) == s
    assert engine.read(lambda tx: tx.schedule_get("nope")) is None
    with pytest.raises(Duplicate):
        engine.write(lambda tx: tx.schedule_insert(schedule(cron="5 * * * *")))
    assert engine.read(lambda tx: tx.schedule_get("hourly")) == s  # the first one stays as it was


def test_create_of_a_taken_name_is_a_409(engine: Any) -> None:
    args: dict[str, Any] = {"cron": Cron.parse("0 3 * * *"), "kind": "task", "body": {"type": "t"}}
    args |= {"overlap": "skip", "catch_up": "one", "caller": ADMIN, "now": 10.0}
    created = engine.write(schedules_state.create, name="nightly", **args)
    assert created.next_run_at == 3 * HOUR and created.created_by == "admin"
    with pytest.raises(Conflict) as err:
        engine.write(schedules_state.create, name="nightly", **args)
    assert err.value.status == 409 and err.value.code == "schedule_exists"


def test_all_are_listed_by_name(engine: Any) -> None:
    for name in ("b", "c", "a"):
        engine.write(lambda tx, n=name: tx.schedule_insert(schedule(n)))
    assert [s.name for s in engine.read(lambda tx: tx.schedules_all())] == ["a", "b", "c"]


def test_delete_takes_the_schedule_and_its_runs(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule()))
    engine.write(lambda tx: tx.schedule_run_insert(run()))
    assert engine.write(lambda tx: tx.schedule_delete("hourly")) is True
    assert engine.read(lambda tx: tx.schedule_get("hourly")) is None
    assert engine.read(lambda tx: tx.schedule_runs("hourly", 10)) == []
    assert engine.write(lambda tx: tx.schedule_delete("hourly")) is False


def test_set_paused_sets_the_flag_and_the_next_tick(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule()))
    engine.write(lambda tx: tx.schedule_set_paused("hourly", paused=True, next_run_at=2 * HOUR, now=5.0))
    got = engine.read(lambda tx: tx.schedule_get("hourly"))
    assert got is not None and (got.paused, got.next_run_at, got.updated_at) == (True, 2 * HOUR, 5.0)


def test_take_due_gives_the_most_overdue_running_schedule(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule("later", next_run_at=3 * HOUR)))
    engine.write(lambda tx: tx.schedule_insert(schedule("paused", next_run_at=HOUR, paused=True)))
    engine.write(lambda tx: tx.schedule_insert(schedule("due", next_run_at=2 * HOUR)))
    assert engine.write(lambda tx: tx.schedule_take_due(HOUR)) is None  # only the paused one is due
    taken = engine.write(lambda tx: tx.schedule_take_due(10 * HOUR))
    assert taken is not None and taken.name == "due"


def test_a_tick_is_recorded_once(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule()))
    assert engine.write(lambda tx: tx.schedule_run_insert(run(detail={"tick_local": "x"}))) is True
    assert engine.write(lambda tx: tx.schedule_run_insert(run(outcome="skipped"))) is False
    engine.write(lambda tx: tx.schedule_run_set_task("hourly", HOUR, "t-1"))
    assert engine.read(lambda tx: tx.schedule_runs("hourly", 10)) == [run(task_id="t-1", detail={"tick_local": "x"})]


def test_runs_are_newest_first_up_to_the_limit(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule()))
    for i in range(1, 5):
        engine.write(lambda tx, i=i: tx.schedule_run_insert(run(tick=i * HOUR)))
    assert [r.tick_at for r in engine.read(lambda tx: tx.schedule_runs("hourly", 2))] == [4 * HOUR, 3 * HOUR]


def test_advance_moves_only_a_schedule_still_at_the_expected_tick(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule(last_task_id="old")))
    moved = engine.write(
        lambda tx: tx.schedule_advance(
            "hourly", expect_next=2 * HOUR, next_run_at=3 * HOUR, tick_at=2 * HOUR, task_id="t", now=9.0
        )
    )
    assert moved is False
    moved = engine.write(
        lambda tx: tx.schedule_advance(
            "hourly", expect_next=HOUR, next_run_at=2 * HOUR, tick_at=HOUR, task_id=None, now=9.0
        )
    )
    got = engine.read(lambda tx: tx.schedule_get("hourly"))
    assert moved is True and got is not None
    assert (got.next_run_at, got.last_tick_at, got.last_task_id, got.updated_at) == (2 * HOUR, HOUR, "old", 9.0)


def test_next_due_is_the_earliest_running_tick(engine: Any) -> None:
    assert engine.read(lambda tx: tx.schedule_next_due()) is None
    engine.write(lambda tx: tx.schedule_insert(schedule("a", next_run_at=HOUR, paused=True)))
    assert engine.read(lambda tx: tx.schedule_next_due()) is None
    engine.write(lambda tx: tx.schedule_insert(schedule("b", next_run_at=5 * HOUR)))
    engine.write(lambda tx: tx.schedule_insert(schedule("c", next_run_at=4 * HOUR)))
    assert engine.read(lambda tx: tx.schedule_next_due()) == 4 * HOUR


def counts(engine: Any) -> tuple[int, int]:
    return engine.read(
        lambda tx: (tx.value("SELECT count(*) FROM tasks"), tx.value("SELECT count(*) FROM schedule_runs"))
    )


def test_two_fires_of_one_tick_count_once(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule()))
    now = HOUR + 5
    fired = engine.write(schedules_state.fire_next_due, now=now, defaults=DEFAULTS)
    assert fired is not None and fired.outcome == "fired" and fired.task_id is not None
    # A second watchdog read the schedule before the first moved it on, and handles the same tick.
    engine.write(lambda tx: tx.run("UPDATE schedules SET next_run_at = ? WHERE name = 'hourly'", (HOUR,)))
    again = engine.write(schedules_state.fire_next_due, now=now, defaults=DEFAULTS)
    assert again is None  # handled already: nothing submitted, nothing to count
    assert counts(engine) == (1, 1)
    runs = engine.read(lambda tx: tx.schedule_runs("hourly", 10))
    assert [(r.tick_at, r.outcome, r.task_id) for r in runs] == [(HOUR, "fired", fired.task_id)]
    got = engine.read(lambda tx: tx.schedule_get("hourly"))
    assert got is not None and got.next_run_at == 2 * HOUR  # moved on: the tick is not due again
    assert engine.write(schedules_state.fire_next_due, now=now, defaults=DEFAULTS) is None


def test_a_tick_handled_already_does_not_hold_up_another_due_schedule(engine: Any) -> None:
    engine.write(lambda tx: tx.schedule_insert(schedule("a", next_run_at=HOUR)))
    engine.write(lambda tx: tx.schedule_insert(schedule("b", next_run_at=HOUR + 1)))
    engine.write(lambda tx: tx.schedule_run_insert(run("a", HOUR)))  # another watchdog recorded a's tick
    fired = engine.write(schedules_state.fire_next_due, now=HOUR + 5, defaults=DEFAULTS)
    assert fired is not None and fired.schedule == "b"
    assert counts(engine) == (1, 2)


def test_two_watchdogs_firing_one_tick_together_submit_once(engine: Any, engine_factory: Any) -> None:
    """Site 10 with two writers (two engines, as two watchdog processes) started together."""
    engine.write(lambda tx: tx.schedule_insert(schedule()))
    start = threading.Barrier(2)
    fired: list[Any] = []

    def watchdog() -> None:
        writer = engine_factory()
        start.wait()
        fired.append(writer.write(schedules_state.fire_next_due, now=HOUR + 5, defaults=DEFAULTS))

    threads = [threading.Thread(target=watchdog) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(fired) == 2 and sorted(r is None for r in fired) == [False, True]
    assert counts(engine) == (1, 1)
