"""The OutboxTx contract (mcs.engines.areas.outbox) on a real SQLite file through `Store`: the leases that
let several notifiers share one outbox (take, renew, release, record, all by owner), and the heartbeat
rows kept per (process, instance)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mcs.engines.base import Tx
from mcs.engines.sqlite.engine import Store
from mcs.models import NewOutbox, OutboxOutcome

NOW = 1_000_000.0
LEASE = 30.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "mcs.db")
    s.migrate()
    yield s
    s.close()


def add(store: Store, agent: str | None, n: int = 1, *, at: float = NOW, kind: str = "webhook") -> None:
    def insert(tx: Tx) -> None:
        for _ in range(n):
            count = tx.value("SELECT count(*) FROM outbox")  # type: ignore[attr-defined]
            row = NewOutbox(kind=kind, message_id=f"msg_{count}", agent=agent, task_id=None, body="{}", now=at)
            tx.outbox_insert(row)

    store.write(insert)


def take(store: Store, owner: str, *, now: float = NOW, limit: int = 100, per_key: int = 100) -> list[int]:
    items = store.write(
        lambda tx: tx.outbox_take(owner, now=now, lease_until=now + LEASE, limit=limit, per_key=per_key)
    )
    return [i.id for i in items]


def lease(store: Store, row_id: int) -> tuple[str | None, float | None]:
    return store.read(lambda tx: tuple(tx.row("SELECT lease_owner, lease_until FROM outbox WHERE id = ?", (row_id,))))


def test_a_taken_row_is_leased_to_its_owner_and_nobody_else_takes_it_until_the_lease_lapses(store: Store) -> None:
    add(store, "a")
    assert store.read(lambda tx: [i.id for i in tx.outbox_due(now=NOW, limit=10, per_key=10)]) == [1]
    assert take(store, "n1") == [1]
    assert lease(store, 1) == ("n1", NOW + LEASE)
    assert store.read(lambda tx: tx.outbox_due(now=NOW, limit=10, per_key=10)) == []  # held: not due for anyone
    assert take(store, "n2", now=NOW + LEASE - 1) == []
    assert take(store, "n1", now=NOW + 1) == []  # its own lease too: a row under way is not taken again
    assert take(store, "n2", now=NOW + LEASE) == [1]  # lapsed: the next notifier sends it
    assert lease(store, 1) == ("n2", NOW + 2 * LEASE)


def test_take_returns_the_agents_webhook_target_and_keeps_the_per_agent_cap(store: Store) -> None:
    store.write(
        lambda tx: tx.run(  # type: ignore[attr-defined]
            "INSERT INTO agents (name, secret_hash, webhook_secret, notify_url, created_at)"
            " VALUES ('a', 'x', 'whsec_k', 'http://127.0.0.1:9/hook', 0)"
        )
    )
    add(store, "a", 3)
    add(store, None, 3, kind="alert")  # alerts share one key
    add(store, "b", 1, at=NOW + 60)  # not due yet
    items = store.write(lambda tx: tx.outbox_take("n1", now=NOW, lease_until=NOW + LEASE, limit=100, per_key=2))
    assert [(i.agent, i.kind) for i in items] == [("a", "webhook"), ("a", "webhook"), (None, "alert"), (None, "alert")]
    assert items[0].notify_url == "http://127.0.0.1:9/hook" and items[0].webhook_secret == "whsec_k"
    assert items[0].agent_exists and not items[2].agent_exists
    assert store.read(lambda tx: tx.outbox_next_due(NOW)) == NOW + 60
    assert take(store, "n2", per_key=2) == [3, 6]  # the rows n1 left for others


def test_renew_and_release_touch_only_the_owners_rows(store: Store) -> None:
    add(store, "a", 2)
    assert take(store, "n1") == [1, 2]
    assert store.write(lambda tx: tx.outbox_renew("n2", [1, 2], NOW + 100)) == 0
    assert store.write(lambda tx: tx.outbox_renew("n1", [1, 2, 99], NOW + 100)) == 2
    assert lease(store, 1) == ("n1", NOW + 100)
    assert take(store, "n2", now=NOW + LEASE) == []  # renewed: not lapsed at the old end
    assert store.write(lambda tx: tx.outbox_release("n2", [2])) == 0
    assert store.write(lambda tx: tx.outbox_release("n1", [2])) == 1
    assert lease(store, 2) == (None, None)
    assert take(store, "n2", now=NOW + 1) == [2]  # given back: taken at once


def test_record_writes_only_rows_the_owner_still_holds(store: Store) -> None:
    add(store, "a", 3)
    assert take(store, "n1") == [1, 2, 3]
    retry = OutboxOutcome(id=1, state="retry", attempts=1, error="HTTP 503", next_attempt_at=NOW + 5, final=False)
    done = OutboxOutcome(id=2, state="delivered", attempts=1)
    dead = OutboxOutcome(id=3, state="dead", attempts=6, error="HTTP 404")
    assert store.write(lambda tx: tx.outbox_record("n2", [retry, done, dead], NOW)) == []  # not its rows
    rows = store.read(lambda tx: tx.rows("SELECT state, attempts FROM outbox ORDER BY id"))
    assert [tuple(r) for r in rows] == [("pending", 0)] * 3
    assert store.write(lambda tx: tx.outbox_record("n1", [retry, done, dead], NOW)) == [retry, done, dead]
    rows = store.read(lambda tx: tx.rows("SELECT state, attempts, last_error, next_attempt_at FROM outbox ORDER BY id"))
    assert [tuple(r) for r in rows] == [
        ("pending", 1, "HTTP 503", NOW + 5),
        ("delivered", 1, None, NOW),
        ("dead", 6, "HTTP 404", NOW),
    ]
    assert lease(store, 1) == ("n1", NOW + LEASE)  # a retry under way keeps its lease
    assert lease(store, 2) == (None, None) and lease(store, 3) == (None, None)  # settled: lease ended
    # Attempts never go backwards; a final retry gives the row back, due at its next attempt.
    back = OutboxOutcome(id=1, state="retry", attempts=0, error="crash", next_attempt_at=NOW + 1, final=True)
    assert store.write(lambda tx: tx.outbox_record("n1", [back], NOW)) == [back]
    assert lease(store, 1) == (None, None)
    assert store.read(lambda tx: tx.value("SELECT attempts FROM outbox WHERE id = 1")) == 1
    assert take(store, "n2", now=NOW + 1) == [1]


def test_a_lapsed_lease_taken_by_another_notifier_drops_the_first_owners_outcome(store: Store) -> None:
    add(store, "a")
    take(store, "n1")
    take(store, "n2", now=NOW + LEASE)
    late = OutboxOutcome(id=1, state="delivered", attempts=1)
    assert store.write(lambda tx: tx.outbox_record("n1", [late], NOW + LEASE + 1)) == []
    assert lease(store, 1) == ("n2", NOW + 2 * LEASE)


def test_heartbeats_are_kept_per_instance(store: Store) -> None:
    store.write(lambda tx: tx.beat("notifier", "host:1", 1, NOW, NOW))
    store.write(lambda tx: tx.beat("notifier", "host:2", 2, NOW, NOW + 1))
    store.write(lambda tx: tx.beat("notifier", "host:1", 1, NOW, NOW + 2))  # upsert of its own row
    beats = store.read(lambda tx: tx.heartbeats())
    assert [(b.name, b.instance, b.pid, b.beat_at) for b in beats] == [
        ("notifier", "host:1", 1, NOW + 2),
        ("notifier", "host:2", 2, NOW + 1),
    ]
    store.write(lambda tx: tx.mark_stopped("notifier", "host:2", 99))  # another pid: not its row
    store.write(lambda tx: tx.mark_stopped("notifier", "host:2", 2))
    assert [b.pid for b in store.read(lambda tx: tx.heartbeats())] == [1, 0]
    assert store.write(lambda tx: tx.heartbeats_forget("notifier", ["host:2", "nope"])) == 1
    assert [b.instance for b in store.read(lambda tx: tx.heartbeats())] == ["host:1"]
