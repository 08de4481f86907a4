"""Fill an MCS database with history, fast: terminal tasks with the audit rows, event_log rows and delivered
webhooks real ones leave behind, and a backlog of queued tasks whose capabilities no agent has.

The schema is the store's own (its migrations applied first); the rows go in with set-based INSERT ... SELECT
statements over a recursive counter, one transaction per chunk, so a million tasks take minutes, not hours.
The triggers of the schema fire as they do for real writes (event_log follows every audit row).

    python bench/scalefill.py DB --terminal 1000000 --queued 100000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

DAY = 86400.0
HISTORY_DAYS = 25.0  # spread of the finished tasks: inside the default 30-day retention, so nothing is pruned
TYPES = 20  # task types the finished history has (job-00 ... job-19), skewed: a few types carry most tasks
AGENTS = 40  # agents that did the work (worker-00 ... worker-39), offline now
CHUNK = 50_000


def say(msg: str, t0: float) -> None:
    print(f"[fill {time.monotonic() - t0:6.1f}s] {msg}", flush=True)


def migrate(db: Path) -> None:
    """Create the schema through the store, as `mcs migrate` does."""
    from mcs.engines.sqlite.engine import Store

    store = Store(db)
    store.migrate()
    store.close()


# One row per task of the chunk, with everything the inserts below derive from it. `n` is the task's number
# in the whole history (0 = oldest); each column is a pure function of n and random() so chunks are alike.
_RAW_SQL = """
CREATE TEMP TABLE raw AS
WITH RECURSIVE c(n) AS (SELECT :start UNION ALL SELECT n + 1 FROM c WHERE n + 1 < :stop)
SELECT n, hex(randomblob(16)) AS h, random() AS r1, random() AS r2, random() AS r3, random() AS r4 FROM c
"""
# (random() in a subquery is evaluated again wherever the outer query names it: hence the table above)
_CHUNK_SQL = """
CREATE TEMP TABLE chunk AS
SELECT n,
    lower(printf('%s-%s-4%s-a%s-%s', substr(h, 1, 8), substr(h, 9, 4), substr(h, 14, 3), substr(h, 18, 3),
        substr(h, 21, 12))) AS id,
    -- skewed over types: half the tasks in 4 types
    CASE WHEN abs(r1) % 2 = 0 THEN printf('job-%02d', abs(r2) % 4) ELSE printf('job-%02d', abs(r2) % :types) END
        AS type,
    CASE WHEN abs(r3) % 100 < 85 THEN 'completed' WHEN abs(r3) % 100 < 95 THEN 'failed' ELSE 'canceled' END
        AS state,
    CASE WHEN abs(r4) % 100 < 5 THEN 0 WHEN abs(r4) % 100 < 95 THEN 1 ELSE 2 END AS priority,
    printf('worker-%02d', abs(r4 / 7) % :agents) AS agent,
    -- retried once (two attempts) for a fifth of the failures and a twentieth of the completions
    CASE WHEN abs(r2 / 11) % 20 = 0 OR (abs(r3) % 100 BETWEEN 85 AND 86) THEN 2 ELSE 1 END AS attempts,
    :t0 + (n * :span / :total) + (abs(r1) % 1000) / 1000.0 AS created_at,
    0.05 + (abs(r2) % 30000) / 1000.0 AS took,
    hex(randomblob(40 + abs(r3) % 120)) AS blob
FROM raw
"""

_TASKS_SQL = """
INSERT INTO tasks (id, type, payload, priority, capabilities, route, state, parked, assigned_to, attempts,
    max_retries, claim_ttl, claim_token, assigned_at, result, error, submitted_by, created_at, updated_at)
SELECT id, type, json_object('n', n, 'source', 'history', 'input', blob), priority, json_array(type), 'any',
    state, 0,
    CASE WHEN state = 'canceled' THEN NULL ELSE agent END,
    CASE WHEN state = 'canceled' THEN 0 ELSE attempts END,
    3, 300.0,
    CASE WHEN state = 'canceled' THEN NULL ELSE lower(hex(randomblob(16))) END,
    CASE WHEN state = 'canceled' THEN NULL ELSE created_at + 0.004 + (attempts - 1) * 2 END,
    CASE WHEN state = 'completed' THEN json_object('ok', json('true'), 'rows', n % 977, 'summary',
        substr(blob, 1, 120)) END,
    CASE WHEN state = 'failed' THEN json_quote('upstream answered 503: ' || substr(blob, 1, 60)) END,
    'admin', created_at,
    created_at + CASE WHEN state = 'canceled' THEN took / 10 ELSE took + (attempts - 1) * 2 END
FROM chunk ORDER BY n
"""

# (kind, actor, detail, at offset, which tasks) in the order the events happen, so ids ascend within a task
_EVENTS = [
    (
        "submitted",
        "'admin'",
        "json_object('priority', CASE priority WHEN 0 THEN 'urgent' WHEN 1 THEN 'normal' "
        "ELSE 'low' END, 'route', 'any')",
        "0",
        "1",
    ),
    ("canceled", "'admin'", "NULL", "took / 10", "state = 'canceled'"),
    # a first attempt that failed and was retried
    ("assigned", "'dispatcher'", "json_object('agent', agent)", "0.004", "state != 'canceled' AND attempts = 2"),
    (
        "claimed",
        "agent",
        "json_object('attempt', 1, 'lease_expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', created_at + 300, 'unixepoch'))",
        "0.01",
        "state != 'canceled' AND attempts = 2",
    ),
    (
        "retrying",
        "agent",
        "json_object('error', 'timeout talking to upstream', 'attempt', 1, 'delay', 2.0)",
        "took / 2",
        "state != 'canceled' AND attempts = 2",
    ),
    ("requeued", "'dispatcher'", "NULL", "took / 2 + 2", "state != 'canceled' AND attempts = 2"),
    # the last attempt
    ("assigned", "'dispatcher'", "json_object('agent', agent)", "0.004 + (attempts - 1) * 2", "state != 'canceled'"),
    (
        "claimed",
        "agent",
        "json_object('attempt', attempts, 'lease_expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', "
        "created_at + 300, 'unixepoch'))",
        "0.01 + (attempts - 1) * 2",
        "state != 'canceled'",
    ),
    (
        "progress",
        "agent",
        "json_object('percent', 50, 'message', 'halfway')",
        "took / 2 + (attempts - 1) * 2",
        "state = 'completed' AND n % 10 = 0",
    ),
    ("completed", "agent", "NULL", "took + (attempts - 1) * 2", "state = 'completed'"),
    (
        "failed",
        "agent",
        "json_object('error', 'upstream answered 503', 'attempts', attempts, 'retryable', json('false'))",
        "took + (attempts - 1) * 2",
        "state = 'failed'",
    ),
]

_OUTBOX_SQL = """
INSERT INTO outbox (kind, message_id, agent, task_id, body, state, attempts, next_attempt_at, created_at,
    updated_at)
SELECT 'webhook', 'msg_' || lower(hex(randomblob(16))), agent, id,
    json_object('type', 'task.assigned', 'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', created_at, 'unixepoch'),
        'data', json_object('task', json_object('id', id, 'type', type, 'state', 'assigned', 'assigned_to', agent,
        'payload', json_object('n', n, 'source', 'history', 'input', blob)))),
    'delivered', 1, created_at + 0.004, created_at + 0.004, created_at + 0.006
FROM chunk WHERE state != 'canceled' AND created_at > :kept_since ORDER BY n
"""


def fill_terminal(conn: sqlite3.Connection, total: int, now: float, t0: float) -> None:
    from mcs.maintenance.retention import OUTBOX_KEEP

    start_at = now - HISTORY_DAYS * DAY
    span = HISTORY_DAYS * DAY - 3600  # the newest finished an hour ago: the bench's own are the recent ones
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        conn.execute("BEGIN")
        conn.execute(_RAW_SQL, {"start": start, "stop": stop})
        conn.execute(
            _CHUNK_SQL,
            {"types": TYPES, "agents": AGENTS, "t0": start_at, "span": span, "total": total},
        )
        conn.execute(_TASKS_SQL)
        for kind, actor, detail, offset, where in _EVENTS:
            conn.execute(
                f"INSERT INTO task_events (task_id, at, kind, actor, detail) SELECT id, created_at + {offset},"
                f" '{kind}', {actor}, {detail} FROM chunk WHERE {where} ORDER BY n"
            )
        # only the webhooks a running mesh still keeps: else the pruner clears a backlog during the bench
        conn.execute(_OUTBOX_SQL, {"kept_since": now - OUTBOX_KEEP})
        conn.execute("DROP TABLE chunk")
        conn.execute("DROP TABLE raw")
        conn.execute("COMMIT")
        say(f"finished tasks {stop:>9,} / {total:,}", t0)


def fill_queued(conn: sqlite3.Connection, total: int, types: int, now: float, t0: float) -> None:
    """Queued tasks of `types` types (orphan-00 ...) that need a capability no agent has, submitted over the
    last two days; fresh (not parked), as after an agent change unparks them."""
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        conn.execute("BEGIN")
        conn.execute(
            "CREATE TEMP TABLE chunk AS WITH RECURSIVE c(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM c WHERE n + 1 < ?)"
            " SELECT n, lower(hex(randomblob(16))) AS h, printf('orphan-%02d', n % ?) AS type,"
            " ? + n * ? AS created_at, hex(randomblob(60)) AS blob FROM c",
            (start, stop, types, now - 2 * DAY, 2 * DAY / max(1, total)),
        )
        conn.execute(
            "INSERT INTO tasks (id, type, payload, priority, capabilities, route, state, parked, attempts, max_retries,"
            " claim_ttl, submitted_by, created_at, updated_at)"
            " SELECT printf('%s-%s-4%s-b%s-%s', substr(h, 1, 8), substr(h, 9, 4), substr(h, 14, 3),"
            " substr(h, 18, 3), substr(h, 21, 12)), type, json_object('n', n, 'input', blob),"
            " CASE WHEN n % 20 = 0 THEN 0 ELSE 1 END, json_array(type), 'any', 'queued', 0, 0, 3, 300.0, 'admin',"
            " created_at, created_at FROM chunk ORDER BY n"
        )
        conn.execute(
            "INSERT INTO task_events (task_id, at, kind, actor, detail) SELECT t.id, t.created_at, 'submitted',"
            " 'admin', json_object('priority', CASE t.priority WHEN 0 THEN 'urgent' ELSE 'normal' END, 'route', 'any')"
            " FROM tasks t WHERE t.state = 'queued' AND t.type LIKE 'orphan-%' AND t.seq >"
            " (SELECT coalesce(max(seq), 0) FROM tasks) - ? ORDER BY t.seq",
            (stop - start,),
        )
        conn.execute("DROP TABLE chunk")
        conn.execute("COMMIT")
        say(f"queued tasks nobody serves {stop:>9,} / {total:,}", t0)


def fill_agents(conn: sqlite3.Connection, now: float) -> None:
    """The agents that did the history: offline, with their creation and last registration in the log."""
    conn.execute("BEGIN")
    for i in range(AGENTS):
        name = f"worker-{i:02d}"
        caps = "[" + ", ".join(f'"job-{t:02d}"' for t in range(TYPES)) + "]"
        created = now - (HISTORY_DAYS + 1) * DAY
        conn.execute(
            "INSERT INTO agents (name, secret_hash, webhook_secret, capabilities, notify_url, status, ttl, expires_at,"
            " last_seen, last_assigned_at, created_at) VALUES (?, 'x', 'x', ?, ?, 'offline', 60, ?, ?, ?, ?)",
            (name, caps, f"http://10.0.0.{i + 1}:8080/mcs", now - 3600, now - 3660, now - 3600, created),
        )
        conn.execute(
            "INSERT INTO agent_events (agent, at, kind, actor, detail) VALUES (?, ?, 'created', 'admin', NULL),"
            " (?, ?, 'online', ?, NULL), (?, ?, 'offline', 'watchdog', NULL)",
            (name, created, name, created + 10, name, name, now - 3600),
        )
    conn.execute("COMMIT")


def fill(db: Path, *, terminal: int, queued: int, unserved_types: int) -> float:
    """Create `db` (it must not exist) and fill it; returns the seconds it took."""
    t0 = time.monotonic()
    migrate(db)
    now = time.time()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # a crash mid-fill just means filling again
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while filling
    conn.execute("PRAGMA temp_store = MEMORY")
    fill_agents(conn, now)
    fill_terminal(conn, terminal, now, t0)
    fill_queued(conn, queued, unserved_types, now, t0)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = db.stat().st_size / 2**20
    say(f"done: {terminal:,} finished + {queued:,} queued tasks, {size:,.0f} MiB", t0)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", type=Path)
    ap.add_argument("--terminal", type=int, default=1_000_000)
    ap.add_argument("--queued", type=int, default=100_000)
    ap.add_argument("--unserved-types", type=int, default=50)
    args = ap.parse_args()
    if args.db.exists():
        print(f"{args.db} exists; give a new path", file=sys.stderr)
        return 2
    fill(args.db, terminal=args.terminal, queued=args.queued, unserved_types=args.unserved_types)
    return 0


if __name__ == "__main__":
    sys.exit(main())
