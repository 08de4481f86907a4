"""MemoryTx: the memory area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol

from mcs.models import MemoryItem


class MemoryTx(Protocol):
    """Shared memory keys (namespaced, versioned, with TTLs and tags) and each namespace's byte count."""

    def memory_get(self, ns: str, key: str, now: float) -> MemoryItem | None:
        """The key with its value, or None when it is absent or expired at `now`."""
        ...

    def memory_upsert(self, item: MemoryItem) -> None:
        """Write the key (its value must be set), replacing whatever row is there, expired or not."""
        ...

    def memory_delete(self, ns: str, key: str) -> bool:
        """Remove the key's row, expired or not; False when there was none."""
        ...

    def memory_page(
        self, ns: str, *, prefix: str | None, tag: str | None, after: str | None, limit: int, now: float
    ) -> list[MemoryItem]:
        """Up to `limit` live keys in key order, without values: starting with `prefix`, tagged `tag`,
        after the key `after` (each None: no such condition)."""
        ...

    def memory_usage(self, ns: str) -> int:
        """Bytes of keys and values the namespace holds (kept by triggers; expired keys count until purged)."""
        ...

    def memory_purge(self, now: float, limit: int) -> int:
        """Remove up to `limit` keys expired at `now`; how many."""
        ...

    def memory_drop_namespaces(self, names: list[str]) -> dict[str, int]:
        """Remove every key of these namespaces; keys removed per namespace (0 for those that held none)."""
        ...
