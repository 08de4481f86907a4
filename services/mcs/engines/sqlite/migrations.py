"""Numbered schema migrations, applied by `mcs migrate` and at start-up by `mcs up` and every process.

Each migration is a function registered with sqlite-utils' Migrations and applied with its record in one
transaction. We wrap the whole apply in BEGIN IMMEDIATE so that several processes starting at once (four
containers in compose) serialise instead of racing to create the same tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mcs.engines.sqlite.connection import Connection, WriterLock, immediate

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

F = TypeVar("F", bound=Callable[..., None])
MIGRATIONS_TABLE = "_sqlite_migrations"  # sqlite-utils' record of the migrations applied


class _Migrations:
    """sqlite-utils' `Migrations`, built the first time something other than registering asks for it:
    every process checks for pending migrations at start, and importing sqlite-utils to find none costs
    each of them about 3 MiB. Registering (`@migrations(name=...)`) and `names` need no sqlite-utils."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.names: list[str] = []
        self._registered: list[tuple[str, Callable[..., None]]] = []
        self._real: Migrations | None = None

    def __call__(self, *, name: str) -> Callable[[F], F]:
        def inner(fn: F) -> F:
            self._registered.append((name, fn))
            self.names.append(name)
            return fn

        return inner

    def __getattr__(self, attr: str) -> Any:
        if self._real is None:
            from sqlite_utils.migrations import Migrations

            real = Migrations(self.name)
            for name, fn in self._registered:
                real(name=name)(fn)
            self._real = real
        return getattr(self._real, attr)


migrations = _Migrations("mcs")


@migrations(name="0001_core")
def m0001_core(db: Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            webhook_secret TEXT NOT NULL,
            capabilities TEXT NOT NULL DEFAULT '[]',
            notify_url TEXT,
            status TEXT NOT NULL DEFAULT 'offline',
            ttl REAL,
            expires_at REAL,
            last_seen REAL,
            last_assigned_at REAL,
            created_at REAL NOT NULL
        );
        CREATE TABLE agent_events (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT
        );
        CREATE INDEX agent_events_agent ON agent_events(agent, id);

        CREATE TABLE tasks (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            payload TEXT,
            priority INTEGER NOT NULL,
            capabilities TEXT NOT NULL,
            route TEXT NOT NULL,
            aggregate TEXT,
            state TEXT NOT NULL,
            parked INTEGER NOT NULL DEFAULT 0,
            assigned_to TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER NOT NULL,
            claim_ttl REAL NOT NULL,
            not_before REAL,
            lease_expires_at REAL,
            claim_token TEXT,
            assigned_at REAL,
            result TEXT,
            error TEXT,
            parent_id TEXT REFERENCES tasks(id),
            submitted_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        -- The dispatcher's queue: unparked queued tasks, urgent first, oldest first.
        CREATE INDEX tasks_dispatch ON tasks(state, parked, priority, seq);
        CREATE INDEX tasks_due ON tasks(state, not_before);
        CREATE INDEX tasks_lease ON tasks(state, lease_expires_at);
        CREATE INDEX tasks_agent ON tasks(assigned_to, state);
        CREATE INDEX tasks_parent ON tasks(parent_id);
        CREATE INDEX tasks_type ON tasks(type, seq);

        CREATE TABLE task_events (
            id INTEGER PRIMARY KEY,
            task_id TEXT NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT
        );
        CREATE INDEX task_events_task ON task_events(task_id, id);

        -- Agents a task should not go to again: hard = it rejected the task, soft = it let the claim lapse.
        CREATE TABLE task_avoid (
            task_id TEXT NOT NULL,
            agent TEXT NOT NULL,
            hard INTEGER NOT NULL,
            PRIMARY KEY (task_id, agent)
        );

        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            message_id TEXT NOT NULL UNIQUE,
            agent TEXT,
            task_id TEXT,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX outbox_pending ON outbox(state, next_attempt_at);

        CREATE TABLE idempotency_keys (
            caller TEXT NOT NULL,
            key TEXT NOT NULL,
            body_hash TEXT NOT NULL,
            status INTEGER NOT NULL,
            response TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (caller, key)
        );
        CREATE INDEX idempotency_expiry ON idempotency_keys(expires_at);

        -- Liveness is data: each process writes its own row.
        CREATE TABLE heartbeats (
            process TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            beat_at REAL NOT NULL
        );
        """,
    )


@migrations(name="0002_agent_concurrency")
def m0002_agent_concurrency(db: Database) -> None:
    # How many tasks an agent holds (assigned or claimed) at once; the dispatcher keeps the rest queued so
    # they go out in priority order as the agent frees up, and spread over agents that join later.
    db.execute("ALTER TABLE agents ADD COLUMN concurrency INTEGER NOT NULL DEFAULT 1")


@migrations(name="0003_outbox_task_index")
def m0003_outbox_task_index(db: Database) -> None:
    # The watchdog looks up a task's dead webhooks to route it again without waiting out its claim TTL.
    db.execute("CREATE INDEX outbox_task ON outbox(task_id)")


@migrations(name="0004_memory")
def m0004_memory(db: Database) -> None:
    _run_script(
        db,
        """
        CREATE TABLE memory (
            ns TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            version INTEGER NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            expires_at REAL,
            updated_by TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (ns, key)
        ) WITHOUT ROWID;
        CREATE INDEX memory_expiry ON memory(expires_at) WHERE expires_at IS NOT NULL;
        """,
    )


@migrations(name="0005_agent_notify_host")
def m0005_agent_notify_host(db: Database) -> None:
    # The host an agent's notify_url must name, when the admin pinned one (egress policy).
    db.execute("ALTER TABLE agents ADD COLUMN notify_host TEXT")


@migrations(name="0006_agent_grants")
def m0006_agent_grants(db: Database) -> None:
    # What the admin granted at creation, apart from what the agent registers (`capabilities`, which each
    # registration overwrites): NULL = unrestricted. An agent created with capabilities that never
    # registered still holds its grant in `capabilities`; one that registered may have overwritten it,
    # so it stays unrestricted as before.
    db.execute("ALTER TABLE agents ADD COLUMN granted TEXT")
    db.execute("UPDATE agents SET granted = capabilities WHERE last_seen IS NULL AND capabilities != '[]'")


@migrations(name="0007_retention")
def m0007_retention(db: Database) -> None:
    # What the retention pruner (mcs.maintenance.retention) looks for, so a batch costs the same with a
    # million rows as with ten. Partial indexes: a task enters tasks_finished once, when it ends, so the
    # index adds nothing to the writes a live task goes through; its WHERE is repeated verbatim by the
    # pruner's queries (SQLite uses a partial index only when the query implies its WHERE).
    _run_script(
        db,
        """
        CREATE INDEX tasks_finished ON tasks(updated_at)
            WHERE state IN ('completed', 'failed', 'canceled') AND parent_id IS NULL;
        CREATE INDEX outbox_done ON outbox(updated_at) WHERE state != 'pending';
        CREATE INDEX agent_events_at ON agent_events(at);
        """,
    )


def _run_script(db: Database, script: str) -> None:
    # Not executescript(): the driver commits a pending transaction before running a script, which would
    # break the one-transaction-per-migration promise.
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)


def _applied(conn: Connection) -> set[str]:
    """The names of the migrations this database has, read without sqlite-utils."""
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    if not conn.execute(exists, (MIGRATIONS_TABLE,)).fetchone():
        return set()
    rows = conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ?", (migrations.name,))
    return {row[0] for row in rows}


def apply(conn: Connection, lock: WriterLock | None = None) -> list[str]:
    """Apply pending migrations; return the names applied."""
    with immediate(conn, lock):
        applied = _applied(conn)
        pending = [name for name in migrations.names if name not in applied]
        if pending:
            from sqlite_utils import Database

            migrations.apply(Database(conn, recursive_triggers=False, execute_plugins=False))
    return pending


def pending(conn: Connection) -> list[str]:
    applied = _applied(conn)
    return [name for name in migrations.names if name not in applied]


@migrations(name="0008_quotas")
def m0008_quotas(db: Database) -> None:
    # The queued-tasks quota counts a submitter's unfinished top-level tasks in the submit transaction;
    # without this index that count walks every unfinished task of everyone (tasks_dispatch).
    db.execute("CREATE INDEX tasks_submitter ON tasks(submitted_by, state) WHERE parent_id IS NULL")
    # The memory quota reads a namespace's size from a running count instead of summing its values on
    # every put (measured: 0.9 s to sum a full 64 MiB namespace of 1 KB values, 25 us to read the count;
    # the triggers add about 26 us to a put). Triggers keep it exact whoever writes: api puts, bulk,
    # deletes, the watchdog's expiry purges.
    db.execute("CREATE TABLE memory_usage (ns TEXT PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID")
    size = "(length(CAST({0}.key AS BLOB)) + length(CAST({0}.value AS BLOB)))"
    db.execute(f"INSERT INTO memory_usage (ns, bytes) SELECT ns, sum({size.format('memory')}) FROM memory GROUP BY ns")
    add = "INSERT INTO memory_usage (ns, bytes) VALUES (new.ns, {0}) ON CONFLICT (ns) DO UPDATE SET bytes = bytes + {0}"
    remove = "UPDATE memory_usage SET bytes = bytes - {0} WHERE ns = old.ns"
    db.execute(f"CREATE TRIGGER memory_usage_insert AFTER INSERT ON memory BEGIN {add.format(size.format('new'))}; END")
    db.execute(
        f"CREATE TRIGGER memory_usage_delete AFTER DELETE ON memory BEGIN {remove.format(size.format('old'))}; END"
    )
    db.execute(
        "CREATE TRIGGER memory_usage_update AFTER UPDATE OF ns, key, value ON memory BEGIN "
        f"{remove.format(size.format('old'))}; {add.format(size.format('new'))}; END"
    )


@migrations(name="0009_schedules")
def m0009_schedules(db: Database) -> None:
    # Cron schedules, and one row per tick they handled: its primary key is what makes a tick fire once,
    # even with two watchdogs started by mistake or a crash between the submission and the bookkeeping.
    _run_script(
        db,
        """
        CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            cron TEXT NOT NULL,
            timezone TEXT NOT NULL,
            kind TEXT NOT NULL,
            body TEXT NOT NULL,
            overlap TEXT NOT NULL,
            catch_up TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            next_run_at REAL NOT NULL,
            last_tick_at REAL,
            last_task_id TEXT,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX schedules_due ON schedules(next_run_at) WHERE paused = 0;
        CREATE TABLE schedule_runs (
            schedule TEXT NOT NULL,
            tick_at REAL NOT NULL,
            outcome TEXT NOT NULL,
            task_id TEXT,
            at REAL NOT NULL,
            detail TEXT,
            PRIMARY KEY (schedule, tick_at)
        ) WITHOUT ROWID;
        CREATE INDEX schedule_runs_at ON schedule_runs(at);
        """,
    )


@migrations(name="0010_workflows")
def m0010_workflows(db: Database) -> None:
    # Dependencies between tasks (one row an edge, looked up both ways), what a dependent does when an
    # upstream fails (run_if), and the workflow a task is a step of.
    _run_script(
        db,
        """
        ALTER TABLE tasks ADD COLUMN run_if TEXT NOT NULL DEFAULT 'success';
        ALTER TABLE tasks ADD COLUMN workflow_id TEXT;
        ALTER TABLE tasks ADD COLUMN step_id TEXT;
        CREATE INDEX tasks_workflow ON tasks(workflow_id, seq) WHERE workflow_id IS NOT NULL;
        CREATE TABLE task_deps (
            task_id TEXT NOT NULL,
            dep_id TEXT NOT NULL,
            PRIMARY KEY (task_id, dep_id)
        ) WITHOUT ROWID;
        CREATE INDEX task_deps_dep ON task_deps(dep_id, task_id);
        CREATE TABLE workflows (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            inputs TEXT,
            submitted_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL
        );
        CREATE TABLE workflow_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            workflow_id TEXT NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT
        );
        CREATE INDEX workflow_events_workflow ON workflow_events(workflow_id, id);
        """,
    )


@migrations(name="0011_gates")
def m0011_gates(db: Database) -> None:
    # Concurrency keys: at most `max_concurrency` tasks with one key assigned or claimed at once. The
    # dispatcher and both claim paths count a key's running tasks in their transaction; this partial
    # index keeps that count to the key's own rows (tasks without a key are not in it at all).
    db.execute("ALTER TABLE tasks ADD COLUMN concurrency_key TEXT")
    db.execute("ALTER TABLE tasks ADD COLUMN max_concurrency INTEGER")
    db.execute("CREATE INDEX tasks_concurrency ON tasks(concurrency_key, state) WHERE concurrency_key IS NOT NULL")


@migrations(name="0012_workflow_retention")
def m0012_workflow_retention(db: Database) -> None:
    # The retention pruner deletes a finished workflow once its steps are gone: it reads finished ones
    # oldest first through this index (a running one, or one a retry reopened, has no finished_at).
    db.execute("CREATE INDEX workflows_finished ON workflows(finished_at, seq) WHERE finished_at IS NOT NULL")


@migrations(name="0013_event_log")
def m0013_event_log(db: Database) -> None:
    # One id space over the three audit tables, for the live event stream (GET /v1/events): a trigger
    # appends (stream, row id) here in the same transaction as each audit row, so every writer (any
    # process, any code path, raw INSERTs included) feeds it and an id is never reused (AUTOINCREMENT).
    _run_script(
        db,
        """
        CREATE TABLE event_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            stream TEXT NOT NULL,
            ref INTEGER NOT NULL
        );
        CREATE TRIGGER task_events_log AFTER INSERT ON task_events
            BEGIN INSERT INTO event_log (stream, ref) VALUES ('task', new.id); END;
        CREATE TRIGGER workflow_events_log AFTER INSERT ON workflow_events
            BEGIN INSERT INTO event_log (stream, ref) VALUES ('workflow', new.id); END;
        CREATE TRIGGER agent_events_log AFTER INSERT ON agent_events
            BEGIN INSERT INTO event_log (stream, ref) VALUES ('agent', new.id); END;
        """,
    )


@migrations(name="0014_console_sessions")
def m0014_console_sessions(db: Database) -> None:
    # Web console logins: the SHA-256 of the session id (the cookie holds the id itself), the session's
    # CSRF token, and when it expires; a row survives an api restart. Expired rows go at the next login.
    _run_script(
        db,
        """
        CREATE TABLE console_sessions (
            id_hash TEXT PRIMARY KEY,
            csrf TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);
        """,
    )


@migrations(name="0015_event_log_pruned")
def m0015_event_log_pruned(db: Database) -> None:
    # The event stream's id space follows the audit rows out too: when the retention pruner (or an agent's
    # deletion) removes an audit row, its event_log row goes in the same transaction, so the log stays
    # as long as the history it indexes.
    _run_script(
        db,
        """
        CREATE INDEX event_log_ref ON event_log(stream, ref);
        CREATE TRIGGER task_events_unlog AFTER DELETE ON task_events
            BEGIN DELETE FROM event_log WHERE stream = 'task' AND ref = old.id; END;
        CREATE TRIGGER workflow_events_unlog AFTER DELETE ON workflow_events
            BEGIN DELETE FROM event_log WHERE stream = 'workflow' AND ref = old.id; END;
        CREATE TRIGGER agent_events_unlog AFTER DELETE ON agent_events
            BEGIN DELETE FROM event_log WHERE stream = 'agent' AND ref = old.id; END;
        """,
    )


@migrations(name="0016_claim_on_push")
def m0016_claim_on_push(db: Database) -> None:
    # An agent with claim_on_push gets its tasks claimed for it by the dispatcher, in the assignment's
    # transaction: the webhook carries the claim_token and lease, so it completes without a claim request.
    db.execute("ALTER TABLE agents ADD COLUMN claim_on_push INTEGER NOT NULL DEFAULT 0")


@migrations(name="0017_scale")
def m0017_scale(db: Database) -> None:
    # What a million stored tasks need (bench/scale.py; EXPLAIN QUERY PLAN before and after in bench/README.md).
    # Task counts by state, priority, capabilities and route, kept by triggers in the same transaction as
    # every write to tasks (any process, any path, the retention pruner's deletes included), so the
    # metrics' queue depth, GET /v1/status and the dispatcher read a few rows instead of counting a
    # backlog row by row (100,000 queued tasks: 53 ms a count). As memory_usage (0008) does for memory.
    _run_script(
        db,
        """
        CREATE TABLE task_counts (
            state TEXT NOT NULL,
            priority INTEGER NOT NULL,
            capabilities TEXT NOT NULL,
            route TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (state, priority, capabilities, route)
        ) WITHOUT ROWID;
        INSERT INTO task_counts (state, priority, capabilities, route, n)
            SELECT state, priority, capabilities, route, count(*) FROM tasks
            GROUP BY state, priority, capabilities, route;
        -- GET /v1/tasks?state=X newest first, and its pages: the index's rows are in seq order within a
        -- state, so the query reads `limit` rows instead of sorting every task in that state.
        CREATE INDEX tasks_state ON tasks(state);
        -- GET /v1/tasks?agent=X newest first (tasks_agent is ordered by state first).
        CREATE INDEX tasks_assigned ON tasks(assigned_to) WHERE assigned_to IS NOT NULL;
        -- Finished tasks by when they ended: the console's "completed in the last 5 minutes", ?state=failed
        -- &updated_after=1d, the failures-of-the-last-15-minutes metric. A task enters it once, when it
        -- ends; queries repeat its WHERE verbatim (SQLite uses a partial index only when the query implies it).
        CREATE INDEX tasks_ended ON tasks(state, updated_at) WHERE state IN ('completed', 'failed', 'canceled');
        -- Queued tasks by what they need: which groups an agent change can unpark, without reading the
        -- backlog (the dispatcher), and the groups nobody serves (GET /v1/status).
        CREATE INDEX tasks_queued ON tasks(capabilities, route, parked) WHERE state = 'queued';
        -- The oldest queued task per priority (mcs_queue_oldest_age_seconds): one index step per priority.
        CREATE INDEX tasks_queued_since ON tasks(priority, coalesce(not_before, created_at)) WHERE state = 'queued';
        -- Queued tasks with a concurrency key (mcs_queue_keyed), without counting the rest of the queue.
        CREATE INDEX tasks_queued_keyed ON tasks(concurrency_key)
            WHERE state = 'queued' AND concurrency_key IS NOT NULL;
        -- Each agent's latest webhook (GET /v1/status, "unreachable"), without reading every delivered one.
        CREATE INDEX outbox_agent ON outbox(agent, kind);
        """,
    )
    # Not in the script: a trigger's body holds ";\n", where _run_script splits statements.
    upsert = (
        "INSERT INTO task_counts (state, priority, capabilities, route, n)"
        " VALUES (new.state, new.priority, new.capabilities, new.route, 1)"
        " ON CONFLICT (state, priority, capabilities, route) DO UPDATE SET n = n + 1"
    )
    remove = (
        "UPDATE task_counts SET n = n - 1 WHERE state = old.state AND priority = old.priority"
        " AND capabilities = old.capabilities AND route = old.route"
    )
    db.execute(f"CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN {upsert}; END")
    db.execute(f"CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN {remove}; END")
    db.execute(
        "CREATE TRIGGER task_counts_update AFTER UPDATE OF state, priority, capabilities, route ON tasks"
        " WHEN old.state IS NOT new.state OR old.priority IS NOT new.priority"
        " OR old.capabilities IS NOT new.capabilities OR old.route IS NOT new.route"
        f" BEGIN {remove}; {upsert}; END"
    )


@migrations(name="0018_a2a")
def m0018_a2a(db: Database) -> None:
    # The A2A face (mcs.a2a): the context and first message of a task submitted through A2A, and the push
    # configs A2A clients set on tasks. A trigger turns every state change of a task with push configs into
    # one outbox row per config, in the same transaction and whichever process made the change; the
    # notifier renders and signs the notification when it delivers it. Both tables follow their task out
    # (retention, deletion).
    _run_script(
        db,
        """
        CREATE TABLE a2a_tasks (
            task_id TEXT PRIMARY KEY,
            context_id TEXT NOT NULL,
            message TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX a2a_tasks_context ON a2a_tasks(context_id);
        CREATE TABLE a2a_push_configs (
            task_id TEXT NOT NULL,
            id TEXT NOT NULL,
            url TEXT NOT NULL,
            token TEXT,
            auth_scheme TEXT,
            auth_credentials TEXT,
            owner TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (task_id, id)
        );
        CREATE TRIGGER a2a_push_on_state AFTER UPDATE OF state ON tasks
            WHEN old.state IS NOT new.state
            BEGIN
                INSERT INTO outbox (kind, message_id, agent, task_id, body, next_attempt_at, created_at, updated_at)
                SELECT 'a2a_push', 'msg_' || lower(hex(randomblob(16))), 'a2a:' || c.owner, new.id,
                       json_object('config_id', c.id, 'from', old.state, 'state', new.state, 'at', new.updated_at),
                       new.updated_at, new.updated_at, new.updated_at
                FROM a2a_push_configs c WHERE c.task_id = new.id; END;
        CREATE TRIGGER a2a_task_deleted AFTER DELETE ON tasks
            BEGIN DELETE FROM a2a_tasks WHERE task_id = old.id; DELETE FROM a2a_push_configs
                WHERE task_id = old.id; END;
        """,
    )


@migrations(name="0019_outbox_pending_by_agent")
def m0019_outbox_pending_by_agent(db: Database) -> None:
    # The notifier's pass takes at most a few due rows per agent: with this index it seeks from one agent
    # with pending rows to the next and reads each one's oldest rows, instead of numbering every pending
    # row (measured: 78 ms a pass with 50,000 pending rows for one dead agent, on the notifier's loop).
    db.execute("CREATE INDEX outbox_pending_agent ON outbox(agent, id) WHERE state = 'pending'")


@migrations(name="0020_replicas")
def m0020_replicas(db: Database) -> None:
    # Several replicas of each process on one database (issue 16; PostgreSQL has the same migration):
    # - a notifier leases the webhooks it takes (lease_owner, lease_until), so two notifiers never send one
    #   row at once, and a killed one's rows go out again once its lease lapses;
    # - heartbeats are kept per (process, instance): each replica writes its own row (instance '' is the
    #   only replica, as before);
    # - mcs_meta holds database_id, written once: a process that finds another id behind its connection
    #   (a restored or re-created database) exits and restarts, as it does when the SQLite file is replaced.
    _run_script(
        db,
        """
        ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
        ALTER TABLE outbox ADD COLUMN lease_until REAL;
        CREATE TABLE heartbeats_by_instance (
            process TEXT NOT NULL,
            instance TEXT NOT NULL DEFAULT '',
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            beat_at REAL NOT NULL,
            PRIMARY KEY (process, instance)
        );
        INSERT INTO heartbeats_by_instance (process, instance, pid, started_at, beat_at)
            SELECT process, '', pid, started_at, beat_at FROM heartbeats;
        DROP TABLE heartbeats;
        ALTER TABLE heartbeats_by_instance RENAME TO heartbeats;
        CREATE TABLE mcs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO mcs_meta (key, value) VALUES ('database_id', lower(hex(randomblob(16))));
        """,
    )


@migrations(name="0021_a2a_push_notify")
def m0021_a2a_push_notify(db: Database) -> None:
    # Nothing to change on SQLite: its notifier learns of any commit from PRAGMA data_version, the rows the
    # a2a_push_on_state trigger adds included. On PostgreSQL (postgres/0021_a2a_push_notify.sql) the
    # trigger now notifies the notifiers' channel itself, since the transaction that changed the task's
    # state cannot see that the trigger wrote outbox rows. Kept as a pair: both engines' lists stay one.
    del db


@migrations(name="0022_task_counts_slots")
def m0022_task_counts_slots(db: Database) -> None:
    # Nothing to change on SQLite: writes are serial there, so one task_counts row per group makes nobody
    # wait. On PostgreSQL (postgres/0022_task_counts_slots.sql) each group gets a row per connection slot,
    # so concurrent state changes of similar tasks stop waiting for each other's commits. Kept as a pair.
    del db
