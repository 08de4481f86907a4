"""The dispatcher's view of the online agents (mcs.state.routing_view.RoutingView) on a real SQLite file,
with the clock injected: it must see every change that matters to routing while reading only what changed."""

from __future__ import annotations

import pytest

from mcs.engines.sqlite.engine import Store
from mcs.state import agents as agents_store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "view.db", synchronous="NORMAL")
    s.migrate()
    yield s
    s.close()


def register(store, name, caps, *, now, ttl=10.0, notify_url="http://127.0.0.1:9/hook", concurrency=1):
    return store.write(
        agents_store.register,
        name=name,
        capabilities=caps,
        notify_url=notify_url,
        ttl=ttl,
        concurrency=concurrency,
        now=now,
    )


def online(store, view, now):
    store.read(view.refresh, now=now)
    return {name: sorted(c.capabilities) for name, c in view.agents.items()}


def test_the_view_follows_agents_coming_changing_expiring_and_leaving(store):
    for name in ("a", "b"):
        store.write(agents_store.create, name=name, capabilities=[], actor="admin", now=0.0)
    view = agents_store.RoutingView()
    assert online(store, view, 0.5) == {}

    register(store, "a", ["x"], now=1.0)
    register(store, "b", ["y"], now=1.0, ttl=100)
    assert online(store, view, 1.5) == {"a": ["x"], "b": ["y"]}
    routable = view.routable

    # Heartbeats that change nothing: nothing to read, nothing routable changed.
    reads = (view.full_reads, view.partial_reads)
    for t in (2.0, 3.0, 8.0):
        register(store, "a", ["x"], now=t)
    assert online(store, view, 8.5) == {"a": ["x"], "b": ["y"]}
    assert (view.full_reads, view.partial_reads) == reads and view.routable == routable

    # Past the TTL the view last read (11), a's later heartbeat (at 8: until 18) keeps it online...
    assert online(store, view, 12.0) == {"a": ["x"], "b": ["y"]}
    assert view.routable == routable
    # ...and past that one it is gone, before the watchdog has marked it offline.
    assert online(store, view, 18.5) == {"b": ["y"]}
    assert view.routable > routable

    # Back online, then a heartbeat that changes capabilities, then concurrency only.
    register(store, "a", ["x"], now=19.0)
    register(store, "a", ["x", "z"], now=20.0)
    assert online(store, view, 20.5) == {"a": ["x", "z"], "b": ["y"]}
    routable = view.routable
    register(store, "a", ["x", "z"], now=21.0, concurrency=4)
    online(store, view, 21.5)
    assert view.agents["a"].capacity == 4 and view.routable == routable  # capacity is no reason to unpark

    store.write(agents_store.delete, name="b", actor="admin", now=22.0)
    assert online(store, view, 22.5) == {"a": ["x", "z"]}
    assert view.capable(("z",)) == ["a"] and view.capable(("y",)) == []


def test_many_changes_at_once_read_every_agent_once(store):
    view = agents_store.RoutingView()
    online(store, view, 0.0)
    names = [f"agent-{i:04d}" for i in range(agents_store.PARTIAL_READ_MAX + 1)]
    for name in names:
        store.write(agents_store.create, name=name, capabilities=[], actor="admin", now=0.0)
        register(store, name, ["x"], now=1.0, ttl=100)
    full = view.full_reads
    assert len(online(store, view, 2.0)) == len(names)
    assert view.full_reads == full + 1
