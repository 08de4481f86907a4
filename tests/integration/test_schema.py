"""One schema on both engines (docs/design/engines.md, section 3): `mcs migrate` on a SQLite file and on a
real PostgreSQL database (tests/pg.py) give the same tables, columns, keys, indexes and triggers as the
checked-in schema.json; a migration written for one engine only fails that check; the PostgreSQL runner
records the baseline, takes turns with a second migrator, and its triggers do what SQLite's do."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from sqlite_utils import Database

from mcs.cli import main
from mcs.engines.migrations import catalog, describe
from mcs.engines.migrations.catalog import MIGRATIONS, Migration, apply_postgres, pending_postgres
from mcs.engines.sqlite import migrations as sqlite_migrations
from mcs.engines.sqlite.connection import connect


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def sqlite_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mcs.db"
    monkeypatch.setenv("MCS_DB", str(path))
    monkeypatch.delenv("MCS_DATABASE_URL", raising=False)
    return path


def test_the_catalog_is_the_sqlite_list_with_a_postgresql_side_for_each():  # (no server needed)
    catalog.check()
    assert [m.name for m in catalog.MIGRATIONS] == sqlite_migrations.migrations.names
    assert all(m.sqlite is getattr(sqlite_migrations, f"m{m.name}") for m in catalog.MIGRATIONS)
    baseline = [m.name for m in catalog.MIGRATIONS if m.postgres is catalog.BASELINE]
    assert baseline[0] == "0001_core" and baseline[-1] == "0019_outbox_pending_by_agent" and len(baseline) == 19
    assert "CREATE TABLE tasks" in catalog.script("0019_baseline.sql")


def test_schema_json_is_what_sqlite_migrations_make(tmp_path):
    made = describe.comparable(describe.migrated_sqlite(tmp_path))
    assert describe.differences(describe.load(), made, names=("schema.json", "sqlite")) == []
    assert describe.dumps(made) == describe.SCHEMA_JSON.read_text(encoding="utf-8")  # generated, not edited


def test_mcs_migrate_gives_both_engines_the_schema_of_schema_json(sqlite_db, pg_database, monkeypatch):
    code, out, err = run("migrate", "--json")
    assert code == 0, err
    assert json.loads(out)["applied"] == [m.name for m in MIGRATIONS]

    monkeypatch.setenv("MCS_DATABASE_URL", pg_database)
    code, out, err = run("migrate", "--check")
    assert code == 1 and out.startswith("pending 0001_core, ") and "0020_replicas" in out
    code, out, err = run("migrate", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["engine"] == "postgres" and result["applied"] == [m.name for m in MIGRATIONS]
    code, out, err = run("migrate")
    assert (code, out) == (0, "up to date\n")
    code, out, err = run("migrate", "--check", "--json")
    assert code == 0 and json.loads(out)["pending"] == []

    conn = connect(sqlite_db)
    sqlite = describe.comparable(describe.describe(conn))
    conn.close()
    with psycopg.connect(pg_database) as pg_conn:
        raw = describe.describe(pg_conn)
    postgres = describe.comparable(raw)
    assert describe.differences(sqlite, postgres, names=("sqlite", "postgres")) == []
    assert sqlite == describe.load()
    assert postgres == describe.load()
    # What PostgreSQL has on purpose (the sequencer's event_log) is really there before comparable() hides it.
    assert [c["name"] for c in raw["tables"]["event_log"]["columns"]] == ["id", "stream", "ref", "tmp"]
    assert raw["tables"]["event_log"]["primary_key"] == []
    assert [i["name"] for i in raw["tables"]["event_log"]["indexes"]] == [
        "event_log_id",
        "event_log_ref",
        "event_log_unnumbered",
    ]
    with psycopg.connect(pg_database) as pg_conn:  # text sorts as SQLite's BINARY does: collation "C"
        other = pg_conn.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            " AND a.atttypid = 'text'::regtype AND a.attcollation <> (SELECT oid FROM pg_collation"
            " WHERE collname = 'C' AND collnamespace = 'pg_catalog'::regnamespace)"
        ).fetchall()
    assert other == []
    # And the schema is the one the design names: a few spot checks a reader can follow.
    tables = describe.load()["tables"]
    assert len(tables) == 21
    assert "a2a_push_on_state" in tables["tasks"]["triggers"] and "task_counts_update" in tables["tasks"]["triggers"]
    since = next(i for i in tables["tasks"]["indexes"] if i["name"] == "tasks_queued_since")
    assert since == {
        "name": "tasks_queued_since",
        "columns": ["priority", "coalesce(not_before,created_at)"],
        "unique": False,
        "partial": True,
    }


def test_a_migration_with_one_side_only_fails_the_check(tmp_path, pg_database):
    def m0021_nickname(db: Database) -> None:
        db.execute("ALTER TABLE agents ADD COLUMN nickname TEXT")

    lopsided = [*MIGRATIONS, Migration("0021_nickname", m0021_nickname, "0021_nickname.sql")]
    with pytest.raises(Exception, match="0021_nickname"):  # the catalog says so before anything runs
        catalog.check(lopsided)
    catalog.check(MIGRATIONS)

    # Applied anyway on SQLite only, the drift check names the difference.
    conn = connect(tmp_path / "mcs.db")
    sqlite_migrations.apply(conn)
    m0021_nickname(Database(conn))
    sqlite = describe.comparable(describe.describe(conn))
    conn.close()
    with psycopg.connect(pg_database, autocommit=True) as pg_conn:
        apply_postgres(pg_conn)
        postgres = describe.comparable(describe.describe(pg_conn))
    diff = describe.differences(sqlite, postgres, names=("sqlite", "postgres"))
    assert len(diff) == 1 and diff[0].startswith("table agents columns:") and "nickname" in diff[0]
    assert describe.differences(describe.load(), sqlite) != []


def test_the_baseline_records_0001_to_0019_and_0020_keeps_the_rows_it_reshapes(pg_database):
    baseline = [m for m in MIGRATIONS if isinstance(m.postgres, type(catalog.BASELINE))]
    assert [m.name for m in baseline] == [f"{n:04d}" + m.name[4:] for n, m in enumerate(baseline, 1)]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert apply_postgres(conn, baseline) == [m.name for m in baseline]
        recorded = conn.execute("SELECT name FROM mcs_migrations ORDER BY name").fetchall()
        assert [r[0] for r in recorded] == [m.name for m in baseline]
        assert pending_postgres(conn) == ["0020_replicas", "0021_a2a_push_notify", "0022_task_counts_slots"]
        # A database at the baseline with rows in it, as one made before 0020 would be.
        conn.execute("INSERT INTO heartbeats (process, pid, started_at, beat_at) VALUES ('api', 7, 1.5, 2.5)")
        conn.execute("INSERT INTO agent_events (agent, at, kind, actor) VALUES ('ann', 1, 'created', 'admin')")
        assert conn.execute("SELECT id, stream FROM event_log").fetchall() == [(1, "agent")]

        assert apply_postgres(conn) == ["0020_replicas", "0021_a2a_push_notify", "0022_task_counts_slots"]
        assert conn.execute("SELECT * FROM heartbeats").fetchall() == [("api", "", 7, 1.5, 2.5)]
        database_id = conn.execute("SELECT value FROM mcs_meta WHERE key = 'database_id'").fetchone()[0]
        assert len(database_id) == 32 and int(database_id, 16) >= 0
        conn.execute(
            "INSERT INTO outbox (kind, message_id, body, next_attempt_at, created_at, updated_at,"
            " lease_owner, lease_until) VALUES ('webhook', 'm1', '{}', 0, 0, 0, 'n1', 30)"
        )
        # The old event keeps its id; a new one waits for the sequencer (id NULL), in insertion order.
        conn.execute("INSERT INTO task_events (task_id, at, kind, actor) VALUES ('t1', 2, 'submitted', 'ann')")
        rows = conn.execute("SELECT id, stream, ref FROM event_log ORDER BY tmp").fetchall()
        assert rows == [(1, "agent", 1), (None, "task", 1)]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE event_log SET id = 1 WHERE id IS NULL")
        assert apply_postgres(conn) == [] and pending_postgres(conn) == []


def test_migrators_starting_together_take_turns(pg_cluster):
    url = pg_cluster.create_database()
    try:
        barrier = threading.Barrier(3)
        results: list[list[str]] = []

        def migrate() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                barrier.wait()
                results.append(apply_postgres(conn))

        threads = [threading.Thread(target=migrate) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(len(r) for r in results) == [0, 0, len(MIGRATIONS)]
    finally:
        pg_cluster.drop_database(url)


# The same writes on both engines, and what the triggers made of them (ids and random message ids aside).
WRITES = [
    "INSERT INTO memory (ns, key, value, version, updated_by, updated_at) VALUES ('n', 'k', 'vé', 1, 'a', 1)",
    "INSERT INTO memory (ns, key, value, version, updated_by, updated_at) VALUES ('n', 'k2', 'xyz', 1, 'a', 1)",
    "UPDATE memory SET value = 'longer value' WHERE key = 'k2'",
    "DELETE FROM memory WHERE key = 'k2'",
    "INSERT INTO memory (ns, key, value, version, updated_by, updated_at) VALUES ('n', 'k', 'wörld', 2, 'a', 2)"
    " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = excluded.version",  # a put's upsert
    "INSERT INTO tasks (id, type, priority, capabilities, route, state, max_retries, claim_ttl, submitted_by,"
    " created_at, updated_at) VALUES ('t1', 'x', 1, '[]', 'any', 'queued', 0, 60, 'ann', 1, 1)",
    "INSERT INTO tasks (id, type, priority, capabilities, route, state, max_retries, claim_ttl, submitted_by,"
    " created_at, updated_at) VALUES ('t2', 'x', 1, '[]', 'any', 'queued', 0, 60, 'ann', 1, 1)",
    "INSERT INTO a2a_tasks (task_id, context_id, message, created_at) VALUES ('t1', 'c', '{}', 1)",
    "INSERT INTO a2a_push_configs (task_id, id, url, owner, created_at) VALUES ('t1', 'p1', 'http://h/', 'bob', 1)",
    "UPDATE tasks SET state = 'assigned', updated_at = 2.5 WHERE id = 't1'",
    "UPDATE tasks SET priority = 1, updated_at = 3 WHERE id = 't1'",  # no change of state: no push
    "INSERT INTO task_events (task_id, at, kind, actor) VALUES ('t1', 2, 'assigned', 'dispatcher')",
    "INSERT INTO workflow_events (workflow_id, at, kind, actor) VALUES ('w1', 2, 'started', 'ann')",
    "INSERT INTO agent_events (agent, at, kind, actor) VALUES ('ann', 2, 'created', 'admin')",
    "DELETE FROM task_events",
    "DELETE FROM tasks WHERE id = 't2'",
    "DELETE FROM tasks WHERE id = 't1'",
]
READS = [
    "SELECT ns, bytes FROM memory_usage ORDER BY ns",
    # summed per group: PostgreSQL counts into a row per connection slot (migration 0022)
    "SELECT state, priority, capabilities, route, CAST(sum(n) AS INTEGER) FROM task_counts"
    " GROUP BY state, priority, capabilities, route ORDER BY state",
    "SELECT kind, agent, task_id, body, substr(message_id, 1, 4), length(message_id), next_attempt_at FROM outbox",
    "SELECT stream, ref FROM event_log ORDER BY stream",
    "SELECT count(*) FROM a2a_tasks",
    "SELECT count(*) FROM a2a_push_configs",
]


def test_the_triggers_do_the_same_on_both_engines(tmp_path, pg_database):
    conn = connect(tmp_path / "mcs.db")
    sqlite_migrations.apply(conn)
    for sql in WRITES:
        conn.execute(sql)
    sqlite = [[tuple(r) for r in conn.execute(sql).fetchall()] for sql in READS]
    conn.close()
    with psycopg.connect(pg_database, autocommit=True) as pg_conn:
        apply_postgres(pg_conn)
        for sql in WRITES:
            pg_conn.execute(sql.encode())
        postgres = [pg_conn.execute(sql.encode()).fetchall() for sql in READS]

    # The push body is JSON on both (PostgreSQL's json_build_object spaces it differently).
    for rows in (sqlite[2], postgres[2]):
        assert len(rows) == 1
        kind, agent, task_id, body, prefix, length, due = rows[0]
        assert (kind, agent, task_id, prefix, length, due) == ("a2a_push", "a2a:bob", "t1", "msg_", 36, 2.5)
        assert json.loads(body) == {"config_id": "p1", "from": "queued", "state": "assigned", "at": 2.5}
    sqlite[2] = postgres[2] = []
    assert sqlite == postgres
    assert sqlite[0] == [("n", len("k") + len("wörld".encode()))]  # bytes, not characters
    assert sqlite[1] == [("assigned", 1, "[]", "any", 0), ("queued", 1, "[]", "any", 0)]
    assert sqlite[3] == [("agent", 1), ("workflow", 1)]
    assert sqlite[4:] == [[(0,)], [(0,)]]


def test_a_push_the_trigger_adds_wakes_the_notifiers_on_postgresql(pg_database):
    """The transaction that changes a task's state notifies only the channels of the tables it wrote
    itself; the A2A push row the trigger adds must wake the notifiers too (mcs_outbox), and only then."""
    with psycopg.connect(pg_database, autocommit=True) as conn, psycopg.connect(pg_database, autocommit=True) as listen:
        apply_postgres(conn)
        listen.execute("LISTEN mcs_outbox")
        for sql in WRITES[WRITES.index(next(w for w in WRITES if "INTO tasks" in w)) :][:4]:
            conn.execute(sql.encode())  # t1 and t2 queued; t1 has a push config
        assert list(listen.notifies(timeout=0.2)) == []
        conn.execute("UPDATE tasks SET state = 'assigned', updated_at = 2 WHERE id = 't2'")  # no push config
        assert list(listen.notifies(timeout=0.2)) == []
        with conn.transaction():
            conn.execute("UPDATE tasks SET state = 'assigned', updated_at = 2 WHERE id = 't1'")
            assert list(listen.notifies(timeout=0.2)) == []  # not before COMMIT
        assert [n.channel for n in listen.notifies(timeout=5, stop_after=1)] == ["mcs_outbox"]
        assert conn.execute("SELECT count(*) FROM outbox WHERE kind = 'a2a_push'").fetchone() == (1,)


def test_a_failing_migration_leaves_nothing_behind(pg_database, monkeypatch):
    real = catalog.script
    monkeypatch.setattr(
        catalog,
        "script",
        lambda file: "CREATE TABLE half (a int); SELECT 1 / 0;" if file == "0021_x.sql" else real(file),
    )
    broken = [*MIGRATIONS, Migration("0021_x", lambda db: None, "0021_x.sql")]
    with psycopg.connect(pg_database) as conn:  # not autocommit: the runner switches, and switches back
        with pytest.raises(psycopg.errors.DivisionByZero):
            apply_postgres(conn, broken)
        assert conn.autocommit is False
        conn.rollback()
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        assert pending_postgres(conn, broken) == ["0021_x"]  # the ones before it stay applied
        conn.rollback()
        # The lock went with the failure: another migrator gets it at once.
        with psycopg.connect(pg_database, autocommit=True) as other:
            assert other.execute("SELECT pg_try_advisory_lock(%s)", (catalog.LOCK_KEY,)).fetchone() == (True,)


def test_the_describe_command_checks_both_engines_against_schema_json(pg_database, capsys):
    assert describe.main(["--postgres", pg_database, "--check"]) == 0
    assert capsys.readouterr().out == "schema.json is up to date\n"
    with psycopg.connect(pg_database, autocommit=True) as conn:  # drift made by hand on the PostgreSQL side
        conn.execute("DROP INDEX tasks_queued_keyed")
    assert describe.main(["--postgres", pg_database, "--check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("the engines' schemas differ:") and "table tasks indexes:" in err


def _predicate(text: str) -> str:
    """A partial index's WHERE in one spelling: PostgreSQL's `x = ANY (ARRAY['a'::text, ...])` as `x IN ('a',
    ...)`, `<>` as `!=`, without casts, parentheses, blanks or case."""
    text = re.sub(r"(\w+) = ANY \(ARRAY\[(.*?)\]\)", r"\1 IN (\2)", text)
    text = re.sub(r"::[a-z ]+", "", text).replace("<>", "!=")
    return re.sub(r"[\s()]", "", text).lower()


def test_partial_indexes_have_the_same_where_on_both_engines(tmp_path, pg_database):
    conn = connect(tmp_path / "mcs.db")
    sqlite_migrations.apply(conn)
    sqlite = {
        str(name): _predicate(str(sql).split(" WHERE ", 1)[1])
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'"
        )
    }
    conn.close()
    with psycopg.connect(pg_database, autocommit=True) as pg_conn:
        apply_postgres(pg_conn)
        postgres = {
            str(name): _predicate(str(where))
            for name, where in pg_conn.execute(
                "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indpred IS NOT NULL AND c.relnamespace = 'public'::regnamespace"
            ).fetchall()
        }
    assert postgres.pop("event_log_unnumbered") == "idisnull"  # the sequencer's (0020, PostgreSQL only)
    assert postgres == sqlite
    assert sqlite["tasks_finished"] == "statein'completed','failed','canceled'andparent_idisnull"
    assert len(sqlite) == 14
