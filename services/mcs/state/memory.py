"""Shared memory: namespaced keys with versions, TTLs and tags. Engine-free: functions take a `Tx`.

An expired key is absent everywhere at once (reads, listings, conditional writes), before the watchdog
purges it. A read the caller may not make answers exactly as a missing key does, so a private key's
existence does not leak.

Every key a write decides on (If-Match, If-None-Match, the next version) is locked by name first
(`lock_name("mem", ...)`, docs/design/engines.md 4.1 site 9), which covers keys not there yet; a bulk
request locks its keys in sorted order, so two bulks over the same keys cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcs import quotas, render
from mcs.engines.base import Tx
from mcs.errors import BadRequest, Forbidden, NotFound, PreconditionFailed
from mcs.models import Caller, MemoryBulkResult, MemoryItem, MemoryPage
from mcs.namespaces import Kind, Namespace

PURGE_BATCH = 1000  # expired keys removed per watchdog transaction at most


@dataclass(frozen=True, kw_only=True)
class Put:
    key: str
    value: str  # JSON text
    ttl: float | None = None
    tags: tuple[str, ...] = ()
    if_match: int | None = None
    if_none_match: bool = False


def _lock(tx: Tx, ns: Namespace, keys: list[str]) -> None:
    # A newline joins the two: keys are printable and namespace names hold none, so it is unambiguous (and a
    # clash would only make two writers wait, never let both through). Not NUL: PostgreSQL text refuses it.
    for key in sorted(set(keys)):
        tx.lock_name("mem", ns.name + "\n" + key)


def _missing(ns: Namespace, key: str) -> NotFound:
    return NotFound(f"no key {key!r} in {ns.name}", code="no_such_key")


def _check_write(tx: Tx, ns: Namespace, caller: Caller) -> None:
    if ns.owner is not None and tx.agent_get(ns.owner) is None:
        raise BadRequest(f"{ns.name}: there is no agent named {ns.owner!r}", code="bad_namespace")
    if not ns.can_write(caller):
        who = "that agent alone" if ns.kind is Kind.PRIVATE else f"{ns.owner} alone (every agent reads it)"
        raise Forbidden(f"{ns.name} is written by {who}", code="namespace_forbidden")


def _check_list(ns: Namespace, caller: Caller) -> None:
    if not ns.can_read(caller):
        raise Forbidden(f"{ns.name} is readable by {ns.owner} alone", code="namespace_forbidden")


def get(tx: Tx, *, caller: Caller, ns: Namespace, key: str, now: float) -> MemoryItem:
    """The key with its value; 404 when absent, expired or not readable by the caller (alike)."""
    item = tx.memory_get(ns.name, key, now) if ns.can_read(caller) else None
    if item is None:
        raise _missing(ns, key)
    return item


def _put_one(tx: Tx, caller: Caller, ns: Namespace, put: Put, now: float) -> MemoryItem:
    """Write one key whose name lock the caller holds; its conditions checked against the live row."""
    current = tx.memory_get(ns.name, put.key, now)
    if put.if_none_match and current is not None:
        raise PreconditionFailed(f"{put.key!r} exists in {ns.name} (version {current.version})", code="key_exists")
    if put.if_match is not None and (current is None or current.version != put.if_match):
        now_at = "is absent" if current is None else f"is at version {current.version}"
        raise PreconditionFailed(
            f"{put.key!r} in {ns.name} {now_at}, not version {put.if_match}", code="version_mismatch"
        )
    item = MemoryItem(
        ns=ns.name,
        key=put.key,
        version=1 if current is None else current.version + 1,
        tags=put.tags,
        expires_at=None if put.ttl is None else now + put.ttl,
        updated_by=caller.actor,
        updated_at=now,
        value=put.value,
    )
    tx.memory_upsert(item)
    return item


def usage(tx: Tx, ns: Namespace) -> int:
    """Bytes of keys and values `ns` holds (expired keys count until the watchdog purges them)."""
    return tx.memory_usage(ns.name)


def _check_quota(tx: Tx, caller: Caller, ns: Namespace, before: int, quota_bytes: int) -> None:
    """Refuse (429) a write that grew `ns` past `quota_bytes` (0: no quota); the caller's transaction
    then rolls back. A write that does not grow the namespace passes, so an over-quota one can shrink."""
    if quota_bytes <= 0 or caller.is_admin:
        return
    after = usage(tx, ns)
    if after > quota_bytes and after > before:
        raise quotas.memory_bytes_exceeded(ns.name, after, quota_bytes)


def put(tx: Tx, *, caller: Caller, ns: Namespace, put: Put, now: float, quota_bytes: int = 0) -> MemoryItem:
    """Write a key (If-Match / If-None-Match checked, version bumped); the item as stored."""
    _check_write(tx, ns, caller)
    _lock(tx, ns, [put.key])
    before = usage(tx, ns)
    item = _put_one(tx, caller, ns, put, now)
    _check_quota(tx, caller, ns, before, quota_bytes)
    return item


def _delete_one(tx: Tx, ns: Namespace, key: str, if_match: int | None, now: float) -> bool:
    current = tx.memory_get(ns.name, key, now)
    if if_match is not None and (current is None or current.version != if_match):
        raise PreconditionFailed(f"{key!r} in {ns.name} is not at version {if_match}", code="version_mismatch")
    tx.memory_delete(ns.name, key)  # an expired row goes too
    return current is not None


def delete(tx: Tx, *, caller: Caller, ns: Namespace, key: str, if_match: int | None, now: float) -> None:
    """Remove a key (If-Match checked); 404 when it was absent or expired."""
    _check_write(tx, ns, caller)
    _lock(tx, ns, [key])
    if not _delete_one(tx, ns, key, if_match, now):
        raise _missing(ns, key)


def _encode_cursor(text: str) -> str:
    return render.encode_text_cursor("k", text)


def _decode_cursor(cursor: str) -> str:
    return render.decode_text_cursor("k", cursor)


def list_keys(
    tx: Tx,
    *,
    caller: Caller,
    ns: Namespace,
    prefix: str | None,
    tag: str | None,
    limit: int,
    cursor: str | None,
    now: float,
) -> MemoryPage:
    """Keys in key order, without their values; `next_cursor` continues after the last key shown."""
    _check_list(ns, caller)
    after = _decode_cursor(cursor) if cursor else None
    found = tx.memory_page(ns.name, prefix=prefix or None, tag=tag or None, after=after, limit=limit + 1, now=now)
    items = found[:limit]
    return MemoryPage(items=items, next_cursor=_encode_cursor(items[-1].key) if len(found) > limit else None)


def bulk(
    tx: Tx,
    *,
    caller: Caller,
    ns: Namespace,
    gets: list[str],
    puts: list[Put],
    deletes: list[str],
    now: float,
    quota_bytes: int = 0,
) -> MemoryBulkResult:
    """Gets (seeing the state before this request's writes), then puts, then deletes, in one transaction.
    Everything is authorised before anything is done; any refusal or failed condition writes nothing."""
    if puts or deletes:
        _check_write(tx, ns, caller)
    if gets:
        _check_list(ns, caller)
    _lock(tx, ns, [p.key for p in puts] + deletes)
    got = [(key, tx.memory_get(ns.name, key, now)) for key in gets]
    before = usage(tx, ns)
    stored = [_put_one(tx, caller, ns, p, now) for p in puts]
    deleted = [(key, _delete_one(tx, ns, key, None, now)) for key in deletes]
    _check_quota(tx, caller, ns, before, quota_bytes)
    return MemoryBulkResult(got=got, put=stored, deleted=deleted)


def purge_expired(tx: Tx, *, now: float, limit: int = PURGE_BATCH) -> int:
    """Remove up to `limit` expired keys (the watchdog's sweep; idempotent, so any replica may run it)."""
    return tx.memory_purge(now, limit)
