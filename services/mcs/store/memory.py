"""Shared memory: namespaced keys with versions, TTLs and tags. Functions run inside `in_write`/`in_read`.

An expired key is absent everywhere at once (reads, listings, conditional writes), before the watchdog
purges it. A read the caller may not make answers exactly as a missing key does, so a private key's
existence does not leak.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from mcs import quotas
from mcs.errors import BadRequest, Forbidden, NotFound, PreconditionFailed
from mcs.models import Caller, iso
from mcs.namespaces import Kind, Namespace
from mcs.store import agents as agents_store
from mcs.store.connection import Connection

TOP = "\U0010ffff"  # sorts after every other character: the end of a prefix range


@dataclass(frozen=True, kw_only=True)
class Put:
    key: str
    value: str  # JSON text
    ttl: float | None = None
    tags: tuple[str, ...] = ()
    if_match: int | None = None
    if_none_match: bool = False


def _item(row: Any, *, with_value: bool) -> dict[str, Any]:
    item = {
        "ns": row["ns"],
        "key": row["key"],
        "version": row["version"],
        "tags": json.loads(row["tags"]),
        "expires_at": iso(row["expires_at"]),
        "updated_by": row["updated_by"],
        "updated_at": iso(row["updated_at"]),
    }
    if with_value:
        item["value"] = json.loads(row["value"])
    return item


def _row(conn: Connection, ns: Namespace, key: str, now: float) -> Any:
    return conn.execute(
        "SELECT * FROM memory WHERE ns = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)",
        (ns.name, key, now),
    ).fetchone()


def _missing(ns: Namespace, key: str) -> NotFound:
    return NotFound(f"no key {key!r} in {ns.name}", code="no_such_key")


def _check_write(conn: Connection, ns: Namespace, caller: Caller) -> None:
    if ns.owner is not None and agents_store.get(conn, ns.owner) is None:
        raise BadRequest(f"{ns.name}: there is no agent named {ns.owner!r}", code="bad_namespace")
    if not ns.can_write(caller):
        who = "that agent alone" if ns.kind is Kind.PRIVATE else f"{ns.owner} alone (every agent reads it)"
        raise Forbidden(f"{ns.name} is written by {who}", code="namespace_forbidden")


def _check_list(ns: Namespace, caller: Caller) -> None:
    if not ns.can_read(caller):
        raise Forbidden(f"{ns.name} is readable by {ns.owner} alone", code="namespace_forbidden")


def get(conn: Connection, *, caller: Caller, ns: Namespace, key: str, now: float) -> dict[str, Any]:
    row = _row(conn, ns, key, now) if ns.can_read(caller) else None
    if row is None:
        raise _missing(ns, key)
    return _item(row, with_value=True)


def _put_one(conn: Connection, caller: Caller, ns: Namespace, put: Put, now: float) -> dict[str, Any]:
    current = _row(conn, ns, put.key, now)
    if put.if_none_match and current is not None:
        raise PreconditionFailed(f"{put.key!r} exists in {ns.name} (version {current['version']})", code="key_exists")
    if put.if_match is not None and (current is None or current["version"] != put.if_match):
        now_at = "is absent" if current is None else f"is at version {current['version']}"
        raise PreconditionFailed(
            f"{put.key!r} in {ns.name} {now_at}, not version {put.if_match}", code="version_mismatch"
        )
    version = 1 if current is None else current["version"] + 1
    expires = None if put.ttl is None else now + put.ttl
    conn.execute(
        "INSERT INTO memory (ns, key, value, version, tags, expires_at, updated_by, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,"
        " version = excluded.version, tags = excluded.tags, expires_at = excluded.expires_at,"
        " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        (ns.name, put.key, put.value, version, json.dumps(list(put.tags)), expires, caller.actor, now),
    )
    return {
        "ns": ns.name,
        "key": put.key,
        "version": version,
        "tags": list(put.tags),
        "expires_at": iso(expires),
        "updated_by": caller.actor,
        "updated_at": iso(now),
    }


def usage(conn: Connection, ns: Namespace) -> int:
    """Bytes of keys and values `ns` holds (expired keys count until the watchdog purges them)."""
    row = conn.execute("SELECT bytes FROM memory_usage WHERE ns = ?", (ns.name,)).fetchone()
    return int(row[0]) if row else 0


def _check_quota(conn: Connection, caller: Caller, ns: Namespace, before: int, quota_bytes: int) -> None:
    """Refuse (429) a write that grew `ns` past `quota_bytes` (0: no quota); the caller's transaction
    then rolls back. A write that does not grow the namespace passes, so an over-quota one can shrink."""
    if quota_bytes <= 0 or caller.is_admin:
        return
    after = usage(conn, ns)
    if after > quota_bytes and after > before:
        raise quotas.memory_bytes_exceeded(ns.name, after, quota_bytes)


def put(
    conn: Connection, *, caller: Caller, ns: Namespace, put: Put, now: float, quota_bytes: int = 0
) -> dict[str, Any]:
    _check_write(conn, ns, caller)
    before = usage(conn, ns)
    item = _put_one(conn, caller, ns, put, now)
    _check_quota(conn, caller, ns, before, quota_bytes)
    return item


def _delete_one(conn: Connection, ns: Namespace, key: str, if_match: int | None, now: float) -> bool:
    current = _row(conn, ns, key, now)
    if if_match is not None and (current is None or current["version"] != if_match):
        raise PreconditionFailed(f"{key!r} in {ns.name} is not at version {if_match}", code="version_mismatch")
    conn.execute("DELETE FROM memory WHERE ns = ? AND key = ?", (ns.name, key))  # an expired row goes too
    return current is not None


def delete(conn: Connection, *, caller: Caller, ns: Namespace, key: str, if_match: int | None, now: float) -> None:
    _check_write(conn, ns, caller)
    if not _delete_one(conn, ns, key, if_match, now):
        raise _missing(ns, key)


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(b"k" + key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        if not raw.startswith("k"):
            raise ValueError(raw)
        return raw[1:]
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not one this server gave out", code="bad_cursor") from exc


def list_keys(
    conn: Connection,
    *,
    caller: Caller,
    ns: Namespace,
    prefix: str | None,
    tag: str | None,
    limit: int,
    cursor: str | None,
    now: float,
) -> dict[str, Any]:
    """Keys in key order, without their values; `next_cursor` continues after the last key shown."""
    _check_list(ns, caller)
    where = ["ns = ?", "(expires_at IS NULL OR expires_at > ?)"]
    args: list[Any] = [ns.name, now]
    if prefix:
        where.append("key >= ? AND key < ?")
        args += [prefix, prefix + TOP]
    if tag:
        where.append("EXISTS (SELECT 1 FROM json_each(memory.tags) WHERE json_each.value = ?)")
        args.append(tag)
    if cursor:
        where.append("key > ?")
        args.append(_decode_cursor(cursor))
    rows = conn.execute(
        "SELECT ns, key, version, tags, expires_at, updated_by, updated_at FROM memory WHERE "
        + " AND ".join(where)
        + " ORDER BY key LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    items = [_item(r, with_value=False) for r in rows[:limit]]
    return {"items": items, "next_cursor": _encode_cursor(items[-1]["key"]) if len(rows) > limit else None}


def bulk(
    conn: Connection,
    *,
    caller: Caller,
    ns: Namespace,
    gets: list[str],
    puts: list[Put],
    deletes: list[str],
    now: float,
    quota_bytes: int = 0,
) -> dict[str, Any]:
    """Gets (seeing the state before this request's writes), then puts, then deletes, in one transaction.
    Everything is authorised before anything is done; any refusal or failed condition writes nothing."""
    if puts or deletes:
        _check_write(conn, ns, caller)
    if gets:
        _check_list(ns, caller)
    got = []
    for key in gets:
        row = _row(conn, ns, key, now)
        got.append({"key": key, "found": False} if row is None else {"found": True} | _item(row, with_value=True))
    before = usage(conn, ns)
    stored = [_put_one(conn, caller, ns, p, now) for p in puts]
    deleted = [{"key": key, "deleted": _delete_one(conn, ns, key, None, now)} for key in deletes]
    _check_quota(conn, caller, ns, before, quota_bytes)
    return {"get": got, "put": stored, "delete": deleted}


def purge_expired(conn: Connection, *, now: float, limit: int = 1000) -> int:
    return int(
        conn.execute(
            "DELETE FROM memory WHERE (ns, key) IN (SELECT ns, key FROM memory WHERE expires_at <= ? LIMIT ?)",
            (now, limit),
        ).rowcount
    )
