"""ScheduleTx on SQLite through `Store`: each method's contract, and site 10 of docs/design/engines.md 4.1:
a tick handled twice (a second watchdog that read the schedule before the first moved it on) submits
once and counts once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mcs.engines.base import Duplicate
from mcs.engines.sqlite.engine import Store
from mcs.errors import Conflict
from mcs.models import ADMIN, Schedule, ScheduleRun
from mcs.schedules import Cron
from mcs.state import schedules as schedules_state

HOUR = 3600.0
DEFAULTS = schedules_state.Defaults(max_retries=0, claim_ttl=60.0, grace=60.0)


@pytest.fixture
def store(tmp_path: Any) -> Store:
    s = Store(tmp_path / "mcs.db")
    s.migrate()
    return s


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


def test_insert_then_get_round_trips_and_a_second_insert_of_the_name_is_a_duplicate(store: Store) -> None:
    s = schedule()
    store.write(lambda tx: tx.schedule_insert(s))
    assert store.read(lambda tx: tx.schedule_get("hourly")) == s
    assert store.read(lambda tx: tx.schedule_get("nope")) is None
    with pytest.raises(Duplicate):
        store.write(lambda tx: tx.schedule_insert(schedule(cron="5 * * * *")))
    assert store.read(lambda tx: tx.schedule_get("hourly")) == s  # the first one stays as it was


def test_create_of_a_taken_name_is_a_409(store: Store) -> None:
    args: dict[str, Any] = {"cron": Cron.parse("0 3 * * *"), "kind": "task", "body": {"type": "t"}}
    args |= {"overlap": "skip", "catch_up": "one", "caller": ADMIN, "now": 10.0}
    created = store.write(schedules_state.create, name="nightly", **args)
    assert created.next_run_at == 3 * HOUR and created.created_by == "admin"
    with pytest.raises(Conflict) as err:
        store.write(schedules_state.create, name="nightly", **args)
    assert err.value.status == 409 and err.value.code == "schedule_exists"


def test_all_are_listed_by_name(store: Store) -> None:
    for name in ("b", "c", "a"):
        store.write(lambda tx, n=name: tx.schedule_insert(schedule(n)))
    assert [s.name for s in store.read(lambda tx: tx.schedules_all())] == ["a", "b", "c"]


def test_delete_takes_the_schedule_and_its_runs(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule()))
    store.write(lambda tx: tx.schedule_run_insert(run()))
    assert store.write(lambda tx: tx.schedule_delete("hourly")) is True
    assert store.read(lambda tx: tx.schedule_get("hourly")) is None
    assert store.read(lambda tx: tx.schedule_runs("hourly", 10)) == []
    assert store.write(lambda tx: tx.schedule_delete("hourly")) is False


def test_set_paused_sets_the_flag_and_the_next_tick(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule()))
    store.write(lambda tx: tx.schedule_set_paused("hourly", paused=True, next_run_at=2 * HOUR, now=5.0))
    got = store.read(lambda tx: tx.schedule_get("hourly"))
    assert got is not None and (got.paused, got.next_run_at, got.updated_at) == (True, 2 * HOUR, 5.0)


def test_take_due_gives_the_most_overdue_running_schedule(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule("later", next_run_at=3 * HOUR)))
    store.write(lambda tx: tx.schedule_insert(schedule("paused", next_run_at=HOUR, paused=True)))
    store.write(lambda tx: tx.schedule_insert(schedule("due", next_run_at=2 * HOUR)))
    assert store.write(lambda tx: tx.schedule_take_due(HOUR)) is None  # only the paused one is due
    taken = store.write(lambda tx: tx.schedule_take_due(10 * HOUR))
    assert taken is not None and taken.name == "due"


def test_a_tick_is_recorded_once(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule()))
    assert store.write(lambda tx: tx.schedule_run_insert(run(detail={"tick_local": "x"}))) is True
    assert store.write(lambda tx: tx.schedule_run_insert(run(outcome="skipped"))) is False
    store.write(lambda tx: tx.schedule_run_set_task("hourly", HOUR, "t-1"))
    assert store.read(lambda tx: tx.schedule_runs("hourly", 10)) == [run(task_id="t-1", detail={"tick_local": "x"})]


def test_runs_are_newest_first_up_to_the_limit(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule()))
    for i in range(1, 5):
        store.write(lambda tx, i=i: tx.schedule_run_insert(run(tick=i * HOUR)))
    assert [r.tick_at for r in store.read(lambda tx: tx.schedule_runs("hourly", 2))] == [4 * HOUR, 3 * HOUR]


def test_advance_moves_only_a_schedule_still_at_the_expected_tick(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule(last_task_id="old")))
    moved = store.write(
        lambda tx: tx.schedule_advance(
            "hourly", expect_next=2 * HOUR, next_run_at=3 * HOUR, tick_at=2 * HOUR, task_id="t", now=9.0
        )
    )
    assert moved is False
    moved = store.write(
        lambda tx: tx.schedule_advance(
            "hourly", expect_next=HOUR, next_run_at=2 * HOUR, tick_at=HOUR, task_id=None, now=9.0
        )
    )
    got = store.read(lambda tx: tx.schedule_get("hourly"))
    assert moved is True and got is not None
    assert (got.next_run_at, got.last_tick_at, got.last_task_id, got.updated_at) == (2 * HOUR, HOUR, "old", 9.0)


def test_next_due_is_the_earliest_running_tick(store: Store) -> None:
    assert store.read(lambda tx: tx.schedule_next_due()) is None
    store.write(lambda tx: tx.schedule_insert(schedule("a", next_run_at=HOUR, paused=True)))
    assert store.read(lambda tx: tx.schedule_next_due()) is None
    store.write(lambda tx: tx.schedule_insert(schedule("b", next_run_at=5 * HOUR)))
    store.write(lambda tx: tx.schedule_insert(schedule("c", next_run_at=4 * HOUR)))
    assert store.read(lambda tx: tx.schedule_next_due()) == 4 * HOUR


def counts(store: Store) -> tuple[int, int]:
    return store.read(
        lambda tx: (tx.value("SELECT count(*) FROM tasks"), tx.value("SELECT count(*) FROM schedule_runs"))
    )


def test_two_fires_of_one_tick_count_once(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule()))
    now = HOUR + 5
    fired = store.write(schedules_state.fire_next_due, now=now, defaults=DEFAULTS)
    assert fired is not None and fired.outcome == "fired" and fired.task_id is not None
    # A second watchdog read the schedule before the first moved it on, and handles the same tick.
    store.write(lambda tx: tx.run("UPDATE schedules SET next_run_at = ? WHERE name = 'hourly'", (HOUR,)))
    again = store.write(schedules_state.fire_next_due, now=now, defaults=DEFAULTS)
    assert again is None  # handled already: nothing submitted, nothing to count
    assert counts(store) == (1, 1)
    runs = store.read(lambda tx: tx.schedule_runs("hourly", 10))
    assert [(r.tick_at, r.outcome, r.task_id) for r in runs] == [(HOUR, "fired", fired.task_id)]
    got = store.read(lambda tx: tx.schedule_get("hourly"))
    assert got is not None and got.next_run_at == 2 * HOUR  # moved on: the tick is not due again
    assert store.write(schedules_state.fire_next_due, now=now, defaults=DEFAULTS) is None


def test_a_tick_handled_already_does_not_hold_up_another_due_schedule(store: Store) -> None:
    store.write(lambda tx: tx.schedule_insert(schedule("a", next_run_at=HOUR)))
    store.write(lambda tx: tx.schedule_insert(schedule("b", next_run_at=HOUR + 1)))
    store.write(lambda tx: tx.schedule_run_insert(run("a", HOUR)))  # another watchdog recorded a's tick
    fired = store.write(schedules_state.fire_next_due, now=HOUR + 5, defaults=DEFAULTS)
    assert fired is not None and fired.schedule == "b"
    assert counts(store) == (1, 2)


def test_two_watchdogs_firing_one_tick_together_submit_once(store: Store, tmp_path: Any) -> None:
    """Site 10 with two writers (two Stores, as two watchdog processes) started together."""
    store.write(lambda tx: tx.schedule_insert(schedule()))
    start = threading.Barrier(2)
    fired: list[Any] = []

    def watchdog() -> None:
        writer = Store(tmp_path / "mcs.db")
        start.wait()
        fired.append(writer.write(schedules_state.fire_next_due, now=HOUR + 5, defaults=DEFAULTS))
        writer.close()

    threads = [threading.Thread(target=watchdog) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(fired) == 2 and sorted(r is None for r in fired) == [False, True]
    assert counts(store) == (1, 1)
