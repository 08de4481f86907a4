"""Serialisation sites 10 and 11 for schedules (docs/design/engines.md 4.1) with two engines on one database,
as two watchdogs or two api replicas, both transactions past their read before either writes
(tests/conformance/races.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mcs.errors import Conflict
from mcs.models import ADMIN
from mcs.schedules import Cron
from mcs.state import schedules as schedules_state
from tests.conformance.races import race
from tests.conformance.test_tx_schedules import DEFAULTS, HOUR, counts, schedule


@pytest.fixture
def engines(engine: Any, engine_factory: Any) -> tuple[Any, Any]:
    return engine, engine_factory()


def test_site10_two_watchdogs_that_both_read_the_due_schedule_fire_its_tick_once(engines: tuple[Any, Any]) -> None:
    engines[0].write(lambda tx: tx.schedule_insert(schedule()))

    def fire(tx: Any) -> Any:
        return schedules_state.fire_next_due(tx, now=HOUR + 5, defaults=DEFAULTS)

    outcomes = race(engines, (fire, fire), after="schedule_take_due")
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    assert sorted(o is None for o in outcomes) == [False, True]
    assert counts(engines[0]) == (1, 1)  # one task submitted, one run recorded


def test_site11_two_creates_of_one_schedule_name_one_wins_the_other_gets_409(engines: tuple[Any, Any]) -> None:
    def create(tx: Any) -> Any:
        return schedules_state.create(
            tx, name="nightly", cron=Cron.parse("0 3 * * *"), kind="task", body={"type": "t"}, overlap="skip",
            catch_up="one", caller=ADMIN, now=1.0,
        )  # fmt: skip

    outcomes = race(engines, (create, create), before="schedule_insert")
    created = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(created) == 1 and created[0].name == "nightly"
    assert len(refused) == 1 and isinstance(refused[0], Conflict) and refused[0].code == "schedule_exists"
    assert engines[0].read(lambda tx: tx.value("SELECT count(*) FROM schedules")) == 1
