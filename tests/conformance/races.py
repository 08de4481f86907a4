"""Two writers, as two replicas, racing through one database (docs/design/engines.md 4.1, 6.1).

`race` runs one job per engine, each in a thread of its own, and holds each job at a `threading.Barrier`
just before (or after) the Tx call named, so both transactions have read what they decide on before either
writes. Where the engine serialises them (SQLite always; PostgreSQL at a site's lock) the second waits
before it reaches the barrier, the first gives up waiting after BARRIER_WAIT and goes on, and the second
then runs after the first committed: the test's outcome is the serial one. Without the lock both pass the
barrier together and the outcome is the race's. The wait only decides whether the race is provoked, never
what the test asserts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

BARRIER_WAIT = 2.0  # seconds a job waits at the barrier for the other before going on alone
JOIN_WAIT = 60.0  # seconds the test waits for a thread before it fails


class Paused:
    """A Tx that waits at the barrier once, just before (`before`) or after (`after`) the named call."""

    def __init__(self, tx: Any, barrier: threading.Barrier, passed: list[bool], before: str, after: str) -> None:
        self._tx, self._barrier, self._passed, self._before, self._after = tx, barrier, passed, before, after

    def _wait(self) -> None:
        if self._passed[0]:
            return  # once per thread, a retried job included
        self._passed[0] = True
        try:
            self._barrier.wait(BARRIER_WAIT)
        except threading.BrokenBarrierError:
            pass  # the other is waiting for our lock (or already done): go on alone

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._tx, name)
        if name not in (self._before, self._after) or not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            if name == self._before:
                self._wait()
            result = found(*args, **kwargs)
            if name == self._after:
                self._wait()
            return result

        return call


def race(
    engines: tuple[Any, Any],
    jobs: tuple[Callable[[Any], Any], Callable[[Any], Any]],
    *,
    before: str = "",
    after: str = "",
) -> list[Any]:
    """Run jobs[i] through engines[i].write, both at once; their results or the exceptions they raised."""
    barrier = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def run(i: int) -> None:
        passed = [False]
        try:
            outcomes[i] = engines[i].write(lambda tx: jobs[i](Paused(tx, barrier, passed, before, after)))
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_WAIT)
    assert not any(t.is_alive() for t in threads)
    return outcomes
