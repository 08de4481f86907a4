"""The SQLite rules: version floor, pragmas on every connection, migrations safe to run from many processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlite_utils import Database

from mcs.engines.sqlite import connection, migrations
from mcs.engines.sqlite.engine import AsyncStore, Store
from mcs.errors import Conflict, SqliteTooOld, StoreError

pytestmark = pytest.mark.sqlite_only  # the SQLite rules: pragmas, file migrations, group commit


def test_refuses_sqlite_older_than_3_51_3(monkeypatch, tmp_path):
    monkeypatch.setattr(connection, "sqlite_version", lambda: "3.40.1")
    with pytest.raises(SqliteTooOld, match="3.40.1 is too old"):
        Store(tmp_path / "x.db").migrate()


def test_every_connection_has_the_pragmas(tmp_path):
    store = Store(tmp_path / "x.db")
    conn = store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert Store(tmp_path / "y.db", synchronous="NORMAL").conn.execute("PRAGMA synchronous").fetchone()[0] == 1


ALL = [
    "0001_core",
    "0002_agent_concurrency",
    "0003_outbox_task_index",
    "0004_memory",
    "0005_agent_notify_host",
    "0006_agent_grants",
    "0007_retention",
    "0008_quotas",
    "0009_schedules",
    "0010_workflows",
    "0011_gates",
    "0012_workflow_retention",
    "0013_event_log",
    "0014_console_sessions",
    "0015_event_log_pruned",
    "0016_claim_on_push",
    "0017_scale",
    "0018_a2a",
    "0019_outbox_pending_by_agent",
    "0020_replicas",
    "0021_a2a_push_notify",
    "0022_task_counts_slots",
]


def test_migrations_apply_once_and_record_themselves(tmp_path):
    store = Store(tmp_path / "x.db")
    assert store.migrate() == ALL
    assert store.migrate() == []
    assert store.pending_migrations() == []


def test_an_older_database_is_upgraded_in_place_keeping_its_rows(tmp_path):
    store = Store(tmp_path / "old.db")
    db = Database(store.conn, recursive_triggers=False, execute_plugins=False)
    migrations.migrations.apply(db, stop_before="0002_agent_concurrency")
    store.conn.execute(
        "INSERT INTO agents (name, secret_hash, webhook_secret, created_at) VALUES ('old', 'h', 'whsec_x', 0)"
    )
    assert store.pending_migrations() == ALL[1:]
    assert store.migrate() == ALL[1:]
    assert [tuple(r) for r in store.conn.execute("SELECT name, concurrency FROM agents")] == [("old", 1)]


def test_agents_created_before_grants_keep_what_the_admin_gave_them(tmp_path):
    """Before 0006 registration overwrote `capabilities`, so only an agent that never registered still
    shows what it was created with: that becomes its grant; the others stay unrestricted as they were."""
    store = Store(tmp_path / "old.db")
    db = Database(store.conn, recursive_triggers=False, execute_plugins=False)
    migrations.migrations.apply(db, stop_before="0006_agent_grants")
    for name, caps, last_seen in (("fresh", '["alpha"]', None), ("seen", '["beta"]', 1.0), ("open", "[]", None)):
        store.conn.execute(
            "INSERT INTO agents (name, secret_hash, webhook_secret, capabilities, last_seen, created_at)"
            " VALUES (?, 'h', 'whsec_x', ?, ?, 0)",
            (name, caps, last_seen),
        )
    assert store.migrate() == ALL[ALL.index("0006_agent_grants") :]
    rows = store.conn.execute("SELECT name, granted FROM agents ORDER BY name").fetchall()
    assert [tuple(r) for r in rows] == [("fresh", '["alpha"]'), ("open", None), ("seen", None)]


def test_concurrent_migrations_from_several_processes(tmp_path):
    db = tmp_path / "race.db"
    code = (
        "from pathlib import Path; from mcs.engines.sqlite.engine import Store; import sys;"
        " print(Store(Path(sys.argv[1])).migrate())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    applied = [o[0].decode().strip() for o in outs]
    assert sorted(applied).count(str(ALL)) == 1 and sorted(applied).count("[]") == 3


def test_mcs_migrate_command(tmp_path):
    env = {"MCS_DB": str(tmp_path / "cli.db"), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-m", "mcs", "migrate", "--json"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert '"0004_memory"' in first.stdout
    second = subprocess.run([sys.executable, "-m", "mcs", "migrate"], env=env, capture_output=True, text=True)
    assert second.stdout.strip() == "up to date"


def _insert_agent(name):
    def job(conn):
        conn.execute(
            "INSERT INTO agents (name, secret_hash, webhook_secret, created_at) VALUES (?, 'h', 'whsec_x', 0)", (name,)
        )
        return name

    return job


def test_group_commit_keeps_each_request_apart(tmp_path):
    """One transaction for many requests, but a failing request rolls back only its own changes."""
    store = Store(tmp_path / "x.db")
    store.migrate()

    def fails_after_writing(conn):
        _insert_agent("doomed")(conn)
        raise Conflict("no")

    outcomes = store.write_batch([_insert_agent("a"), fails_after_writing, _insert_agent("c"), _insert_agent("a")])
    assert outcomes[0] == "a" and outcomes[2] == "c"
    assert isinstance(outcomes[1], Conflict)
    assert isinstance(outcomes[3], StoreError) and "UNIQUE" in str(outcomes[3])
    names = [r[0] for r in Store(tmp_path / "x.db").conn.execute("SELECT name FROM agents ORDER BY name")]
    assert names == ["a", "c"]


async def test_async_writes_resolve_after_commit_with_their_own_outcome(tmp_path):
    store = Store(tmp_path / "x.db")
    store.migrate()
    db = AsyncStore(store)
    results = await asyncio.gather(
        *(db.write(_insert_agent(f"agent-{i % 30}")) for i in range(60)), return_exceptions=True
    )
    db.close()
    ok = [r for r in results if isinstance(r, str)]
    assert sorted(ok) == sorted(f"agent-{i}" for i in range(30))
    assert all(isinstance(r, StoreError) for r in results if not isinstance(r, str))
    fresh = Store(tmp_path / "x.db")
    assert fresh.conn.execute("SELECT count(*) FROM agents").fetchone()[0] == 30
