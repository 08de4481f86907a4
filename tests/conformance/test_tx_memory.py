"""The MemoryTx contract (mcs.engines.areas.memory) on a real SQLite file through `Store`, and the memory
state's use of it: conditions, the key locks of site 9 (docs/design/engines.md 4.1), the quota."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcs.engines.sqlite.engine import Store
from mcs.errors import McsError, PreconditionFailed
from mcs.models import Caller, MemoryItem
from mcs.namespaces import parse_namespace
from mcs.state import memory as memory_state


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "memory.db", synchronous="NORMAL")
    s.migrate()
    yield s
    s.close()


def item(key: str, *, ns: str = "mesh", value: str = '"v"', version: int = 1, **kw: Any) -> MemoryItem:
    fields: dict[str, Any] = {"tags": (), "expires_at": None, "updated_by": "admin", "updated_at": 1.0} | kw
    return MemoryItem(ns=ns, key=key, version=version, value=value, **fields)


def put(store: Any, *items: MemoryItem) -> None:
    for i in items:
        store.write(lambda tx, i=i: tx.memory_upsert(i))


def test_upsert_then_get_returns_the_item_with_its_value(store: Any) -> None:
    stored = item("k", value='{"a": 1}', tags=("x", "y"), expires_at=50.0, updated_by="bob", updated_at=2.0)
    put(store, stored)
    assert store.read(lambda tx: tx.memory_get("mesh", "k", 10.0)) == stored
    assert store.read(lambda tx: tx.memory_get("mesh", "k", 50.0)) is None  # expired: absent
    assert store.read(lambda tx: tx.memory_get("other", "k", 10.0)) is None
    replaced = item("k", value="2", version=2)
    put(store, replaced)  # over the row, expired or not
    assert store.read(lambda tx: tx.memory_get("mesh", "k", 100.0)) == replaced


def test_delete_removes_expired_rows_too(store: Any) -> None:
    put(store, item("k", expires_at=5.0))
    assert store.write(lambda tx: tx.memory_delete("mesh", "k")) is True
    assert store.write(lambda tx: tx.memory_delete("mesh", "k")) is False
    assert store.read(lambda tx: tx.memory_usage("mesh")) == 0


def test_page_filters_by_prefix_tag_cursor_and_expiry_without_values(store: Any) -> None:
    put(
        store,
        item("app/a", tags=("red",)),
        item("app/b", tags=("blue", "red")),
        item("app/c", tags=("red",), expires_at=5.0),
        item("apq"),
        item("b", tags=("red",)),
        item("app/z", ns="other", tags=("red",)),
    )

    def keys(**kw: Any) -> list[str]:
        args = {"prefix": None, "tag": None, "after": None, "limit": 10, "now": 10.0} | kw
        page = store.read(lambda tx: tx.memory_page("mesh", **args))
        assert all(i.value is None for i in page)
        return [i.key for i in page]

    assert keys() == ["app/a", "app/b", "apq", "b"]
    assert keys(prefix="app/") == ["app/a", "app/b"]
    assert keys(tag="red") == ["app/a", "app/b", "b"]
    assert keys(tag="re") == []  # a whole tag, not a substring of the JSON text
    assert keys(prefix="app/", tag="blue") == ["app/b"]
    assert keys(after="app/b") == ["apq", "b"]
    assert keys(limit=2) == ["app/a", "app/b"]
    assert keys(now=1.0, prefix="app/") == ["app/a", "app/b", "app/c"]


def test_usage_counts_key_and_value_bytes_per_namespace(store: Any) -> None:
    assert store.read(lambda tx: tx.memory_usage("mesh")) == 0
    put(store, item("ab", value='"xyz"'), item("c", ns="other", value="1"))
    assert store.read(lambda tx: tx.memory_usage("mesh")) == len("ab") + len('"xyz"')
    put(store, item("ab", value="1", version=2))
    assert store.read(lambda tx: tx.memory_usage("mesh")) == len("ab") + 1


def test_purge_removes_at_most_limit_expired_keys(store: Any) -> None:
    put(store, *(item(f"k{i}", expires_at=5.0) for i in range(3)), item("live"), item("later", expires_at=50.0))
    assert store.write(lambda tx: tx.memory_purge(10.0, 2)) == 2
    assert store.write(lambda tx: tx.memory_purge(10.0, 2)) == 1
    assert store.write(lambda tx: tx.memory_purge(10.0, 2)) == 0
    assert [i.key for i in store.read(lambda tx: tx.memory_page("mesh", prefix=None, tag=None, after=None,
                                                                   limit=9, now=1.0))] == ["later", "live"]  # fmt: skip


def test_drop_namespaces_counts_keys_removed_in_each(store: Any) -> None:
    put(store, item("a", ns="private:x"), item("b", ns="private:x"), item("c", ns="mesh"))
    assert store.write(lambda tx: tx.memory_drop_namespaces(["private:x", "agent:x"])) == {"private:x": 2, "agent:x": 0}
    assert store.write(lambda tx: tx.memory_drop_namespaces([])) == {}
    assert store.read(lambda tx: tx.memory_get("mesh", "c", 1.0)) is not None


class Recording:
    """A Tx that notes the name locks taken, passing everything else to the real one."""

    def __init__(self, tx: Any) -> None:
        self.tx, self.locks = tx, []

    def lock_name(self, space: str, name: str) -> None:
        self.locks.append((space, name))
        self.tx.lock_name(space, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tx, name)


def test_writes_lock_every_key_they_decide_on_bulk_in_sorted_order(store: Any) -> None:
    mesh, admin = parse_namespace("mesh"), Caller(name="admin", is_admin=True)
    seen: list[Any] = []

    def bulk(tx: Any) -> Any:
        rec = Recording(tx)
        puts = [memory_state.Put(key=k, value="1") for k in ("zeta", "alpha")]
        out = memory_state.bulk(rec, caller=admin, ns=mesh, gets=["g"], puts=puts, deletes=["mid", "alpha"], now=1.0)
        seen.extend(rec.locks)
        return out

    result = store.write(bulk)
    assert seen == [("mem", "mesh\nalpha"), ("mem", "mesh\nmid"), ("mem", "mesh\nzeta")]
    assert result.to_api()["delete"] == [{"key": "mid", "deleted": False}, {"key": "alpha", "deleted": True}]

    def one(tx: Any) -> Any:
        rec = Recording(tx)
        memory_state.put(rec, caller=admin, ns=mesh, put=memory_state.Put(key="k", value="1"), now=1.0)
        memory_state.delete(rec, caller=admin, ns=mesh, key="k", if_match=1, now=1.0)
        return rec.locks

    assert store.write(one) == [("mem", "mesh\nk"), ("mem", "mesh\nk")]


def test_if_match_and_quota_refusals_write_nothing(store: Any) -> None:
    mesh, bob = parse_namespace("mesh"), Caller(name="bob")
    first = store.write(memory_state.put, caller=bob, ns=mesh, put=memory_state.Put(key="k", value="1"), now=1.0)
    assert first.version == 1 and first.updated_by == "bob"
    with pytest.raises(PreconditionFailed):
        store.write(memory_state.put, caller=bob, ns=mesh, put=memory_state.Put(key="k", value="2", if_match=7), now=2)
    with pytest.raises(McsError) as over:
        store.write(
            memory_state.put, caller=bob, ns=mesh, put=memory_state.Put(key="big", value="9" * 100), now=3.0,
            quota_bytes=50,
        )  # fmt: skip
    assert over.value.status == 429
    assert store.read(lambda tx: tx.memory_get("mesh", "big", 3.0)) is None
    assert store.read(lambda tx: tx.memory_get("mesh", "k", 3.0)) == first
