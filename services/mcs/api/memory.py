"""/v1/memory: namespaced keys shared by the mesh (see mcs.namespaces for who may do what)."""

from __future__ import annotations

import json
import time
from typing import Any

from quart import Blueprint, Response, current_app, request
from quart_schema import validate_querystring, validate_request
from werkzeug.routing import PathConverter

from mcs.api.auth import authed, credentials
from mcs.api.openapi import NO_CONTENT, BulkResult, MemoryItem, MemoryMeta, MemoryPage, documented
from mcs.api.responses import respond
from mcs.api.schemas import MemoryBulk, MemoryPut, MemoryQuery
from mcs.errors import BadRequest, MethodNotAllowed, PayloadTooLarge
from mcs.namespaces import check_key, parse_namespace
from mcs.state import memory as memory_store

bp = Blueprint("memory", __name__, url_prefix="/v1/memory")


class KeyConverter(PathConverter):
    """Like `path`, but also matches control characters, so a key holding one gets a clear 400 from
    `check_key` rather than a 404 from the router."""

    regex = "[^/](?s:.)*?"


def _db() -> Any:
    return current_app.config["MCS_DB"]


def _encode(value: Any, key: str) -> str:
    """The value as stored (JSON text), refused when over the configured size."""
    text = json.dumps(value, separators=(",", ":"))
    limit = current_app.config["MCS_SETTINGS"].memory_max_value_bytes
    if len(text.encode()) > limit:
        raise PayloadTooLarge(f"the value of {key!r} is larger than {limit} bytes", code="value_too_large")
    return text


def _quota() -> int:
    return int(current_app.config["MCS_SETTINGS"].quota_memory_bytes)


def _if_match() -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or int(text) < 1:
        raise BadRequest(f"If-Match must be a version number, not {raw!r}", code="bad_if_match")
    return int(text)


def _if_none_match() -> bool:
    raw = request.headers.get("If-None-Match")
    if raw is None:
        return False
    if raw.strip() != "*":
        raise BadRequest("If-None-Match supports only * (create only if absent)", code="bad_if_none_match")
    return True


def _with_etag(item: dict[str, Any]) -> Response:
    return respond(item, headers={"ETag": f'"{item["version"]}"'})


@bp.get("/<ns>/<memkey:key>")
@documented(ok={200: MemoryItem}, errors=(400, 403, 404))
async def get(ns: str, key: str) -> Response:
    namespace, key = parse_namespace(ns), check_key(key)
    item = await _db().read(
        authed(memory_store.get, need="any", pass_as="caller"), credentials(), ns=namespace, key=key, now=time.time()
    )
    return _with_etag(item.to_api(with_value=True))


@bp.put("/<ns>/<memkey:key>")
@documented(ok={200: MemoryMeta}, errors=(403, 412), body=True, writes=True)
@validate_request(MemoryPut)
async def put(ns: str, key: str, data: MemoryPut) -> Response:
    namespace, key = parse_namespace(ns), check_key(key)
    change = memory_store.Put(
        key=key,
        value=_encode(data.value, key),
        ttl=data.ttl,
        tags=tuple(dict.fromkeys(data.tags)),
        if_match=_if_match(),
        if_none_match=_if_none_match(),
    )
    item = await _db().write(
        authed(memory_store.put, need="any", pass_as="caller"),
        credentials(),
        ns=namespace,
        put=change,
        now=time.time(),
        quota_bytes=_quota(),
    )
    return _with_etag(item.to_api(with_value=False))


@bp.delete("/<ns>/<memkey:key>")
@documented(ok={204: NO_CONTENT}, errors=(400, 403, 404, 412), writes=True)
async def delete(ns: str, key: str) -> Response:
    namespace, key = parse_namespace(ns), check_key(key)
    await _db().write(
        authed(memory_store.delete, need="any", pass_as="caller"),
        credentials(),
        ns=namespace,
        key=key,
        if_match=_if_match(),
        now=time.time(),
    )
    return Response("", status=204)


@bp.get("/<ns>")
@documented(ok={200: MemoryPage}, errors=(400, 403, 422))
@validate_querystring(MemoryQuery)
async def list_keys(ns: str, query_args: MemoryQuery) -> Response:
    namespace = parse_namespace(ns)
    page = await _db().read(
        authed(memory_store.list_keys, need="any", pass_as="caller"),
        credentials(),
        ns=namespace,
        prefix=query_args.prefix,
        tag=query_args.tag,
        limit=query_args.limit,
        cursor=query_args.cursor,
        now=time.time(),
    )
    return respond(page.to_api())


@bp.post("/<ns>/<memkey:key>")
@documented(ok={}, errors=(400, 405), auth=None)
async def post_key(ns: str, key: str) -> Response:
    """POST is for _bulk only; a namespace holding a '/' (`agent:../x`) lands here and gets its 400."""
    parse_namespace(ns)
    raise MethodNotAllowed("POST works on /v1/memory/{ns}/_bulk only; PUT writes a key", code="method_not_allowed")


@bp.post("/<ns>/_bulk")
@documented(ok={200: BulkResult}, errors=(403, 404, 409, 412), body=True, writes=True)
@validate_request(MemoryBulk)
async def bulk(ns: str, data: MemoryBulk) -> Response:
    namespace = parse_namespace(ns)
    puts = [
        memory_store.Put(
            key=check_key(p.key),
            value=_encode(p.value, p.key),
            ttl=p.ttl,
            tags=tuple(dict.fromkeys(p.tags)),
            if_match=p.if_match,
            if_none_match=p.if_none_match == "*",
        )
        for p in data.put
    ]
    result = await _db().write(
        authed(memory_store.bulk, need="any", pass_as="caller"),
        credentials(),
        ns=namespace,
        gets=[check_key(k) for k in data.get],
        puts=puts,
        deletes=[check_key(k) for k in data.delete],
        now=time.time(),
        quota_bytes=_quota(),
    )
    return respond(result.to_api())
