"""Serialisation sites 9 and 11 (docs/design/engines.md 4.1) with two engines on one database, as two
replicas: each thread runs the state function through its own engine, the second starting while the first
is inside its transaction. On SQLite the second simply waits for the first's commit; on PostgreSQL the
name lock (site 9) or the unique key (site 11) must make it wait and then see the first's row."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcs.engines.sqlite.engine import Store
from mcs.errors import Conflict, PreconditionFailed
from mcs.models import Caller
from mcs.namespaces import parse_namespace
from mcs.state import agents as agents_state
from mcs.state import memory as memory_state

WAIT = 30  # seconds a thread waits for the other before the test fails


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    first = Store(tmp_path / "race.db", synchronous="NORMAL")
    first.migrate()
    second = Store(tmp_path / "race.db", synchronous="NORMAL")
    yield first, second
    first.close()
    second.close()


class Pausing:
    """A Tx that pauses after the read its write decides on (a memory key) or after its insert (an agent):
    it tells the test it is there and waits until the other transaction has been started."""

    def __init__(self, tx: Any, inside: threading.Event, other_started: threading.Event) -> None:
        self.tx, self.inside, self.other_started = tx, inside, other_started

    def _pause(self) -> None:
        if not self.inside.is_set():
            self.inside.set()
            assert self.other_started.wait(WAIT)

    def memory_get(self, ns: str, key: str, now: float) -> Any:
        found = self.tx.memory_get(ns, key, now)
        self._pause()
        return found

    def agent_insert(self, row: Any) -> Any:
        created = self.tx.agent_insert(row)
        self._pause()
        return created

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tx, name)


def race(engines: tuple[Any, Any], fn: Callable[..., Any], **kwargs: Any) -> list[Any]:
    """Run fn on the first engine until it is inside its transaction, then on the second; both outcomes
    (a result or the exception raised), first engine's first."""
    inside, other_started = threading.Event(), threading.Event()
    outcomes: list[Any] = [None, None]

    def first() -> None:
        try:
            outcomes[0] = engines[0].write(lambda tx: fn(Pausing(tx, inside, other_started), **kwargs))
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[0] = exc

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(WAIT)
    other_started.set()  # the second begins now, while the first has not committed
    try:
        outcomes[1] = engines[1].write(fn, **kwargs)
    except Exception as exc:  # noqa: BLE001
        outcomes[1] = exc
    thread.join(WAIT)
    assert not thread.is_alive()
    return outcomes


def test_two_creators_of_one_name_one_wins_the_other_gets_409(engines: tuple[Any, Any]) -> None:
    outcomes = race(engines, agents_state.create, name="a", capabilities=[], actor="admin", now=1.0)
    assert isinstance(outcomes[1], Conflict) and outcomes[1].code == "agent_exists"
    assert outcomes[0].name == "a"
    kinds = engines[0].read(lambda tx: tx.execute("SELECT kind FROM agent_events WHERE agent = 'a'").fetchall())
    assert [k[0] for k in kinds] == ["created"]


def test_two_create_only_puts_of_one_key_one_wins_the_other_gets_412(engines: tuple[Any, Any]) -> None:
    put = memory_state.Put(key="k", value='"x"', if_none_match=True)
    caller, mesh = Caller(name="admin", is_admin=True), parse_namespace("mesh")
    outcomes = race(engines, memory_state.put, caller=caller, ns=mesh, put=put, now=1.0)
    assert outcomes[0].version == 1
    assert isinstance(outcomes[1], PreconditionFailed) and outcomes[1].code == "key_exists"


def test_two_if_match_puts_of_one_version_one_wins_no_lost_update(engines: tuple[Any, Any]) -> None:
    caller, mesh = Caller(name="admin", is_admin=True), parse_namespace("mesh")
    engines[0].write(memory_state.put, caller=caller, ns=mesh, put=memory_state.Put(key="n", value="0"), now=1.0)
    put = memory_state.Put(key="n", value="1", if_match=1)
    outcomes = race(engines, memory_state.put, caller=caller, ns=mesh, put=put, now=2.0)
    assert outcomes[0].version == 2
    assert isinstance(outcomes[1], PreconditionFailed) and outcomes[1].code == "version_mismatch"
    assert engines[1].read(lambda tx: tx.memory_get("mesh", "n", 3.0)).version == 2
