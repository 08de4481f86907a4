"""`mcs migrate-to-postgres` through click's runner: a real SQLite database filled through the real api (plus
the few rows only other faces write: A2A, a console session, a stopped heartbeat) copied into a real
PostgreSQL database (tests/pg.py). Counts and checksums match, ids are kept and identities go on after
them, triggers work again afterwards; and each refusal is one line with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from mcs.cli import main
from mcs.engines.migrations.catalog import MIGRATIONS, apply_postgres
from mcs.engines.sqlite.connection import connect
from mcs.state import schedules as schedules_store

# Its source is a SQLite file filled through a SQLite mesh; the default run already checks the PostgreSQL side.
pytestmark = pytest.mark.sqlite_only

DEFAULTS = schedules_store.Defaults(max_retries=3, claim_ttl=300.0, grace=60.0)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


async def fill(mesh: Any) -> None:
    """Something of every kind, the way MCS writes it."""
    ann = await mesh.agent("ann", ["x"], concurrency=5)  # a notify_url: its assignments become webhooks
    bob = await mesh.agent("bob", ["x", "y"], notify_url=None, concurrency=5)
    first = await mesh.submit(type="x", payload={"text": "héllo wörld 字", "n": 1.1})
    await mesh.submit(type="x", route="all")  # a broadcast: one child per agent (parent_id)
    keyed = await mesh.call(
        "POST", "/v1/tasks", who="admin", json={"type": "y", "priority": "urgent"}, headers={"Idempotency-Key": "k1"}
    )
    assert keyed.status_code == 201
    await mesh.submit(type="x", depends_on=[first["id"]], concurrency_key="db", max_concurrency=2)
    mesh.dispatch()
    claimed = await mesh.ok("POST", f"/v1/tasks/{(await keyed.get_json())['id']}/claim", who=bob)
    done = {"claim_token": claimed["claim_token"], "result": {"ok": True}}
    await mesh.ok("POST", f"/v1/tasks/{claimed['id']}/complete", who=bob, json=done)
    await mesh.ok("PUT", "/v1/memory/mesh/notes/a", who="admin", json={"value": {"é": [1, 2.5]}, "tags": ["t"]})
    await mesh.ok("PUT", "/v1/memory/mesh/notes/b", who="admin", json={"value": "x" * 100, "ttl": 3600})
    steps = [{"id": "a", "type": "x"}, {"id": "b", "type": "y", "depends_on": ["a"]}]
    await mesh.ok("POST", "/v1/workflows", who="admin", json={"name": "wf", "steps": steps}, status=201)
    body = {"name": "nightly", "cron": "0 3 * * *", "task": {"type": "y"}}
    await mesh.ok("POST", "/v1/schedules", who="admin", json=body, status=201)
    mesh.store.write(schedules_store.fire_next_due, now=time.time() + 2 * 86400, defaults=DEFAULTS)
    a2a = await mesh.submit(type="y")
    now = time.time()

    def other_faces(conn: Any) -> None:
        conn.execute(
            "INSERT INTO a2a_tasks (task_id, context_id, message, created_at) VALUES (?, 'ctx', '{}', ?)",
            (a2a["id"], now),
        )
        conn.execute(
            "INSERT INTO a2a_push_configs (task_id, id, url, owner, created_at) VALUES (?, 'p1', 'http://h/', 'c', ?)",
            (a2a["id"], now),
        )
        conn.execute("INSERT INTO console_sessions VALUES ('h', 'csrf', ?, ?)", (now, now + 60))
        conn.execute("INSERT INTO heartbeats (process, instance, pid, started_at, beat_at) VALUES ('api', '', 0, 1, 2)")

    mesh.store.write(other_faces)
    await mesh.ok("POST", f"/v1/tasks/{a2a['id']}/cancel", who="admin", json={})  # the push trigger: an outbox row
    mesh.dispatch()
    # The newest workflow event is pruned: SQLite's AUTOINCREMENT still remembers its id.
    mesh.store.write(
        lambda conn: conn.execute("DELETE FROM workflow_events WHERE id = (SELECT max(id) FROM workflow_events)")
    )
    assert ann  # (used for its webhook rows)


def count(conn: Any, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def tables_in(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


async def test_the_copy_matches_the_source_and_goes_on_where_it_left_off(mesh, pg_database):
    await fill(mesh)
    db = mesh.settings.db
    source = connect(db)
    for table in ("tasks", "agent_events", "outbox", "memory", "workflows", "schedule_runs", "task_deps",
                  "idempotency_keys", "a2a_tasks", "a2a_push_configs", "event_log", "task_counts"):  # fmt: skip
        assert count(source, table) > 0, table
    assert count(source, "tasks WHERE parent_id IS NOT NULL") == 2
    assert count(source, "outbox WHERE kind = 'a2a_push'") == 1

    code, out, err = run("migrate-to-postgres", "--from", str(db), "--to", pg_database, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True and report["applied"] == [m.name for m in MIGRATIONS]
    assert "****" not in report["target"] and report["target"] == pg_database  # (no password in this URL)
    by_table = {t["table"]: t for t in report["tables"]}
    assert len(by_table) == 21
    for name, t in by_table.items():
        expected = count(source, name) - (1 if name == "mcs_meta" else 0)  # the target keeps its database_id
        assert t["source_rows"] == t["target_rows"] == expected, name
        assert t["source_sha256"] == t["target_sha256"] and t["ok"], name
    assert [t["table"] for t in report["tables"]].index("tasks") < len(by_table)
    assert report["rows"] == sum(t["source_rows"] for t in report["tables"]) > 60

    with psycopg.connect(pg_database, autocommit=True) as pg:
        # Event ids kept: a resumed event stream goes on where it was.
        ids = [tuple(r) for r in source.execute("SELECT id, stream, ref FROM event_log ORDER BY id")]
        assert pg.execute("SELECT id, stream, ref FROM event_log ORDER BY id").fetchall() == ids
        assert pg.execute("SELECT seq, id, parent_id FROM tasks ORDER BY seq").fetchall() == [
            tuple(r) for r in source.execute("SELECT seq, id, parent_id FROM tasks ORDER BY seq")
        ]
        # The target's own database id, not the source's.
        own = pg.execute("SELECT value FROM mcs_meta WHERE key = 'database_id'").fetchone()[0]
        assert own != source.execute("SELECT value FROM mcs_meta WHERE key = 'database_id'").fetchone()[0]
        # Every user trigger is back on.
        states = pg.execute("SELECT DISTINCT tgenabled FROM pg_trigger WHERE NOT tgisinternal").fetchall()
        assert states == [("O",)]
        # Identities go on after the largest id (AUTOINCREMENT: after the largest ever handed out).
        top_seq = source.execute("SELECT max(seq) FROM tasks").fetchone()[0]
        seq = pg.execute(
            "INSERT INTO tasks (id, type, priority, capabilities, route, state, max_retries, claim_ttl,"
            " submitted_by, created_at, updated_at) VALUES ('new', 'x', 1, '[\"x\"]', 'any', 'queued', 0, 60,"
            " 'admin', 1, 1) RETURNING seq"
        ).fetchone()[0]
        assert seq == top_seq + 1
        ever = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'workflow_events'").fetchone()[0]
        assert ever > source.execute("SELECT coalesce(max(id), 0) FROM workflow_events").fetchone()[0]
        event = pg.execute(
            "INSERT INTO workflow_events (workflow_id, at, kind, actor) VALUES ('w', 1, 'k', 'a') RETURNING id"
        ).fetchone()[0]
        assert event == ever + 1
        top_agent_event = source.execute("SELECT max(id) FROM agent_events").fetchone()[0]
        agent_event = pg.execute(
            "INSERT INTO agent_events (agent, at, kind, actor) VALUES ('ann', 1, 'k', 'a') RETURNING id"
        ).fetchone()[0]
        assert agent_event == top_agent_event + 1
        # ...and the triggers count and log again: the new task is in task_counts, its events in event_log.
        queued = source.execute(
            "SELECT n FROM task_counts WHERE state = 'queued' AND capabilities = '[\"x\"]' AND route = 'any'"
        ).fetchone()
        n = pg.execute(  # summed: PostgreSQL counts into a row per connection slot (migration 0022)
            "SELECT sum(n) FROM task_counts WHERE state = 'queued' AND capabilities = '[\"x\"]' AND route = 'any'"
        ).fetchone()[0]
        assert n == (queued[0] if queued else 0) + 1
        assert pg.execute("SELECT count(*) FROM event_log WHERE id IS NULL").fetchone()[0] == 2
    source.close()

    # The human table says the same.
    code, out, err = run("migrate-to-postgres", "--from", str(db), "--to", pg_database)
    assert code == 1 and "already holds MCS data" in err  # and a second copy is refused


async def test_the_human_table(mesh, pg_database):
    await mesh.agent("ann", ["x"])
    code, out, err = run("migrate-to-postgres", "--from", str(mesh.settings.db), "--to", pg_database)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("table") and len(lines) == 1 + 21 + 1
    agents = next(line for line in lines if line.startswith("agents "))
    assert agents.split()[1:3] == ["1", "1"] and "DIFFERS" not in out
    assert lines[-1].endswith("counts and checksums match")


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "mcs.db"
    conn = connect(path)
    from mcs.engines.sqlite import migrations

    migrations.apply(conn)
    conn.execute("INSERT INTO agents (name, secret_hash, webhook_secret, created_at) VALUES ('ann', 'h', 'w', 0)")
    conn.close()
    return path


def test_refuses_while_a_process_has_the_database_open(migrated, pg_database):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1');"
         " print('open', flush=True); sys.stdin.read()", str(migrated)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database)
    finally:
        holder.communicate("", timeout=30)
    assert code == 1 and err.count("\n") == 1 and "refusing to copy while MCS runs on" in err
    assert f"(pid {holder.pid})" in err
    assert tables_in(pg_database) == []


def test_refuses_while_a_process_elsewhere_beats(migrated, pg_database):
    conn = connect(migrated)
    conn.execute(
        "INSERT INTO heartbeats (process, instance, pid, started_at, beat_at) VALUES ('dispatcher', '', 41, 1, ?)",
        (time.time() - 5,),
    )
    conn.close()
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database)
    assert code == 1 and err.count("\n") == 1 and "dispatcher (heartbeat 5 s ago, pid 41)" in err
    assert tables_in(pg_database) == []


def test_refuses_an_unmigrated_source(tmp_path, pg_database):
    path = tmp_path / "old.db"
    old = Migrations("mcs")
    for m in MIGRATIONS[:-1]:
        old(name=m.name)(m.sqlite)
    old.apply(Database(path))
    code, out, err = run("migrate-to-postgres", "--from", str(path), "--to", pg_database)
    assert code == 1 and err.count("\n") == 1
    assert f"is not fully migrated (pending: {MIGRATIONS[-1].name})" in err and "mcs migrate" in err
    assert tables_in(pg_database) == []
    code, out, err = run("migrate-to-postgres", "--from", str(tmp_path / "none.db"), "--to", pg_database)
    assert code == 1 and "no SQLite database at" in err
    (tmp_path / "other.db").write_bytes(b"")
    code, out, err = run("migrate-to-postgres", "--from", str(tmp_path / "other.db"), "--to", pg_database)
    assert code == 1 and "is not an MCS database" in err
    assert tables_in(pg_database) == []


def test_refuses_a_target_that_is_not_empty(migrated, pg_database):
    with psycopg.connect(pg_database, autocommit=True) as pg:
        pg.execute("CREATE TABLE tasks (id text)")  # someone else's table of that name
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database)
    assert code == 1 and err.count("\n") == 1 and "already has tables named like MCS's (tasks)" in err
    assert tables_in(pg_database) == ["tasks"]

    with psycopg.connect(pg_database, autocommit=True) as pg:
        pg.execute("DROP TABLE tasks")
        apply_postgres(pg)  # migrated but empty (`mcs migrate` run first, or a copy that failed): fine
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database, "--json")
    assert code == 0, err
    assert json.loads(out)["applied"] == []
    with psycopg.connect(pg_database, autocommit=True) as pg:
        pg.execute(
            "INSERT INTO memory (ns, key, value, version, updated_by, updated_at) VALUES ('n', 'k', 'v', 1, 'a', 1)"
        )
        before = pg.execute("SELECT count(*) FROM agents").fetchone()[0]
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database)
    assert code == 1 and err.count("\n") == 1 and "already holds MCS data (agents: 1, memory: 1" in err
    with psycopg.connect(pg_database) as pg:
        assert pg.execute("SELECT count(*) FROM agents").fetchone()[0] == before == 1


def test_a_failed_copy_leaves_the_target_empty_and_can_run_again(migrated, pg_database):
    conn = connect(migrated)
    conn.execute(
        "INSERT INTO agents (name, secret_hash, webhook_secret, created_at) VALUES (?, 'h', 'w', 0)", ("nul\x00",)
    )
    conn.close()  # PostgreSQL text cannot hold NUL: the copy fails half way
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database)
    assert code == 1 and err.count("\n") == 1 and "nothing was copied" in err and "(table agents)" in err
    with psycopg.connect(pg_database) as pg:
        assert pg.execute("SELECT count(*) FROM agents").fetchone()[0] == 0
        assert pg.execute("SELECT DISTINCT tgenabled FROM pg_trigger WHERE NOT tgisinternal").fetchall() == [("O",)]
    conn = connect(migrated)
    conn.execute("DELETE FROM agents WHERE name = ?", ("nul\x00",))
    conn.close()
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database)
    assert code == 0, err


def test_a_url_with_a_password_is_never_printed(migrated, pg_cluster):
    url = f"postgresql://postgres:s3cret@127.0.0.1:{pg_cluster.port}/no_such_database"
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", url)
    assert code == 1 and err.count("\n") == 1 and "s3cret" not in err and "****" in err


def test_the_check_finds_a_row_lost_or_changed(migrated, pg_database, monkeypatch):
    from mcs.engines import copy

    real = copy._copy

    def losing_a_row(sqlite: Any, pg: Any, schema: Any, order: Any) -> None:  # as a broken copy would
        real(sqlite, pg, schema, order)
        pg.execute("DELETE FROM agents WHERE name = 'ann'")

    monkeypatch.setattr(copy, "_copy", losing_a_row)
    code, out, err = run("migrate-to-postgres", "--from", str(migrated), "--to", pg_database)
    assert code == 1 and "the copy differs from the source in: agents" in err
    agents = next(line for line in out.splitlines() if line.startswith("agents "))
    assert agents.split()[1:3] == ["1", "0"] and agents.endswith("DIFFERS")
    assert out.splitlines()[-1].endswith("DIFFERENCES FOUND")

    with psycopg.connect(pg_database, autocommit=True) as pg:
        pg.execute("INSERT INTO agents (name, secret_hash, webhook_secret, created_at) VALUES ('ann', 'h', 'w', 0)")
    assert all(t.ok for t in copy.verify(migrated, pg_database))
    with psycopg.connect(pg_database, autocommit=True) as pg:  # the same count, one value a hair off
        pg.execute("UPDATE agents SET created_at = 1e-300")
    bad = [t for t in copy.verify(migrated, pg_database) if not t.ok]
    assert [(t.table, t.source_rows, t.target_rows) for t in bad] == [("agents", 1, 1)]
