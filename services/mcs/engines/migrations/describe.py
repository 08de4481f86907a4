"""What a migrated database holds, told the same way for SQLite and PostgreSQL: the drift check.

`describe(conn)` reads the catalog of either engine and returns, per table: its columns in order (name,
kind in {text, int, real}, not null, default normalised, whether the database numbers it), primary key,
foreign keys, indexes (name, columns, unique, partial) and trigger names. `comparable(description)`
takes out what PostgreSQL has on purpose that SQLite does not (`POSTGRES_ONLY`); after that the two
engines' descriptions must be equal to each other and to the checked-in `schema.json`
(tests/integration/test_schema.py), so a migration written for one engine only fails CI.

`python -m mcs.engines.migrations.describe` migrates a new SQLite database and writes `schema.json`;
with `--postgres URL` (an empty database) it migrates that too and refuses to write unless both agree.

Normalised: SQLite's declared types by its affinity rules and PostgreSQL's types to the three kinds;
`'x'::text` to `'x'`; primary-key columns count as NOT NULL (PostgreSQL makes them so; SQLite's rowid
tables do not say so); SQLite's unnamed UNIQUE constraints get PostgreSQL's default name
(`<table>_<columns>_key`); index expressions lower case without blanks. Not compared: partial indexes'
WHERE text (PostgreSQL rewrites `IN (...)` as `= ANY (ARRAY[...])`: the baseline repeats SQLite's text),
trigger bodies (PL/pgSQL vs SQLite's), collations.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SCHEMA_JSON = Path(__file__).with_name("schema.json")
BOOKKEEPING = {"_sqlite_migrations", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4", "mcs_migrations"}

Description = dict[str, Any]


def describe(conn: Any) -> Description:
    """The schema of a SQLite connection (sqlite3/pysqlite3) or a psycopg connection."""
    if type(conn).__module__.startswith("psycopg"):
        return describe_postgres(conn)
    return describe_sqlite(conn)


def _kind_sqlite(declared: str) -> str:
    t = declared.upper()  # SQLite's affinity rules, in their order
    if "INT" in t:
        return "int"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "real"
    return f"unknown:{declared}"


# Only the types that hold what SQLite's do: 64-bit integers, doubles, unbounded text. Any other type (an
# `integer`, a float4 `real`, a varchar(n)) is reported as itself and so differs from SQLite's description.
_PG_KINDS = {"text": "text", "bigint": "int", "double precision": "real"}


def _default(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = raw.strip()
    while True:
        stripped = re.sub(r"::[a-z ]+(\[\])?$", "", text)
        if stripped == text:
            break
        text = stripped
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return text


def _expression(text: str) -> str:
    return re.sub(r"\s+", "", text).replace('"', "").lower()


def _index_columns_sqlite(sql: str) -> list[str]:
    """The indexed terms of a CREATE INDEX statement, split at top-level commas."""
    start = sql.index("(", sql.upper().index(" ON "))
    depth, terms, term = 0, [], ""
    for ch in sql[start + 1 :]:
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(term)
            term = ""
            continue
        term += ch
    return [*terms, term]


def describe_sqlite(conn: Any) -> Description:
    tables: dict[str, Any] = {}
    names = [
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        if str(r[0]) not in BOOKKEEPING and not str(r[0]).startswith("sqlite_")
    ]
    for table in names:
        info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        pk = [str(r[1]) for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        auto = len(pk) == 1 and any(r[1] == pk[0] and str(r[2]).upper() == "INTEGER" for r in info)
        columns = [
            {
                "name": str(r[1]),
                "kind": _kind_sqlite(str(r[2])),
                "not_null": bool(r[3]) or str(r[1]) in pk,
                "default": _default(r[4]),
                "auto": auto and str(r[1]) == pk[0],
            }
            for r in info
        ]
        fks: dict[int, dict[str, Any]] = {}
        for r in conn.execute(f'PRAGMA foreign_key_list("{table}")').fetchall():
            fk = fks.setdefault(int(r[0]), {"columns": [], "table": str(r[2]), "references": []})
            fk["columns"].append(str(r[3]))
            fk["references"].append(str(r[4]))
        indexes = []
        for r in conn.execute(f'PRAGMA index_list("{table}")').fetchall():
            name, unique, origin, partial = str(r[1]), bool(r[2]), str(r[3]), bool(r[4])
            if origin == "pk":
                continue
            keys = [x for x in conn.execute(f'PRAGMA index_xinfo("{name}")').fetchall() if x[5]]
            if any(x[2] is None for x in keys):  # an expression: its text from the CREATE INDEX statement
                sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
                terms = _index_columns_sqlite(str(sql))
                cols = [str(x[2]) if x[2] is not None else _expression(terms[i]) for i, x in enumerate(keys)]
            else:
                cols = [str(x[2]) for x in keys]
            if origin == "u":
                name = f"{table}_{'_'.join(cols)}_key"
            indexes.append({"name": name, "columns": cols, "unique": unique, "partial": partial})
        triggers = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? ORDER BY name", (table,)
            ).fetchall()
        ]
        tables[table] = {
            "columns": columns,
            "primary_key": pk,
            "foreign_keys": sorted(fks.values(), key=lambda f: f["columns"]),
            "indexes": sorted(indexes, key=lambda i: i["name"]),
            "triggers": triggers,
        }
    return {"tables": tables}


def describe_postgres(conn: Any) -> Description:
    def rows(sql: str, *params: Any) -> list[Any]:
        return list(conn.execute(sql.encode() if not params else sql, params or None).fetchall())

    tables: dict[str, Any] = {}
    names = [
        str(r[0])
        for r in rows(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname = current_schema() ORDER BY c.relname COLLATE \"C\""
        )
        if str(r[0]) not in BOOKKEEPING
    ]
    for table in names:
        oid = rows("SELECT %s::regclass::oid", table)[0][0]
        info = rows(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid), a.attidentity <> '' AND a.attidentity IS NOT NULL, a.attnum"
            " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            oid,
        )
        by_num = {int(r[5]): str(r[0]) for r in info}
        pk_row = rows("SELECT indkey::int2[] FROM pg_index WHERE indrelid = %s AND indisprimary", oid)
        pk = [by_num[int(k)] for k in pk_row[0][0]] if pk_row else []
        columns = [
            {
                "name": str(r[0]),
                "kind": _PG_KINDS.get(str(r[1]), f"unknown:{r[1]}"),
                "not_null": bool(r[2]),
                "default": _default(r[3]),
                "auto": bool(r[4]),
            }
            for r in info
        ]
        fks = []
        for r in rows(
            "SELECT conkey::int2[], confrelid::regclass::text, confkey::int2[], confrelid FROM pg_constraint"
            " WHERE conrelid = %s AND contype = 'f'",
            oid,
        ):
            ref_cols = {
                int(x[0]): str(x[1])
                for x in rows("SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0", r[3])
            }
            fks.append(
                {
                    "columns": [by_num[int(k)] for k in r[0]],
                    "table": str(r[1]),
                    "references": [ref_cols[int(k)] for k in r[2]],
                }
            )
        indexes = []
        for r in rows(
            "SELECT i.indexrelid, c.relname, i.indisunique, i.indpred IS NOT NULL, i.indnkeyatts"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = %s AND NOT i.indisprimary",
            oid,
        ):
            cols = [
                _expression(str(rows("SELECT pg_get_indexdef(%s, %s, true)", r[0], k)[0][0]))
                for k in range(1, int(r[4]) + 1)
            ]
            indexes.append({"name": str(r[1]), "columns": cols, "unique": bool(r[2]), "partial": bool(r[3])})
        triggers = [
            str(r[0])
            for r in rows(
                'SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal ORDER BY tgname COLLATE "C"',
                oid,
            )
        ]
        tables[table] = {
            "columns": columns,
            "primary_key": pk,
            "foreign_keys": sorted(fks, key=lambda f: f["columns"]),
            "indexes": sorted(indexes, key=lambda i: i["name"]),
            "triggers": triggers,
        }
    return {"tables": tables}


def _sequenced_event_log(t: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL's event_log (migration 0020, design 5.3) seen as SQLite's: the sequencer fills `id` after
    commit (so it is nullable, not an identity, unique through the index `event_log_id` rather than the
    primary key), `tmp` keeps insertion order, and `event_log_unnumbered` finds the rows still to number.
    Anything else about the table is left to compare."""
    cols = {c["name"]: c for c in t["columns"]}
    shaped = (
        t["primary_key"] == []
        and cols.get("tmp") == {"name": "tmp", "kind": "int", "not_null": True, "default": None, "auto": True}
        and cols.get("id", {}).get("not_null") is False
        and cols.get("id", {}).get("auto") is False
        and {"name": "event_log_id", "columns": ["id"], "unique": True, "partial": False} in t["indexes"]
        and {"name": "event_log_unnumbered", "columns": ["tmp"], "unique": False, "partial": True} in t["indexes"]
    )
    if not shaped:
        return t
    columns = [
        {**c, "not_null": True, "auto": True} if c["name"] == "id" else c for c in t["columns"] if c["name"] != "tmp"
    ]
    indexes = [i for i in t["indexes"] if i["name"] not in ("event_log_id", "event_log_unnumbered")]
    return {**t, "columns": columns, "primary_key": ["id"], "indexes": indexes}


def _slotted_task_counts(t: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL's task_counts (migration 0022) seen as SQLite's: a `slot` column at the end, part of the
    primary key, so concurrent transactions count into different rows. Anything else is left to compare."""
    slot = {"name": "slot", "kind": "int", "not_null": True, "default": "0", "auto": False}
    if not t["columns"] or t["columns"][-1] != slot or t["primary_key"][-1:] != ["slot"]:
        return t
    return {**t, "columns": t["columns"][:-1], "primary_key": t["primary_key"][:-1]}


# What PostgreSQL has on purpose that SQLite does not, table by table: each function maps that table's
# PostgreSQL description to the SQLite form when, and only when, it has exactly the intended shape.
POSTGRES_ONLY = {"event_log": _sequenced_event_log, "task_counts": _slotted_task_counts}


def comparable(description: Description) -> Description:
    """The description with POSTGRES_ONLY's intended differences taken out (a SQLite one is unchanged)."""
    tables = dict(description["tables"])
    for table, fix in POSTGRES_ONLY.items():
        if table in tables:
            tables[table] = fix(tables[table])
    return {"tables": tables}


def differences(a: Description, b: Description, *, names: tuple[str, str] = ("a", "b")) -> list[str]:
    """Readable lines saying where two descriptions differ (empty: equal)."""
    out = []
    ta, tb = a["tables"], b["tables"]
    for table in sorted(set(ta) | set(tb)):
        if table not in tb:
            out.append(f"table {table}: only in {names[0]}")
        elif table not in ta:
            out.append(f"table {table}: only in {names[1]}")
        else:
            for part in ("columns", "primary_key", "foreign_keys", "indexes", "triggers"):
                if ta[table][part] != tb[table][part]:
                    out.append(
                        f"table {table} {part}: {names[0]} {json.dumps(ta[table][part])}"
                        f" != {names[1]} {json.dumps(tb[table][part])}"
                    )
    return out


def dumps(description: Description) -> str:
    """schema.json's text: a line per column, key, index (readable diffs in review)."""
    lines = ['{"tables": {']
    tables = description["tables"]
    for n, (table, t) in enumerate(sorted(tables.items())):
        lines.append(f" {json.dumps(table)}: {{")
        parts = list(t.items())
        for m, (part, items) in enumerate(parts):
            end = "," if m < len(parts) - 1 else ""
            if isinstance(items, list) and items and isinstance(items[0], dict):
                body = ",\n".join(f"   {json.dumps(i, sort_keys=True)}" for i in items)
                lines.append(f"  {json.dumps(part)}: [\n{body}\n  ]{end}")
            else:
                lines.append(f"  {json.dumps(part)}: {json.dumps(items)}{end}")
        lines.append(" }" + ("," if n < len(tables) - 1 else ""))
    lines.append("}}")
    return "\n".join(lines) + "\n"


def load() -> Description:
    """The checked-in schema.json."""
    data: Description = json.loads(SCHEMA_JSON.read_text(encoding="utf-8"))
    return data


def migrated_sqlite(folder: Path) -> Description:
    """Migrate a new SQLite database in `folder` and describe it."""
    from mcs.engines.sqlite import migrations
    from mcs.engines.sqlite.connection import connect

    conn = connect(folder / "describe.db")
    try:
        migrations.apply(conn)
        return describe(conn)
    finally:
        conn.close()


def migrated_postgres(url: str) -> Description:
    """Migrate the PostgreSQL database at `url` and describe it."""
    from mcs.engines.migrations.catalog import apply_postgres
    from mcs.engines.migrations.connection import connect_postgres

    with connect_postgres(url) as conn:
        apply_postgres(conn)
        return describe(conn)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m mcs.engines.migrations.describe", description=__doc__)
    parser.add_argument("--postgres", metavar="URL", help="also migrate this (empty) database and compare")
    parser.add_argument("--check", action="store_true", help="compare with schema.json; write nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        sqlite = comparable(migrated_sqlite(Path(folder)))
    if args.postgres:
        diff = differences(sqlite, comparable(migrated_postgres(args.postgres)), names=("sqlite", "postgres"))
        if diff:
            print("\n".join(["the engines' schemas differ:", *diff]), file=sys.stderr)
            return 1
    if args.check:
        diff = differences(load(), sqlite, names=("schema.json", "sqlite"))
        print("\n".join(diff) if diff else "schema.json is up to date", file=sys.stderr if diff else sys.stdout)
        return 1 if diff else 0
    SCHEMA_JSON.write_text(dumps(sqlite), encoding="utf-8")
    print(SCHEMA_JSON)
    return 0


if __name__ == "__main__":
    sys.exit(main())
