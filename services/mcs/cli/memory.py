"""`mcs mem`: shared memory (get, put, del, ls)."""

from __future__ import annotations

import json
from typing import Any

import click

from mcs.cli.common import client, emit, json_option, load_payload, url_option
from mcs.cli.root import main


@main.group()
def mem() -> None:
    """Shared memory: namespaces mesh, agent:NAME and private:NAME."""


def _item_human(item: dict[str, Any]) -> str:
    meta = f"version {item['version']}, by {item['updated_by']} at {item['updated_at']}"
    if item.get("tags"):
        meta += f", tags {','.join(item['tags'])}"
    if item.get("expires_at"):
        meta += f", expires {item['expires_at']}"
    if "value" in item:
        click.echo(meta, err=True)
        return json.dumps(item["value"], indent=2)
    return f"{item['key']}\t{meta}"


@mem.command("get")
@click.argument("ns")
@click.argument("key")
@url_option
@json_option
def mem_get(ns: str, key: str, url: str, as_json: bool) -> None:
    """Print the value of KEY in NS (metadata on stderr)."""
    with client(url) as c:
        emit(c.mem_get(ns, key), as_json, _item_human)


@mem.command("put")
@click.argument("ns")
@click.argument("key")
@click.option("--value", default=None, help="The value as JSON.")
@click.option("--file", "file_", default=None, help="A file holding the JSON value (- for stdin).")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds until it expires.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--if-match", type=click.IntRange(min=1), default=None, help="Only if the key is at this version.")
@click.option("--if-absent", is_flag=True, help="Only if the key does not exist (If-None-Match: *).")
@url_option
@json_option
def mem_put(
    ns: str,
    key: str,
    value: str | None,
    file_: str | None,
    ttl: float | None,
    tags: tuple[str, ...],
    if_match: int | None,
    if_absent: bool,
    url: str,
    as_json: bool,
) -> None:
    """Write KEY in NS; prints its new version."""
    if value is None and file_ is None:
        raise click.UsageError("give --value or --file")
    data = load_payload(value, file_)
    with client(url) as c:
        item = c.mem_put(ns, key, data, ttl=ttl, tags=list(tags), if_match=if_match, if_none_match=if_absent)
    emit(item, as_json, lambda i: f"{i['ns']} {i['key']} version {i['version']}")


@mem.command("del")
@click.argument("ns")
@click.argument("key")
@click.option("--if-match", type=click.IntRange(min=1), default=None, help="Only if the key is at this version.")
@url_option
@json_option
def mem_del(ns: str, key: str, if_match: int | None, url: str, as_json: bool) -> None:
    """Delete KEY from NS."""
    with client(url) as c:
        c.mem_delete(ns, key, if_match=if_match)
    emit({"ns": ns, "key": key, "deleted": True}, as_json, lambda d: f"deleted {d['ns']} {d['key']}")


@mem.command("ls")
@click.argument("ns")
@click.option("--prefix", default=None, help="Only keys starting with this.")
@click.option("--tag", default=None, help="Only keys with this tag.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--cursor", default=None)
@url_option
@json_option
def mem_ls(
    ns: str, prefix: str | None, tag: str | None, limit: int, cursor: str | None, url: str, as_json: bool
) -> None:
    """List the keys of NS (without values)."""
    with client(url) as c:
        page = c.mem_list(ns, prefix=prefix, tag=tag, limit=limit, cursor=cursor)

    def human(p: dict[str, Any]) -> str:
        rows = [_item_human(i) for i in p["items"]] or ["no keys"]
        if p["next_cursor"]:
            rows.append(f"more: --cursor {p['next_cursor']}")
        return "\n".join(rows)

    emit(page, as_json, human)
