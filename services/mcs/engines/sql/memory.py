"""SQL of the memory area shared by both engines (placeholders `?`; the PostgreSQL engine translates them)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from mcs.engines.sql.base import SqlTx
from mcs.models import MemoryItem

TOP = "\U0010ffff"  # sorts after every other character: the end of a prefix range
META_COLUMNS = "ns, key, version, tags, expires_at, updated_by, updated_at"


class MemorySql(SqlTx):
    """Implements mcs.engines.areas.memory.MemoryTx; dialect-specific methods are overridden per engine."""

    def memory_get(self, ns: str, key: str, now: float) -> MemoryItem | None:
        row = self.row(
            "SELECT * FROM memory WHERE ns = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (ns, key, now),
        )
        return MemoryItem.from_row(row) if row else None

    def memory_upsert(self, item: MemoryItem) -> None:
        assert item.value is not None, "a stored key has a value"
        self.run(
            "INSERT INTO memory (ns, key, value, version, tags, expires_at, updated_by, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
            " version = excluded.version, tags = excluded.tags, expires_at = excluded.expires_at,"
            " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (
                item.ns,
                item.key,
                item.value,
                item.version,
                json.dumps(list(item.tags)),
                item.expires_at,
                item.updated_by,
                item.updated_at,
            ),
        )

    def memory_delete(self, ns: str, key: str) -> bool:
        return self.run("DELETE FROM memory WHERE ns = ? AND key = ?", (ns, key)) > 0

    # The condition that a key's tags (a JSON array in text) hold the one bound: each engine says it its way.
    TAG_MATCH: ClassVar[str]

    def memory_page(
        self, ns: str, *, prefix: str | None, tag: str | None, after: str | None, limit: int, now: float
    ) -> list[MemoryItem]:
        where = ["ns = ?", "(expires_at IS NULL OR expires_at > ?)"]
        args: list[Any] = [ns, now]
        if prefix:
            where.append("key >= ? AND key < ?")
            args += [prefix, prefix + TOP]
        if tag:
            where.append(self.TAG_MATCH)
            args.append(tag)
        if after is not None:
            where.append("key > ?")
            args.append(after)
        rows = self.rows(
            f"SELECT {META_COLUMNS} FROM memory WHERE " + " AND ".join(where) + " ORDER BY key LIMIT ?",
            (*args, limit),
        )
        return [MemoryItem.from_row(r) for r in rows]

    def memory_usage(self, ns: str) -> int:
        found = self.value("SELECT bytes FROM memory_usage WHERE ns = ?", (ns,))
        return 0 if found is None else int(found)

    def memory_purge(self, now: float, limit: int) -> int:
        return self.run(
            "DELETE FROM memory WHERE (ns, key) IN (SELECT ns, key FROM memory WHERE expires_at <= ? LIMIT ?)",
            (now, limit),
        )

    def memory_drop_namespaces(self, names: list[str]) -> dict[str, int]:
        dropped = dict.fromkeys(names, 0)
        if not names:
            return dropped
        marks = ",".join("?" * len(names))
        for row in self.rows(f"DELETE FROM memory WHERE ns IN ({marks}) RETURNING ns", tuple(names)):
            dropped[row[0]] += 1
        return dropped
